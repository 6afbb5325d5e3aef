"""The farm's driver: connect to Ray, run every shot, follow progress, cancel, report.

Without ``--split-windows`` each shot is one Ray task (:func:`.tasks.run_shot`) writing its
run directory on the shared filesystem; this process follows their ``run.json`` files for
progress. With it, shots run one after another here, each one's windows predicted by
several workers (:mod:`.split`) and registered in this process.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import ray
from pydantic import ValidationError

from core import events
from core.run.files import RunDirError
from core.run.manifest import RunStatus
from core.run.rundir import RunDir
from laser_blender.commands._options import option_error
from laser_blender.farm import tasks
from laser_blender.farm.report import FarmReport, ProgressBoard, ShotResult, ShotStatus, shot_result, write_report
from laser_blender.farm.shots import Shot, ShotListError
from laser_blender.farm.split import MAX_RETRIES, RemoteBackbone, parallel_predictor
from laser_blender.protocol import Job

CANCEL_FLAG = "farm.cancel"
"""``OUT/farm.cancel``: while it exists, shot tasks stop after their current window."""
POLL_S = 0.5


def connect(address: str | None) -> None:
    """Join the Ray cluster at ``address`` (``auto``, ``HOST:PORT``, ``ray://HOST:PORT``), or start one here.

    Ray's usage statistics stay off unless ``RAY_USAGE_STATS_ENABLED`` says otherwise.

    Raises:
        ConnectionError: no cluster answers at ``address``.
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if ray.is_initialized():
        return
    options: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False}
    if address is None:
        options["include_dashboard"] = False
    try:
        ray.init(address=address, **options)
    except ConnectionError as e:
        raise ConnectionError(f"--address {address}: {e}; is `ray start --head` running there? A cluster "
                              "with token authentication needs RAY_AUTH_MODE=token (and its token) here too") from None


def task_resources(job: Job) -> dict[str, Any]:
    """What one shot's (or one window's) task needs: a GPU when its network runs on CUDA, else a CPU.

    A network with ``--device auto`` takes a GPU when the cluster has any.
    """
    if job.backbone == "synthetic" or job.device == "cpu":
        return {"num_cpus": 1}
    if job.device.startswith("cuda") or ray.cluster_resources().get("GPU", 0) > 0:
        return {"num_cpus": 1, "num_gpus": 1}
    return {"num_cpus": 1}


def default_window_workers(job: Job) -> int:
    """Windows predicted at once with ``--split-windows``: the cluster's GPUs (or CPUs, for CPU backbones)."""
    kind = "GPU" if "num_gpus" in task_resources(job) else "CPU"
    return max(1, int(ray.cluster_resources().get(kind, 1)))


def idle_gpus_for_one_shot(shots: list[Shot], jobs: dict[str, Job]) -> bool:
    """True when a single shot is left to run on GPUs and the cluster has more than one free:
    one task per shot would leave the others idle, so its windows are split over them."""
    if len(shots) != 1 or "num_gpus" not in task_resources(jobs[shots[0].name]):
        return False
    return ray.available_resources().get("GPU", 0) >= 2


def shot_jobs(shots: list[Shot], base: Job, out: Path) -> dict[str, Job]:
    """Each shot's job (the command's options with the shot's own) into ``out/<shot>``."""
    jobs = {}
    for shot in shots:
        try:
            jobs[shot.name] = shot.job(base, out)
        except ValidationError as e:
            raise ShotListError(f"shot {shot.name} ({shot.input}): {option_error(e)}") from None
    return jobs


def _already_complete(job: Job) -> bool:
    run = RunDir(job.run_dir)
    try:
        return not job.overwrite and run.is_run() and run.read_manifest().status == RunStatus.complete
    except RunDirError:
        return False


