"""Planes in a point cloud: a least-squares fit and a robust, weighted RANSAC for the ground.

A plane is ``n . x = d`` with ``n`` a unit normal; the signed distance of ``x`` is
``n . x - d``. Every function is vectorised over points and hypotheses.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Plane:
    """``normal . x = offset`` (unit ``normal``, (3,) float64)."""

    normal: np.ndarray
    offset: float

    def distance(self, points: np.ndarray) -> np.ndarray:
        """(..., 3) points -> (...,) signed distances (positive on the normal's side)."""
        return points @ self.normal - self.offset

    def facing(self, up: np.ndarray) -> "Plane":
        """The same plane with its normal on the side of ``up`` (n . up >= 0)."""
        return self if float(self.normal @ up) >= 0 else Plane(-self.normal, -self.offset)


def fit_plane(points: np.ndarray, weights: np.ndarray | None = None) -> Plane:
    """Weighted least-squares plane through (N >= 3, 3) points: the normal is the
    covariance's least eigenvector, the plane passes through the weighted centroid."""
    p = np.asarray(points, np.float64)
    w = np.ones(len(p)) if weights is None else np.asarray(weights, np.float64)
    centroid = (w[:, None] * p).sum(0) / w.sum()
    q = p - centroid
    cov = (w[:, None] * q).T @ q
    normal = np.linalg.eigh(cov)[1][:, 0]
    return Plane(normal, float(normal @ centroid))


@dataclass(frozen=True)
class GroundFit:
    """The best plane RANSAC found and how well the cloud supports it.

    Attributes:
        plane: normal on the side of the ``up`` hint.
        inliers: (N,) bool, points within their tolerance of the plane.
        support: share (0-1) of the total weight held by the inliers.
        tilt_deg: angle between the normal and the ``up`` hint.
    """

    plane: Plane
    inliers: np.ndarray
    support: float
    tilt_deg: float


def ransac_ground(points: np.ndarray, weights: np.ndarray, tolerance: np.ndarray, up: np.ndarray,
                  max_tilt_deg: float = 60.0, hypotheses: int = 512, seed: int = 0) -> GroundFit | None:
    """The plane holding the most weight among those roughly perpendicular to ``up``.

    Hypotheses are planes through three points drawn with probability proportional to
    ``weights``; a point supports a plane when its distance is below its own
    ``tolerance`` (noise grows with depth, so callers pass a share of each point's
    depth). Only normals within ``max_tilt_deg`` of ``up`` compete (``up``, e.g. the
    cameras' mean up direction, also decides which side of the plane is up). The best
    hypothesis is refined by least squares on its inliers, each weighted by its weight over
    its squared tolerance (a point's tolerance stands for its noise), with the tolerance
    halved in the second round.

    Args:
        points: (N, 3).
        weights: (N,) non-negative (e.g. confidence ranks).
        tolerance: (N,) positive inlier distance per point.
        up: (3,) direction the ground's normal should roughly follow.
    Returns:
        The fit, or None when no hypothesis lies within the tilt cone.
    """
    p = np.asarray(points, np.float64)
    w = np.asarray(weights, np.float64)
    tol = np.asarray(tolerance, np.float64)
    up = np.asarray(up, np.float64) / np.linalg.norm(up)
    if len(p) < 3 or w.sum() <= 0:
        return None
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(p), size=(hypotheses, 3), p=w / w.sum())
    a, b, c = p[idx[:, 0]], p[idx[:, 1]], p[idx[:, 2]]
    normals = np.cross(b - a, c - a)
    norms = np.linalg.norm(normals, axis=1)
    ok = norms > 1e-12
    normals = normals[ok] / norms[ok, None]
    normals *= np.where(normals @ up < 0, -1.0, 1.0)[:, None]  # face up
    offsets = (normals * a[ok]).sum(1)
    cos_max = np.cos(np.radians(max_tilt_deg))
    keep = normals @ up >= cos_max
    if not keep.any():
        return None
    normals, offsets = normals[keep], offsets[keep]
    scores = np.concatenate([w @ (np.abs(p @ normals[k:k + 64].T - offsets[k:k + 64]) < tol[:, None])
                             for k in range(0, len(normals), 64)])  # (H,), 64 hypotheses at a time
    best = int(np.argmax(scores))
    plane = Plane(normals[best], float(offsets[best]))
    for shrink in (1.0, 0.5):
        inliers = np.abs(plane.distance(p)) < shrink * tol
        if inliers.sum() < 3:
            break
        plane = fit_plane(p[inliers], w[inliers] / tol[inliers] ** 2).facing(up)
    inliers = np.abs(plane.distance(p)) < tol
    tilt = float(np.degrees(np.arccos(np.clip(plane.normal @ up, -1.0, 1.0))))
    return GroundFit(plane=plane, inliers=inliers, support=float(w[inliers].sum() / w.sum()), tilt_deg=tilt)
