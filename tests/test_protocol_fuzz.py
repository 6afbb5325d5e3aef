"""Fuzz the line protocol and the client: no line and no worker behaviour makes them raise or hang.

The protocol part feeds :func:`decode` and :func:`decode_control` a few thousand seeded
random lines (random bytes and text, truncated and mutated events, valid JSON of the
wrong shape, deep nesting, huge lines, NUL bytes). The client part runs fake workers:
tiny Python scripts run by ``sys.executable`` through a shebang (real subprocesses, no
mocks) that misbehave in every way the add-on has met, and checks that the client never
raises, that ``poll`` returns in bounded time, that the stream ends with exactly one
terminal event (an error, unless the worker sent a legitimate one) and that no process
is left running.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import sys
import textwrap
import time
from pathlib import Path

import pytest
from pydantic import BaseModel

import laser_blender.client as client_module
from laser_blender.client import MAX_REPORTED_ISSUES, WorkerClient
from laser_blender.protocol import (
    MAX_LINE_CHARS,
    MAX_NESTING,
    Cancel,
    Cancelled,
    ErrorEvent,
    Finished,
    Job,
    Predicting,
    Progress,
    ProtocolIssue,
    Started,
    WarningEvent,
    WindowDone,
    decode,
    decode_control,
    encode,
    is_terminal,
    parse_job,
)

# A crash in the client's reader threads must fail the test, not just warn.
pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")

EVENTS = [
    Started(run_dir="/runs/a", total_frames=120, fps=29.97, width=1920, height=1080,
            pred_width=518, pred_height=294, backbone="pi3", windows_done=3),
    Predicting(index=4, first_frame=80, last_frame=109),
    WindowDone(index=4, frames=[80, 81, 82], path="/runs/a/aligned/w00004.npz"),
    Progress(frames_done=83, total_frames=120, fps=14.5, eta_s=2.6),
    WarningEvent(message="pi3 weights are licensed for non-commercial use only"),
    ErrorEvent(message="cannot open /x.mp4: no such file", log="/runs/a/worker.log", resumable=True),
    Finished(run_dir="/runs/a", windows=5, frames=120, seconds=12.5),
    Cancelled(run_dir="/runs/a", windows=2, frames=50),
]
LINES = [encode(e) for e in EVENTS]
DEEP = 10 ** 5


# --------------------------------------------------------------------------- protocol

def assert_never_raises(line: object) -> None:
    """decode and decode_control answer ``line`` with a message or an issue that can be sent on."""
    for parse, accepted in ((decode, BaseModel), (decode_control, (Cancel, ProtocolIssue))):
        result = parse(line)
        assert isinstance(result, accepted), (parse.__name__, line, result)
        if isinstance(result, ProtocolIssue):
            assert len(result.line) <= 200 and len(result.reason) <= 500
            warning = result.as_warning()
            assert isinstance(decode(encode(warning)), WarningEvent)
        else:
            assert parse is decode_control or result.type in {e.type for e in EVENTS}


def random_json(rng: random.Random, depth: int = 0) -> object:
    """Any JSON value, sometimes shaped like an event."""
    roll = rng.random()
    if depth > 4 or roll < 0.3:
        return rng.choice([None, True, False, 0, -1, 1, 2 ** 70, 1.5, -0.0, 1e308, "", "x", "\u0000", "\u00e9",
                           "progress", "finished", "error", "cancel", "[", "}"])
    if roll < 0.5:
        return [random_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    obj = {rng.choice(["v", "type", "message", "index", "frames", "path", "fps", "run_dir", "x", ""]):
           random_json(rng, depth + 1) for _ in range(rng.randrange(6))}
    if rng.random() < 0.7:
        obj["v"] = rng.choice([1, 1, 1, 2, "1", None, 1.0, True])
    if rng.random() < 0.7:
        obj["type"] = rng.choice(["started", "predicting", "window_done", "progress", "warning", "error",
                                  "finished", "cancelled", "cancel", "job", "telemetry", None, 5, ["error"],
                                  {"a": 1}])
    return obj


def mutate(rng: random.Random, line: str) -> str:
    chars = list(line)
    for _ in range(rng.randrange(1, 4)):
        i = rng.randrange(len(chars) + 1)
        op = rng.random()
        if op < 0.3 and chars:
            del chars[min(i, len(chars) - 1)]
        elif op < 0.6:
            chars.insert(i, rng.choice('{}[]",:\\\x00\n\ud800\u00e9 0-e'))
        elif chars:
            chars[min(i, len(chars) - 1)] = chr(rng.randrange(0x110000))
    return "".join(chars)


def random_lines(seed: int, n: int):
    rng = random.Random(seed)
    for _ in range(n):
        kind = rng.randrange(7)
        if kind == 0:
            yield rng.randbytes(rng.randrange(300))
        elif kind == 1:
            yield "".join(chr(rng.randrange(0x110000)) for _ in range(rng.randrange(100)))
        elif kind == 2:
            line = rng.choice(LINES)
            yield line[:rng.randrange(len(line) + 1)]
        elif kind == 3:
            yield mutate(rng, rng.choice(LINES))
        elif kind == 4:
            yield json.dumps(random_json(rng))
        elif kind == 5:
            yield rng.choice(LINES).encode()[:rng.randrange(200)] + rng.randbytes(rng.randrange(20))
        else:
            yield "[" * rng.randrange(MAX_NESTING - 5, MAX_NESTING + 5) + "]" * rng.randrange(2 * MAX_NESTING)


def test_decoders_never_raise_on_random_lines():
    started = time.monotonic()
    for line in random_lines(seed=13, n=3000):
        assert_never_raises(line)
    assert time.monotonic() - started < 60


def test_valid_events_round_trip_as_text_and_bytes():
    for event, line in zip(EVENTS, LINES, strict=True):
        assert decode(line) == decode(line.encode()) == decode(line + "\n") == event
        assert isinstance(decode_control(line), ProtocolIssue)
    assert decode_control(b"cancel\n") == decode_control(encode(Cancel()).encode()) == Cancel()


@pytest.mark.parametrize("line", [
    "[" * DEEP,
    "{" * DEEP,
    '{"a":' * DEEP + "1" + "}" * DEEP,
    "[" * DEEP + "]" * DEEP,
    '{"v": 1, "type": "warning", "message": "x", "extra": ' + "[" * DEEP + "]" * DEEP + "}",
    ("[" * DEEP).encode(),
], ids=["arrays", "braces", "objects", "closed", "inside-an-event", "bytes"])
def test_deeply_nested_lines_are_issues(line):
    started = time.monotonic()
    for parse in (decode, decode_control):
        issue = parse(line)
        assert isinstance(issue, ProtocolIssue) and "nested too deeply" in issue.reason
    with pytest.raises(ValueError, match="nested too deeply"):
        parse_job(line if isinstance(line, str) else line.decode())
    assert time.monotonic() - started < 5


def test_nesting_is_counted_outside_strings_only():
    brackets = "[" * (10 * MAX_NESTING)
    warning = WarningEvent(message=brackets + '"\\' + "{" * 200)
    assert decode(encode(warning)) == warning  # brackets inside a string are text
    def nested(depth: int) -> str:  # the object and depth - 1 arrays
        return '{"v": 1, "type": "warning", "message": "m", "x": ' + "[" * (depth - 1) + "]" * (depth - 1) + "}"

    assert "Extra inputs" in decode(nested(MAX_NESTING)).reason  # at the bound: parsed
    assert "nested too deeply" in decode(nested(MAX_NESTING + 1)).reason


@pytest.mark.parametrize("line", [
    "x" * (MAX_LINE_CHARS + 1),
    b"x" * (MAX_LINE_CHARS + 1),
    json.dumps({"v": 1, "type": "warning", "message": "m" * MAX_LINE_CHARS}),
    b"\xff" * (2 * MAX_LINE_CHARS),
])
def test_huge_lines_are_issues(line):
    started = time.monotonic()
    for parse in (decode, decode_control):
        issue = parse(line)
        assert isinstance(issue, ProtocolIssue) and "line too long" in issue.reason and len(issue.line) <= 200
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("line", [
    b"\x00", b"\x00\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80", "\x00", '{"v": 1, "type": "warning", "message": "a\x00b"}',
    '{"v": 1, "type": "warning", "message": "a\\u0000b"}', "\ud800", '{"v": 1, "type": "progress", "\\udc80": 1}',
    LINES[-2] + "garbage", LINES[-2] + LINES[-1], LINES[-2][:-1], None, 42, ["a list"], bytearray(b"cancel"),
    memoryview(LINES[0].encode()),
])
def test_binary_nul_and_odd_lines_are_answered(line):
    assert_never_raises(line)


def test_terminal_event_followed_by_garbage_on_its_line_is_an_issue():
    for garbage in ("garbage", "\x00", "{", " " + LINES[0], "\xff"):
        assert isinstance(decode(LINES[-2] + garbage), ProtocolIssue)


@pytest.mark.parametrize("field", ["input", "run_dir", "weights", "synthetic_scene"])
@pytest.mark.parametrize("value, reason", [("a\x00b", "NUL byte"), ("", "")])
def test_job_paths_are_never_empty_and_never_hold_nul(field, value, reason):
    job = {"input": "a.mp4", "run_dir": "r", "backbone": "synthetic", "synthetic_scene": "gt", field: value}
    with pytest.raises(ValueError, match=field) as info:
        parse_job(json.dumps(job))
    assert reason in str(info.value)


# --------------------------------------------------------------------------- the client and fake workers

WAIT_S = 15.0  # the longest any case may take to end its stream


def fake_worker(tmp_path: Path, body: str, name: str = "python") -> str:
    """An executable that stands for the engine's Python: ``body`` runs whatever arguments it gets."""
    script = tmp_path / name
    script.write_text(f"#!{sys.executable}\n" + textwrap.dedent(body))
    script.chmod(0o755)
    return str(script)


