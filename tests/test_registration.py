"""Registration building blocks on hand-made data with known answers."""

from __future__ import annotations

import cv2
import numpy as np

from core.geometry.camera import intrinsics, unproject
from core.geometry.fitting import estimate_focal, robust_log_scale
from core.geometry.rotations import quaternion_to_rotation, rotation_to_quaternion
from core.geometry.transforms import apply_sim3_to_poses, rigid_align
from core.registration import Reference, confidence_mask, register_window
from core.run.arrays import WindowPrediction


def _rot(rvec):
    return cv2.Rodrigues(np.asarray(rvec, np.float64).reshape(3, 1))[0]


def test_robust_scale_ignores_outliers():
    rng = np.random.default_rng(0)
    denom = rng.uniform(1, 10, 5000)
    numer = 2.5 * denom * np.exp(rng.normal(0, 0.01, 5000))
    numer[:1000] *= rng.uniform(3, 10, 1000)  # 20% gross outliers
    assert abs(robust_log_scale(numer, denom) - 2.5) < 0.01


def test_rigid_align_recovers_known_transform():
    rng = np.random.default_rng(1)
    src = rng.normal(size=(30, 3))
    R, t = _rot([0.3, -1.2, 0.7]), np.array([1.0, -2.0, 0.5])
    R_est, t_est = rigid_align(src, src @ R.T + t)
    np.testing.assert_allclose(R_est, R, atol=1e-10)
    np.testing.assert_allclose(t_est, t, atol=1e-10)


def test_estimate_focal_is_exact_on_clean_points_and_robust_to_outliers():
    K = intrinsics(300.0, 300.0, 80, 60)
    depth = np.random.default_rng(2).uniform(1, 20, (2, 120, 160)).astype(np.float32)
    pts = unproject(depth, K)
    mask = np.ones(depth.shape, bool)
    assert abs(estimate_focal(pts, mask) - 300.0) < 1e-2
    pts[:, :20, :, :2] *= 3.0  # a band of corrupted points
    assert abs(estimate_focal(pts, mask) - 300.0) < 1.0


def test_confidence_mask_keeps_top_share_of_valid_pixels():
    conf = np.random.default_rng(3).random((3, 100, 100)).astype(np.float32)
    depth = np.ones_like(conf)
    depth[:, :10] = 0  # invalid rows never kept
    m = confidence_mask(conf, depth, 0.3)
    assert not m[:, :10].any()
    share = m.reshape(3, -1).sum(1) / (90 * 100)
    np.testing.assert_allclose(share, 0.3, atol=0.02)


def test_quaternion_round_trip():
    Rs = np.stack([_rot(v) for v in np.random.default_rng(4).normal(size=(50, 3)) * 2])
    np.testing.assert_allclose(quaternion_to_rotation(rotation_to_quaternion(Rs)), Rs, atol=1e-12)


def test_register_window_undoes_a_known_sim3():
    """A window expressed in a frame scaled by s and moved by (R, t) lands back on the reference."""
    rng = np.random.default_rng(5)
    K = intrinsics(100.0, 100.0, 32, 24)
    n, o = 6, 3
    frames = np.arange(10, 10 + n)
    poses = np.tile(np.eye(4), (n, 1, 1))
    poses[:, :3, 3] = np.stack([np.linspace(0, 1, n), np.zeros(n), np.linspace(0, 0.5, n)], 1)
    for i in range(n):
        poses[i, :3, :3] = _rot([0, 0.05 * i, 0])
    depth = rng.uniform(2, 8, (n, 48, 64)).astype(np.float32)
    ref = Reference(frames=frames[:o], poses=poses[:o], depth=depth[:o], mask=np.ones((o, 48, 64), bool))

    s, R, t = 0.37, _rot([0.4, 1.0, -0.3]), np.array([3.0, -1.0, 2.0])
    moved = apply_sim3_to_poses(s, R, t, poses)
    pred = WindowPrediction(frames=frames, points=unproject(depth * s, K), poses=moved.astype(np.float32),
                            conf=np.ones((n, 48, 64), np.float32), colors=np.zeros((n, 48, 64, 3), np.uint8))
    result, K_out = register_window(1, pred, overlap=o, K=K, reference=ref, conf_keep=1.0)
    assert abs(result.window.scale - 1 / s) < 1e-5
    np.testing.assert_array_equal(result.window.frames, frames[o:])
    np.testing.assert_allclose(result.window.poses, poses[o:], atol=1e-5)
    np.testing.assert_allclose(result.window.depth, depth[o:], rtol=1e-5)
    np.testing.assert_array_equal(result.reference.frames, frames[-o:])
