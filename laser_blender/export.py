"""Exporters: a run's coloured point cloud as a file other tools read (PLY by default).

Points are in the run's world frame (OpenCV axes: the first window's camera frame,
up to the run's Sim(3)); the camera path is ``RUN/trajectory.tum`` beside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import trimesh

from core.errors import UserError
from core.run.files import RunDirError, output_file
from core.run.rundir import RunDir
from laser_blender.points import select_points, window_points

FORMATS = ("ply", "glb", "xyz")


@dataclass(frozen=True)
class ExportSummary:
    path: Path
    points: int
    windows: int
    frames: int


def export_point_cloud(run_dir: str | Path, path: str | Path, max_points: int = 2_000_000,
                       conf_percentile: float = 0.0, seed: int = 0) -> ExportSummary:
    """Write the run's confident pixels as a coloured point cloud.

    Every frame gets an equal share of ``max_points``; within a frame's window the
    kept pixels are drawn uniformly at random (deterministic for ``seed``).

    Args:
        run_dir: a run directory, complete or still growing.
        path: output file; the format follows its suffix (``.ply``, ``.glb``, ``.xyz``).
        max_points: point budget for the whole cloud.
        conf_percentile: drop this percentage of each window's least confident pixels.
    """
    run_dir, path = Path(run_dir), Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise UserError(f"{path}: unsupported point cloud format {path.suffix!r}; use one of "
                         + ", ".join(f".{f}" for f in FORMATS))
    if max_points < 1:
        raise UserError(f"max_points must be positive, got {max_points}")
    path = output_file(path)
    run = RunDir(run_dir)
    manifest = run.read_manifest()
    if not run.aligned_windows():
        raise RunDirError(f"{run_dir} has no registered window yet; nothing to export")
    total_frames = max(manifest.frames_done, 1)
    xyz, rgb, frames, windows = [], [], 0, 0
    for win in run.iter_aligned():
        quota = max(1, int(max_points * len(win) / total_frames))
        m, i, j = select_points(win, quota, conf_percentile, seed)
        xyz.append(window_points(win, m, i, j).astype(np.float32))
        rgb.append(win.colors[m, i, j])
        frames += len(win)
        windows += 1
    points, colors = np.concatenate(xyz), np.concatenate(rgb)
    if len(points) > max_points:  # frames_done lagged behind a growing run
        keep = np.sort(np.random.default_rng(seed).choice(len(points), max_points, replace=False))
        points, colors = points[keep], colors[keep]
    alpha = np.full((len(colors), 1), 255, np.uint8)
    trimesh.PointCloud(points, colors=np.concatenate([colors, alpha], axis=1)).export(path, file_type=fmt)
    return ExportSummary(path=path, points=len(points), windows=windows, frames=frames)
