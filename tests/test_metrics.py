"""Metrics against answers derived independently of the implementation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from core.geometry.rotations import rotation_angle_deg
from core.geometry.transforms import umeyama_sim3
from core.metrics import ate, depth_metrics, median_scale, pointcloud_metrics, rpe, subsample

RNG = np.random.default_rng(7)


def rz(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def poses_from(rotations: np.ndarray, centres: np.ndarray) -> np.ndarray:
    T = np.tile(np.eye(4), (len(centres), 1, 1))
    T[:, :3, :3] = rotations
    T[:, :3, 3] = centres
    return T


def staircase(n: int) -> np.ndarray:
    """(n, 4, 4) poses whose centres take unit steps along x, y, z in turn: path length n - 1."""
    steps = np.eye(3)[np.arange(n - 1) % 3]
    centres = np.vstack([np.zeros(3), np.cumsum(steps, axis=0)])
    return poses_from(Rotation.random(n, random_state=1).as_matrix(), centres)


def transform(poses: np.ndarray, s: float, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Each camera moved by x -> s R x + t, written out pose by pose."""
    out = []
    for P in poses:
        Q = np.eye(4)
        Q[:3, :3] = R @ P[:3, :3]
        Q[:3, 3] = s * R @ P[:3, 3] + t
        out.append(Q)
    return np.array(out)


KNOWN_R = Rotation.from_euler("zyx", [40, -25, 70], degrees=True).as_matrix()
KNOWN_S, KNOWN_T = 2.5, np.array([1.0, -3.0, 0.5])


# --------------------------------------------------------------------------- Umeyama

def test_umeyama_recovers_a_known_similarity():
    src = RNG.normal(size=(50, 3))
    s, R, t = umeyama_sim3(src, KNOWN_S * src @ KNOWN_R.T + KNOWN_T)
    assert s == pytest.approx(KNOWN_S)
    np.testing.assert_allclose(R, KNOWN_R, atol=1e-12)
    np.testing.assert_allclose(t, KNOWN_T, atol=1e-12)


def test_umeyama_never_returns_a_reflection():
    # Planar points: the cross-covariance is rank 2, so the SVD's third axis has an
    # arbitrary sign and an unguarded solution may be a mirror image.
    angles = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    src = np.stack([3 * np.cos(angles), np.sin(angles), np.zeros_like(angles)], 1)
    s, R, t = umeyama_sim3(src, src @ rz(np.pi / 2).T)
    np.testing.assert_allclose(R, rz(np.pi / 2), atol=1e-12)
    assert s == pytest.approx(1.0) and np.linalg.det(R) == pytest.approx(1.0)
    # A true mirror image is fitted by the best rotation, with det +1.
    cloud = RNG.normal(size=(30, 3))
    _, R, _ = umeyama_sim3(cloud, cloud * [-1, 1, 1])
    assert np.linalg.det(R) == pytest.approx(1.0)


def test_umeyama_rejects_degenerate_input():
    with pytest.raises(ValueError, match="no spread"):
        umeyama_sim3(np.ones((5, 3)), RNG.normal(size=(5, 3)))
    with pytest.raises(ValueError, match="at least 3"):
        umeyama_sim3(np.eye(3)[:2], np.eye(3)[:2])


# --------------------------------------------------------------------------- ATE

def test_ate_of_a_similar_trajectory_is_zero():
    gt = staircase(20)
    est = transform(gt, KNOWN_S, KNOWN_R, KNOWN_T)
    m = ate(est, gt)
    assert m["rmse"] < 1e-12 and m["max"] < 1e-12
    assert m["scale"] == pytest.approx(1 / KNOWN_S)
    assert m["length"] == pytest.approx(19.0)


