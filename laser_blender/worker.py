"""The engine's worker process: runs one job, speaks the line protocol on stdout.

Usage::

    python -m laser_blender.worker JOB.json [--resume]   # job from a file
    python -m laser_blender.worker - [--resume]          # job as the first line of stdin

stdout carries only protocol lines (see :mod:`laser_blender.protocol`), one per
event, flushed as they happen; anything else the process prints goes to stderr.
Logs go to stderr and to ``RUN/worker.log`` (appended across resumes).

Cancel: SIGTERM, SIGINT, or a ``cancel`` line on stdin. The window being
registered is finished, the one being predicted is dropped, run.json is marked
cancelled and a ``cancelled`` event is sent; ``--resume`` continues later. If
the reader of stdout goes away, the worker cancels itself the same way.

Exit codes:
    0    finished: the run is complete.
    1    error: an ``error`` event says why; run.json is marked failed.
    2    the job itself is invalid (bad JSON or settings); an ``error`` event says why.
    130  cancelled: finished windows are kept; ``--resume`` continues.

The worker never imports bpy.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, TextIO

from laser_blender.protocol import (
    Cancel, Cancelled, ErrorEvent, Finished, Job, Predicting, Progress, Started, WarningEvent, WindowDone,
    Message, decode_control, encode, parse_job,
)

EXIT_OK, EXIT_ERROR, EXIT_INVALID_JOB, EXIT_CANCELLED = 0, 1, 2, 130
LOG_NAME = "worker.log"

log = logging.getLogger("laser_blender.worker")


class EventWriter:
    """Writes protocol lines, one flush per line, from any thread.

    When the reader is gone (broken pipe) it calls ``on_broken`` once and drops
    further lines.
    """

    def __init__(self, stream: TextIO, on_broken: Callable[[], None]):
        self._stream = stream
        self._on_broken = on_broken
        self._lock = threading.Lock()
        self._broken = False

    def __call__(self, message: Message) -> None:
        line = encode(message) + "\n"
        with self._lock:
            if self._broken:
                return
            try:
                self._stream.write(line)
                self._stream.flush()
            except (BrokenPipeError, OSError, ValueError) as e:
                self._broken = True
                log.warning("lost the reader of stdout (%s); cancelling after the current window", e)
                self._on_broken()


def protocol_stdout() -> TextIO:
    """A private stream on the real stdout; fd 1 and ``sys.stdout`` then point at stderr.

    Whatever a library prints (even from C) can then never corrupt the protocol.
    """
    fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(fd, "w", encoding="utf-8", newline="\n")


def setup_logging(run_dir: Path | None) -> Path | None:
    """Log to stderr, and to ``run_dir/worker.log`` when a run directory is known."""
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(fmt)
        root.addHandler(handler)
    if run_dir is None:
        return None
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOG_NAME
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(fmt)
    root.addHandler(handler)
    return path


def watch_stdin(stdin: TextIO, cancel: threading.Event) -> threading.Thread:
    """Read control lines from stdin in a daemon thread; ``cancel`` sets the event."""
    def read() -> None:
        for line in stdin:
            message = decode_control(line)
            if isinstance(message, Cancel):
                log.info("cancel requested on stdin; stopping after the current window")
                cancel.set()
            else:
                log.warning("ignored a control line: %s", message.reason)

    thread = threading.Thread(target=read, name="laser-worker-stdin", daemon=True)
    thread.start()
    return thread


def install_signal_handlers(cancel: threading.Event) -> None:
    """SIGTERM and SIGINT set ``cancel`` (the current window still finishes)."""
    def handler(signum: int, frame: Any) -> None:
        log.info("%s received; stopping after the current window", signal.Signals(signum).name)
        cancel.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)


def mark_failed(run_dir: Path, message: str) -> None:
    """Record a failure in ``run_dir/run.json``, creating it if the engine never started."""
    from core.rundir import read_json, write_json

    path = run_dir / "run.json"
    data = read_json(path) if path.exists() else {"windows_done": 0, "frames_done": 0}
    data.update(status="failed", error=message, finished_at=time.time())
    write_json(path, data)


def user_message(error: BaseException, log_path: Path | None) -> str:
    """What to tell the user: the message of errors meant for users, else an internal-error note."""
    from laser_blender.console import user_errors

    where = f" (details in {log_path})" if log_path else ""
    if isinstance(error, user_errors()):
        return f"{error}{where}"
    return f"internal error: {type(error).__name__}: {error}{where}"


def run(job: Job, emit: Callable[[Message], None], cancel: threading.Event, log_path: Path | None) -> int:
    """Run ``job`` to its end, emitting protocol events; returns the exit code."""
    from core import events
    from core.engine import reconstruct
    from core.rundir import list_windows, read_json
    from laser_blender.job import build_pipeline

    run_dir = Path(job.run_dir)
    windows_before = len(list_windows(run_dir / "aligned")) if job.resume else 0
    t0 = time.perf_counter()
    try:
        source, backbone, config, info = build_pipeline(job)
        notice = getattr(backbone, "licence", "")
        if notice:
            emit(WarningEvent(message=notice))

        def on_event(event: events.Event) -> None:
            if isinstance(event, events.Started):
                emit(Started(run_dir=str(run_dir), total_frames=event.total_frames, fps=event.fps,
                             width=event.width, height=event.height, pred_width=event.pred_width,
                             pred_height=event.pred_height, backbone=job.backbone,
                             windows_done=windows_before))
            elif isinstance(event, events.Predicting):
                emit(Predicting(index=event.index, first_frame=event.first_frame, last_frame=event.last_frame))
            elif isinstance(event, events.WindowDone):
                emit(WindowDone(index=event.index, frames=list(event.frames), path=str(event.path)))
            elif isinstance(event, events.Progress):
                emit(Progress(frames_done=event.frames_done, total_frames=event.total_frames,
                              fps=event.fps, eta_s=event.eta_s))
            elif isinstance(event, events.Warning):
                log.warning("%s", event.message)
                emit(WarningEvent(message=event.message))

        status = reconstruct(source, backbone, run_dir, config, on_event=on_event, cancel=cancel,
                             resume=job.resume, run_info=info)
    except Exception as e:
        log.exception("run failed")
        message = user_message(e, log_path)
        try:
            mark_failed(run_dir, message)
        except OSError as write_error:
            log.error("could not mark %s failed: %s", run_dir / "run.json", write_error)
        emit(ErrorEvent(message=message, log=str(log_path) if log_path else None,
                        resumable=len(list_windows(run_dir / "aligned")) > 0))
        return EXIT_ERROR
    done = read_json(run_dir / "run.json")
    windows, frames = int(done.get("windows_done", 0)), int(done.get("frames_done", 0))
    if status == "cancelled":
        log.info("cancelled after %d windows (%d frames); --resume continues", windows, frames)
        emit(Cancelled(run_dir=str(run_dir), windows=windows, frames=frames))
        return EXIT_CANCELLED
    log.info("complete: %d windows, %d frames in %.1f s", windows, frames, time.perf_counter() - t0)
    emit(Finished(run_dir=str(run_dir), windows=windows, frames=frames, seconds=time.perf_counter() - t0))
    return EXIT_OK


def read_job_text(source: str, stdin: TextIO) -> str:
    """The job's JSON: the first line of stdin for ``-``, else the file's content."""
    if source == "-":
        return stdin.readline()
    try:
        return Path(source).read_text(encoding="utf-8")
    except OSError as e:
        raise ValueError(f"cannot read the job file {source}: {e.strerror}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m laser_blender.worker", description=__doc__.split("\n")[0])
    parser.add_argument("job", help="job JSON file, or - for the first line of stdin")
    parser.add_argument("--resume", action="store_true", help="continue the run directory's last run")
    args = parser.parse_args(argv)

    cancel = threading.Event()
    install_signal_handlers(cancel)
    emit = EventWriter(protocol_stdout(), on_broken=cancel.set)
    setup_logging(None)
    try:
        job = parse_job(read_job_text(args.job, sys.stdin))
    except ValueError as e:
        log.error("%s", e)
        emit(ErrorEvent(message=str(e)))
        return EXIT_INVALID_JOB
    if args.resume:
        job = job.model_copy(update={"resume": True})
    try:
        log_path = setup_logging(Path(job.run_dir))
    except OSError as e:
        message = f"cannot write the run directory {job.run_dir}: {e.strerror or e}"
        log.error("%s", message)
        emit(ErrorEvent(message=message))
        return EXIT_ERROR
    watch_stdin(sys.stdin, cancel)
    log.info("job: %s", encode(job))
    return run(job, emit, cancel, log_path)


if __name__ == "__main__":
    sys.exit(main())
