"""Pure geometry helpers (numpy). Conventions: OpenCV camera axes (x right, y down,
z forward), camera-to-world poses, pixel (row i, col j) centred at (j + 0.5, i + 0.5)."""

from __future__ import annotations

import numpy as np


def pixel_grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates: two (H, W) float32 arrays u (columns) and v (rows)."""
    u = np.arange(width, dtype=np.float32) + 0.5
    v = np.arange(height, dtype=np.float32) + 0.5
    return np.broadcast_to(u[None, :], (height, width)), np.broadcast_to(v[:, None], (height, width))


def intrinsics(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """(3, 3) float64 pinhole matrix."""
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def unproject(depth: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Camera-space points from z-depth.

    Args:
        depth: (..., H, W) z-depth.
        K: (3, 3) intrinsics at the depth map's resolution.
    Returns:
        (..., H, W, 3) float32 points in OpenCV camera axes.
    """
    h, w = depth.shape[-2:]
    u, v = pixel_grid(h, w)
    x = (u - K[0, 2]) / K[0, 0]
    y = (v - K[1, 2]) / K[1, 1]
    depth = depth.astype(np.float32, copy=False)
    return np.stack([x * depth, y * depth, depth], axis=-1)


def unproject_pixels(u: np.ndarray, v: np.ndarray, z: np.ndarray, K: np.ndarray,
                     c2w: np.ndarray) -> np.ndarray:
    """World points of individual pixels.

    Args:
        u, v: (P,) continuous pixel coordinates (pixel centres at +0.5).
        z: (P,) z-depth.
        K: (3, 3) intrinsics.
        c2w: (4, 4) camera-to-world shared by all pixels, or (P, 4, 4) one per pixel.
    Returns:
        (P, 3) float64 world points.
    """
    z = np.asarray(z, np.float64)
    cam = np.stack([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z], axis=-1)
    c2w = np.asarray(c2w, np.float64)
    if c2w.ndim == 2:
        return cam @ c2w[:3, :3].T + c2w[:3, 3]
    return np.einsum("nab,nb->na", c2w[:, :3, :3], cam) + c2w[:, :3, 3]


def transform_points(T: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a (4, 4) transform (rotation part may carry a scale) to (..., 3) points."""
    return points @ T[:3, :3].T.astype(points.dtype) + T[:3, 3].astype(points.dtype)


def estimate_focal(points: np.ndarray, mask: np.ndarray) -> float:
    """Robust shared focal length (pixels) from camera-space points, principal point at the centre.

    Every valid pixel away from the centre gives ``f = (u - cx) / (x / z)`` (and the
    same for v, y); f is their robust (Tukey IRLS) consensus in log space, weighted
    by the distance from the centre, so a minority of wrong points cannot drag it.

    Args:
        points: (N, H, W, 3) camera-space points.
        mask: (N, H, W) bool pixels to use.
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
        raise ValueError("too few confident pixels to estimate the focal length; pass a known focal length")
    return robust_log_scale(np.abs(b[use]), np.abs(a[use]), weights=np.abs(b[use]))


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


def rigid_align(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Weighted Kabsch: rotation R and translation t minimising sum w |dst - (R src + t)|^2.

    Args:
        src, dst: (M, 3) corresponding points.
        weights: (M,) optional non-negative weights.
    Returns:
        R (3, 3) proper rotation, t (3,).
    """
    w = np.ones(len(src)) if weights is None else np.asarray(weights, np.float64)
    w = w / w.sum()
    mu_s = (w[:, None] * src).sum(0)
    mu_d = (w[:, None] * dst).sum(0)
    cov = ((dst - mu_d) * w[:, None]).T @ (src - mu_s)
    U, _, Vt = np.linalg.svd(cov)
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))])
    R = U @ D @ Vt
    return R, mu_d - R @ mu_s


def apply_sim3_to_poses(s: float, R: np.ndarray, t: np.ndarray, poses: np.ndarray) -> np.ndarray:
    """Map (N, 4, 4) camera-to-world poses through x -> s R x + t, keeping them rigid.

    The camera centre moves to ``s R c + t`` and the orientation to ``R R_c``; the
    scale goes into the scene (depths multiply by s), not into the pose matrix.
    """
    out = np.array(poses, dtype=np.float64, copy=True)
    out[:, :3, :3] = R @ out[:, :3, :3]
    out[:, :3, 3] = s * out[:, :3, 3] @ R.T + t
    return out
