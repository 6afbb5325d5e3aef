"""Data that crosses module boundaries in the streaming engine.

Conventions used everywhere in ``core``:

* Camera axes are OpenCV: x right, y down, z forward.
* Poses are camera-to-world 4x4 matrices unless a name says otherwise.
* Pixel coordinates are continuous with pixel (row i, column j) centred at
  (u, v) = (j + 0.5, i + 0.5); a centred principal point is (W / 2, H / 2).
* Image arrays are (H, W, 3) uint8 RGB; batched arrays lead with the frame axis N.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from core.keyframes import KeyframeMemory


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
            resolution (VGGT predicts them, pi3 does not).
    """

    frames: np.ndarray
    points: np.ndarray
    poses: np.ndarray
    conf: np.ndarray
    colors: np.ndarray
    intrinsics: np.ndarray | None = None

    def __post_init__(self) -> None:
        n, h, w = self.conf.shape
        expected = {
            "frames": (self.frames, (n,)),
            "points": (self.points, (n, h, w, 3)),
            "poses": (self.poses, (n, 4, 4)),
            "colors": (self.colors, (n, h, w, 3)),
        }
        for name, (arr, shape) in expected.items():
            if arr.shape != shape:
                raise ValueError(f"WindowPrediction.{name} has shape {arr.shape}, expected {shape}")

    @property
    def size(self) -> tuple[int, int]:
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
        K: (3, 3) float32 intrinsics at prediction resolution (fixed for the run).
        depth: (M, H, W) float32 world-scale depth (z along the optical axis).
        conf: (M, H, W) float32 confidence as predicted.
        colors: (M, H, W, 3) uint8 RGB.
        mask: (M, H, W) bool, pixels kept by the confidence mask.
        scale: the window's Sim(3) scale relative to the world.
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
    extras: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.frames)


@dataclass
class LayerAlignInput:
    """What the streaming registration hands the layer-wise scale alignment hook.

    All depths are world-scale (the window's Sim(3) scale already applied) z-depth
    at prediction resolution. Frame ``i < overlap`` of the new window shows the same
    source frame as ``ref_depth[i]``.

    Attributes:
        ref_depth: (O, H, W) float32 final aligned depth of the previous window on the overlap frames.
        ref_mask: (O, H, W) bool valid (confident) pixels of ``ref_depth``.
        depth: (N, H, W) float32 new window's depth after the Sim(3) scale.
        mask: (N, H, W) bool confident pixels of the new window.
        conf: (N, H, W) float32 raw confidence of the new window (for weighting).
        overlap: O, the number of leading frames shared with the previous window.
        memory: optional keyframes of earlier registered frames (final depth); layers
            that get no scale from the overlap are measured against them.
        poses: (N, 4, 4) world camera-to-world poses of the new window (needed with ``memory``).
        K: (3, 3) intrinsics at prediction resolution (needed with ``memory``).
    """

    ref_depth: np.ndarray
    ref_mask: np.ndarray
    depth: np.ndarray
    mask: np.ndarray
    conf: np.ndarray
    overlap: int
    memory: KeyframeMemory | None = None
    poses: np.ndarray | None = None
    K: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.memory is not None and (self.poses is None or self.K is None):
            raise ValueError("LayerAlignInput.memory needs the window's poses and K")
