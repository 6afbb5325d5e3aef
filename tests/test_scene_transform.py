"""RUN/scene.json: the run-world -> scene-world similarity every consumer applies."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from core.geometry.rotations import quaternion_to_rotation
from core.run.rundir import RunDir
from core.run.scene_transform import SceneTransform, Units


def random_similarity(rng: np.random.Generator) -> np.ndarray:
    q = rng.normal(size=4)
    m = np.eye(4)
    m[:3, :3] = 2.5 * quaternion_to_rotation(q / np.linalg.norm(q))
    m[:3, 3] = rng.normal(size=3)
    return m


def test_points_and_poses_follow_the_matrix(tmp_path):
    rng = np.random.default_rng(0)
    scene_from_run = random_similarity(rng)
    transform = SceneTransform.from_matrix(scene_from_run, units=Units.metres, method="test")
    np.testing.assert_allclose(transform.matrix(), scene_from_run, atol=1e-12)

    points = rng.normal(size=(50, 3))
    np.testing.assert_allclose(transform.apply_points(points), points @ scene_from_run[:3, :3].T + scene_from_run[:3, 3])

    run_from_cam = np.stack([random_similarity(rng) for _ in range(4)])
    run_from_cam[:, :3, :3] /= 2.5  # rigid camera poses
    scene_from_cam = transform.apply_poses(run_from_cam)
    # the camera stays rigid; its centre moves like a point; a point in front of it lands where the similarity puts it
    np.testing.assert_allclose(scene_from_cam[:, :3, :3] @ scene_from_cam[:, :3, :3].transpose(0, 2, 1),
                               np.broadcast_to(np.eye(3), (4, 3, 3)), atol=1e-12)
    np.testing.assert_allclose(scene_from_cam[:, :3, 3], transform.apply_points(run_from_cam[:, :3, 3]))
    ray = np.array([0.1, -0.2, 1.0])
    in_run = run_from_cam[:, :3, :3] @ ray + run_from_cam[:, :3, 3]
    in_scene = scene_from_cam[:, :3, :3] @ (2.5 * ray) + scene_from_cam[:, :3, 3]
    np.testing.assert_allclose(in_scene, transform.apply_points(in_run), atol=1e-12)

    run = RunDir(tmp_path)
    assert run.scene_transform().is_identity()  # no scene.json: first-camera anchoring
    run.write_scene_transform(transform)
    assert run.scene_transform() == transform


@pytest.mark.parametrize("fields", [{"rotation": np.diag([1.0, 1.0, -1.0]).tolist()},
                                    {"rotation": (3 * np.eye(3)).tolist()},
                                    {"scale": 0.0}, {"scale": float("nan")},
                                    {"translation": [0.0, float("inf"), 0.0]}])
def test_rejects_what_is_not_a_similarity(fields):
    with pytest.raises(ValidationError):
        SceneTransform(**fields)
