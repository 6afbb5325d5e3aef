"""The arrays a run directory holds, as typed records with their shapes checked.

Conventions used everywhere in ``core``:

* Camera axes are OpenCV: x right, y down, z forward.
* Poses are camera-to-world 4x4 matrices (``world_from_cam``) unless a name says otherwise.
* Pixel coordinates are continuous with pixel (row i, column j) centred at
  (u, v) = (j + 0.5, i + 0.5); a centred principal point is (W / 2, H / 2).
* ``shape`` is (H, W); ``size`` is (W, H).
* Image arrays are (H, W, 3) uint8 RGB; batched arrays lead with the frame axis N.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _check_shapes(owner: str, n: int, h: int, w: int, arrays: dict[str, tuple[np.ndarray | None, tuple]]) -> None:
    for name, (arr, shape) in arrays.items():
        if arr is not None and arr.shape != shape:
            raise ValueError(f"{owner}.{name} has shape {arr.shape}, expected {shape}")


@dataclass
class WindowPrediction:
    """Raw backbone output for one window of frames, in that window's own frame.

    Attributes:
        frames: (N,) int64 source frame indices.
        points: (N, H, W, 3) float32 camera-space points, OpenCV axes; depth is z.
        poses: (N, 4, 4) float32 camera-to-world poses in the window's arbitrary Sim(3) frame.
        conf: (N, H, W) float32 confidence; larger is better, only the ranking matters.
        colors: (N, H, W, 3) uint8 RGB at prediction resolution.
        intrinsics: optional (N, 3, 3) float32 predicted intrinsics at prediction
            resolution (VGGT and DA3 predict them, pi3 does not).
    """

    frames: np.ndarray
    points: np.ndarray
    poses: np.ndarray
    conf: np.ndarray
    colors: np.ndarray
    intrinsics: np.ndarray | None = None

    def __post_init__(self) -> None:
        n, h, w = self.conf.shape
        _check_shapes("WindowPrediction", n, h, w, {
            "frames": (self.frames, (n,)),
            "points": (self.points, (n, h, w, 3)),
            "poses": (self.poses, (n, 4, 4)),
            "colors": (self.colors, (n, h, w, 3)),
            "intrinsics": (self.intrinsics, (n, 3, 3)),
        })

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) of the prediction."""
        return self.conf.shape[1], self.conf.shape[2]

    def __len__(self) -> int:
        return len(self.frames)


@dataclass
class AlignedWindow:
    """Registered result for the frames a window adds to the reconstruction.

    Attributes:
        index: window index, 0-based.
        frames: (M,) int64 source frame indices (the frames not already emitted).
        poses: (M, 4, 4) float32 world camera-to-world poses.
        K: (3, 3) float32 intrinsics at prediction resolution (fixed for the run; with a
            zoom, the median of ``frame_K``).
        depth: (M, H, W) float32 world-scale depth (z along the optical axis), final.
        conf: (M, H, W) float32 confidence as predicted.
        colors: (M, H, W, 3) uint8 RGB.
        mask: (M, H, W) bool, pixels kept by the confidence mask.
        scale: the window's Sim(3) scale relative to the world.
        depth_factor: (M, H, W) float32 per-pixel factor the depth refiner (layer-wise
            scale alignment) applied on top of the Sim(3): ``depth = sim3_depth *
            depth_factor``; None when no refiner ran.
        frame_K: (M, 3, 3) float32 per-frame intrinsics at prediction resolution when the
            lens zooms (``--zoom``); None: ``K`` for every frame (a fixed lens).
        path_offset: the refiner's measurement of the log scale by which the window's Sim(3)
            camera path differed from its depth (from the parallax inside the window); kept so
            later windows can judge how large such offsets are over the shot.
        path_information: inverse variance of ``path_offset`` (0: not measured).
    """

    index: int
    frames: np.ndarray
    poses: np.ndarray
    K: np.ndarray
    depth: np.ndarray
    conf: np.ndarray
    colors: np.ndarray
    mask: np.ndarray
    scale: float = 1.0
    depth_factor: np.ndarray | None = None
    frame_K: np.ndarray | None = None
    path_offset: float = 0.0
    path_information: float = 0.0

    def __post_init__(self) -> None:
        m, h, w = self.depth.shape
        _check_shapes("AlignedWindow", m, h, w, {
            "frames": (self.frames, (m,)),
            "poses": (self.poses, (m, 4, 4)),
            "K": (self.K, (3, 3)),
            "conf": (self.conf, (m, h, w)),
            "colors": (self.colors, (m, h, w, 3)),
            "mask": (self.mask, (m, h, w)),
            "depth_factor": (self.depth_factor, (m, h, w)),
            "frame_K": (self.frame_K, (m, 3, 3)),
        })

    @property
    def frame_intrinsics(self) -> np.ndarray:
        """(M, 3, 3) intrinsics of each frame: ``frame_K``, or ``K`` repeated for a fixed lens."""
        if self.frame_K is not None:
            return self.frame_K
        return np.broadcast_to(self.K, (len(self.frames), 3, 3))

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) of the depth maps."""
        return self.depth.shape[1], self.depth.shape[2]

    @property
    def sim3_depth(self) -> np.ndarray:
        """(M, H, W) depth after the Sim(3) but before the refiner (``depth`` when none ran)."""
        if self.depth_factor is None:
            return self.depth
        factor = self.depth_factor.astype(np.float32)
        return self.depth / np.where(factor > 0, factor, np.float32(1))

    def __len__(self) -> int:
        return len(self.frames)
