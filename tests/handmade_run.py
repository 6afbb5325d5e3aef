"""Run directories written by hand with the real format writer (core.run.rundir.RunWriter).

A smooth camera path orbiting a textured scene; depth is a smooth positive field, so
every pixel has a well-defined world point. Prediction pixels map to footage pixels
through a resize and a crop, and fx != fy, so the scene builder's intrinsics
conversion is exercised in full.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.run.arrays import AlignedWindow
from core.run.manifest import InputGeometry, PredictionsMeta, RunManifest, RunStatus, SourceInfo
from core.run.rundir import RunDir, RunWriter
from core.run.settings import EngineSettings

FOOTAGE = (320, 180)
GEOMETRY = InputGeometry(footage=FOOTAGE, resized=(160, 96), size=(160, 88), offset=(0, 4))
K_PRED = np.array([[140.0, 0.0, 83.0], [0.0, 133.0, 41.0], [0.0, 0.0, 1.0]], np.float32)


def rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    cy, sy, cp, sp, cr, sr = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
    Ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    Rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    Rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    return Ry @ Rx @ Rz


def camera_path(n: int) -> np.ndarray:
    """(n, 4, 4) camera-to-world (OpenCV) poses: a slow pan with a dolly, yaw past 180 deg."""
    t = np.arange(n, dtype=np.float64)
    poses = np.tile(np.eye(4), (n, 1, 1))
    for k in range(n):
        poses[k, :3, :3] = rotation(0.35 * t[k], 0.1 * np.sin(0.3 * t[k]), 0.05 * np.cos(0.2 * t[k]))
        poses[k, :3, 3] = [0.2 * t[k], -0.05 * t[k], 0.1 * np.sin(t[k])]
    return poses


def window(index: int, frames: np.ndarray, poses: np.ndarray, size=(88, 160)) -> AlignedWindow:
    h, w = size
    m = len(frames)
    ii, jj = np.mgrid[0:h, 0:w]
    depth = np.stack([2.0 + 0.5 * np.sin(ii / 9.0 + f) + 0.3 * np.cos(jj / 13.0) for f in frames]).astype(np.float32)
    colors = np.zeros((m, h, w, 3), np.uint8)
    colors[..., 0] = (255 * jj / w).astype(np.uint8)
    colors[..., 1] = (255 * ii / h).astype(np.uint8)
    colors[..., 2] = (40 * np.asarray(frames)[:, None, None] % 256).astype(np.uint8)
    conf = np.broadcast_to(1.0 + ii / h, (m, h, w)).astype(np.float32).copy()
    mask = np.ones((m, h, w), bool)
    mask[:, :4] = False  # a masked band: never imported
    return AlignedWindow(index=index, frames=np.asarray(frames, np.int64), poses=poses.astype(np.float32),
                         K=K_PRED, depth=depth, conf=conf, colors=colors, mask=mask)


def start_run(run_dir: Path, frame_count: int, fps: float = 24.0, footage: str | None = None) -> RunWriter:
    """A run directory with run.json (running) and meta.json, no windows yet."""
    writer = RunWriter(RunDir(run_dir), fps=fps)
    writer.start(RunManifest(source=SourceInfo(path=footage, width=FOOTAGE[0], height=FOOTAGE[1], fps=fps,
                                                num_frames=frame_count),
                             settings=EngineSettings(window=8, overlap=2)))
    writer.write_meta(PredictionsMeta(window=8, overlap=2, height=GEOMETRY.size[1], width=GEOMETRY.size[0],
                                      geometry=GEOMETRY, fps=fps))
    return writer


def windows(frame_count: int, per_window: int = 6) -> list[AlignedWindow]:
    """The aligned windows of a run of ``frame_count`` frames, ``per_window`` new frames each."""
    poses = camera_path(frame_count)
    out = []
    for index, start in enumerate(range(0, frame_count, per_window)):
        frames = np.arange(start, min(start + per_window, frame_count))
        out.append(window(index, frames, poses[frames]))
    return out


def write_run(run_dir: Path, frame_count: int = 18, per_window: int = 6, n_windows: int | None = None,
              footage: str | None = None) -> Path:
    """A run with the first ``n_windows`` windows (all when None); complete when all are there."""
    writer = start_run(run_dir, frame_count, footage=footage)
    wins = windows(frame_count, per_window)
    for win in wins[:n_windows]:
        writer.write_aligned(win)
    if n_windows is None or n_windows >= len(wins):
        writer.finish(RunStatus.complete)
    return Path(run_dir)
