"""The similarity from a run's world to the scene world (``RUN/scene.json``).

A run's world is the first window's camera frame in the network's unit. The scene
world is what the user sees in Blender and in every export: floor at Z = 0, +Z up,
metres when a distance or a camera height was given. One transform, applied by the
Blender import (as one root object), ``blend`` and every exporter::

    x_scene = scale * rotation @ x_run + translation

Poses compose on the left: ``scene_from_cam = scene_from_run @ run_from_cam`` (the
camera's rotation is ``rotation @ R``; its centre moves like a point; its unit
changes with ``scale``).
"""

from __future__ import annotations

from enum import Enum

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator


FIRST_CAMERA = "first camera"
CAMERA_AXES = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
"""OpenCV camera axes (x right, y down, z forward) -> scene axes (+X right, +Z up, +Y forward)."""


class Units(str, Enum):
    network = "network"  # the backbone's arbitrary unit (the first window's scale)
    metres = "metres"    # set from a known distance or camera height


class SceneTransform(BaseModel):
    """``scene_from_run`` as scale, rotation and translation, and how it was set."""

    model_config = ConfigDict(extra="forbid")

    scale: float = Field(1.0, gt=0, allow_inf_nan=False)
    rotation: list[list[float]] = Field(default_factory=lambda: np.eye(3).tolist())
    translation: list[float] = Field(default_factory=lambda: [0.0, 0.0, 0.0])
    units: Units = Units.network
    method: str = FIRST_CAMERA
    """How it was set, in words a user reads ('ground plane (auto)', 'manual: floor, origin, scale')."""

    @field_validator("rotation")
    @classmethod
    def _proper_rotation(cls, value: list[list[float]]) -> list[list[float]]:
        r = np.asarray(value, dtype=np.float64)
        if r.shape != (3, 3) or not np.isfinite(r).all():
            raise ValueError("rotation must be a finite 3x3 matrix")
        if not np.allclose(r @ r.T, np.eye(3), atol=1e-5) or np.linalg.det(r) < 0:
            raise ValueError("rotation must be a proper rotation (orthonormal, det +1)")
        return value

    @field_validator("translation")
    @classmethod
    def _finite3(cls, value: list[float]) -> list[float]:
        if len(value) != 3 or not np.isfinite(value).all():
            raise ValueError("translation must be 3 finite numbers")
        return value

    @classmethod
    def identity(cls) -> SceneTransform:
        return cls()

    @classmethod
    def first_camera(cls, world_from_cam0: np.ndarray) -> SceneTransform:
        """The anchoring used when nothing else is known: the first camera at the origin,
        upright, looking along +Y (its OpenCV axes x, y, z become scene +X, -Z, +Y)."""
        r0 = np.asarray(world_from_cam0, np.float64)[:3, :3]
        rotation = CAMERA_AXES @ r0.T
        return cls(rotation=rotation.tolist(), translation=(-rotation @ np.asarray(world_from_cam0)[:3, 3]).tolist(),
                   method=FIRST_CAMERA)

    @classmethod
    def from_matrix(cls, scene_from_run: np.ndarray, **fields) -> SceneTransform:
        """From a (4, 4) similarity ``[s R | t]``."""
        m = np.asarray(scene_from_run, dtype=np.float64)
        scale = float(np.cbrt(np.linalg.det(m[:3, :3])))
        return cls(scale=scale, rotation=(m[:3, :3] / scale).tolist(), translation=m[:3, 3].tolist(), **fields)

    def matrix(self) -> np.ndarray:
        """(4, 4) float64 ``scene_from_run``."""
        m = np.eye(4)
        m[:3, :3] = self.scale * np.asarray(self.rotation)
        m[:3, 3] = self.translation
        return m

    def apply_points(self, points: np.ndarray) -> np.ndarray:
        """(..., 3) run-world points -> scene-world points (same dtype)."""
        r = self.scale * np.asarray(self.rotation, dtype=points.dtype)
        return points @ r.T + np.asarray(self.translation, dtype=points.dtype)

    def apply_poses(self, world_from_cam: np.ndarray) -> np.ndarray:
        """(N, 4, 4) run ``world_from_cam`` -> scene ``scene_from_cam``: rotation rigid, centre moved and scaled."""
        out = np.array(world_from_cam, dtype=np.float64, copy=True)
        r = np.asarray(self.rotation)
        out[..., :3, :3] = r @ out[..., :3, :3]
        out[..., :3, 3] = self.apply_points(out[..., :3, 3])
        return out.astype(np.asarray(world_from_cam).dtype)

    def is_identity(self) -> bool:
        return bool(np.allclose(self.matrix(), np.eye(4)))
