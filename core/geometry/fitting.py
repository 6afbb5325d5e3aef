"""Robust fits of one parameter to network predictions, many of them wrong.

Both are Tukey IRLS in log space: a scale from noisy ratios (the overlap depth scale
between windows) and the shared focal length from predicted camera-space points.
"""

from __future__ import annotations

import numpy as np

from core.errors import UserError
from core.geometry.camera import pixel_grid


def robust_log_scale(numer: np.ndarray, denom: np.ndarray, weights: np.ndarray | None = None,
                     iterations: int = 6) -> float:
    """Robust scale s with ``numer ~ s * denom``: IRLS with Tukey's biweight on log ratios.

    Starts from the (weighted) median log ratio, so up to half the samples may be
    gross outliers; the biweight gives them zero weight.

    Args:
        numer, denom: (M,) positive values.
        weights: (M,) optional non-negative prior weights (e.g. confidence).
    Returns:
        s > 0 (1.0 when there is nothing to fit).
    """
    r = np.log(numer.astype(np.float64)) - np.log(denom.astype(np.float64))
    w0 = np.ones_like(r) if weights is None else weights.astype(np.float64)
    ok = np.isfinite(r) & (w0 > 0)
    r, w0 = r[ok], w0[ok]
    if r.size == 0:
        return 1.0
    mu = float(np.median(r))
    for _ in range(iterations):
        res = r - mu
        c = max(4.685 * 1.4826 * float(np.median(np.abs(res))), 1e-9)
        w = w0 * np.clip(1 - (res / c) ** 2, 0, None) ** 2
        if w.sum() <= 0:
            break
        mu = float((w * r).sum() / w.sum())
    return float(np.exp(mu))


def estimate_focal(points: np.ndarray, mask: np.ndarray) -> float:
    """Robust shared focal length (pixels) from camera-space points, principal point at the centre.

    Every valid pixel away from the centre gives ``f = (u - cx) / (x / z)`` (and the
    same for v, y); f is their robust (Tukey IRLS) consensus in log space, weighted
    by the distance from the centre, so a minority of wrong points cannot drag it.

    Args:
        points: (N, H, W, 3) camera-space points.
        mask: (N, H, W) bool pixels to use.
    Raises:
        ValueError: fewer than 16 usable pixels.
    """
    n, h, w = mask.shape
    u, v = pixel_grid(h, w)
    z = points[..., 2]
    valid = mask & (z > 1e-6) & np.isfinite(points).all(-1)
    zs = np.where(valid, z, 1.0)
    a = np.concatenate([(points[..., 0] / zs)[valid], (points[..., 1] / zs)[valid]]).astype(np.float64)
    b = np.concatenate([np.broadcast_to(u - w / 2, (n, h, w))[valid],
                        np.broadcast_to(v - h / 2, (n, h, w))[valid]]).astype(np.float64)
    use = (np.abs(b) > 0.05 * max(w, h)) & (a * b > 0)
    if use.sum() < 16:
        raise UserError("too few confident pixels to estimate the focal length; pass a known focal length "
                        "(--focal-px, or --focal-mm with --sensor-width-mm)")
    return robust_log_scale(np.abs(b[use]), np.abs(a[use]), weights=np.abs(b[use]))
