"""Rigid and similarity (Sim(3)) transforms: applying them and fitting them to point pairs.

A similarity ``x -> s R x + t`` is passed as its parts: scale s > 0, (3, 3) rotation R,
(3,) translation t. A (4, 4) matrix is named by its frames, ``b_from_a`` mapping points
in frame a to frame b; poses are camera-to-world, ``world_from_cam``.
"""

from __future__ import annotations

import numpy as np

from core.geometry.rotations import procrustes_rotation


def transform_points(b_from_a: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Points in frame a -> frame b.

    Args:
        b_from_a: (4, 4) transform; its rotation part may carry a scale.
        points: (..., 3) points in frame a.
    Returns:
        (..., 3) points in frame b, in the dtype of ``points``.
    """
    return points @ b_from_a[:3, :3].T.astype(points.dtype) + b_from_a[:3, 3].astype(points.dtype)


def apply_sim3_to_points(s: float, R: np.ndarray, t: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(..., 3) points -> ``s R x + t``, (..., 3)."""
    return s * points @ R.T + t


def apply_sim3_to_poses(s: float, R: np.ndarray, t: np.ndarray, world_from_cam: np.ndarray) -> np.ndarray:
    """Map (N, 4, 4) camera-to-world poses through x -> s R x + t, keeping them rigid.

    The camera centre moves to ``s R c + t`` and the orientation to ``R R_c``; the
    scale goes into the scene (depths multiply by s), not into the pose matrix.

    Returns:
        (N, 4, 4) float64 poses (a new array).
    """
    out = np.array(world_from_cam, dtype=np.float64, copy=True)
    out[:, :3, :3] = R @ out[:, :3, :3]
    out[:, :3, 3] = apply_sim3_to_points(s, R, t, out[:, :3, 3])
    return out


def rigid_align(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Weighted Kabsch: rotation R and translation t minimising ``sum w |dst - (R src + t)|^2``.

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
    R, _ = procrustes_rotation(((dst - mu_d) * w[:, None]).T @ (src - mu_s))
    return R, mu_d - R @ mu_s


def umeyama_sim3(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Similarity minimising ``sum |dst - (s R src + t)|^2`` (Umeyama 1991).

    Args:
        src: (N, 3) points to be mapped.
        dst: (N, 3) corresponding target points.

    Returns:
        (s, R, t): scale > 0, (3, 3) proper rotation (det +1, reflections excluded), (3,) translation.

    Raises:
        ValueError: mismatched shapes, fewer than 3 points, or a point set without spread.
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 3:
        raise ValueError(f"umeyama_sim3 needs two (N, 3) arrays, got {src.shape} and {dst.shape}")
    if len(src) < 3:
        raise ValueError(f"umeyama_sim3 needs at least 3 point pairs, got {len(src)}")
    mu_src, mu_dst = src.mean(0), dst.mean(0)
    xs, xd = src - mu_src, dst - mu_dst
    var_src = (xs**2).sum() / len(src)
    if var_src <= 1e-24 or (xd**2).sum() / len(dst) <= 1e-24:
        raise ValueError("umeyama_sim3: a point set has no spread (all points coincide); "
                         "the similarity is undefined")
    R, trace = procrustes_rotation(xd.T @ xs / len(src))
    s = float(trace / var_src)
    return s, R, mu_dst - s * R @ mu_src
