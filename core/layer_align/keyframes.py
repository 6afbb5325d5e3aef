"""Keyframe memory: world points of earlier registered frames, for layers the overlap does not show.

Layer-wise scale alignment takes its scales from the previous window's overlap
frames. An object that is not visible there (it left the view and comes back, or it
appears later in the window) would keep the window's Sim(3) scale, or inherit a
neighbour's when it enters merged with it; the memory lets it be measured against
an earlier frame that saw it. Every ``every``-th source frame
of the registered stream (its final, layer-aligned depth) is kept as a keyframe, at
most ``capacity`` of them (oldest dropped first), each as the world points of its
confident samples on the layer-alignment sample grid (block centres, every
``stride``-th pixel).

Conventions: OpenCV camera axes (x right, y down, z forward), camera-to-world poses,
pixel (row i, col j) centred at (j + 0.5, i + 0.5).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from core.geometry.camera import sample_points
from core.run.arrays import AlignedWindow


@dataclass
class Keyframe:
    """One remembered frame.

    Attributes:
        frame: source frame index.
        points: (P, 3) float32 world points of its confident samples.
    """

    frame: int
    points: np.ndarray


@dataclass
class KeyframeMemory:
    """The last ``capacity`` keyframes (one every ``every`` source frames) of a stream.

    Attributes:
        every: a source frame is a keyframe when its index is a multiple of ``every``
            (so rebuilding from the windows on disk gives the same memory).
        capacity: keyframes kept; the oldest is dropped first.
        stride: sample grid step in pixels (block centres), as layer alignment's.
        keyframes: oldest first.
    """

    every: int = 10
    capacity: int = 12
    stride: int = 4
    keyframes: list[Keyframe] = field(default_factory=list)

    def add_window(self, win: AlignedWindow) -> None:
        """Remember the keyframes among the frames a registered window adds."""
        s = self.stride
        for i in np.flatnonzero(win.frames % self.every == 0):
            depth = win.depth[i, s // 2::s, s // 2::s]
            keep = win.mask[i, s // 2::s, s // 2::s] & np.isfinite(depth) & (depth > 0)
            points = sample_points(depth, keep, win.frame_intrinsics[i], win.poses[i], s)
            self.keyframes.append(Keyframe(int(win.frames[i]), points))
        del self.keyframes[:max(len(self.keyframes) - self.capacity, 0)]

    def points(self) -> np.ndarray:
        """(P, 3) float32 world points of all keyframes."""
        if not self.keyframes:
            return np.zeros((0, 3), np.float32)
        return np.concatenate([kf.points for kf in self.keyframes])

    def __len__(self) -> int:
        return len(self.keyframes)

