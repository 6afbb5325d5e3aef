"""The full-resolution depth factor of each pixel: its layer's scale.

Labels live on a sample grid (one sample per ``stride`` block). Away from layer
boundaries a pixel takes its block's layer. In blocks next to a boundary each pixel
picks, among its four nearest samples, the one whose depth is closest to its own (in
log depth), so layer edges are resolved at full resolution.
"""

from __future__ import annotations

import numpy as np


def upsample_blocks(grid: np.ndarray, height: int, width: int, stride: int) -> np.ndarray:
    """Carry sample-grid values back to full resolution, one value per ``stride`` block.

    Sample (i, j) sits at pixel (i * stride + stride // 2, j * stride + stride // 2) and
    covers rows ``[i * stride, (i + 1) * stride)`` and the matching columns; pixels
    beyond the last sample take the nearest block.

    Args:
        grid: (N, h, w) values on the sample grid.
    Returns:
        (N, height, width) array of the same dtype.
    """
    rows = np.minimum(np.arange(height) // stride, grid.shape[1] - 1)
    cols = np.minimum(np.arange(width) // stride, grid.shape[2] - 1)
    return np.take(np.take(grid, rows, axis=1), cols, axis=2)


def boundary_samples(labels: np.ndarray) -> np.ndarray:
    """(N, h, w) bool: samples whose 3x3 neighbourhood holds more than one label."""
    pad = np.pad(labels, ((0, 0), (1, 1), (1, 1)), mode="edge")
    h, w = labels.shape[1:]
    mixed = np.zeros(labels.shape, bool)
    for di in range(3):
        for dj in range(3):
            mixed |= pad[:, di:di + h, dj:dj + w] != labels
    return mixed


def _boundary_pixels(mixed: np.ndarray, height: int, width: int, stride: int) -> tuple[np.ndarray, ...]:
    """Frame, row and column of every full-resolution pixel inside a mixed block."""
    n_idx, bi, bj = np.nonzero(mixed)
    h, w = mixed.shape[1:]
    # the last row/column of blocks also owns the pixels beyond the sample grid
    rows_in = np.where(bi == h - 1, height - bi * stride, stride)
    cols_in = np.where(bj == w - 1, width - bj * stride, stride)
    span = int(max(rows_in.max(initial=stride), cols_in.max(initial=stride)))
    off = np.arange(span)
    r = bi[:, None, None] * stride + off[None, :, None]
    c = bj[:, None, None] * stride + off[None, None, :]
    inside = (off[None, :, None] < rows_in[:, None, None]) & (off[None, None, :] < cols_in[:, None, None])
    shape = (n_idx.size, span, span)
    return (np.broadcast_to(n_idx[:, None, None], shape)[inside], np.broadcast_to(r, shape)[inside],
            np.broadcast_to(c, shape)[inside])


def pixel_factors(depth: np.ndarray, labels: np.ndarray, z_grid: np.ndarray, layer_scale: np.ndarray,
                  stride: int) -> np.ndarray:
    """Each pixel's depth factor: its layer's scale (1 where no layer).

    Args:
        depth: (N, H, W) float32 depth.
        labels: (N, h, w) int layer ids on the sample grid, -1 for none.
        z_grid: (N, h, w) log depth of the samples (NaN where missing).
        layer_scale: (L,) scale per layer.
        stride: sample-grid stride.
    Returns:
        (N, H, W) float32 factor; the corrected depth is ``depth * factor``.
    """
    table = np.append(layer_scale.astype(np.float32), np.float32(1.0))  # id -1 picks the trailing 1
    n, height, width = depth.shape
    scale = upsample_blocks(table[labels], height, width, stride)
    if stride == 1:
        return scale
    t, r, c = _boundary_pixels(boundary_samples(labels), height, width, stride)
    h, w = labels.shape[1:]
    # the four nearest samples, as flat indices into the sample grid: rows i0, i0 + 1, columns j0, j0 + 1
    i0 = np.clip((r - stride // 2) // stride, 0, h - 1)
    j0 = np.clip((c - stride // 2) // stride, 0, w - 1)
    j1 = np.minimum(j0 + 1, w - 1)
    row0 = (t * h + i0) * w
    row1 = row0 + np.where(i0 < h - 1, w, 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_depth = np.log(depth[t, r, c])
    z_flat = z_grid.reshape(-1)
    best = row0 + j0
    best_gap = np.abs(z_flat[best] - log_depth)
    best_gap[np.isnan(best_gap)] = np.inf
    for candidate in (row1 + j0, row0 + j1, row1 + j1):  # the first of equally close samples wins
        gap = np.abs(z_flat[candidate] - log_depth)
        closer = gap < best_gap
        best_gap = np.where(closer, gap, best_gap)
        best = np.where(closer, candidate, best)
    scale[t, r, c] = table[labels.reshape(-1)[best]]
    return scale