def assert_gone(pid: int) -> None:
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def run_to_end(tmp_path: Path, body: str, **options) -> tuple[list, WorkerClient]:
    """Run a fake worker through a WorkerClient until the stream ends; the client never raises and
    each poll returns within its timeout (plus scheduling slack)."""
    options = {"stall_timeout_s": 10.0, "eof_grace_s": 0.5, "kill_grace_s": 1.0, **options}
    client = WorkerClient(Job(input="a.mp4", run_dir=str(tmp_path / "run")), python=fake_worker(tmp_path, body),
                          **options)
    client.start()
    events, deadline = [], time.monotonic() + WAIT_S
    while not client.done:
        assert time.monotonic() < deadline, f"no terminal event after {WAIT_S} s: {events}"
        started = time.monotonic()
        events += client.poll(timeout=0.1)
        assert time.monotonic() - started < 2.0
    assert client.poll() == [] and client.poll(timeout=0.05) == []
    pid = client.pid
    assert client.close(timeout=5) is not None
    assert not client.alive
    assert_gone(pid)
    return events, client


def assert_one_error_at_the_end(events: list) -> ErrorEvent:
    assert events and sum(is_terminal(e) for e in events) == 1, events
    assert isinstance(events[-1], ErrorEvent), events
    return events[-1]


