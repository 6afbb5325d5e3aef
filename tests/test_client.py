"""WorkerClient and engine discovery, without the engine: broken engines and odd workers.

The end-to-end client tests against the real worker are in ``test_worker.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from laser_blender.client import (
    WorkerClient,
    WorkerError,
    _script_interpreter,
    find_engine_python,
    probe_engine_python,
)
from laser_blender.protocol import ErrorEvent, Finished, Job, Progress, WarningEvent

REPO = Path(__file__).resolve().parents[1]
# A crash in the client's reader threads must fail the test, not just warn.
pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")


def drain(client: WorkerClient, timeout: float = 60.0) -> list:
    """Every event until the terminal one."""
    events, deadline = [], time.monotonic() + timeout
    while not client.done:
        assert time.monotonic() < deadline, f"no terminal event after {timeout} s: {events}"
        events += client.poll(timeout=0.1)
    return events


@pytest.fixture
def bare_python(tmp_path: Path) -> str:
    """A fresh virtual environment's Python: no torch, no pydantic, no laser-blender."""
    venv = tmp_path / "bare-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    return str(venv / "bin" / "python")


def test_find_engine_python_prefers_the_environment_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("LASER_BLENDER_PYTHON", sys.executable)
    assert find_engine_python() == sys.executable
    # A variable naming nothing is skipped; this checkout's .venv is found next.
    monkeypatch.setenv("LASER_BLENDER_PYTHON", str(tmp_path / "nothing"))
    assert find_engine_python() == str(REPO / ".venv" / "bin" / "python")


def test_console_script_interpreter_from_shebang_or_sibling(tmp_path):
    script = tmp_path / "bin" / "laser-blender"
    script.parent.mkdir()
    script.write_text(f"#!{sys.executable} -s\nimport sys\n")
    assert _script_interpreter(script) == Path(sys.executable)
    script.write_text("#!/no/such/python\n")
    assert _script_interpreter(script) is None
    (tmp_path / "bin" / "python").symlink_to(sys.executable)
    assert _script_interpreter(script) == tmp_path / "bin" / "python"


def test_probe_engine_python(bare_python):
    assert probe_engine_python(str(REPO / ".venv" / "bin" / "python")) is None
    problem = probe_engine_python(bare_python)
    assert problem and "No module named" in problem and bare_python in problem
    assert "cannot run" in probe_engine_python("/no/such/python")


def test_start_with_a_missing_interpreter_says_where_to_set_it(tmp_path):
    client = WorkerClient(Job(input="a.mp4", run_dir=str(tmp_path / "run")), python="/no/such/python")
    with pytest.raises(WorkerError, match=r"/no/such/python.*preferences.*LASER_BLENDER_PYTHON"):
        client.start()


def test_engine_without_its_packages_is_reported_with_its_last_output(bare_python, tmp_path):
    client = WorkerClient(Job(input="a.mp4", run_dir=str(tmp_path / "run")), python=bare_python)
    client.start()
    events = drain(client)
    assert client.close() == 1 and not client.alive
    assert len(events) == 1 and isinstance(events[0], ErrorEvent)
    message = events[0].message
    assert "exited unexpectedly (exit code 1)" in message and "No module named" in message
    assert not events[0].resumable and "Resume" not in message  # nothing was written


def test_malformed_lines_from_a_worker_are_warnings_not_crashes(tmp_path):
    """A stand-in worker from another version: odd lines, then a valid terminal event."""
    lines = [
        json.dumps({"v": 1, "type": "progress", "frames_done": 3, "fps": 2.0}),
        "some library printed this",
        json.dumps({"v": 2, "type": "progress", "frames_done": 4, "fps": 2.0}),
        json.dumps({"v": 1, "type": "telemetry"}),
        "\xff\xfe not utf-8 either",
        json.dumps({"v": 1, "type": "finished", "run_dir": "r", "windows": 1, "frames": 4, "seconds": 1.0}),
    ]
    out = tmp_path / "lines.txt"
    out.write_bytes("\n".join(lines).encode("latin-1") + b"\n")
    other_worker = tmp_path / "python"
    other_worker.write_text(f"#!/bin/sh\ncat {out}\n")
    other_worker.chmod(0o755)
    client = WorkerClient(Job(input="a.mp4", run_dir=str(tmp_path / "run")), python=str(other_worker))
    client.start()
    events = drain(client)
    assert client.close() == 0
    assert [type(e) for e in events] == [Progress, WarningEvent, WarningEvent, WarningEvent, WarningEvent, Finished]
    reasons = " | ".join(e.message for e in events if isinstance(e, WarningEvent))
    assert "not JSON" in reasons and "protocol version 2" in reasons and "unknown event type 'telemetry'" in reasons
    assert client.poll() == []


def test_cancel_escalates_to_sigterm_when_the_worker_does_not_read_stdin(tmp_path):
    """A stand-in worker deaf to stdin (e.g. stuck loading a model) that handles SIGTERM."""
    cancelled = tmp_path / "cancelled.txt"
    cancelled.write_text(json.dumps({"v": 1, "type": "cancelled", "run_dir": "r", "windows": 0, "frames": 0}) + "\n")
    deaf_worker = tmp_path / "python"
    deaf_worker.write_text(f"#!/bin/sh\ntrap 'cat {cancelled}; exit 130' TERM\nwhile :; do sleep 0.05; done\n")
    deaf_worker.chmod(0o755)
    client = WorkerClient(Job(input="a.mp4", run_dir=str(tmp_path / "run")), python=str(deaf_worker),
                          cancel_grace_s=0.5)
    client.start()
    time.sleep(0.2)
    started = time.monotonic()
    client.cancel()
    events = drain(client, timeout=30)
    assert time.monotonic() - started >= 0.5
    assert client.close() == 130
    assert [e.type for e in events] == ["cancelled"]
