"""Bundle adjustment on synthetic footage tracks: refined cameras against ground truth, outliers, the depth prior."""

from __future__ import annotations

import numpy as np
import pytest
from test_solve_tracks import H, W, antialiased, seed_points

from core.geometry.rotations import rotvec_to_rotation
from core.solve.bundle import Anchors, Observations, adjust, initial_points, scaled_focal
from core.solve.tracks import Tracker
from core.synthetic.scene import Scene, SceneConfig

FRAMES, FIXED = 12, 3


@pytest.fixture(scope="module")
def shot():
    """Tracks of a textured shot with its moving object in view, and the world points they start on."""
    scene = Scene(SceneConfig(width=W, height=H, texture=True))
    tracker, rows, start_point, start_layer = Tracker((W, H)), [], {}, {}
    for f in range(FRAMES):
        r = antialiased(scene, f)
        t = tracker.step(f, r["colors"])
        pix = np.minimum(np.floor(t.xy).astype(int), [W - 1, H - 1])
        rows.append((np.full(len(t.ids), f), t.ids, t.xy.astype(np.float64), r["depth"][pix[:, 1], pix[:, 0]]))
        new = np.array([i not in start_point for i in t.ids], bool)
        start_point.update(zip(t.ids[new].tolist(), seed_points(r, t.xy[new], scene.K(), scene.pose(f))))
        start_layer.update(zip(t.ids[new].tolist(), r["layers"][pix[new, 1], pix[new, 0]].tolist()))
    frame, ids, xy, depth = (np.concatenate(a) for a in zip(*rows))
    track_ids, point = np.unique(ids, return_inverse=True)
    gt_points = np.array([start_point[i] for i in track_ids])
    moving_layer = next(k for k, name in scene.layer_names.items() if name == "moving_object")
    on_moving = np.array([start_layer[i] == moving_layer for i in track_ids])[point]
    return scene, Observations(frame, point, xy, depth), gt_points[np.isfinite(gt_points).all(1)], on_moving