def test_garbage_then_exit_0(tmp_path):
    rng = random.Random(7)
    garbage = (b"[" * DEEP + b"\n" + b"y" * (2 * MAX_LINE_CHARS) + b"\n\x00\xff\n" + rng.randbytes(20_000)
               + b"\n" + b"garbage\n" * 150)
    (tmp_path / "garbage.bin").write_bytes(garbage)
    events, _ = run_to_end(tmp_path, f"""
        import sys
        sys.stdout.buffer.write(open({str(tmp_path / 'garbage.bin')!r}, "rb").read())
        sys.stdout.flush()
    """)
    error = assert_one_error_at_the_end(events)
    assert "exited unexpectedly (exit code 0) without saying how the run ended" in error.message
    warnings = events[:-1]
    assert all(isinstance(e, WarningEvent) for e in warnings)
    assert len(warnings) == MAX_REPORTED_ISSUES + 1 and "later ones are not reported" in warnings[-1].message
    reasons = " ".join(w.message for w in warnings)
    assert "nested too deeply" in reasons and "line too long" in reasons


def test_deeply_nested_json_then_hang_is_a_stall(tmp_path):
    events, _ = run_to_end(tmp_path, """
        import sys, time
        sys.stdout.write("[" * 100000 + "\\n")
        sys.stdout.flush()
        time.sleep(60)
    """, stall_timeout_s=1.0)
    error = assert_one_error_at_the_end(events)
    assert [type(e) for e in events] == [WarningEvent, ErrorEvent]
    assert "nested too deeply" in events[0].message
    assert "stalled: it sent nothing for 1 s" in error.message and "SIGTERM" in error.message


