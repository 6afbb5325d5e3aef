"""Choosing and placing a run's points (numpy only): shared by the Blender scene builder and the exporters.

Conventions: OpenCV camera axes, camera-to-world poses, pixel (row i, column j)
centred at (j + 0.5, i + 0.5).
"""

from __future__ import annotations

import numpy as np

from core.geometry.camera import unproject_pixels
from core.run.arrays import AlignedWindow


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
    """(n, 3) run-world points of window pixels ``(m, i, j)`` from depth, K and pose."""
    return unproject_pixels(j + 0.5, i + 0.5, win.depth[m, i, j], np.asarray(win.K, np.float64), win.poses[m])
