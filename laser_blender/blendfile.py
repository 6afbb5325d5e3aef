""".blend files without a Blender install: the scene builder run through the bpy module.

* :func:`write_blend` builds a .blend from an existing run directory (complete or
  still growing: whatever windows are on disk).
* :func:`reconstruct_to_blend` runs a job through the worker subprocess, importing
  each window as it arrives (the add-on's path, minus the UI), and saves the .blend.

Both start from an empty scene, so a .blend holds exactly one run. ``bpy`` is imported
inside the functions.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
from pathlib import Path

from core.run.files import output_file
from laser_blender.client import WorkerClient
from laser_blender.protocol import Job
from laser_blender.scene import SceneOptions, import_run
from laser_blender.session import ImportSession, Reporter, SessionState, log_report


def empty_scene():
    """Reset the bpy session to factory settings with nothing in it; returns its scene."""
    import bpy

    bpy.ops.wm.read_factory_settings(use_empty=True)
    return bpy.context.scene


@contextlib.contextmanager
def stdout_to_stderr():
    """Blender's C code prints reports on fd 1; keep stdout for the commands' results."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def save_blend(blend_path: str | Path) -> Path:
    """Save the current Blender data to ``blend_path`` (parents created); returns the absolute path."""
    import bpy

    path = output_file(blend_path)
    with stdout_to_stderr():
        bpy.ops.wm.save_as_mainfile(filepath=str(path), check_existing=False)
    return path


def write_blend(run_dir: str | Path, blend_path: str | Path, options: SceneOptions | None = None,
                **option_fields) -> Path:
    """Build ``blend_path`` from the run directory ``run_dir``; returns the .blend's path.

    ``option_fields`` override fields of :class:`~laser_blender.scene.SceneOptions`
    (``point_budget=...``, ``conf_percentile=...``, ...).

    Raises:
        core.run.files.RunDirError: ``run_dir`` is not a run directory (or lacks meta.json).
    """
    options = dataclasses.replace(options or SceneOptions(), **option_fields)
    output_file(blend_path)  # fail before the import, not after
    import_run(empty_scene(), Path(run_dir), options)
    return save_blend(blend_path)


def reconstruct_to_blend(job: Job, blend_path: str | Path, python: str, options: SceneOptions | None = None,
                         report: Reporter = log_report) -> tuple[SessionState, Path | None]:
    """Run ``job`` in a worker (``python``), stream its windows into a scene, save ``blend_path``.

    The .blend is saved whatever the outcome once the run has started: after an error
    or a cancel it holds every window finished before.

    Returns:
        (the session's final state, the .blend's path or None when the run never started).
    """
    session = ImportSession(empty_scene(), WorkerClient(job, python=python), options, report)
    try:
        session.start()
        state = session.run_to_end()
    finally:
        session.close()
    return state, save_blend(blend_path) if session.run is not None else None


def add_scene_arguments(parser: argparse.ArgumentParser) -> None:
    """Scene-building options shared with the headless batch entry."""
    d = SceneOptions()
    g = parser.add_argument_group("scene")
    g.add_argument("--point-budget", type=int, default=d.point_budget,
                   help=f"most points imported for the whole shot (default {d.point_budget:,})")
    g.add_argument("--conf-percentile", type=float, default=d.conf_percentile, metavar="P",
                   help="drop the P%% least confident pixels of each window (default 0)")
    g.add_argument("--sensor-width", type=float, default=d.sensor_width, metavar="MM",
                   help=f"camera sensor width in mm; the lens follows from it (default {d.sensor_width:g})")
    g.add_argument("--current-frame-only", action="store_true",
                   help="show only the current frame's points (dynamic scenes)")


def scene_options(args: argparse.Namespace) -> SceneOptions:
    """The :class:`SceneOptions` of arguments added by :func:`add_scene_arguments`."""
    return SceneOptions(point_budget=args.point_budget, conf_percentile=args.conf_percentile,
                        sensor_width=args.sensor_width, current_frame_only=args.current_frame_only)