def test_closed_stdout_while_running_is_reported_and_the_worker_stopped(tmp_path):
    started = time.monotonic()
    events, _ = run_to_end(tmp_path, """
        import os, sys, time
        print('{"v": 1, "type": "predicting", "index": 0, "first_frame": 0, "last_frame": 5}', flush=True)
        os.close(1)
        print("still working", file=sys.stderr, flush=True)
        time.sleep(60)
    """)
    assert time.monotonic() - started < 5
    error = assert_one_error_at_the_end(events)
    assert [type(e) for e in events] == [Predicting, ErrorEvent]
    assert "stopped talking" in error.message and "was stopped (SIGTERM)" in error.message
    assert "Its last output: still working" in error.message


def test_stall_without_output_is_reported_and_a_deaf_worker_killed(tmp_path):
    """A worker that ignores SIGTERM: SIGKILL after kill_grace_s."""
    events, client = run_to_end(tmp_path, """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        time.sleep(60)
    """, stall_timeout_s=1.0, kill_grace_s=0.5)
    error = assert_one_error_at_the_end(events)
    assert len(events) == 1 and "stalled" in error.message and "SIGKILL" in error.message
    assert client.returncode == -signal.SIGKILL


def test_progress_resets_the_stall_timer(tmp_path):
    events, _ = run_to_end(tmp_path, """
        import time
        for i in range(8):
            time.sleep(0.5)
            print('{"v": 1, "type": "progress", "frames_done": %d, "fps": 1.0}' % i, flush=True)
        print('{"v": 1, "type": "finished", "run_dir": "r", "windows": 1, "frames": 5, "seconds": 2.4}', flush=True)
    """, stall_timeout_s=3.0)
    assert [type(e) for e in events] == [Progress] * 8 + [Finished]