def run_farm(shots: list[Shot], base: Job, out: Path, *, address: str | None = None, split_windows: bool = False,
             window_workers: int | None = None, blend: bool = False,
             cancel: threading.Event | None = None) -> FarmReport:
    """Run every shot into ``out/<shot>`` (and ``out/<shot>.blend`` with ``blend``); write ``out/farm.json``.

    ``split_windows`` is turned on when one shot is left and the cluster has idle GPUs
    (:func:`idle_gpus_for_one_shot`). Complete runs are skipped; partial ones continue
    from their last window. A shot that fails fails alone (its message is in the report).
    Setting ``cancel`` stops every shot after its current window, its run marked cancelled.

    Raises:
        ShotListError: a shot's own options contradict the command's.
        ConnectionError: no Ray cluster at ``address``.
    """
    t0 = time.perf_counter()
    cancel = cancel or threading.Event()
    jobs = shot_jobs(shots, base, out)
    out.mkdir(parents=True, exist_ok=True)
    flag = out / CANCEL_FLAG
    flag.unlink(missing_ok=True)
    board = ProgressBoard([shot.name for shot in shots])
    results: dict[str, ShotResult] = {}
    todo = []
    for shot in shots:
        job = jobs[shot.name]
        if _already_complete(job):
            results[shot.name] = shot_result(shot.name, job.input, RunDir(job.run_dir), ShotStatus.skipped, 0.0)
            board.finish(results[shot.name])
        else:
            todo.append(shot)
    if todo:
        connect(address)
        split_windows = split_windows or idle_gpus_for_one_shot(todo, jobs)
        blends = {shot.name: str((out / f"{shot.name}.blend").absolute()) if blend else None for shot in todo}
        run = _run_split if split_windows else _run_tasks
        run(todo, jobs, blends, results, board, cancel, flag, window_workers)
    flag.unlink(missing_ok=True)
    report = FarmReport(address=address, split_windows=split_windows, seconds=round(time.perf_counter() - t0, 3),
                        shots=[results[shot.name] for shot in shots])
    write_report(out, report)
    return report


def _run_tasks(shots: list[Shot], jobs: dict[str, Job], blends: dict[str, str | None],
               results: dict[str, ShotResult], board: ProgressBoard, cancel: threading.Event, flag: Path,
               window_workers: int | None) -> None:
    """One Ray task per shot, as many at once as the cluster holds; progress read from their run.json."""
    refs = {}
    for shot in shots:
        job = jobs[shot.name]
        task = ray.remote(tasks.run_shot).options(**task_resources(job), max_retries=MAX_RETRIES,
                                                  name=f"laser-blender shot {shot.name}")
        refs[task.remote(shot.name, job, str(flag.absolute()), blends[shot.name])] = shot
    while refs:
        if cancel.is_set() and not flag.exists():
            flag.touch()
        done, _ = ray.wait(list(refs), num_returns=len(refs), timeout=POLL_S)
        for ref in done:
            shot = refs.pop(ref)
            job = jobs[shot.name]
            try:
                result = ray.get(ref)
            except ray.exceptions.RayError as e:  # the worker died on every attempt, or the cluster went away
                result = shot_result(shot.name, job.input, RunDir(job.run_dir), ShotStatus.failed, 0.0,
                                     error=f"the shot's task failed: {type(e).__name__}: {e}".splitlines()[0])
            results[shot.name] = result
            board.finish(result)
        for shot in refs.values():
            _report_progress(board, shot.name, RunDir(jobs[shot.name].run_dir))


def _report_progress(board: ProgressBoard, name: str, run: RunDir) -> None:
    try:
        manifest = run.read_manifest() if run.is_run() else None
    except RunDirError:
        return
    if manifest is not None and manifest.status == RunStatus.running:
        board.update(name, manifest.frames_done, manifest.source.num_frames)


def _run_split(shots: list[Shot], jobs: dict[str, Job], blends: dict[str, str | None],
               results: dict[str, ShotResult], board: ProgressBoard, cancel: threading.Event, flag: Path,
               window_workers: int | None) -> None:
    """Shots one after another, each one's windows predicted by several workers and registered here."""
    for shot in shots:
        job = jobs[shot.name]
        if cancel.is_set():
            result = shot_result(shot.name, job.input, RunDir(job.run_dir), ShotStatus.cancelled, 0.0)
        else:
            backbone = RemoteBackbone(job, task_resources(job))
            workers = window_workers or default_window_workers(job)

            def on_event(event: events.Event, name: str = shot.name) -> None:
                if isinstance(event, events.Progress):
                    board.update(name, event.frames_done, event.total_frames)

            result = tasks.run_one(shot.name, job, cancel, blends[shot.name], on_event=on_event,
                                   load_backbone=lambda _: backbone,
                                   predictor=parallel_predictor(backbone, workers))
        results[shot.name] = result
        board.finish(result)
