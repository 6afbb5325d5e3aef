"""Choosing and placing a run's points (numpy only): shared by the Blender scene builder and the exporters.

Conventions: OpenCV camera axes, camera-to-world poses, pixel (row i, column j)
centred at (j + 0.5, i + 0.5).
"""

from __future__ import annotations

import numpy as np

from core.geometry.camera import unproject_pixels
from core.geometry.motion import NEIGHBOUR_OFFSETS, dynamic_pixels
from core.run.arrays import AlignedWindow
from core.run.files import RunDirError
from core.run.rundir import RunDir


def select_points(win: AlignedWindow, quota: int, conf_percentile: float, seed: int) -> tuple[np.ndarray, ...]:
    """Choose at most ``quota`` confident pixels of a window, evenly at random.

    Returns ``(m, i, j)`` index arrays (window frame, row, column) of the kept pixels.
    """
    valid = win.mask & np.isfinite(win.depth) & (win.depth > 0)
    if conf_percentile > 0 and valid.any():
        threshold = np.percentile(win.conf[valid], conf_percentile)
        valid &= win.conf >= threshold
    flat = np.flatnonzero(valid)
    if len(flat) > quota:
        rng = np.random.default_rng([seed, win.index])
        flat = np.sort(rng.choice(flat, size=quota, replace=False))
    return np.unravel_index(flat, valid.shape)


def window_points(win: AlignedWindow, m: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """(n, 3) run-world points of window pixels ``(m, i, j)`` from depth, K (each frame's with a zoom) and pose."""
    K = win.K if win.frame_K is None else win.frame_K[m]
    return unproject_pixels(j + 0.5, i + 0.5, win.depth[m, i, j], np.asarray(K, np.float64), win.poses[m])


def window_dynamic(run: RunDir, win: AlignedWindow) -> np.ndarray:
    """(M, H, W) bool: the window's pixels on moving things (:func:`core.geometry.motion.dynamic_pixels`).

    The window's frames are compared with their neighbours in time, up to the farthest
    offset, taken from the windows before and after it that are on disk and readable (a
    run still growing has no next window yet: its last frames then have only earlier
    neighbours).
    """
    reach = max(abs(o) for o in NEIGHBOUR_OFFSETS)
    before, after = _neighbour(run, win.index - 1), _neighbour(run, win.index + 1)
    head = sum(len(w) for w in before)
    stack = [*before, win, *after]
    lo, hi = max(0, head - reach), head + len(win) + reach
    depth = np.concatenate([w.depth for w in stack])[lo:hi]
    classify = np.zeros(depth.shape, bool)
    classify[head - lo:head - lo + len(win)] = win.mask
    poses = np.concatenate([w.poses for w in stack])[lo:hi]
    K = win.K if win.frame_K is None else np.concatenate([w.frame_intrinsics for w in stack])[lo:hi]
    dynamic = dynamic_pixels(depth, classify, K, poses)
    return dynamic[head - lo:head - lo + len(win)]


def _neighbour(run: RunDir, index: int) -> list[AlignedWindow]:
    """``[window index]`` when it is on disk and readable, else ``[]`` (context is optional)."""
    if not run.aligned_path(index).exists():
        return []
    try:
        return [run.load_aligned(index)]
    except RunDirError:
        return []
