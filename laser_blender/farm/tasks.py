"""What runs on a Ray worker: one whole shot, or one window's prediction.

Plain functions: :mod:`.run` and :mod:`.split` submit them with ``ray.remote(...).options(...)``.
A worker process serves many tasks, so the backbone it loads is kept for the next window
of the same shot (one backbone per process, bounding memory).
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import numpy as np

from core.run.arrays import WindowPrediction
from core.run.manifest import InputGeometry, RunStatus
from core.run.rundir import RunDir
from laser_blender.farm.report import ShotResult, ShotStatus, frames_on_disk, shot_result
from laser_blender.protocol import Job

CANCEL_POLL_S = 0.2
_loaded: dict[tuple, object] = {}


def continue_or_start(job: Job) -> Job:
    """The job with resume semantics of a re-run: a run with finished windows continues from
    its last one; a run directory holding only an unfinished start (no window) starts again.

    Applied by every attempt of a shot, so a retry after a killed worker continues too.
    ``overwrite`` is left as the user gave it.
    """
    if job.overwrite:
        return job
    run = RunDir(job.run_dir)
    has_windows = bool(run.aligned_windows())
    return job.model_copy(update={"resume": has_windows, "overwrite": run.holds_run() and not has_windows})


def _watch_cancel(flag: Path, cancel: threading.Event, done: threading.Event) -> None:
    while not done.wait(CANCEL_POLL_S):
        if flag.exists():
            cancel.set()
            return


def run_shot(name: str, job: Job, cancel_flag: str, blend_path: str | None) -> ShotResult:
    """The farm's per-shot task: :func:`run_one` in this worker, cancelled by a flag file.

    ``cancel_flag`` is a file on the shared filesystem: once it exists the shot stops after
    its current window and its run is marked cancelled (a shot not started yet does not start).
    """
    flag = Path(cancel_flag)
    if flag.exists():
        return shot_result(name, job.input, RunDir(job.run_dir), ShotStatus.cancelled, 0.0)
    cancel, done = threading.Event(), threading.Event()
    watcher = threading.Thread(target=_watch_cancel, args=(flag, cancel, done), daemon=True)
    watcher.start()
    try:
        return run_one(name, job, cancel, blend_path)
    finally:
        done.set()


def run_one(name: str, job: Job, cancel: threading.Event, blend_path: str | None, **driver_options) -> ShotResult:
    """Run one shot's job with the re-run semantics of :func:`continue_or_start`; never raises for a failed shot.

    With ``blend_path`` a complete run is also built into that .blend. ``driver_options`` go
    to :func:`laser_blender.driver.run_job` (``--split-windows`` passes its backbone and predictor).
    """
    from laser_blender.driver import run_job

    run = RunDir(job.run_dir)
    job = continue_or_start(job)
    frames_before = frames_on_disk(run)
    handler = _log_to(run.log_path)
    t0 = time.perf_counter()
    try:
        outcome = run_job(job, cancel=cancel, log_path=run.log_path, **driver_options)
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    status = {RunStatus.complete: ShotStatus.complete, RunStatus.cancelled: ShotStatus.cancelled}.get(
        outcome.status, ShotStatus.failed)
    blend, error = None, outcome.error
    if blend_path and status == ShotStatus.complete:
        blend, error = _build_blend(run, Path(blend_path))
        status = ShotStatus.failed if error else status
    return shot_result(name, job.input, run, status, time.perf_counter() - t0, frames_before, error, blend)


def _log_to(path: Path) -> logging.Handler:
    """Log this shot's warnings and errors (an internal error's traceback) to the run's ``worker.log``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    return handler


def _build_blend(run: RunDir, blend_path: Path) -> tuple[str | None, str | None]:
    """Build the .blend of a complete run: (its path, None) or (None, the error)."""
    from core.errors import USER_ERRORS
    from laser_blender.blendfile import write_blend

    try:
        return str(write_blend(run.root, blend_path)), None
    except USER_ERRORS as e:
        return None, f"the run is complete but its .blend failed: {e}"


def _backbone(job: Job):
    """The job's backbone, loaded once per worker process (the last one loaded is kept)."""
    from laser_blender.driver import load_job_backbone

    key = (job.backbone, job.weights, job.synthetic_scene, job.device, job.dtype)
    if key not in _loaded:
        _loaded.clear()
        _loaded[key] = load_job_backbone(job)
    return _loaded[key]


def describe_backbone(job: Job, footage: tuple[int, int]) -> tuple[str, InputGeometry]:
    """(licence notice, input geometry for footage of size (W, H)) of the job's backbone."""
    backbone = _backbone(job)
    return backbone.licence, backbone.input_geometry(footage)


def predict_window(job: Job, images: np.ndarray, frames: np.ndarray) -> WindowPrediction:
    """One window's prediction: ``images`` (N, h, w, 3) uint8 at the input geometry, ``frames`` (N,) int64."""
    return _backbone(job).predict(images, frames)