def test_ate_of_offsets_orthogonal_to_any_similarity():
    # Centres on an ellipse in z = 0; ground truth lifted by +-r along z alternately.
    # The offsets have zero mean and zero correlation with x and y (sum of (-1)^k
    # cos(k pi/4) and sin(k pi/4) over k = 0..7 is 0), so no similarity of the
    # estimate can absorb them: every centre error is exactly r.
    r, k = 0.25, np.arange(8)
    centres = np.stack([3 * np.cos(k * np.pi / 4), np.sin(k * np.pi / 4), np.zeros(8)], 1)
    lifted = centres + np.stack([np.zeros(8), np.zeros(8), r * (-1.0) ** k], 1)
    rotations = Rotation.random(8, random_state=3).as_matrix()
    est = transform(poses_from(rotations, centres), KNOWN_S, KNOWN_R, KNOWN_T)
    m = ate(est, poses_from(rotations, lifted))
    for key in ("rmse", "mean", "median", "max"):
        assert m[key] == pytest.approx(r, rel=1e-9)
    assert m["scale"] == pytest.approx(1 / KNOWN_S)
    assert m["rmse_over_length"] == pytest.approx(r / m["length"])


def test_ate_of_noise_orthogonal_to_similarities_is_its_rmse():
    X = RNG.normal(size=(60, 3)) * [4, 2, 1]
    basis = np.hstack([np.ones((60, 1)), X])  # what translation, rotation and scale can explain
    noise = RNG.normal(scale=0.05, size=(60, 3))
    noise -= basis @ np.linalg.lstsq(basis, noise, rcond=None)[0]
    rotations = Rotation.random(60, random_state=4).as_matrix()
    m = ate(poses_from(rotations, X), poses_from(rotations, X + noise))
    assert m["rmse"] == pytest.approx(np.sqrt(np.mean(np.sum(noise**2, axis=1))), rel=1e-9)
    assert m["max"] == pytest.approx(np.linalg.norm(noise, axis=1).max(), rel=1e-9)
    assert m["scale"] == pytest.approx(1.0)


# --------------------------------------------------------------------------- RPE

def test_rpe_of_a_similar_trajectory_is_zero():
    gt = staircase(15)
    m = rpe(transform(gt, 0.3, KNOWN_R, KNOWN_T), gt)
    assert m["trans_rmse"] < 1e-12 and m["rot_rmse_deg"] < 1e-6
    m = rpe(gt, gt, delta=4)
    assert m["trans_rmse"] < 1e-12 and m["rot_rmse_deg"] < 1e-6


def test_rpe_of_a_rotation_drift():
    # Camera i of the estimate is turned by an extra i * theta about the world z axis,
    # same centres. Relative rotation error per step: exactly theta (a conjugate of
    # Rz(theta)). Relative translation error of step d_i = c_{i+1} - c_i: |Rz(-i theta) d_i - d_i|
    # = 2 |d_i,xy| sin(i theta / 2).
    theta, n = np.radians(2.0), 15
    gt = staircase(n)
    est = gt.copy()
    est[:, :3, :3] = np.array([rz(i * theta) for i in range(n)]) @ gt[:, :3, :3]
    d = np.diff(gt[:, :3, 3], axis=0)
    expected = 2 * np.linalg.norm(d[:, :2], axis=1) * np.sin(np.arange(n - 1) * theta / 2)
    m = rpe(est, gt)
    assert m["rot_rmse_deg"] == pytest.approx(2.0, rel=1e-9)
    assert m["trans_rmse"] == pytest.approx(np.sqrt(np.mean(expected**2)), rel=1e-9)


def test_rpe_needs_more_poses_than_delta():
    with pytest.raises(ValueError, match="more than delta=3"):
        rpe(staircase(3), staircase(3), delta=3)


# --------------------------------------------------------------------------- depth

def test_depth_after_one_global_scale_is_exact():
    gt = RNG.uniform(1, 10, size=(3, 5, 6)).astype(np.float32)
    gt[:, 0, 0] = 0  # invalid ground truth
    pred = gt / 3
    pred[:, 1, 1] = np.nan  # invalid predictions
    pred[:, 2, 2] = -1
    m = depth_metrics(pred, gt)
    assert m["abs_rel"] < 1e-6 and m["delta_1_25"] == 1.0
    assert m["scale"] == pytest.approx(3.0, rel=1e-6)
    assert m["valid"] == 3 * (30 - 3)


