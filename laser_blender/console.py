"""Terminal plumbing shared by the CLI commands: progress bar, Ctrl-C, user-facing errors, the run's summary."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Callable, Iterator

from tqdm import tqdm

from core import events
from core.run.rundir import RunDir
from laser_blender.outcome import ExitCode


def fail(message: str, code: ExitCode = ExitCode.USER_ERROR) -> int:
    """Print ``laser-blender: error: message`` on stderr; returns ``code``."""
    print(f"laser-blender: error: {message}", file=sys.stderr)
    return code


def print_solve(run_dir: str | Path) -> None:
    """``laser-blender: Solve error: 0.23 px (...)`` on stderr when the run has a camera solve (solve.json); when
    the solve was left to the default and the footage was too small for it, says so."""
    run = RunDir(Path(run_dir))
    report = run.read_solve()
    if report is not None:
        print(f"laser-blender: {report.summary()}", file=sys.stderr)
        return
    manifest = run.read_manifest()
    source = manifest.source
    why = manifest.settings.why_no_solve(None if source.width is None else (source.width, source.height))
    if why:
        print(f"laser-blender: {why}", file=sys.stderr)


@contextlib.contextmanager
def graceful_interrupt() -> Iterator[threading.Event]:
    """First Ctrl-C sets the yielded event (finish the current window); a second one exits at once, quietly.

    The second exits with code 130 without a traceback; finished windows are on disk
    (every file is written atomically) and ``--resume`` continues.
    """
    cancel = threading.Event()

    def handler(signum, frame):
        if cancel.is_set():
            print("\nlaser-blender: aborted; finished windows are kept (`--resume` continues)",
                  file=sys.stderr, flush=True)
            os._exit(ExitCode.CANCELLED)
        cancel.set()
        print("\nlaser-blender: cancelling after the current window (Ctrl-C again to abort)",
              file=sys.stderr, flush=True)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield cancel
    finally:
        for s, h in previous.items():
            # Once cancelling, a further Ctrl-C (even after the run has ended) still exits quietly with 130.
            signal.signal(s, handler if cancel.is_set() else h)


@contextlib.contextmanager
def progress_bar(desc: str) -> Iterator[Callable[[events.Event], None]]:
    """An event sink that drives a tqdm bar (frames, frames/s, ETA) on stderr."""
    bar = tqdm(desc=desc, unit="frame", dynamic_ncols=True, file=sys.stderr, disable=None)

    def on_event(event: events.Event) -> None:
        if isinstance(event, events.Started):
            bar.reset(total=event.total_frames)
            bar.set_postfix_str(f"{event.width}x{event.height} -> {event.pred_width}x{event.pred_height}")
        elif isinstance(event, events.Progress):
            bar.update(event.frames_done - bar.n)
        elif isinstance(event, events.Predicting):
            bar.set_postfix_str(f"predicting window {event.index} (frames {event.first_frame}-{event.last_frame})")
        elif isinstance(event, events.WindowDone):
            bar.set_postfix_str(f"window {event.index} registered")
        elif isinstance(event, events.Notice):
            bar.write(f"laser-blender: warning: {event.message}", file=sys.stderr)

    try:
        yield on_event
    finally:
        bar.close()
