"""Moving things in registered depth maps: free-space violations against neighbouring frames.

A static point seen in frame m, moved into a neighbouring frame n with the poses, is
either seen there at the same depth or hidden behind something nearer. If frame n
instead sees *farther* than the point at that pixel, the point was in front of empty
space in frame n: something moved. Counting those violations over several neighbours
(near and far in time, so that slow motion shows too) separates dynamic pixels from
static ones.

Conventions: OpenCV camera axes, camera-to-world poses, depth is z, pixel (row i,
column j) centred at (j + 0.5, i + 0.5).
"""

from __future__ import annotations

import numpy as np

from core.geometry.camera import unproject

NEIGHBOUR_OFFSETS = (-24, -12, -6, 6, 12, 24)
"""Neighbours compared, in frames: near ones for fast motion, far ones for slow motion."""


def _min_filter3(depth: np.ndarray) -> np.ndarray:
    """(M, H, W) -> the minimum over each pixel's 3x3 neighbourhood (edges padded with inf)."""
    padded = np.pad(depth, ((0, 0), (1, 1), (1, 1)), constant_values=np.inf)
    rows = np.minimum(np.minimum(padded[:, :-2], padded[:, 1:-1]), padded[:, 2:])  # separable: rows, then columns
    return np.minimum(np.minimum(rows[:, :, :-2], rows[:, :, 1:-1]), rows[:, :, 2:])


def dynamic_pixels(depth: np.ndarray, valid: np.ndarray, K: np.ndarray, world_from_cam: np.ndarray,
                   seen_valid: np.ndarray | None = None, offsets: tuple[int, ...] = NEIGHBOUR_OFFSETS,
                   tolerance: float = 0.05, min_share: float = 0.2) -> np.ndarray:
    """Pixels whose point a neighbouring frame sees through.

    For every frame m and offset o (frame m + o inside the stack), the valid pixels of m
    are moved into frame m + o; a *violation* is a pixel where m + o's depth (the
    minimum over 3x3 pixels, so that depth edges and resampling never count) exceeds the
    point's depth there by more than ``tolerance`` (relative); a *check* is a pixel that
    lands inside m + o on valid depth. A pixel is dynamic when its violations are at
    least one and at least ``min_share`` of its checks.

    Args:
        depth: (M, H, W) registered z-depth.
        valid: (M, H, W) bool, the pixels to classify (e.g. the confidence mask).
        seen_valid: (M, H, W) bool, the depth a neighbour may see with (default: every
            positive finite depth; a far background is often not confident, yet it is
            what shows that something moved in front of it).
        K: (3, 3) intrinsics of the depth maps, or (M, 3, 3) one per map (a zoom).
        world_from_cam: (M, 4, 4) poses in one world.
        offsets: neighbours compared, as positions in the stack (consecutive frames).
    Returns:
        (M, H, W) bool, True on dynamic pixels (always False where not ``valid``).
    """
    m_count, h, w = depth.shape
    ok = valid & np.isfinite(depth) & (depth > 0)
    sources = np.flatnonzero(ok.any(axis=(1, 2)))  # frames with pixels to classify (the rest only see)
    row = np.full(m_count, -1)
    row[sources] = np.arange(len(sources))
    K = np.asarray(K, np.float32)
    cam_points = unproject(np.where(ok[sources], depth[sources], 1).astype(np.float32),
                           K if K.ndim == 2 else K[sources])  # (S, H, W, 3)
    known = np.isfinite(depth) & (depth > 0) if seen_valid is None else seen_valid & np.isfinite(depth) & (depth > 0)
    seen = _min_filter3(np.where(known, depth, np.inf).astype(np.float32))  # inf where nothing is known
    poses = np.asarray(world_from_cam, np.float64)
    cam_from_world = np.linalg.inv(poses)
    K = np.asarray(K, np.float64)
    if K.ndim == 2:
        K = np.broadcast_to(K, (m_count, 3, 3))
    votes = np.zeros(depth.shape, np.int16)
    checks = np.zeros(depth.shape, np.int16)
    for o in offsets:
        src = sources[(sources + o >= 0) & (sources + o < m_count)]
        if len(src) == 0:
            continue
        tgt = src + o
        tgt_from_src = (cam_from_world[tgt] @ poses[src]).astype(np.float32)  # (P, 4, 4)
        p = (cam_points[row[src]].reshape(len(src), h * w, 3) @ tgt_from_src[:, :3, :3].transpose(0, 2, 1)
             + tgt_from_src[:, None, :3, 3]).reshape(len(src), h, w, 3)
        z = p[..., 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            f, c = K[tgt][:, None, None, :2, :2].astype(np.float32), K[tgt][:, None, None, :2, 2].astype(np.float32)
            j = np.floor(p[..., 0] * f[..., 0, 0] / z + c[..., 0]).astype(np.int32)
            i = np.floor(p[..., 1] * f[..., 1, 1] / z + c[..., 1]).astype(np.int32)
        inside = ok[src] & (z > 0) & (i >= 0) & (i < h) & (j >= 0) & (j < w)
        there = seen[tgt[:, None, None], np.clip(i, 0, h - 1), np.clip(j, 0, w - 1)]
        checked = inside & np.isfinite(there)
        checks[src] += checked
        votes[src] += checked & (there > z * (1 + tolerance))
    return ok & (votes >= 1) & (votes >= min_share * checks)