def test_depth_scale_is_global_not_per_frame():
    # 60 pixels predicted exactly, 40 pixels predicted twice too deep: the median ratio
    # over all pixels is 1, so the second frame keeps its error: abs_rel = 0.4 * 1,
    # delta_1_25 = 0.6.
    gt = [np.full((6, 10), 2.0), np.full((4, 10), 5.0)]
    pred = [gt[0].copy(), 2 * gt[1]]
    m = depth_metrics(pred, gt)
    assert m["scale"] == 1.0 and m["valid"] == 100
    assert m["abs_rel"] == pytest.approx(0.4) and m["delta_1_25"] == pytest.approx(0.6)
    masks = [np.ones((6, 10), bool), np.zeros((4, 10), bool)]
    assert depth_metrics(pred, gt, masks)["abs_rel"] == 0.0
    assert median_scale(pred, gt, [~m_ for m_ in masks]) == 0.5


def test_depth_with_a_given_scale_and_known_error():
    gt = np.full((1, 4, 4), 4.0)
    pred = gt * np.array([1.0, 1.1, 1.3, 0.7])[None, None, :]  # per column
    m = depth_metrics(pred, gt, scale=1.0)
    # |1-1| + |1.1-1| + |1.3-1| + |0.7-1| over 4 columns; 1.3 and 1/0.7 exceed 1.25
    assert m["abs_rel"] == pytest.approx(0.7 / 4)
    assert m["delta_1_25"] == pytest.approx(0.5)


def test_depth_without_valid_pixels():
    with pytest.raises(ValueError, match="no valid pixels"):
        depth_metrics([np.ones((2, 2))], [np.zeros((2, 2))])


# --------------------------------------------------------------------------- point clouds

def lattice(nx: int, ny: int, nz: int) -> np.ndarray:
    grid = np.meshgrid(np.arange(nx), np.arange(ny), np.arange(nz), indexing="ij")
    return np.stack(grid, -1).reshape(-1, 3).astype(float)


def test_pointcloud_of_a_shifted_lattice():
    gt = lattice(10, 8, 6)
    m = pointcloud_metrics(gt + [0, 0, 0.3], gt)
    assert m == pytest.approx({"accuracy": 0.3, "completeness": 0.3, "chamfer": 0.3})
    # subsampling both clouds alike keeps the pairs
    assert pointcloud_metrics(gt + [0, 0, 0.3], gt, max_points=37)["chamfer"] == pytest.approx(0.3)


def test_pointcloud_of_a_partial_reconstruction():
    # Prediction covers x = 0..4 of a lattice spanning x = 0..9 exactly: accuracy 0;
    # true points at x = 5..9 lie 1..5 from it, so completeness = (1+2+3+4+5) / 10.
    gt = lattice(10, 3, 3)
    m = pointcloud_metrics(gt[gt[:, 0] < 5], gt)
    assert m["accuracy"] == 0.0
    assert m["completeness"] == pytest.approx(1.5)
    assert m["chamfer"] == pytest.approx(0.75)


def test_subsample_is_even_and_deterministic():
    points = np.arange(10)[:, None]
    np.testing.assert_array_equal(subsample(points, 4)[:, 0], [0, 3, 6, 9])
    assert subsample(points, 20) is points


@pytest.mark.parametrize("degrees", [1e-4, 0.5, 90.0, 179.0])
def test_rotation_angle_is_accurate_small_and_large(degrees):
    axis = np.array([1.0, -2.0, 0.5]) / np.linalg.norm([1.0, -2.0, 0.5])
    R = Rotation.from_rotvec(np.radians(degrees) * axis).as_matrix()
    assert rotation_angle_deg(R) == pytest.approx(degrees, rel=1e-7)
