"""The camera solve's files: ``RUN/solve.json`` (:class:`SolveReport`) and ``RUN/bundles/wNNNNN.npz`` (:class:`Bundles`).

Each window's bundle file holds the 3D track points that window's adjustment solved (run world,
the frame of the aligned windows) with their colour and observations; point indices in a file are
local to it, :meth:`core.run.rundir.RunDir.read_bundles` concatenates the files with offsets.
Observation pixels are footage pixels, pixel centres at +0.5 (``core.geometry.camera.pixel_grid``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict

from core.run.files import RunDirError

BUNDLE_DTYPES = {"xyz": np.float64, "rgb": np.uint8, "obs_point": np.int64, "obs_frame": np.int64,
                 "obs_xy": np.float32}


class SolveReport(BaseModel):
    """solve.json: the camera solve's error (footage pixels) and what it found, updated per window."""

    model_config = ConfigDict(extra="forbid")

    rms_px: float | None = None  # RMS reprojection error over all inlier observations
    per_frame_px: dict[int, float] = {}  # source frame index -> RMS of its inlier observations
    tracks: int = 0
    points: int = 0
    inliers: int = 0
    focal: float | None = None  # footage pixels
    distortion: tuple[float, float] | None = None  # k1, k2 (Blender's polynomial model)


@dataclass
class Bundles:
    """Sparse solve: ``xyz`` (P, 3) float64 run-world points, ``rgb`` (P, 3) uint8, observations
    ``obs_point`` (M,) int64 into the points, ``obs_frame`` (M,) int64 source frames, ``obs_xy`` (M, 2) float32."""

    xyz: np.ndarray
    rgb: np.ndarray
    obs_point: np.ndarray
    obs_frame: np.ndarray
    obs_xy: np.ndarray

    def __post_init__(self) -> None:
        p, m = len(self.xyz), len(self.obs_point)
        expected = {"xyz": (p, 3), "rgb": (p, 3), "obs_point": (m,), "obs_frame": (m,), "obs_xy": (m, 2)}
        for name, shape in expected.items():
            value = getattr(self, name)
            if value.shape != shape:
                raise RunDirError(f"bundles: {name} has shape {value.shape}, expected {shape}")
            setattr(self, name, value.astype(BUNDLE_DTYPES[name], copy=False))
        if m and (self.obs_point.min() < 0 or self.obs_point.max() >= p):
            raise RunDirError(f"bundles: observation point indices outside 0..{p - 1}")

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in BUNDLE_DTYPES}

    @classmethod
    def concatenate(cls, parts: list[Bundles]) -> Bundles:
        """One set from per-window sets, point indices offset by the points before."""
        offsets = np.cumsum([0] + [len(b.xyz) for b in parts[:-1]])
        return cls(np.concatenate([b.xyz for b in parts]), np.concatenate([b.rgb for b in parts]),
                   np.concatenate([b.obs_point + o for b, o in zip(parts, offsets)]),
                   np.concatenate([b.obs_frame for b in parts]), np.concatenate([b.obs_xy for b in parts]))
