"""The camera solve's files: ``RUN/solve.json`` (:class:`SolveReport`), ``RUN/bundles/wNNNNN.npz`` (:class:`Bundles`).

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
                 "obs_xy": np.float32, "obs_err": np.float32, "tracks": np.int64}


class SolveReport(BaseModel):
    """solve.json: the camera solve's error (footage pixels) and what it found, updated per window."""

    model_config = ConfigDict(extra="forbid")

    rms_px: float | None = None  # RMS reprojection error over all inlier observations
    per_frame_px: dict[int, float] = {}  # source frame index -> RMS of its inlier observations
    tracks: int = 0
    points: int = 0
    inliers: int = 0
    focal: float | None = None  # footage pixels (None for a zoom: each frame's is in the aligned windows' frame_K)
    focal_refined: bool = False  # the focal was refined by the solve (else the network's or the given one)
    distortion: tuple[float, float] | None = None  # k1, k2 (Blender's polynomial model)

    def error_text(self) -> str:
        """'Solve error: 0.23 px' as Blender's motion tracker shows it ('Solve error: none': no window solved)."""
        return "Solve error: none" if self.rms_px is None else f"Solve error: {self.rms_px:.2f} px"

    def summary(self) -> str:
        """The line the CLI prints: 'Solve error: 0.23 px (1,234 points, 5,678 inlier observations)', and
        '; focal length 1052.3 px, refined' when the solve refined it ('; focal length per frame, refined': a zoom)."""
        if self.rms_px is None:
            return f"{self.error_text()} (no window could be solved; the cameras are the network's)"
        focal = "per frame" if self.focal is None else f"{self.focal:.1f} px"
        lens = f"; focal length {focal}, refined" if self.focal_refined else ""
        return f"{self.error_text()} ({self.points:,} points, {self.inliers:,} inlier observations{lens})"


@dataclass
class Bundles:
    """Sparse solve: ``xyz`` (P, 3) float64 run-world points, ``rgb`` (P, 3) uint8, observations
    ``obs_point`` (M,) int64 into the points, ``obs_frame`` (M,) int64 source frames, ``obs_xy`` (M, 2) float32,
    ``obs_err`` (M,) float32 reprojection error in pixels (zeros when not given); ``tracks`` () int64 how many
    tracks the solve followed, points or not (summed by :meth:`concatenate`)."""

    xyz: np.ndarray
    rgb: np.ndarray
    obs_point: np.ndarray
    obs_frame: np.ndarray
    obs_xy: np.ndarray
    obs_err: np.ndarray | None = None
    tracks: np.ndarray | int = 0

    def __post_init__(self) -> None:
        p, m = len(self.xyz), len(self.obs_point)
        if self.obs_err is None:
            self.obs_err = np.zeros(m, np.float32)
        self.tracks = np.asarray(self.tracks)
        expected = {"xyz": (p, 3), "rgb": (p, 3), "obs_point": (m,), "obs_frame": (m,), "obs_xy": (m, 2),
                    "obs_err": (m,), "tracks": ()}
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
                   np.concatenate([b.obs_frame for b in parts]), np.concatenate([b.obs_xy for b in parts]),
                   np.concatenate([b.obs_err for b in parts]), sum(int(b.tracks) for b in parts))


class SolveTally:
    """Running figures of a solve, window by window: :meth:`add` each window's bundles, :meth:`report` the total."""

    def __init__(self) -> None:
        self.sum_sq = 0.0
        self.inliers = 0
        self.points = 0
        self.tracks = 0
        self.per_frame: dict[int, float] = {}

    def add(self, bundles: Bundles) -> None:
        err = bundles.obs_err.astype(np.float64)
        self.sum_sq += float((err ** 2).sum())
        self.inliers += len(err)
        self.points += len(bundles.xyz)
        self.tracks += int(bundles.tracks)
        frames, slot = np.unique(bundles.obs_frame, return_inverse=True)
        rms = np.sqrt(np.bincount(slot, err ** 2, len(frames)) / np.bincount(slot, minlength=len(frames)))
        self.per_frame.update(zip(frames.tolist(), np.round(rms, 4).tolist()))

    def report(self, focal: float | None, distortion: tuple[float, float] | None = None,
               focal_refined: bool = False) -> SolveReport:
        rms = float(np.sqrt(self.sum_sq / self.inliers)) if self.inliers else None
        return SolveReport(rms_px=rms, per_frame_px=dict(self.per_frame), tracks=self.tracks, points=self.points,
                           inliers=self.inliers, focal=focal, focal_refined=focal_refined, distortion=distortion)
