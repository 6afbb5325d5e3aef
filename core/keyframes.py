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

from core.geometry import unproject_pixels
from core.types import AlignedWindow


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
            points = sample_points(depth, keep, win.K, win.poses[i], s)
            self.keyframes.append(Keyframe(int(win.frames[i]), points))
        del self.keyframes[:max(len(self.keyframes) - self.capacity, 0)]

    def points(self) -> np.ndarray:
        """(P, 3) float32 world points of all keyframes."""
        if not self.keyframes:
            return np.zeros((0, 3), np.float32)
        return np.concatenate([kf.points for kf in self.keyframes])

    def __len__(self) -> int:
        return len(self.keyframes)


def sample_points(depth: np.ndarray, keep: np.ndarray, K: np.ndarray, pose: np.ndarray, stride: int) -> np.ndarray:
    """World points of the kept samples of one frame.

    Args:
        depth: (h, w) z-depth of the samples ``(i * stride + stride // 2, j * stride + stride // 2)``.
        keep: (h, w) bool samples to return.
        K: (3, 3) intrinsics at full resolution.
        pose: (4, 4) camera-to-world.
    Returns:
        (P, 3) float32 world points.
    """
    i, j = np.nonzero(keep)
    u = j * stride + stride // 2 + 0.5
    v = i * stride + stride // 2 + 0.5
    return unproject_pixels(u, v, depth[i, j], K.astype(np.float64), pose).astype(np.float32)


@dataclass
class Projection:
    """World points projected into several cameras (only those in front and in view).

    Attributes:
        frame: (M,) int64 camera index.
        row, col: (M,) int64 full-resolution pixel each point falls in.
        z: (M,) float32 depth in that camera.
    """

    frame: np.ndarray
    row: np.ndarray
    col: np.ndarray
    z: np.ndarray


def project(points: np.ndarray, poses: np.ndarray, K: np.ndarray, size: tuple[int, int]) -> Projection:
    """Project world points into cameras of ``size`` (H, W) pixels.

    Args:
        points: (P, 3) world points.
        poses: (F, 4, 4) camera-to-world of the cameras.
        K: (3, 3) intrinsics.
    """
    height, width = size
    R = poses[:, :3, :3].astype(np.float32)
    t = poses[:, :3, 3].astype(np.float32)
    cam = (points[None] - t[:, None]) @ R  # rows: R^T (p - t), world to camera
    z = cam[..., 2]
    front = z > 0
    z_safe = np.where(front, z, 1.0)
    col = np.floor(K[0, 0] * cam[..., 0] / z_safe + K[0, 2])
    row = np.floor(K[1, 1] * cam[..., 1] / z_safe + K[1, 2])
    ok = front & (col >= 0) & (col < width) & (row >= 0) & (row < height)
    frame = np.broadcast_to(np.arange(poses.shape[0])[:, None], z.shape)
    return Projection(frame[ok], row[ok].astype(np.int64), col[ok].astype(np.int64), z[ok])


def zbuffer(proj: Projection, frames: int, shape: tuple[int, int], stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Nearest projected depth per sample block (``stride`` x ``stride`` pixels).

    Args:
        proj: points projected into ``frames`` cameras.
        shape: (h, w) of the sample grid.
    Returns:
        (nearest, block): (frames, h, w) float32 depth of the nearest point in each
        block (inf where none lands), and (M,) int64 flat block of each point, -1 for
        points in a block cut off the grid at the right or bottom border.
    """
    h, w = shape
    r, c = proj.row // stride, proj.col // stride
    block = np.where((r < h) & (c < w), (proj.frame * h + r) * w + c, -1)
    nearest = np.full(frames * h * w, np.inf, np.float32)
    inside = block >= 0
    np.minimum.at(nearest, block[inside], proj.z[inside])
    return nearest.reshape(frames, h, w), block
