"""Run one job: the single driver behind ``laser-blender reconstruct`` and the worker process.

:func:`run_job` opens the footage, loads the backbone, streams the engine and
returns an :class:`~laser_blender.outcome.Outcome`; the CLI shows it with a progress
bar, the worker as protocol events (:data:`PROTOCOL_EVENTS` translates the engine's
events). Errors are sorted once: a :class:`core.errors.UserError` (or an OS error
such as a full disk or an unwritable path) is the user's to fix and its message is
shown as it is; anything else is an internal error, logged with its traceback.

The engine is imported lazily, so this module imports without torch.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from core import events
from core.errors import USER_ERRORS
from core.run.files import RunDirError, RunDirRefused
from core.run.manifest import RunStatus
from core.run.rundir import RunDir, mark_failed
from laser_blender import protocol
from laser_blender.outcome import Outcome
from laser_blender.protocol import Job

if TYPE_CHECKING:
    from core.backbones.base import Backbone
    from core.engine import Predictor
    from core.frames import FrameSource
    from core.run.settings import EngineSettings

log = logging.getLogger(__name__)

EngineEventSink = Callable[[events.Event], None]


def describe_error(error: BaseException, log_path: Path | None) -> str:
    """One line for the user: a user error's own message, else an internal-error note naming the log."""
    if isinstance(error, USER_ERRORS):
        return str(error)
    where = f"; the traceback is in {log_path}" if log_path else "; run with -v for the traceback"
    return f"internal error (a bug, please report it): {type(error).__name__}: {error}{where}"


def load_job_backbone(job: Job) -> "Backbone":
    """The backbone the job names, with its weights loaded."""
    if job.backbone == "synthetic":
        from core.synthetic import load_synthetic_backbone

        return load_synthetic_backbone(job.synthetic_scene)
    from core.backbones.adapter import load_backbone

    return load_backbone(job.backbone, job.weights, job.device, job.dtype)


def build_pipeline(job: Job, load_backbone: Callable[[Job], "Backbone"] = load_job_backbone,
                   ) -> tuple["FrameSource", "Backbone", "EngineSettings"]:
    """Open the footage, load the backbone (``load_backbone``), configure the engine.

    The footage is opened first, so a bad input path fails before a slow model load.

    Raises:
        core.errors.UserError: unreadable footage, missing or unreadable weights, no such device.
    """
    from core.frames import open_source

    source = open_source(job.input, start=job.start, stride=job.stride, max_frames=job.max_frames)
    backbone = load_backbone(job)
    return source, backbone, job.engine_settings(source.info.width)


class _Counts:
    """Windows and frames on disk, followed from the engine's events."""

    def __init__(self) -> None:
        self.windows = self.frames = 0

    def __call__(self, event: events.Event) -> None:
        if isinstance(event, events.Started):
            self.windows, self.frames = event.windows_done, event.frames_done
        elif isinstance(event, events.WindowDone):
            self.windows = event.index + 1
        elif isinstance(event, events.Progress):
            self.frames = event.frames_done


def run_job(job: Job, on_event: EngineEventSink | None = None, cancel: threading.Event | None = None,
            log_path: Path | None = None, load_backbone: Callable[[Job], "Backbone"] = load_job_backbone,
            predictor: "Predictor | None" = None) -> Outcome:
    """Run ``job`` to its end; never raises for a failed run (the outcome says why).

    Args:
        on_event: receives the engine's events (licence notice, started, predicting,
            window done, progress), from the engine's threads, one at a time.
        cancel: set it to stop after the current window.
        log_path: where the traceback of an internal error is logged (named in the message).
        load_backbone, predictor: how the backbone is loaded and how windows are predicted
            (default: in this process, one window at a time; the farm's ``--split-windows``
            spreads them over Ray workers).
    """
    from core.engine import reconstruct

    run = RunDir(job.run_dir)
    counts = _Counts()

    def sink(event: events.Event) -> None:
        counts(event)
        if on_event is not None:
            on_event(event)

    t0 = time.perf_counter()
    try:
        source, backbone, settings = build_pipeline(job, load_backbone)
        status = reconstruct(source, backbone, run.root, settings, on_event=sink, cancel=cancel,
                             resume=job.resume, overwrite=job.overwrite, job=job.model_dump(mode="json"),
                             predictor=predictor)
        if status == RunStatus.complete:
            orient_completed_run(run, sink)
    except Exception as e:  # noqa: BLE001 - every failure becomes an outcome
        user_error = isinstance(e, USER_ERRORS)
        if user_error:
            log.info("%s", e)  # the front end shows it; the worker's log keeps it
        else:
            log.exception("internal error")
        message = describe_error(e, log_path)
        if not isinstance(e, RunDirRefused):  # a refused run directory holds another run: leave it as it is
            try:
                mark_failed(run, message)
            except (OSError, RunDirError) as write_error:
                log.error("could not mark %s failed: %s", run.manifest_path, write_error)
        resumable = not isinstance(e, RunDirRefused) and bool(run.aligned_windows())
        return Outcome(RunStatus.failed, counts.windows, counts.frames, time.perf_counter() - t0, error=message,
                       internal=not user_error, resumable=resumable)
    return Outcome(status, counts.windows, counts.frames, time.perf_counter() - t0,
                   resumable=status == RunStatus.cancelled)


def orient_completed_run(run: RunDir, on_event: EngineEventSink | None = None) -> None:
    """Write a completed run's automatic orientation (``scene.json``); a fall-back to the
    first camera is announced as a notice. The run stays complete if this fails (logged)."""
    from laser_blender.orient import describe, orient_new_run

    try:
        transform = orient_new_run(run.root)
    except (RunDirError, OSError, ValueError) as e:
        log.error("could not orient %s: %s", run.root, e)
        return
    log.info("%s", describe(transform))
    if transform.method.startswith("first camera") and on_event is not None:
        on_event(events.Notice(describe(transform)))


# --------------------------------------------------------------------------- protocol translation

def _started(event: events.Started, job: Job) -> protocol.Started:
    return protocol.Started(run_dir=job.run_dir, total_frames=event.total_frames, fps=event.fps, width=event.width,
                            height=event.height, pred_width=event.pred_width, pred_height=event.pred_height,
                            backbone=job.backbone, windows_done=event.windows_done)


PROTOCOL_EVENTS: dict[type, Callable[[Any, Job], protocol.Message]] = {
    events.Notice: lambda e, job: protocol.WarningEvent(message=e.message),
    events.Started: _started,
    events.Predicting: lambda e, job: protocol.Predicting(index=e.index, first_frame=e.first_frame,
                                                          last_frame=e.last_frame),
    events.WindowDone: lambda e, job: protocol.WindowDone(index=e.index, frames=list(e.frames), path=str(e.path)),
    events.Progress: lambda e, job: protocol.Progress(frames_done=e.frames_done, total_frames=e.total_frames,
                                                      fps=e.fps, eta_s=e.eta_s),
}
"""Engine event type -> the protocol event the worker sends for it."""


def terminal_event(outcome: Outcome, job: Job, log_path: Path | None) -> protocol.Message:
    """The one event that ends the worker's stream for ``outcome``."""
    if outcome.status == RunStatus.complete:
        return protocol.Finished(run_dir=job.run_dir, windows=outcome.windows, frames=outcome.frames,
                                 seconds=outcome.seconds)
    if outcome.status == RunStatus.cancelled:
        return protocol.Cancelled(run_dir=job.run_dir, windows=outcome.windows, frames=outcome.frames)
    return protocol.ErrorEvent(message=outcome.error or "failed", log=str(log_path) if log_path else None,
                               resumable=outcome.resumable)
