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

Exit codes (:class:`laser_blender.outcome.ExitCode`): 0 finished; 1 internal error
and 2 a problem with the job or its input (an ``error`` event says why and run.json
is marked failed; an invalid job writes nothing); 130 cancelled (finished windows are
kept; ``--resume`` continues).

Every exit sends exactly one terminal event (``finished``, ``cancelled`` or ``error``)
first, whatever fails (bad arguments, an unreadable or invalid job, logging set-up,
a bug): nothing escapes :func:`main` without an ``error`` event, and a second
terminal event is never sent. Only ``--help`` exits without one.

The worker never imports bpy.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Callable, TextIO

from core.run.rundir import RunDir
from laser_blender.outcome import ExitCode
from laser_blender.protocol import Cancel, ErrorEvent, Job, Message, decode_control, encode, is_terminal, parse_job

log = logging.getLogger("laser_blender.worker")


class EventWriter:
    """Writes protocol lines, one flush per line, from any thread.

    When the reader is gone (broken pipe) it calls ``on_broken`` once and drops
    further lines. It sends at most one terminal event (``terminal_sent``); a second
    one is logged and dropped.
    """

    def __init__(self, stream: TextIO, on_broken: Callable[[], None]):
        self._stream = stream
        self._on_broken = on_broken
        self._lock = threading.Lock()
        self._broken = False
        self.terminal_sent = False

    def __call__(self, message: Message) -> None:
        terminal = is_terminal(message)
        with self._lock:
            if terminal and self.terminal_sent:
                log.warning("not sending a second terminal event: %s", message)
                return
            line = encode(message) + "\n"  # may raise (e.g. a path that is not UTF-8): nothing was sent
            if terminal:
                self.terminal_sent = True
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
    path = RunDir(run_dir).log_path
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


def run(job: Job, emit: Callable[[Message], None], cancel: threading.Event, log_path: Path | None) -> int:
    """Run ``job`` to its end, emitting protocol events; returns the exit code."""
    from laser_blender.driver import PROTOCOL_EVENTS, run_job, terminal_event

    outcome = run_job(job, lambda event: emit(PROTOCOL_EVENTS[type(event)](event, job)), cancel, log_path)
    log.info("%s: %d windows, %d frames in %.1f s", outcome.status, outcome.windows, outcome.frames,
             outcome.seconds)
    emit(terminal_event(outcome, job, log_path))
    return outcome.exit_code


def read_job_text(source: str, stdin: TextIO) -> str:
    """The job's JSON: the first line of stdin for ``-``, else the file's content."""
    if source == "-":
        return stdin.readline()
    try:
        return Path(source).read_text(encoding="utf-8")
    except OSError as e:
        raise ValueError(f"cannot read the job file {source}: {e.strerror}") from None


class _UsageError(Exception):
    """Bad command-line arguments (argparse's message)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # an error event instead of argparse's exit
        self.print_usage(sys.stderr)
        raise _UsageError(f"{self.prog}: {message}")


def _last_resort(message: str) -> None:
    """Write an error event straight to fd 1 when no event writer could be set up; never raises."""
    try:
        os.write(1, (encode(ErrorEvent(message=message)) + "\n").encode())
    except Exception:  # noqa: BLE001 - nowhere left to report it
        pass


def main(argv: list[str] | None = None) -> int:
    """Run the worker; every exit sends one terminal event first (see the module docstring)."""
    emit: EventWriter | None = None
    log_path: Path | None = None

    def fail(message: str, code: ExitCode) -> int:
        if emit is None:
            _last_resort(message)
        elif not emit.terminal_sent:
            try:
                emit(ErrorEvent(message=message, log=str(log_path) if log_path else None))
            except Exception:  # noqa: BLE001 - e.g. a message that cannot be encoded
                emit(ErrorEvent(message=ascii(message)[1:-1], log=ascii(str(log_path))[1:-1] if log_path else None))
        return code

    try:
        cancel = threading.Event()
        install_signal_handlers(cancel)
        emit = EventWriter(protocol_stdout(), on_broken=cancel.set)
        setup_logging(None)
        parser = _Parser(prog="python -m laser_blender.worker", description=__doc__.split("\n")[0])
        parser.add_argument("job", help="job JSON file, or - for the first line of stdin")
        parser.add_argument("--resume", action="store_true", help="continue the run directory's last run")
        try:
            args = parser.parse_args(argv)
        except _UsageError as e:
            log.error("%s", e)
            return fail(str(e), ExitCode.USER_ERROR)
        except SystemExit as e:  # --help (on stderr: stdout carries protocol lines only)
            return e.code or 0
        try:
            job = parse_job(read_job_text(args.job, sys.stdin))
        except ValueError as e:
            log.error("%s", e)
            return fail(str(e), ExitCode.USER_ERROR)
        if args.resume:
            job = job.model_copy(update={"resume": True})
        try:
            log_path = setup_logging(Path(job.run_dir))
        except (OSError, ValueError) as e:
            message = f"cannot write the run directory {job.run_dir}: {getattr(e, 'strerror', None) or e}"
            log.error("%s", message)
            return fail(message, ExitCode.USER_ERROR)
        watch_stdin(sys.stdin, cancel)
        log.info("job: %s", encode(job))
        code = run(job, emit, cancel, log_path)
        if not emit.terminal_sent:
            log.error("the run ended (exit code %s) without a terminal event", code)
            where = f"; see {log_path}" if log_path else ""
            return fail(f"internal error (a bug, please report it): the worker's run ended (exit code {code}) "
                        f"without saying how{where}", ExitCode.INTERNAL_ERROR)
        return code
    except SystemExit as e:  # sys.exit() deep in a library
        where = f"; see {log_path}" if log_path else ""
        return fail(f"internal error (a bug, please report it): the worker exited early (exit status {e.code}){where}",
                    ExitCode.INTERNAL_ERROR)
    except BaseException as e:  # noqa: BLE001 - every exit sends a final event
        try:
            log.exception("internal error")
        except Exception:  # noqa: BLE001
            pass
        where = f"; the traceback is in {log_path}" if log_path else "; the traceback is on the worker's stderr"
        return fail(f"internal error (a bug, please report it): {type(e).__name__}: {e}{where}",
                    ExitCode.INTERNAL_ERROR)


if __name__ == "__main__":
    sys.exit(main())
