"""Robust fits of one parameter to network predictions, many of them wrong.

All are Tukey IRLS in log space: a scale from noisy ratios (the overlap depth scale
between windows), the shared focal length from predicted camera-space points (or one per
frame, for a zoom), and a robust smooth curve over time (a zoom's focal lengths).
"""

from __future__ import annotations

import numpy as np

from core.errors import UserError
from core.geometry.camera import finite_points, pixel_grid


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
        UserError: fewer than 16 usable pixels.
    """
    n, h, w = mask.shape
    u, v = pixel_grid(h, w)
    return _focal_fit(points, mask, u - w / 2, v - h / 2, 0.05 * max(w, h))


def estimate_frame_focals(points: np.ndarray, mask: np.ndarray, samples: int = 20_000) -> np.ndarray:
    """(N,) float64 focal length (pixels) of each frame, fitted as :func:`estimate_focal` does to
    about ``samples`` of its pixels (a regular grid); NaN where a frame has too few usable pixels.
    ``points`` (N, H, W, 3), ``mask`` (N, H, W) as there."""
    n, h, w = mask.shape
    step = max(1, int(np.sqrt(h * w / samples)))
    rows, cols = np.arange(step // 2, h, step), np.arange(step // 2, w, step)
    du = np.broadcast_to(cols + 0.5 - w / 2, (len(rows), len(cols)))
    dv = np.broadcast_to((rows + 0.5 - h / 2)[:, None], (len(rows), len(cols)))
    grid = np.ix_(rows, cols)
    focals = np.full(n, np.nan)
    for i in range(n):
        try:
            focals[i] = _focal_fit(points[i][grid][None], mask[i][grid][None], du, dv, 0.05 * max(w, h))
        except UserError:
            continue
    return focals


def _focal_fit(points: np.ndarray, mask: np.ndarray, du: np.ndarray, dv: np.ndarray, min_offset: float) -> float:
    """The focal fit of :func:`estimate_focal` to (N, h, w) pixels whose offsets from the principal point
    are ``du``, ``dv`` (h, w); pixels nearer to it than ``min_offset`` (along an axis) are left out."""
    n, h, w = mask.shape
    z = points[..., 2]
    valid = mask & (z > 1e-6) & finite_points(points)
    zs = np.where(valid, z, 1.0)
    a = np.concatenate([(points[..., 0] / zs)[valid], (points[..., 1] / zs)[valid]]).astype(np.float64)
    b = np.concatenate([np.broadcast_to(du, (n, h, w))[valid],
                        np.broadcast_to(dv, (n, h, w))[valid]]).astype(np.float64)
    use = (np.abs(b) > min_offset) & (a * b > 0)
    if use.sum() < 16:
        raise UserError("too few confident pixels to estimate the focal length; pass a known focal length "
                        "(--focal-px, or --focal-mm with --sensor-width-mm)")
    return robust_log_scale(np.abs(b[use]), np.abs(a[use]), weights=np.abs(b[use]))


def robust_smooth(t: np.ndarray, y: np.ndarray, at: np.ndarray, stiffness: float, tolerance: float = 0.05,
                  iterations: int = 4) -> np.ndarray:
    """A smooth curve through noisy samples of a signal over integer time, robust to outliers.

    Whittaker smoother on the integer grid spanning ``t`` and ``at``: the curve z minimises
    ``sum_k w_k (y_k - z(t_k))^2 + stiffness * sum (third difference of z)^2``. Several samples
    may share a time; times without samples are bridged, and beyond the samples the curve
    continues as a parabola, so a steady acceleration (a zoom ramping up) is followed to the
    last sample without lag. IRLS with Tukey's biweight gives gross outliers zero weight; its
    width is at least ``tolerance`` (residuals below it never count as outliers).

    Args:
        t: (M,) integer sample times; y: (M,) values (e.g. log focal lengths).
        at: (P,) integer times to evaluate the curve at.
        stiffness: weight of the penalty; larger is smoother (its sixth root is roughly the
            smoothing half-width, in samples).
    Returns:
        (P,) float64 curve values (the samples' median when they cover fewer than 3 times).
    """
    t = np.asarray(t, np.int64)
    y = np.asarray(y, np.float64)
    at = np.asarray(at, np.int64)
    if t.size == 0:
        raise ValueError("robust_smooth needs at least one sample")
    if np.unique(t).size < 3:
        return np.full(at.shape, float(np.median(y)))
    t0 = int(min(t.min(), at.min()))
    size = int(max(t.max(), at.max())) - t0 + 1
    D = np.diff(np.eye(size), n=3, axis=0)
    penalty = stiffness * (D.T @ D)
    idx = t - t0
    w = np.ones_like(y)
    z = np.zeros(size)
    for _ in range(iterations + 1):
        z = np.linalg.solve(penalty + np.diag(np.bincount(idx, w, size)), np.bincount(idx, w * y, size))
        res = y - z[idx]
        c = max(4.685 * 1.4826 * float(np.median(np.abs(res))), tolerance)
        w = np.clip(1 - (res / c) ** 2, 0, None) ** 2
        if np.unique(idx[w > 0]).size < 3:  # too few samples left to fix a parabola: keep the last curve
            break
    return z[at - t0]
