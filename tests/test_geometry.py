"""Geometry helpers (core.geometry.*) against independent answers: round trips and hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from core.geometry.camera import Projection, intrinsics, pixel_grid, project, unproject, unproject_pixels, zbuffer
from core.geometry.rotations import (
    procrustes_rotation,
    quaternion_to_rotation,
    rotation_angle_deg,
    rotation_to_quaternion,
)
from core.geometry.transforms import (
    apply_sim3_to_points,
    apply_sim3_to_poses,
    rigid_align,
    transform_points,
    umeyama_sim3,
)

RNG = np.random.default_rng(11)
H, W = 24, 32
K = intrinsics(40.0, 42.0, W / 2 + 0.7, H / 2 - 0.4)


def random_axes(n: int) -> np.ndarray:
    axes = RNG.normal(size=(n, 3))
    return axes / np.linalg.norm(axes, axis=1, keepdims=True)


def near_half_turns() -> np.ndarray:
    """(24, 3, 3) rotations at and just short of 180 degrees about random axes (and the x, y, z axes)."""
    axes = np.concatenate([np.eye(3), random_axes(5)])
    angles = np.pi - np.array([0.0, 1e-9, 1e-4])
    return Rotation.from_rotvec((axes[:, None] * angles[None, :, None]).reshape(-1, 3)).as_matrix()


def rigid(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, t
    return T


# --------------------------------------------------------------------------- rotations

def test_quaternions_match_scipy_and_round_trip():
    Rs = np.concatenate([Rotation.random(200, random_state=3).as_matrix(), near_half_turns(), np.eye(3)[None]])
    q = rotation_to_quaternion(Rs)
    assert q.shape == (len(Rs), 4)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-12)
    assert (q[:, 3] >= 0).all()
    np.testing.assert_allclose(quaternion_to_rotation(q), Rs, atol=1e-12)
    # the same rotation as scipy's (x, y, z, w) quaternion, up to the sign of q
    ref = Rotation.from_matrix(Rs).as_quat()
    np.testing.assert_allclose(np.abs(np.einsum("ni,ni->n", q, ref)), 1.0, atol=1e-12)


def test_quaternion_to_rotation_normalises_and_broadcasts():
    q = Rotation.random(6, random_state=4).as_quat().reshape(2, 3, 4)
    R = quaternion_to_rotation(3.0 * q)
    assert R.shape == (2, 3, 3, 3)
    np.testing.assert_allclose(R, Rotation.from_quat(q.reshape(-1, 4)).as_matrix().reshape(2, 3, 3, 3), atol=1e-12)


def test_rotation_angle_near_a_half_turn():
    angles = rotation_angle_deg(near_half_turns()).reshape(-1, 3)
    np.testing.assert_allclose(angles, np.degrees(np.pi - np.array([0.0, 1e-9, 1e-4]))[None].repeat(8, 0),
                               atol=1e-6)


def test_procrustes_rotation_excludes_reflections():
    R = Rotation.random(random_state=5).as_matrix()
    src = RNG.normal(size=(50, 3))
    src -= src.mean(0)
    R_est, trace = procrustes_rotation((src @ R.T).T @ src)
    np.testing.assert_allclose(R_est, R, atol=1e-12)
    assert trace == pytest.approx(np.trace(R.T @ (src @ R.T).T @ src))
    mirrored = src * [-1, 1, 1]  # the best orthogonal map is a reflection: a rotation comes back
    R_est, _ = procrustes_rotation(mirrored.T @ src)
    assert np.linalg.det(R_est) == pytest.approx(1.0)
    np.testing.assert_allclose(R_est @ R_est.T, np.eye(3), atol=1e-12)


# --------------------------------------------------------------------------- transforms

S_TRUE, R_TRUE, T_TRUE = 2.5, Rotation.from_rotvec([0.4, -1.1, 2.0]).as_matrix(), np.array([1.0, -3.0, 0.5])


def test_umeyama_recovers_a_known_sim3_applied_to_points():
    src = RNG.normal(size=(40, 3))
    s, R, t = umeyama_sim3(src, apply_sim3_to_points(S_TRUE, R_TRUE, T_TRUE, src))
    assert s == pytest.approx(S_TRUE, rel=1e-12)
    np.testing.assert_allclose(R, R_TRUE, atol=1e-12)
    np.testing.assert_allclose(t, T_TRUE, atol=1e-12)


def test_rigid_align_ignores_zero_weight_outliers():
    src = RNG.normal(size=(30, 3))
    dst = src @ R_TRUE.T + T_TRUE
    dst[:5] += RNG.normal(scale=10.0, size=(5, 3))
    weights = np.r_[np.zeros(5), np.ones(25)]
    R, t = rigid_align(src, dst, weights)
    np.testing.assert_allclose(R, R_TRUE, atol=1e-12)
    np.testing.assert_allclose(t, T_TRUE, atol=1e-12)


def test_apply_sim3_to_poses_is_the_similarity_with_its_scale_moved_into_the_scene():
    world_from_cam = np.stack([rigid(Rotation.random(random_state=i).as_matrix(), RNG.normal(size=3))
                               for i in range(4)])
    moved = apply_sim3_to_poses(S_TRUE, R_TRUE, T_TRUE, world_from_cam.astype(np.float32))
    assert moved.dtype == np.float64
    sim3 = rigid(S_TRUE * R_TRUE, T_TRUE)
    expected = sim3 @ world_from_cam
    expected[:, :3, :3] /= S_TRUE
    np.testing.assert_allclose(moved, expected, atol=1e-6)
    # a camera-space point at depth d in the old frame is the point at depth s d in the new one
    cam = np.array([0.3, -0.2, 1.7])
    np.testing.assert_allclose(transform_points(moved[0], S_TRUE * cam),
                               apply_sim3_to_points(S_TRUE, R_TRUE, T_TRUE, transform_points(world_from_cam[0], cam)),
                               atol=1e-5)


def test_transform_points_matches_homogeneous_coordinates_and_keeps_the_dtype():
    b_from_a = rigid(2.0 * R_TRUE, T_TRUE)
    points = RNG.normal(size=(5, 7, 3))
    expected = (np.concatenate([points, np.ones((5, 7, 1))], -1) @ b_from_a.T)[..., :3]
    np.testing.assert_allclose(transform_points(b_from_a, points), expected, atol=1e-12)
    assert transform_points(b_from_a, points.astype(np.float32)).dtype == np.float32


# --------------------------------------------------------------------------- camera

def test_pixel_grid_is_at_pixel_centres():
    u, v = pixel_grid(2, 3)
    np.testing.assert_array_equal(u, [[0.5, 1.5, 2.5]] * 2)
    np.testing.assert_array_equal(v, [[0.5] * 3, [1.5] * 3])


def test_project_of_unproject_is_the_pixel_itself():
    depth = RNG.uniform(1.0, 9.0, (2, H, W)).astype(np.float32)
    world_from_cam = np.stack([rigid(Rotation.random(random_state=7 + f).as_matrix(), RNG.normal(size=3))
                               for f in range(2)])
    cam = unproject(depth, K)
    assert cam.shape == (2, H, W, 3) and cam.dtype == np.float32
    rows, cols = np.mgrid[:H, :W]
    for f in range(2):
        world = transform_points(world_from_cam[f], cam[f].astype(np.float64).reshape(-1, 3))
        # the same points from individual pixels
        np.testing.assert_allclose(
            unproject_pixels(cols.ravel() + 0.5, rows.ravel() + 0.5, depth[f].ravel(), K, world_from_cam[f]),
            world, atol=1e-5)
        proj = project(world.astype(np.float32), world_from_cam[f][None], K, (H, W))
        assert len(proj.z) == H * W
        np.testing.assert_array_equal(proj.frame, 0)
        np.testing.assert_array_equal(proj.row, rows.ravel())
        np.testing.assert_array_equal(proj.col, cols.ravel())
        np.testing.assert_allclose(proj.z, depth[f].ravel(), rtol=1e-5)


def test_project_drops_points_behind_or_outside_the_image():
    cam_points = np.array([[0.0, 0.0, 2.0], [0.0, 0.0, -2.0], [10.0, 0.0, 1.0], [0.0, 0.0, 0.0]], np.float32)
    proj = project(cam_points, np.eye(4)[None], K, (H, W))
    np.testing.assert_array_equal(proj.row, [int(np.floor(K[1, 2]))])
    np.testing.assert_array_equal(proj.col, [int(np.floor(K[0, 2]))])


def test_unproject_pixels_takes_one_pose_per_pixel():
    poses = np.stack([rigid(np.eye(3), [x, 0.0, 0.0]) for x in (0.0, 5.0)])
    world = unproject_pixels(np.array([K[0, 2]] * 2), np.array([K[1, 2]] * 2), np.array([2.0, 3.0]), K, poses)
    np.testing.assert_allclose(world, [[0.0, 0.0, 2.0], [5.0, 0.0, 3.0]], atol=1e-12)


def test_zbuffer_keeps_the_nearest_point_per_block():
    stride = 4
    # frame 0: three points in block (1, 2), one in block (0, 0); frame 1: one point cut off at the right
    proj = Projection(frame=np.array([0, 0, 0, 0, 1]), row=np.array([4, 5, 7, 0, 1]),
                      col=np.array([8, 9, 11, 3, 13]), z=np.array([5.0, 2.0, 3.0, 7.0, 1.0], np.float32))
    nearest, block = zbuffer(proj, frames=2, shape=(2, 3), stride=stride)
    assert nearest.shape == (2, 2, 3) and nearest.dtype == np.float32
    assert nearest[0, 1, 2] == 2.0 and nearest[0, 0, 0] == 7.0
    assert np.isinf(np.delete(nearest.reshape(-1), [5, 0])).all()
    np.testing.assert_array_equal(block, [5, 5, 5, 0, -1])


def test_rotvec_to_rotation_turns_about_the_axis_by_the_length():
    from core.geometry.rotations import rotation_angle_deg, rotvec_to_rotation

    rng = np.random.default_rng(3)
    axes = rng.normal(size=(50, 3))
    angles = np.r_[rng.uniform(0, 3.1, 45), np.full(5, 1e-10)]  # below pi: rotation_angle_deg is in [0, 180]
    v = axes / np.linalg.norm(axes, axis=1, keepdims=True) * angles[:, None]
    R = rotvec_to_rotation(v)
    np.testing.assert_allclose(R @ np.swapaxes(R, 1, 2), np.broadcast_to(np.eye(3), R.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-12)
    np.testing.assert_allclose(np.einsum("nij,nj->ni", R, v), v, atol=1e-12)  # the axis stays
    np.testing.assert_allclose(rotation_angle_deg(R[:45]), np.degrees(np.linalg.norm(v[:45], axis=1)), atol=1e-6)
