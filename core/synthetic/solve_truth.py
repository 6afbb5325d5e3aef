"""Ground truth for measuring a camera solve: true pixel positions of static scene points in every frame.

Points are drawn on the static surfaces (ground, far wall, static objects) under random pixels
of a few frames and projected with the true cameras into every frame; a point counts as seen
where it is in the image and not hidden (the true depth at its pixel agrees with its depth).
Pixel centres at +0.5, footage pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.synthetic.scene import Scene


@dataclass(frozen=True)
class StaticTruth:
    """``points`` (P, 3) world points, ``uv`` (F, P, 2) their true pixels, ``seen`` (F, P) bool."""

    points: np.ndarray
    uv: np.ndarray
    seen: np.ndarray


def static_truth(scene: Scene, frames: np.ndarray, per_frame: int = 200, seed: int = 0) -> StaticTruth:
    """Static points drawn under ``per_frame`` random pixels of every 10th of ``frames``, seen in all of them."""
    rng = np.random.default_rng(seed)
    c = scene.config
    Ks = np.stack([scene.K(c.width, c.height, int(f)) for f in frames])  # (F, 3, 3): a zoom's change
    moving = [2 + i for i, o in enumerate(scene.objects) if any(o.motion)]
    renders = {int(f): scene.render(int(f)) for f in frames}
    points = []
    for f in frames[::10]:
        r = renders[int(f)]
        u, v = rng.integers(0, c.width, per_frame), rng.integers(0, c.height, per_frame)
        ok = np.isfinite(r["depth"][v, u]) & ~np.isin(r["layers"][v, u], moving)
        points.append(r["points"][v[ok], u[ok]].astype(np.float64))
    pts = np.concatenate(points)
    T = scene.pose(np.asarray(frames))
    cam = np.einsum("fji,fpj->fpi", T[:, :3, :3], pts[None] - T[:, None, :3, 3])
    z = cam[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = cam[..., :2] / z[..., None] * Ks[:, None, [0, 1], [0, 1]] + Ks[:, None, :2, 2]
    inside = (z > 0) & (uv >= 0).all(-1) & (uv < [c.width, c.height]).all(-1)
    seen = np.zeros_like(inside)
    for i, f in enumerate(frames):
        col = np.clip(uv[i, :, 0].astype(np.int64), 0, c.width - 1)
        row = np.clip(uv[i, :, 1].astype(np.int64), 0, c.height - 1)
        seen[i] = inside[i] & (np.abs(renders[int(f)]["depth"][row, col] - z[i]) < 0.02 * z[i])
    return StaticTruth(pts, np.nan_to_num(uv), seen)