def test_sigkill_mid_line(tmp_path):
    events, client = run_to_end(tmp_path, """
        import os, signal, sys
        sys.stdout.write('{"v": 1, "type": "progress", "frames_done": 1, "fps": 1.0}\\n{"v": 1, "type": "fin')
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    error = assert_one_error_at_the_end(events)
    assert [type(e) for e in events] == [Progress, WarningEvent, ErrorEvent]
    assert "not JSON" in events[1].message
    assert "exited unexpectedly (killed by signal SIGKILL)" in error.message
    assert client.returncode == -signal.SIGKILL


def test_terminal_event_then_more_output_ends_the_stream_at_the_terminal_event(tmp_path):
    """Nothing after the terminal event is delivered, and close() stops a worker that lingers."""
    events, client = run_to_end(tmp_path, """
        import itertools, sys
        print('{"v": 1, "type": "finished", "run_dir": "r", "windows": 1, "frames": 5, "seconds": 1.0}', flush=True)
        for i in itertools.count():
            print('{"v": 1, "type": "error", "message": "a second terminal event"}', flush=True)
            print("garbage", i, flush=True)
    """, cancel_grace_s=0.5)
    assert [type(e) for e in events] == [Finished]
    assert client.returncode is not None


def test_exit_while_a_child_keeps_stdout_open(tmp_path):
    child_pid = tmp_path / "child.pid"
    try:
        events, _ = run_to_end(tmp_path, f"""
            import subprocess, sys
            child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
            open({str(child_pid)!r}, "w").write(str(child.pid))
            print("garbage", flush=True)
            sys.exit(3)
        """)
        error = assert_one_error_at_the_end(events)
        assert [type(e) for e in events] == [WarningEvent, ErrorEvent]
        assert "exited unexpectedly (exit code 3)" in error.message and "left open" in error.message
    finally:
        if child_pid.exists():
            os.kill(int(child_pid.read_text()), signal.SIGKILL)


def test_huge_lines_are_skipped_and_the_run_still_finishes(tmp_path):
    events, _ = run_to_end(tmp_path, f"""
        import sys
        out = sys.stdout.buffer
        out.write(b"z" * {3 * MAX_LINE_CHARS} + b"\\n")
        out.write(b'{{"v": 1, "type": "warning", "message": "' + b"m" * {MAX_LINE_CHARS} + b'"}}\\n')
        out.write(b'{{"v": 1, "type": "finished", "run_dir": "r", "windows": 1, "frames": 5, "seconds": 1.0}}\\n')
        out.flush()
    """)
    assert [type(e) for e in events] == [WarningEvent, WarningEvent, Finished]
    assert all("line too long" in e.message for e in events[:2])
    assert f"({3 * MAX_LINE_CHARS + 1} bytes" in events[0].message


def test_a_failure_of_the_reader_thread_is_an_error_event(tmp_path, monkeypatch):
    """A bug in the client's reader (here a decoder that raises) ends the stream with an error, not a hang."""
    def broken_decode(line):
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(client_module, "decode", broken_decode)
    events, _ = run_to_end(tmp_path, """
        import sys, time
        print("broken pipe dreams", file=sys.stderr, flush=True)
        print('{"v": 1, "type": "progress", "frames_done": 1, "fps": 1.0}', flush=True)
        time.sleep(60)
    """)
    error = assert_one_error_at_the_end(events)
    assert len(events) == 1
    assert "failed while reading the engine worker's output (RecursionError" in error.message
    assert "was stopped (SIGTERM)" in error.message


def test_poll_never_raises_on_odd_timeouts(tmp_path):
    client = WorkerClient(Job(input="a.mp4", run_dir=str(tmp_path / "run")), python=fake_worker(tmp_path, """
        print('{"v": 1, "type": "finished", "run_dir": "r", "windows": 0, "frames": 0, "seconds": 0}', flush=True)
    """))
    assert client.poll() == [] and client.poll(timeout=0.01) == []  # not started yet
    client.start()
    events, deadline = [], time.monotonic() + WAIT_S
    for timeout in [-1, math.nan, "soon", None, 0, 0.05] * 100:
        events += client.poll(timeout=timeout)
        if client.done or time.monotonic() > deadline:
            break
    assert [type(e) for e in events] == [Finished]
    pid = client.pid
    assert client.close(timeout=5) == 0
    assert_gone(pid)


def test_error_event_from_the_client_names_the_log(tmp_path):
    """A stall in a run that has a log: the error names it."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "worker.log").write_text("started\n")
    events, _ = run_to_end(tmp_path, "import time; time.sleep(60)\n", stall_timeout_s=0.5)
    error = assert_one_error_at_the_end(events)
    assert error.log == str(run_dir / "worker.log") and f"Log: {run_dir / 'worker.log'}." in error.message