def project(world_from_cam: np.ndarray, K: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(F, P, 2) pixels and (F, P) z-depths."""
    cam = np.einsum("fji,fpj->fpi", world_from_cam[:, :3, :3], points[None] - world_from_cam[:, None, :3, 3])
    return cam[..., :2] / cam[..., 2:] * np.diag(K)[:2] + K[:2, 2], cam[..., 2]


def ground_truth_rms(world_from_cam: np.ndarray, scene: Scene, gt_points: np.ndarray) -> float:
    """Exact projections of static points triangulated (DLT) with the cameras, reprojected with them: RMS px."""
    K = scene.K()
    uv, z = project(scene.pose(np.arange(len(world_from_cam))), K, gt_points)
    seen = (z > 0) & (uv >= 0).all(-1) & (uv < [W, H]).all(-1)
    P = K @ np.linalg.inv(world_from_cam)[:, :3, :]  # (F, 3, 4)
    A = np.concatenate([uv[..., :1, None] * P[:, None, 2:] - P[:, None, :1],
                        uv[..., 1:, None] * P[:, None, 2:] - P[:, None, 1:2]], -2)  # (F, N, 2, 4)
    A = (A * seen[..., None, None]).transpose(1, 0, 2, 3).reshape(len(gt_points), -1, 4)
    X = np.linalg.svd(A)[2][:, -1]
    reproj, _ = project(world_from_cam, K, X[:, :3] / X[:, 3:])
    return float(np.sqrt((np.linalg.norm(reproj - uv, axis=-1)[seen] ** 2).mean()))


@pytest.mark.parametrize("seed", [0, 1])
def test_refined_cameras_reproject_ground_truth_points_sub_pixel(shot, seed):
    scene, obs, gt_points, on_moving = shot
    rng = np.random.default_rng(seed)
    truth = scene.pose(np.arange(FRAMES))
    noisy = truth.copy()  # network-like camera noise, the first frames already emitted (exact, fixed)
    noisy[:, :3, :3] = truth[:, :3, :3] @ rotvec_to_rotation(rng.normal(0, np.radians(0.15), (FRAMES, 3)))
    noisy[:, :3, 3] += rng.normal(0, 0.01, (FRAMES, 3))
    fixed = np.arange(FRAMES) < FIXED
    noisy[fixed] = truth[fixed]
    noisy_obs = Observations(obs.frame, obs.point, obs.xy, obs.depth * np.exp(rng.normal(0, 0.03, FRAMES))[obs.frame])
    points = initial_points(noisy, scene.K(), noisy_obs, obs.point.max() + 1)
    result = adjust(noisy, fixed, scene.K(), noisy_obs, points)

    assert np.array_equal(result.world_from_cam[fixed], truth[fixed])
    before, after = ground_truth_rms(noisy, scene, gt_points), ground_truth_rms(result.world_from_cam, scene, gt_points)
    assert after <= 0.5 and after * 5 <= before
    ate = [np.sqrt((np.linalg.norm(T[:, :3, 3] - truth[:, :3, 3], axis=1) ** 2).mean())
           for T in (noisy, result.world_from_cam)]
    assert ate[1] * 2 <= ate[0]
    # the run's own figure is an honest estimate of the ground-truth error (tracker noise on top)
    assert after / 2 <= result.rms_px <= max(2 * after, after + 0.3)
    assert np.nanmax(result.per_frame_px) < 1.0
    # observations of tracks on the moving object are rejected, most of the others kept
    assert on_moving.sum() > 100
    assert result.inlier[on_moving].mean() < 0.2 and result.inlier[~on_moving].mean() > 0.85


def _orbit(frames: int, rng: np.random.Generator, pixel_noise: float, zoom: np.ndarray | None = None):
    """A panning, swaying camera (the synthetic scene's path) over random static points 4-40 m away,
    observed at their exact pixels plus ``pixel_noise``; (truth poses, K, observations). With ``zoom``
    (frames,) each frame's focal length is K's times its factor (then K is (frames, 3, 3))."""
    scene = Scene(SceneConfig(width=960, height=540))
    truth, K = scene.pose(np.arange(frames)), scene.K()
    centre = rng.uniform([0, 0], [960, 540], (1500, 2))
    depth0 = np.exp(rng.uniform(np.log(4), np.log(40), 1500))
    cam0 = np.c_[(centre - K[:2, 2]) / np.diag(K)[:2], np.ones(1500)] * depth0[:, None]
    mid = truth[frames // 2]
    world = cam0 @ mid[:3, :3].T + mid[:3, 3]
    uv, z = project(truth, K, world)
    if zoom is not None:  # pixels about the principal point scale with the focal length
        uv = (uv - K[:2, 2]) * zoom[:, None, None] + K[:2, 2]
        K = scaled_focal(np.broadcast_to(K, (frames, 3, 3)), zoom)
    seen = (z > 0) & (uv >= 0).all(-1) & (uv < [960, 540]).all(-1)
    frame, point = np.nonzero(seen)
    xy = uv[frame, point] + rng.normal(0, pixel_noise, (len(frame), 2))
    return truth, K, Observations(frame, point, xy, z[frame, point] * np.exp(rng.normal(0, 0.05, frames))[frame])


@pytest.mark.parametrize("error", [0.03, -0.04, 0.0])
def test_focal_length_is_refined_to_the_truth_within_its_reported_uncertainty(error):
    rng = np.random.default_rng(7)
    truth, K, obs = _orbit(45, rng, 0.2)
    noisy = truth.copy()
    noisy[:, :3, :3] = truth[:, :3, :3] @ rotvec_to_rotation(rng.normal(0, np.radians(0.15), (len(truth), 3)))
    noisy[:, :3, 3] += rng.normal(0, 0.01, (len(truth), 3))
    noisy[0] = truth[0]  # the gauge
    wrong = K.copy()
    wrong[[0, 1], [0, 1]] *= 1 + error
    start = initial_points(noisy, wrong, obs, obs.point.max() + 1)
    result = adjust(noisy, np.zeros(len(truth), bool), wrong, obs, start, refine_focal=True)
    found = (1 + error) * result.focal_scale - 1
    assert abs(found) < max(3 * result.focal_std, 1e-3), (found, result.focal_std)
    assert result.focal_std < 0.005
    assert result.rms_px < 0.3  # the cameras follow the refined focal: the residual is the pixel noise
    held = adjust(noisy, np.zeros(len(truth), bool), wrong, obs, start)
    assert held.focal_scale == 1.0 and held.focal_std == np.inf
    if error:
        assert held.rms_px > result.rms_px


def test_a_zooms_focal_length_is_refined_frame_by_frame():
    """A zoom (1.35x in over 30 frames), the first 10 cameras already solved (fixed, their lens exact), the
    network's focal lengths of the others off by up to 1 % (a slow error plus jitter): each free camera's focal
    is refined to 0.05 % of the truth, the cameras follow and the residual drops to the pixel noise. Holding
    the network's focal lengths leaves it higher."""
    rng = np.random.default_rng(3)
    frames = 30
    zoom = np.exp(0.3 * np.sin(2 * np.pi * np.arange(frames) / 60))
    truth, K, obs = _orbit(frames, rng, 0.2, zoom)
    fixed = np.arange(frames) < 10
    noisy = truth.copy()
    noisy[:, :3, :3] = truth[:, :3, :3] @ rotvec_to_rotation(rng.normal(0, np.radians(0.15), (frames, 3)))
    noisy[:, :3, 3] += rng.normal(0, 0.01, (frames, 3))
    noisy[fixed] = truth[fixed]
    error = np.where(fixed, 0.0, 0.01 * np.sin(np.arange(frames) / 4) + rng.normal(0, 0.002, frames))
    network = scaled_focal(K, 1 + error)
    start = initial_points(noisy, network, obs, obs.point.max() + 1)
    result = adjust(noisy, fixed, network, obs, start, refine_frame_focal=True)
    found = network[:, 0, 0] * result.frame_focal_scale / K[:, 0, 0] - 1
    assert np.abs(error).max() > 0.009 and np.abs(found).max() < 5e-4, found
    assert np.all(result.frame_focal_scale[fixed] == 1.0)
    assert result.rms_px < 0.3
    held = adjust(noisy, fixed, network, obs, start)
    assert np.all(held.frame_focal_scale == 1.0) and held.rms_px > result.rms_px + 0.05
    with pytest.raises(ValueError, match="per-frame focal"):
        adjust(noisy, fixed, network, obs, start, refine_frame_focal=True, refine_focal=True)


def test_anchored_points_carry_the_scale():
    """Without a depth prior nothing fixes the scale: a start scaled 1.2x about the held first camera reprojects
    exactly and stays. Ten points anchored where an earlier window solved them bring every camera and point to
    that window's scale."""
    rng = np.random.default_rng(5)
    frames = 12
    scene = Scene(SceneConfig(width=960, height=540))
    truth, K = scene.pose(np.arange(frames)), scene.K()
    pixel = rng.uniform([0, 0], [960, 540], (300, 2))
    depth = np.exp(rng.uniform(np.log(4), np.log(40), 300))
    mid = truth[frames // 2]
    world = (np.c_[(pixel - K[:2, 2]) / np.diag(K)[:2], np.ones(300)] * depth[:, None]) @ mid[:3, :3].T + mid[:3, 3]
    uv, z = project(truth, K, world)
    frame, point = np.nonzero((z > 0) & (uv >= 0).all(-1) & (uv < [960, 540]).all(-1))
    obs = Observations(frame, point, uv[frame, point], np.full(len(frame), np.nan))
    origin = truth[0, :3, 3]
    scaled = truth.copy()
    scaled[:, :3, 3] = origin + 1.2 * (truth[:, :3, 3] - origin)
    start = origin + 1.2 * (world - origin)

    def path_scale(result):
        return np.linalg.norm(result.world_from_cam[-1, :3, 3] - origin) / np.linalg.norm(truth[-1, :3, 3] - origin)

    free = adjust(scaled, np.zeros(frames, bool), K, obs, start)
    assert path_scale(free) == pytest.approx(1.2, rel=1e-3)
    anchors = Anchors.none(len(world))
    anchors.xyz[:10] = world[:10]
    anchors.sigma[:10] = 1e-3 * np.linalg.norm(world[:10] - origin, axis=1)
    held = adjust(scaled, np.zeros(frames, bool), K, obs, start, anchors=anchors)
    assert path_scale(held) == pytest.approx(1.0, rel=1e-3)
    off = np.linalg.norm(held.points - world, axis=1) / np.linalg.norm(world - origin, axis=1)
    assert np.nanmax(off) < 2e-3 and np.isfinite(off).sum() > 250
