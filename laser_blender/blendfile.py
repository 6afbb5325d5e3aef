""".blend files without a Blender install: the scene builder run through the bpy module.

* :func:`write_blend` builds a .blend from an existing run directory (complete or
  still growing: whatever windows are on disk).
* :func:`reconstruct_to_blend` runs a job through the worker subprocess, importing
  each window as it arrives (the add-on's path, minus the UI), and saves the .blend.

Both start from an empty scene, so a .blend holds exactly one run. ``bpy`` is imported
inside the functions.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
from pathlib import Path

from laser_blender.client import WorkerClient
from laser_blender.protocol import Job
from laser_blender.scene import SceneOptions, import_run
from laser_blender.session import ImportSession, Reporter, SessionState, log_report


def _empty_scene():
    import bpy

    bpy.ops.wm.read_factory_settings(use_empty=True)
    return bpy.context.scene


@contextlib.contextmanager
def _stdout_to_stderr():
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

    path = Path(blend_path).absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    with _stdout_to_stderr():
        bpy.ops.wm.save_as_mainfile(filepath=str(path), check_existing=False)
    return path


def write_blend(run_dir: str | Path, blend_path: str | Path, options: SceneOptions | None = None,
                **option_fields) -> Path:
    """Build ``blend_path`` from the run directory ``run_dir``; returns the .blend's path.

    ``option_fields`` override fields of :class:`~laser_blender.scene.SceneOptions`
    (``point_budget=...``, ``conf_percentile=...``, ...).

    Raises:
        core.rundir.RunDirError: ``run_dir`` is not a run directory (or lacks meta.json).
    """
    options = dataclasses.replace(options or SceneOptions(), **option_fields)
    import_run(_empty_scene(), Path(run_dir), options)
    return save_blend(blend_path)


def reconstruct_to_blend(job: Job, blend_path: str | Path, python: str, options: SceneOptions | None = None,
                         report: Reporter = log_report) -> SessionState:
    """Run ``job`` in a worker (``python``), stream its windows into a scene, save ``blend_path``.

    The .blend is saved whatever the outcome: after an error or a cancel it holds
    every window finished before. Returns the session's final state.
    """
    session = ImportSession(_empty_scene(), WorkerClient(job, python=python), options, report)
    try:
        session.start()
        state = session.run_to_end()
    finally:
        session.close()
    if session.run is not None:
        save_blend(blend_path)
    return state
