"""A camera solve written by hand into a handmade run (tests/handmade_run.py) with the real writer.

Each window's track points are unprojected from random footage pixels of its frames at random
depths, then observed wherever they project inside the footage in the window's frames and the
previous window's last two (the frames the engine's solve holds fixed). Observation pixels are
exact projections through the run's cameras (poses as stored, float32), the run's intrinsics at
footage resolution (``InputGeometry``) and, when given, the solve's distortion (Blender's
polynomial ``1 + k1 r^2 + k2 r^4`` on normalised coordinates) and focal; pixel centres at +0.5.
The reported per-observation errors (``obs_err``) are drawn at random, so solve.json's figures
differ per frame.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.run.arrays import AlignedWindow
from core.run.rundir import RunDir, RunWriter
from core.run.solve import Bundles, SolveReport, SolveTally
from handmade_run import FOOTAGE, GEOMETRY

FIXED = 2  # frames of the previous window each window's points are also observed in


def footage_K(win: AlignedWindow, focal: float | None = None) -> np.ndarray:
    """(3, 3) the window's intrinsics at footage resolution, ``fx`` set to ``focal`` (``fy`` in ratio)."""
    K = GEOMETRY.intrinsics_to_footage(win.K.astype(np.float64))
    if focal is not None:
        K[1, 1] *= focal / K[0, 0]
        K[0, 0] = focal
    return K


def project(xyz: np.ndarray, pose: np.ndarray, K: np.ndarray,
            distortion: tuple[float, float] | None) -> tuple[np.ndarray, np.ndarray]:
    """(n, 2) footage pixels and (n,) depths of run-world points ``xyz`` seen by camera-to-world ``pose``."""
    cam = (xyz - pose[:3, 3]) @ pose[:3, :3]
    x, y = cam[:, 0] / cam[:, 2], cam[:, 1] / cam[:, 2]
    if distortion is not None:
        r2 = x * x + y * y
        radial = 1 + distortion[0] * r2 + distortion[1] * r2 * r2
        x, y = x * radial, y * radial
    return np.stack([K[0, 0] * x + K[0, 2], K[1, 1] * y + K[1, 2]], axis=1), cam[:, 2]


def solved_window(wins: list[AlignedWindow], index: int, distortion: tuple[float, float] | None = None,
                  focal: float | None = None, per_frame: int = 12) -> Bundles:
    """Window ``index``'s bundles (see the module docstring)."""
    win, rng = wins[index], np.random.default_rng(100 + index)
    frames = np.concatenate([wins[index - 1].frames[-FIXED:] if index else [], win.frames]).astype(np.int64)
    poses = np.concatenate([wins[index - 1].poses[-FIXED:] if index else np.zeros((0, 4, 4)), win.poses])
    poses = poses.astype(np.float32).astype(np.float64)  # as the run stores them
    K = footage_K(win, focal)
    seeds = []
    for pose in poses[-len(win):]:
        uv = rng.uniform([20, 20], [FOOTAGE[0] - 20, FOOTAGE[1] - 20], (per_frame, 2))
        z = rng.uniform(2.0, 4.0, per_frame)
        cam = np.stack([(uv[:, 0] - K[0, 2]) / K[0, 0] * z, (uv[:, 1] - K[1, 2]) / K[1, 1] * z, z], axis=1)
        seeds.append(cam @ pose[:3, :3].T + pose[:3, 3])
    xyz = np.concatenate(seeds)
    obs_point, obs_frame, obs_xy = [], [], []
    for frame, pose in zip(frames, poses):
        uv, z = project(xyz, pose, K, distortion)
        seen = np.flatnonzero((z > 0.1) & (uv >= 0).all(1) & (uv < FOOTAGE).all(1))
        obs_point.append(seen)
        obs_frame.append(np.full(len(seen), frame))
        obs_xy.append(uv[seen])
    obs_point = np.concatenate(obs_point)
    observed = np.unique(obs_point)  # every point is seen by the frame it came from, but check
    assert len(observed) == len(xyz)
    return Bundles(xyz, rng.integers(0, 256, (len(xyz), 3)).astype(np.uint8), obs_point, np.concatenate(obs_frame),
                   np.concatenate(obs_xy).astype(np.float32), rng.uniform(0.05, 0.5, len(obs_point)).astype(np.float32),
                   tracks=len(xyz) + 7)


def write_window_solve(writer: RunWriter, wins: list[AlignedWindow], index: int, tally: SolveTally,
                       distortion: tuple[float, float] | None = None, focal: float | None = None) -> Bundles:
    """Write window ``index``'s bundles and solve.json (``tally`` holds the earlier windows' figures)."""
    bundles = solved_window(wins, index, distortion, focal)
    tally.add(bundles)
    writer.write_solve(index, bundles, tally.report(focal or float(footage_K(wins[index])[0, 0]), distortion))
    return bundles


def add_solve(run_dir: Path, distortion: tuple[float, float] | None = None,
              focal: float | None = None) -> SolveReport:
    """Write the solve of every aligned window of ``run_dir``; returns solve.json."""
    run = RunDir(run_dir)
    wins, tally, writer = list(run.iter_aligned()), SolveTally(), RunWriter(run)
    for index in range(len(wins)):
        write_window_solve(writer, wins, index, tally, distortion, focal)
    return run.read_solve()
