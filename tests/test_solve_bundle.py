"""Bundle adjustment on synthetic footage tracks: refined cameras against ground truth, outliers, the depth prior."""

from __future__ import annotations

import numpy as np
import pytest
from test_solve_tracks import H, W, antialiased, seed_points

from core.geometry.rotations import rotvec_to_rotation
from core.solve.bundle import Observations, adjust, initial_points
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
    ate = [np.sqrt((np.linalg.norm(T[:, :3, 3] - truth[:, :3, 3], axis=1) ** 2).mean()) for T in (noisy, result.world_from_cam)]
    assert ate[1] * 2 <= ate[0]
    # the run's own figure is an honest estimate of the ground-truth error (tracker noise on top)
    assert after / 2 <= result.rms_px <= max(2 * after, after + 0.3)
    assert np.nanmax(result.per_frame_px) < 1.0
    # observations of tracks on the moving object are rejected, most of the others kept
    assert on_moving.sum() > 100
    assert result.inlier[on_moving].mean() < 0.2 and result.inlier[~on_moving].mean() > 0.85
