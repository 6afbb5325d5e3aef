"""Keyframe memory: layers the overlap does not show are measured against earlier frames."""

from __future__ import annotations

import numpy as np

from core.geometry.camera import intrinsics, project, sample_points, zbuffer
from core.layer_align import LayerAlignInput, LayerAlignParams, align_layers
from core.layer_align.keyframes import KeyframeMemory
from core.layer_align.segment import sample_grid
from core.run.arrays import AlignedWindow

N, O, H, W = 12, 4, 64, 96
K = intrinsics(80.0, 80.0, W / 2, H / 2)
STRIDE = LayerAlignParams().stride


def translation(x: float) -> np.ndarray:
    """(4, 4) camera-to-world pose: identity rotation, camera centre at (x, 0, 0)."""
    pose = np.eye(4)
    pose[0, 3] = x
    return pose


def scene(ball_depth: float | None) -> np.ndarray:
    """(N, H, W) true depth: a wall at 25 m, a near box (2 m) drifting right, and from
    frame 7 on a ball at ``ball_depth`` (None: no ball)."""
    depth = np.full((N, H, W), 25.0, np.float32)
    for t in range(N):
        depth[t, 18:46, 20 + t:52 + t] = 2.0
    if ball_depth is not None:
        depth[7:, 40:60, 70:90] = ball_depth
    return depth


def ball_mask() -> np.ndarray:
    mask = np.zeros((N, H, W), bool)
    mask[7:, 40:60, 70:90] = True
    return mask


def memory_of(depth: np.ndarray, pose: np.ndarray) -> KeyframeMemory:
    """A memory holding one keyframe (source frame 0) with this depth and pose."""
    memory = KeyframeMemory(every=10, stride=STRIDE)
    memory.add_window(AlignedWindow(
        index=0, frames=np.array([0]), poses=pose[None].astype(np.float32), K=K.astype(np.float32),
        depth=depth[None], conf=np.ones((1, H, W), np.float32), colors=np.zeros((1, H, W, 3), np.uint8),
        mask=np.ones((1, H, W), bool)))
    return memory


def align(truth: np.ndarray, new: np.ndarray, memory: KeyframeMemory | None):
    ones = np.ones(new.shape, bool)
    poses = np.repeat(np.eye(4)[None], N, axis=0)
    return align_layers(LayerAlignInput(ref_depth=truth[:O], ref_mask=ones[:O], depth=new, mask=ones,
                                        conf=np.ones(new.shape, np.float32), overlap=O,
                                        poses=poses, K=K), memory=memory)


def warp(points: np.ndarray, pose: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(h, w) z-buffered depth of world points seen from one camera, on the sample grid."""
    return zbuffer(project(points, pose[None], K, (H, W)), 1, shape, STRIDE)[0][0]


def test_warped_samples_come_back_at_their_own_depth():
    depth = sample_grid(scene(6.0)[-1:], STRIDE)[0]
    pose = translation(0.3)
    points = sample_points(depth, depth > 0, K, pose, STRIDE)
    np.testing.assert_allclose(warp(points, pose, depth.shape), depth, rtol=1e-5)
    # seen from elsewhere, the wall keeps its depth (fronto-parallel), blocks no point reaches stay empty
    moved = warp(points, translation(3.0), depth.shape)
    assert np.isinf(moved[:, -1]).all()
    assert np.allclose(moved[np.isfinite(moved) & (moved > 20)], 25.0)


def test_memory_keeps_every_kth_frame_up_to_its_capacity():
    memory = KeyframeMemory(every=5, capacity=3, stride=STRIDE)
    for start in (0, 20):
        frames = np.arange(start, start + 20)
        memory.add_window(AlignedWindow(
            index=start // 20, frames=frames, poses=np.repeat(np.eye(4, dtype=np.float32)[None], 20, axis=0),
            K=K.astype(np.float32), depth=np.full((20, H, W), 5.0, np.float32),
            conf=np.ones((20, H, W), np.float32), colors=np.zeros((20, H, W, 3), np.uint8),
            mask=np.ones((20, H, W), bool)))
    assert [kf.frame for kf in memory.keyframes] == [25, 30, 35]
    assert memory.points().shape == (3 * (H // STRIDE) * (W // STRIDE), 3)


def test_layer_absent_from_the_overlap_takes_its_scale_from_a_keyframe():
    truth = scene(6.0)
    ball = ball_mask()
    new = truth * np.where(truth == 2.0, np.float32(1.25), np.float32(0.8))
    new[ball] = 6.0 * 1.3  # the overlap does not show it; the keyframe saw it at 6 m
    without = align(truth, new, None)
    np.testing.assert_array_equal(without.depth[ball], new[ball])

    result = align(truth, new, memory_of(truth[-1], translation(0.05)))
    np.testing.assert_allclose(result.depth[ball], 6.0, rtol=1e-3)
    np.testing.assert_allclose(result.depth[~ball], truth[~ball], rtol=1e-3)
    ball_layers = np.unique(result.labels[sample_grid(ball, STRIDE)])
    assert (result.layer_source[ball_layers] > 0).all() and (result.layer_source[ball_layers] == 3).any()


def test_layer_absent_from_overlap_and_keyframes_keeps_the_window_scale():
    truth = scene(15.0)
    ball = ball_mask()
    new = truth * np.where(truth == 2.0, np.float32(1.25), np.float32(1.0))
    new[ball] = 15.0 * 1.3  # in front of the wall, within the clamp band of it
    # the keyframe saw the wall where the ball is now: its depth there is no measurement of the ball
    result = align(truth, new, memory_of(scene(None)[-1], translation(0.05)))
    np.testing.assert_array_equal(result.depth[ball], new[ball])
    np.testing.assert_allclose(result.depth[~ball], truth[~ball], rtol=1e-3)
