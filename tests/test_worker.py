"""The worker process end to end on small synthetic clips: real subprocesses, real engine.

Covers the event stream and the run directory, cancel by SIGTERM / SIGINT / a
``cancel`` line, a SIGKILL reported by the client, ``--resume`` finishing a run
with every frame exactly once, and errors a user can act on.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from core.run.tum import read_tum
from core.synthetic import SceneConfig, render_clip
from laser_blender.client import WorkerClient
from laser_blender.outcome import ExitCode
from laser_blender.protocol import (
    Cancelled,
    ErrorEvent,
    Finished,
    Job,
    Predicting,
    Progress,
    ProtocolIssue,
    Started,
    WindowDone,
    decode,
    encode,
)
from run_files import iter_aligned

EXIT_OK, EXIT_CANCELLED = ExitCode.OK, ExitCode.CANCELLED
EXIT_ERROR = EXIT_INVALID_JOB = ExitCode.USER_ERROR  # bad input, weights, paths or job: the user's to fix

WORKER = [sys.executable, "-m", "laser_blender.worker"]
# A crash in the client's reader threads must fail the test, not just warn.
pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
SHORT, LONG = 20, 400  # frames: a run of a few windows; a run long enough to interrupt


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[int, tuple[Path, Path]]:
    """(clip.mp4, ground-truth dir) of 64x48 synthetic clips, by length."""
    root = tmp_path_factory.mktemp("clips")
    return {n: render_clip(root / str(n), SceneConfig(width=64, height=48, num_frames=n)) for n in (SHORT, LONG)}


def make_job(clips, frames: int, run_dir: Path, **kw) -> Job:
    clip, gt = clips[frames]
    return Job(input=str(clip), run_dir=str(run_dir), backbone="synthetic", synthetic_scene=str(gt),
               window=6, overlap=2, **kw)


def write_job(job: Job, path: Path) -> Path:
    path.write_text(encode(job))
    return path


def parse_stdout(text: str) -> list:
    """Decode every stdout line, failing on anything that is not a protocol event."""
    events = [decode(line) for line in text.splitlines()]
    issues = [e for e in events if isinstance(e, ProtocolIssue)]
    assert not issues, f"worker wrote non-protocol lines: {issues}"
    return events


def drain(client: WorkerClient, until=lambda events: False, timeout: float = 120.0) -> list:
    """Poll until the terminal event (or ``until(events)``)."""
    events, deadline = [], time.monotonic() + timeout
    while not client.done and not until(events):
        assert time.monotonic() < deadline, f"timed out waiting for the worker: {events}"
        events += client.poll(timeout=0.05)
    return events


def assert_events_in_order(events: list, total: int, first_window: int = 0, killed: bool = False) -> None:
    """started, then (window_done, progress) per window, each window announced by an
    earlier predicting event, then one terminal event.

    A killed worker may die between a window_done and its progress event.
    """
    assert isinstance(events[0], Started)
    assert events[0].windows_done == first_window
    body, last = events[1:-1], events[-1]
    assert all(isinstance(e, (Predicting, WindowDone, Progress)) for e in body), body
    windows = [e for e in body if isinstance(e, WindowDone)]
    assert [w.index for w in windows] == list(range(first_window, first_window + len(windows)))
    announced = [e.index for e in body if isinstance(e, Predicting)]
    assert announced == list(range(first_window, first_window + len(announced)))
    for w in windows:
        assert body.index(next(e for e in body if isinstance(e, Predicting) and e.index == w.index)) < body.index(w)
    progress = [e.frames_done for e in body if isinstance(e, Progress)]
    assert progress == sorted(progress)
    assert len(progress) == len(windows) or (killed and len(progress) == len(windows) - 1)
    assert all(Path(w.path).is_file() for w in windows)
    assert isinstance(last, (Finished, Cancelled, ErrorEvent))
    if isinstance(last, Finished):
        assert progress[-1] == total


def frames_on_disk(run_dir: Path) -> list[int]:
    return [int(f) for win in iter_aligned(run_dir) for f in win.frames]


def assert_complete_run(run_dir: Path, total: int) -> None:
    """Every frame exactly once, in order, in the aligned windows and in trajectory.tum."""
    run = json.loads((run_dir / "run.json").read_text())
    assert run["status"] == "complete"
    assert frames_on_disk(run_dir) == list(range(total))
    times, poses = read_tum(run_dir / "trajectory.tum")
    assert len(times) == total and np.all(np.diff(times) > 0)
    assert run["frames_done"] == total


def assert_consistent_partial_run(run_dir: Path, windows: list[WindowDone], status: str) -> None:
    """Every announced window is on disk, nothing else is, and run.json agrees."""
    run = json.loads((run_dir / "run.json").read_text())
    assert run["status"] == status
    on_disk = [win.index for win in iter_aligned(run_dir)]
    assert on_disk == [w.index for w in windows] == list(range(len(windows)))
    frames = frames_on_disk(run_dir)
    assert frames == [f for w in windows for f in w.frames] == list(range(len(frames)))
    assert len(read_tum(run_dir / "trajectory.tum")[0]) == len(frames)
    assert run["windows_done"] == len(windows)


# --------------------------------------------------------------------------- complete runs

def test_worker_with_a_job_file_streams_events_and_completes_the_run(clips, tmp_path):
    job = make_job(clips, SHORT, tmp_path / "run")
    result = subprocess.run([*WORKER, str(write_job(job, tmp_path / "job.json"))],
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    assert result.returncode == EXIT_OK, result.stderr
    events = parse_stdout(result.stdout)
    assert_events_in_order(events, SHORT)
    started, finished = events[0], events[-1]
    assert (started.total_frames, started.fps, started.width, started.height) == (SHORT, 30.0, 64, 48)
    assert (started.pred_width, started.pred_height, started.backbone) == (64, 48, "synthetic")
    assert isinstance(finished, Finished) and (finished.windows, finished.frames) == (5, SHORT)
    assert [e.frames for e in events if isinstance(e, WindowDone)][:2] == [[0, 1, 2, 3, 4, 5], [6, 7, 8, 9]]
    assert_complete_run(tmp_path / "run", SHORT)
    log = (tmp_path / "run" / "worker.log").read_text()
    assert "job:" in log and "complete: 5 windows, 20 frames" in log
    assert "complete: 5 windows" in result.stderr  # logs go to stderr too
    assert json.loads((tmp_path / "run" / "run.json").read_text())["job"] == job.model_dump(mode="json")


def test_client_runs_the_worker_with_the_job_on_stdin(clips, tmp_path):
    client = WorkerClient(make_job(clips, SHORT, tmp_path / "run"))
    client.start()
    events = drain(client)
    assert client.close() == EXIT_OK and not client.alive
    assert_events_in_order(events, SHORT)
    assert isinstance(events[-1], Finished)
    assert_complete_run(tmp_path / "run", SHORT)


def test_build_pipeline_maps_the_job_onto_the_engine(clips, tmp_path):
    from laser_blender.driver import build_pipeline

    job = make_job(clips, SHORT, tmp_path / "run", stride=2, start=3, max_frames=5, conf_keep=0.3,
                   layer_align=False, focal_mm=35.0, sensor_width_mm=36.0)
    source, backbone, config = build_pipeline(job)
    assert [i for i, _ in source.frames()] == [3, 5, 7, 9, 11]
    assert backbone.name == "synthetic"
    assert (config.window, config.overlap, config.conf_keep, config.layer_align) == (6, 2, 0.3, False)
    assert config.focal_px == pytest.approx(35.0 / 36.0 * 64)
    in_pixels = job.model_copy(update={"focal_mm": None, "sensor_width_mm": None, "focal_px": 50.0})
    assert build_pipeline(in_pixels)[2].focal_px == 50.0


# --------------------------------------------------------------------------- cancel and resume

def start_worker(job_file: Path) -> subprocess.Popen:
    """The worker on a job file; its stderr goes to ``stderr.txt`` beside the job."""
    with open(job_file.parent / "stderr.txt", "w") as err:
        return subprocess.Popen([*WORKER, str(job_file)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=err, text=True)


def read_until_first_window(proc: subprocess.Popen) -> list:
    events = []
    while not any(isinstance(e, WindowDone) for e in events):
        line = proc.stdout.readline()
        assert line, "worker ended before its first window"
        events.append(decode(line))
    return events


@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT", "cancel line"])
def test_cancel_mid_run_keeps_every_finished_window_and_resume_completes(clips, tmp_path, how):
    run_dir = tmp_path / "run"
    job_file = write_job(make_job(clips, LONG, run_dir), tmp_path / "job.json")
    with start_worker(job_file) as proc:
        events = read_until_first_window(proc)
        if how == "cancel line":
            proc.stdin.write("cancel\n")
            proc.stdin.flush()
        else:
            proc.send_signal(getattr(signal, how))
        events += parse_stdout(proc.stdout.read())  # (communicate() would skip what readline buffered)
    assert proc.returncode == EXIT_CANCELLED, (tmp_path / "stderr.txt").read_text()
    assert_events_in_order(events, LONG)
    cancelled = events[-1]
    assert isinstance(cancelled, Cancelled) and cancelled.run_dir == str(run_dir)
    windows = [e for e in events if isinstance(e, WindowDone)]
    assert (cancelled.windows, cancelled.frames) == (len(windows), sum(len(w.frames) for w in windows))
    assert cancelled.frames < LONG, "the run finished before it could be cancelled"
    assert_consistent_partial_run(run_dir, windows, "cancelled")
    assert "stopping after the current window" in (run_dir / "worker.log").read_text()

    resumed = subprocess.run([*WORKER, str(job_file), "--resume"], stdin=subprocess.DEVNULL,
                             capture_output=True, text=True, timeout=120)
    assert resumed.returncode == EXIT_OK, resumed.stderr
    events = parse_stdout(resumed.stdout)
    assert_events_in_order(events, LONG, first_window=len(windows))
    assert events[0].resumed
    assert_complete_run(run_dir, LONG)


def test_worker_whose_reader_goes_away_cancels_itself(clips, tmp_path):
    run_dir = tmp_path / "run"
    with start_worker(write_job(make_job(clips, LONG, run_dir), tmp_path / "job.json")) as proc:
        read_until_first_window(proc)
        proc.stdout.close()  # the add-on crashed: the next event hits a broken pipe
    assert proc.returncode == EXIT_CANCELLED, (tmp_path / "stderr.txt").read_text()
    run = json.loads((run_dir / "run.json").read_text())
    assert run["status"] == "cancelled" and 0 < run["frames_done"] < LONG
    assert frames_on_disk(run_dir) == list(range(run["frames_done"]))
    assert "lost the reader of stdout" in (run_dir / "worker.log").read_text()


def test_sigkill_is_reported_by_the_client_and_resume_finishes_the_run(clips, tmp_path):
    run_dir = tmp_path / "run"
    job = make_job(clips, LONG, run_dir)
    client = WorkerClient(job)
    client.start()
    events = drain(client, until=lambda ev: sum(isinstance(e, WindowDone) for e in ev) >= 2)
    os.kill(client.pid, signal.SIGKILL)
    events += drain(client)
    assert client.close() == -signal.SIGKILL
    assert_events_in_order(events, LONG, killed=True)
    error = events[-1]
    assert isinstance(error, ErrorEvent) and error.resumable
    assert "exited unexpectedly (killed by signal SIGKILL)" in error.message
    assert str(run_dir / "worker.log") in error.message and error.log == str(run_dir / "worker.log")
    assert "Resume" in error.message and "--resume" in error.message
    windows = [e for e in events if isinstance(e, WindowDone)]
    on_disk = [win.index for win in iter_aligned(run_dir)]
    # The kill may land after a window is written and before its event is read: never fewer.
    assert on_disk[: len(windows)] == [w.index for w in windows] and on_disk == list(range(len(on_disk)))
    assert json.loads((run_dir / "run.json").read_text())["status"] == "running"  # nobody could mark it

    client = WorkerClient(job.model_copy(update={"resume": True}))
    client.start()
    events = drain(client)
    assert client.close() == EXIT_OK
    assert_events_in_order(events, LONG, first_window=len(on_disk))
    assert_complete_run(run_dir, LONG)


def test_client_cancel_then_close(clips, tmp_path):
    client = WorkerClient(make_job(clips, LONG, tmp_path / "run"), cancel_grace_s=60)
    client.start()
    events = drain(client, until=lambda ev: any(isinstance(e, WindowDone) for e in ev))
    client.cancel()
    client.cancel()  # idempotent
    events += drain(client)
    assert client.close() == EXIT_CANCELLED
    assert isinstance(events[-1], Cancelled)
    assert_consistent_partial_run(tmp_path / "run", [e for e in events if isinstance(e, WindowDone)], "cancelled")


# --------------------------------------------------------------------------- errors

@pytest.mark.parametrize("broken, named", [("input", "no-such-clip.mp4"), ("synthetic_scene", "no-such-gt")])
def test_unusable_input_is_an_error_event_naming_it(clips, tmp_path, broken, named):
    run_dir = tmp_path / "run"
    job = make_job(clips, SHORT, run_dir).model_copy(update={broken: str(tmp_path / named)})
    result = subprocess.run([*WORKER, "-"], input=encode(job) + "\n", capture_output=True, text=True, timeout=120)
    assert result.returncode == EXIT_ERROR, result.stderr
    events = parse_stdout(result.stdout)
    assert len(events) == 1 and isinstance(events[0], ErrorEvent), events
    error = events[0]
    assert str(tmp_path / named) in error.message and "internal error" not in error.message
    assert error.log == str(run_dir / "worker.log") and not error.resumable
    run = json.loads((run_dir / "run.json").read_text())
    assert run["status"] == "failed" and str(tmp_path / named) in run["error"]


@pytest.mark.parametrize("stdin, expected", [
    ("not json\n", "not JSON"),
    ('{"input": "a.mp4", "run_dir": "r", "window": 4, "overlap": 4}\n', "overlap (4) must be smaller than window (4)"),
    ('{"v": 7, "input": "a.mp4", "run_dir": "r"}\n', "protocol version 7"),
    ("", "not JSON"),
])
def test_invalid_job_is_an_error_event(tmp_path, stdin, expected):
    result = subprocess.run([*WORKER, "-"], input=stdin, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == EXIT_INVALID_JOB
    events = parse_stdout(result.stdout)
    assert len(events) == 1 and isinstance(events[0], ErrorEvent) and expected in events[0].message
    assert list(tmp_path.iterdir()) == []  # no run directory for a job that never started


@pytest.mark.parametrize("field", ["input", "run_dir", "synthetic_scene"])
def test_nul_byte_in_a_job_path_is_an_invalid_job(tmp_path, field):
    job = {"input": "a.mp4", "run_dir": "run", "backbone": "synthetic", "synthetic_scene": "gt"}
    job[field] = job[field] + "\0x"
    result = subprocess.run([*WORKER, "-"], input=json.dumps(job) + "\n", capture_output=True, text=True,
                            timeout=60, cwd=tmp_path)
    assert result.returncode == EXIT_INVALID_JOB, result.stderr
    events = parse_stdout(result.stdout)
    assert len(events) == 1 and isinstance(events[0], ErrorEvent), events
    assert f"{field}: " in events[0].message and "NUL byte" in events[0].message
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_bad_worker_arguments_are_an_error_event(tmp_path):
    result = subprocess.run([*WORKER, "a.json", "--bogus"], stdin=subprocess.DEVNULL, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == EXIT_INVALID_JOB
    events = parse_stdout(result.stdout)
    assert len(events) == 1 and isinstance(events[0], ErrorEvent) and "--bogus" in events[0].message


# A worker whose run() fails in ways the driver never should: main() still ends with one terminal event.
BROKEN_RUN = {
    "raises": "def run(job, emit, cancel, log_path):\n    raise RuntimeError('boom')\n",
    "exits": "def run(job, emit, cancel, log_path):\n    raise SystemExit(3)\n",
    "is silent": "def run(job, emit, cancel, log_path):\n    return 0\n",
    "ends twice": ("from laser_blender.protocol import ErrorEvent, Finished\n"
                   "def run(job, emit, cancel, log_path):\n"
                   "    emit(Finished(run_dir=job.run_dir, windows=0, frames=0, seconds=0.0))\n"
                   "    emit(ErrorEvent(message='a second terminal event'))\n"
                   "    raise RuntimeError('after the end')\n"),
}


@pytest.mark.parametrize("broken", BROKEN_RUN)
def test_any_failure_in_the_worker_ends_with_exactly_one_terminal_event(tmp_path, broken):
    code = (BROKEN_RUN[broken] + "import sys, laser_blender.worker as worker\n"
            "worker.run = run\nsys.exit(worker.main(['-']))\n")
    run_dir = tmp_path / "run"
    job = json.dumps({"input": "a.mp4", "run_dir": str(run_dir)})
    result = subprocess.run([sys.executable, "-c", code], input=job + "\n", capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == ExitCode.INTERNAL_ERROR, result.stderr
    events = parse_stdout(result.stdout)
    assert len(events) == 1, events
    if broken == "ends twice":
        assert isinstance(events[0], Finished)
        assert "not sending a second terminal event" in result.stderr
        return
    assert isinstance(events[0], ErrorEvent) and "internal error" in events[0].message
    assert events[0].log == str(run_dir / "worker.log") and str(run_dir / "worker.log") in events[0].message
    assert "Traceback" in (run_dir / "worker.log").read_text() or broken != "raises"


# --------------------------------------------------------------------------- network backbones

def test_missing_weights_tell_how_to_provide_them(clips, tmp_path):
    """pi3 with its default hub weights, offline and not cached: an error saying what to do."""
    run_dir = tmp_path / "run"
    job = make_job(clips, SHORT, run_dir).model_copy(
        update={"backbone": "pi3", "synthetic_scene": None, "device": "cpu"})
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    client = WorkerClient(job, env=env)
    client.start()
    events = drain(client)
    assert client.close() == EXIT_ERROR
    assert len(events) == 1 and isinstance(events[0], ErrorEvent), events
    message = events[0].message
    assert "'model.safetensors'" in message and "'yyfz233/Pi3'" in message
    assert "--weights" in message and "HF_HUB_OFFLINE" in message and "internal error" not in message
    assert json.loads((run_dir / "run.json").read_text())["status"] == "failed"


def test_pi3_run_states_the_weights_licence(clips, fixtures_dir, tmp_path):
    """A real (tiny) pi3 checkpoint through the worker: licence warning, then a normal run."""
    from test_adapter import write_tiny_checkpoint

    weights = write_tiny_checkpoint(fixtures_dir, "pi3", tmp_path / "pi3_tiny.safetensors")
    job = make_job(clips, SHORT, tmp_path / "run").model_copy(update={
        "backbone": "pi3", "synthetic_scene": None, "weights": str(weights), "device": "cpu", "max_frames": 6})
    client = WorkerClient(job)
    client.start()
    events = drain(client, timeout=300)
    assert client.close() == EXIT_OK, client.stderr_tail()
    warning, events = events[0], events[1:]
    assert warning.type == "warning" and "non-commercial" in warning.message and "VGGT-1B-Commercial" in warning.message
    # a tiny random network sees no ground: the completed run keeps the first camera and says so
    orientation, events = events[-2], events[:-2] + events[-1:]
    assert orientation.type == "warning" and "first camera (no credible ground plane" in orientation.message
    assert_events_in_order(events, 6)
    assert events[0].backbone == "pi3" and (events[0].pred_width, events[0].pred_height) == (574, 434)
    assert_complete_run(tmp_path / "run", 6)


def test_unwritable_run_directory_is_an_error_event(clips, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    job = make_job(clips, SHORT, blocker / "run")
    result = subprocess.run([*WORKER, "-"], input=encode(job) + "\n", capture_output=True, text=True, timeout=60)
    assert result.returncode == EXIT_ERROR, result.stderr
    events = parse_stdout(result.stdout)
    assert len(events) == 1 and isinstance(events[0], ErrorEvent)
    assert f"cannot write the run directory {blocker / 'run'}" in events[0].message
