"""Radial lens distortion in Blender's polynomial model (k1, k2; k3 = 0).

Normalised image coordinates ``(x, y) = (X / Z, Y / Z)`` of an ideal pinhole camera are distorted
to ``(x, y) * (1 + k1 r^2 + k2 r^4)`` with ``r^2 = x^2 + y^2``, and then mapped to pixels by ``K``.
This is what Blender's movie-clip camera (``distortion_model = 'POLYNOMIAL'``) and COLMAP's RADIAL
and OPENCV models (with zero tangential terms) apply.
"""

from __future__ import annotations

import numpy as np


def distort(x: np.ndarray, y: np.ndarray, k: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Distorted normalised coordinates of ideal ones ``x``, ``y`` (any shape)."""
    r2 = x * x + y * y
    gain = 1 + k[0] * r2 + k[1] * r2 * r2
    return x * gain, y * gain


def undistort(xd: np.ndarray, yd: np.ndarray, k: tuple[float, float],
              iterations: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Ideal normalised coordinates whose distortion is ``xd``, ``yd`` (any shape): Newton steps on the
    radius (the model is radial), starting from the distorted radius. Exact to float precision for
    the distortions lenses have (the model's radius map increasing over the frame)."""
    if k[0] == 0 and k[1] == 0:
        return xd, yd
    rd = np.sqrt(xd * xd + yd * yd)
    r = rd.copy()
    for _ in range(iterations):
        r2 = r * r
        f = r * (1 + k[0] * r2 + k[1] * r2 * r2) - rd
        r = r - f / (1 + 3 * k[0] * r2 + 5 * k[1] * r2 * r2)
    scale = np.divide(r, rd, out=np.ones_like(rd), where=rd > 0)
    return xd * scale, yd * scale
