"""What every exporter reads from a run (numpy only): the camera track and the cloud samples,
both in the scene world (:meth:`core.run.rundir.RunDir.scene_transform` applied).

Conventions: OpenCV camera axes (x right, y down, z forward), ``scene_from_cam``
camera-to-scene poses, intrinsics at footage resolution with pixel centres at +0.5
(the convention COLMAP uses too).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.errors import UserError
from core.run.files import RunDirError
from core.run.footage import frame_names
from core.run.rundir import RunDir
from core.run.scene_transform import SceneTransform
from laser_blender.points import select_points, window_dynamic, window_points


@dataclass(frozen=True)
class Shot:
    """A run's cameras in the scene world.

    Attributes:
        frames: (N,) int64 source frame indices, increasing.
        scene_from_cam: (N, 4, 4) float64 OpenCV camera-to-scene poses.
        K: (N, 3, 3) float64 intrinsics at footage resolution (one per frame: a zoom changes them).
        size: footage (W, H) in pixels.
        fps: frames per second of the footage, None when unknown (image folders).
        names: the footage file name of each frame (:func:`core.run.footage.frame_names`).
        footage: the footage path recorded in run.json, if any.
        transform: the scene transform applied.
    """

    frames: np.ndarray
    scene_from_cam: np.ndarray
    K: np.ndarray
    size: tuple[int, int]
    fps: float | None
    names: list[str]
    footage: str | None
    transform: SceneTransform

    def __len__(self) -> int:
        return len(self.frames)

    def fixed_lens(self) -> bool:
        """True when every frame has the same intrinsics."""
        return bool(np.allclose(self.K, self.K[0], rtol=1e-9, atol=0))


@dataclass(frozen=True)
class CloudSamples:
    """Points of the dense cloud with the pixel each came from (a track of length one).

    Attributes:
        points: (P, 3) float64 scene-world points.
        colors: (P, 3) uint8 RGB.
        shot_index: (P,) int64 index into the shot's frames of the frame each point came from.
        uv: (P, 2) float64 footage pixel of the point in that frame (centres at +0.5).
    """

    points: np.ndarray
    colors: np.ndarray
    shot_index: np.ndarray
    uv: np.ndarray

    def __len__(self) -> int:
        return len(self.points)


def _windows(run: RunDir):
    if not run.aligned_windows():
        raise RunDirError(f"{run.root} has no registered window yet; nothing to export")
    return run.iter_aligned()


def read_shot(run_dir: str | Path) -> Shot:
    """The camera track of a run directory (complete or still growing)."""
    run = RunDir(Path(run_dir))
    manifest = run.read_manifest()
    windows = _windows(run)
    geometry = run.geometry()
    frames, poses, Ks = [], [], []
    for win in windows:
        frames.append(win.frames)
        poses.append(win.poses.astype(np.float64))
        Ks.append(geometry.intrinsics_to_footage(win.frame_intrinsics.astype(np.float64)))
    transform = run.scene_transform()
    frames = np.concatenate(frames)
    return Shot(frames=frames, scene_from_cam=transform.apply_poses(np.concatenate(poses)), K=np.concatenate(Ks),
                size=tuple(geometry.footage), fps=run.fps(), names=frame_names(manifest.source.path, frames.tolist()),
                footage=manifest.source.path, transform=transform)


def cloud_samples(run_dir: str | Path, shot: Shot, max_points: int, conf_percentile: float = 0.0,
                  seed: int = 0, static_only: bool = False) -> CloudSamples:
    """At most ``max_points`` confident pixels of the frames of ``shot`` as scene points, each
    frame an equal share (windows a growing run added after ``shot`` was read are left out).

    Within a window the kept pixels are drawn uniformly at random (deterministic for ``seed``).
    ``static_only`` leaves out the pixels on moving things (:func:`laser_blender.points.window_dynamic`):
    what structure-from-motion consumers expect of their points.
    """
    if max_points < 1:
        raise UserError(f"--max-points must be positive, got {max_points}")
    run = RunDir(Path(run_dir))
    to_footage = run.geometry().to_footage()
    xyz, rgb, index, uv = [], [], [], []
    for win in _windows(run):
        if not np.isin(win.frames, shot.frames).all():
            continue
        quota = max(1, int(max_points * len(win) / len(shot)))
        if static_only:
            win = dataclasses.replace(win, mask=win.mask & ~window_dynamic(run, win))
        m, i, j = select_points(win, quota, conf_percentile, seed)
        xyz.append(window_points(win, m, i, j))
        rgb.append(win.colors[m, i, j])
        index.append(np.searchsorted(shot.frames, win.frames[m]))
        uv.append(np.stack([j + 0.5, i + 0.5], axis=1) @ to_footage[:2, :2].T + to_footage[:2, 2])
    samples = [np.concatenate(a) for a in (xyz, rgb, index, uv)]
    if len(samples[0]) > max_points:  # a budget below one point per window
        keep = np.sort(np.random.default_rng(seed).choice(len(samples[0]), max_points, replace=False))
        samples = [a[keep] for a in samples]
    points, colors, shot_index, pixels = samples
    return CloudSamples(points=shot.transform.apply_points(points), colors=colors,
                        shot_index=shot_index.astype(np.int64), uv=pixels)
