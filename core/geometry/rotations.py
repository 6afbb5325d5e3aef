"""Rotations: quaternion conversions, rotation angles, the nearest rotation (Procrustes).

Rotation matrices are (..., 3, 3) float64 with det +1; quaternions are (..., 4) in
(qx, qy, qz, qw) order (TUM, scipy), Hamilton convention.
"""

from __future__ import annotations

import numpy as np


def rotation_to_quaternion(R: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotation matrices -> (..., 4) unit quaternions (qx, qy, qz, qw), qw >= 0."""
    R = np.asarray(R, np.float64)
    m00, m11, m22 = R[..., 0, 0], R[..., 1, 1], R[..., 2, 2]
    # Four candidate solutions; pick the numerically largest per matrix.
    q = np.stack([
        np.stack([1 + m00 - m11 - m22, R[..., 0, 1] + R[..., 1, 0], R[..., 0, 2] + R[..., 2, 0], R[..., 2, 1] - R[..., 1, 2]], -1),
        np.stack([R[..., 0, 1] + R[..., 1, 0], 1 - m00 + m11 - m22, R[..., 1, 2] + R[..., 2, 1], R[..., 0, 2] - R[..., 2, 0]], -1),
        np.stack([R[..., 0, 2] + R[..., 2, 0], R[..., 1, 2] + R[..., 2, 1], 1 - m00 - m11 + m22, R[..., 1, 0] - R[..., 0, 1]], -1),
        np.stack([R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0], R[..., 1, 0] - R[..., 0, 1], 1 + m00 + m11 + m22], -1),
    ], -2)  # (..., 4 candidates, 4)
    diag = np.stack([q[..., 0, 0], q[..., 1, 1], q[..., 2, 2], q[..., 3, 3]], -1)
    best = np.argmax(diag, axis=-1)
    out = np.take_along_axis(q, best[..., None, None].repeat(4, -1), axis=-2)[..., 0, :]
    out /= np.linalg.norm(out, axis=-1, keepdims=True)
    return np.where(out[..., 3:4] < 0, -out, out)


def quaternion_to_rotation(q: np.ndarray) -> np.ndarray:
    """(..., 4) quaternions (qx, qy, qz, qw), normalised here -> (..., 3, 3) rotation matrices."""
    q = np.asarray(q, np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    x, y, z, w = np.moveaxis(q, -1, 0)
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
        np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
        np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
    ], -2)


def rotation_angle_deg(R: np.ndarray) -> np.ndarray:
    """Angles in degrees, in [0, 180], of (..., 3, 3) rotation matrices -> (...,).

    atan2 of the sine (from the skew part) and cosine (from the trace) stays accurate
    near 0, where arccos of the trace loses half the digits.
    """
    R = np.asarray(R, np.float64)
    skew = np.stack([R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0], R[..., 1, 0] - R[..., 0, 1]], -1)
    sin = np.linalg.norm(skew, axis=-1) / 2.0
    cos = (np.trace(R, axis1=-2, axis2=-1) - 1.0) / 2.0
    return np.degrees(np.arctan2(sin, cos))


def procrustes_rotation(cov: np.ndarray) -> tuple[np.ndarray, float]:
    """The proper rotation R maximising ``trace(R^T cov)`` (the SVD step of Kabsch and Umeyama).

    Args:
        cov: (3, 3) cross-covariance ``sum_k w_k (dst_k - mean dst)(src_k - mean src)^T``
            of centred point pairs; R then best maps src directions onto dst directions.
    Returns:
        R (3, 3) with det +1 (when the best orthogonal map is a reflection, the best
        rotation instead), and the maximum ``trace(R^T cov)`` it reaches.
    """
    U, D, Vt = np.linalg.svd(cov)
    S = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        S[2, 2] = -1.0
    return U @ S @ Vt, float(np.trace(np.diag(D) @ S))


def rotvec_to_rotation(v: np.ndarray) -> np.ndarray:
    """(..., 3) rotation vectors (axis times angle, radians) -> (..., 3, 3) rotation matrices (Rodrigues)."""
    v = np.asarray(v, np.float64)
    theta = np.linalg.norm(v, axis=-1)[..., None, None]
    k = np.zeros(v.shape[:-1] + (3, 3))
    k[..., 0, 1], k[..., 0, 2], k[..., 1, 2] = -v[..., 2], v[..., 1], -v[..., 0]
    k = k - np.swapaxes(k, -1, -2)
    small = theta < 1e-8
    safe = np.where(small, 1.0, theta)
    a = np.where(small, 1.0 - theta ** 2 / 6, np.sin(safe) / safe)
    b = np.where(small, 0.5 - theta ** 2 / 24, (1 - np.cos(safe)) / safe ** 2)
    return np.eye(3) + a * k + b * (k @ k)
