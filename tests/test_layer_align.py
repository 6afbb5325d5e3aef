"""Layer-wise scale alignment: each piece on hand-made arrays with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from core.layer_align import LayerAlignInput, LayerAlignParams, align_layers
from core.layer_align.link import co_occurrence, temporal_links
from core.layer_align.segment import log_depth, sample_grid, segment_layers
from core.layer_align.solve import group_weighted_median, robust_group_mean

N, O, H, W = 12, 4, 64, 96

EXACT = 2.0 ** -11  # a layer's scale is a float16 value (as the run directory stores it): rounded to 1 in 2048


def boxes(frames: int = N, shift: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """True depth of a far wall (25 m) with a near box (2 m) drifting right by ``shift`` px per frame.

    Returns (depth (frames, H, W) float32, box mask (frames, H, W) bool).
    """
    depth = np.full((frames, H, W), 25.0, np.float32)
    box = np.zeros((frames, H, W), bool)
    for t in range(frames):
        box[t, 18:46, 20 + shift * t:52 + shift * t] = True
    depth[box] = 2.0
    return depth, box


def make_input(truth: np.ndarray, new: np.ndarray, mask: np.ndarray | None = None,
               conf: np.ndarray | None = None) -> LayerAlignInput:
    ones = np.ones(new.shape, bool)
    return LayerAlignInput(ref_depth=truth[:O], ref_mask=ones[:O], depth=new,
                           mask=ones if mask is None else mask,
                           conf=np.ones(new.shape, np.float32) if conf is None else conf, overlap=O)


def test_two_layers_scaled_by_known_factors_are_recovered_exactly():
    truth, box = boxes()
    new = truth * np.where(box, np.float32(1.25), np.float32(0.8))
    result = align_layers(make_input(truth, new))
    # the overlap frames are matched directly, the later ones reached along temporal links
    np.testing.assert_allclose(result.depth, truth, rtol=EXACT)
    assert set(np.unique(result.layer_source)) == {1, 2}
    np.testing.assert_allclose(np.sort(result.frame_scales(N - 1)), [0.8, 1.25], rtol=EXACT)


def test_consistent_windows_are_left_unchanged():
    truth, _ = boxes()
    result = align_layers(make_input(truth, truth.copy()))
    np.testing.assert_array_equal(result.depth, truth)
    np.testing.assert_array_equal(result.layer_scale, 1.0)


def test_new_layer_entering_mid_window_gets_the_window_scale():
    truth, box = boxes()
    new = truth * np.where(box, np.float32(1.25), np.float32(0.8))
    ball = np.zeros_like(box)
    ball[7:, 40:60, 70:90] = True  # appears at frame 7, after the overlap
    truth[ball] = 6.0
    new[ball] = 6.0 * 1.3  # distorted, but nothing tells by how much
    result = align_layers(make_input(truth, new))
    np.testing.assert_array_equal(result.depth[ball], new[ball])  # window (Sim(3)) scale: untouched
    np.testing.assert_allclose(result.depth[~ball], truth[~ball], rtol=EXACT)
    stride = LayerAlignParams().stride
    ball_layers = np.unique(result.labels[sample_grid(ball, stride)])
    assert ball_layers.size >= 1 and (result.layer_source[ball_layers] == 0).all()


def test_outlier_pair_is_rejected():
    truth, box = boxes()
    new = truth * np.where(box, np.float32(1.25), np.float32(0.8))
    ref = truth.copy()
    # the previous window got a patch of the wall 60% too far: a separate reference layer
    # covering a quarter of the new wall layer, whose pair scale is an outlier
    patch = np.zeros_like(box)
    patch[:O, :, 64:] = True
    patch &= ~box
    ref[patch] *= 1.6
    inp = make_input(ref, new)
    result = align_layers(inp)
    wall = ~box
    np.testing.assert_allclose(result.depth[wall], truth[wall], rtol=EXACT)
    assert result.pairs_rejected >= 1
    # without rejection the patch would pull the wall's scale up
    loose = align_layers(inp, LayerAlignParams(pair_outlier_log=10.0))
    assert loose.pairs_rejected == 0
    assert np.median(loose.depth[wall] / truth[wall]) > 1.05


def test_scales_are_clamped_to_the_band_around_the_window_scale():
    truth, box = boxes()
    new = truth * np.where(box, np.float32(0.25), np.float32(1.0))  # box 4x too near
    result = align_layers(make_input(truth, new), LayerAlignParams(max_scale=2.0))
    np.testing.assert_allclose(result.depth[box], new[box] * 2.0, rtol=EXACT)
    np.testing.assert_allclose(result.depth[~box], truth[~box], rtol=EXACT)


def test_confident_pixels_dominate_the_scale():
    truth, box = boxes()
    new = truth * np.where(box, np.float32(1.25), np.float32(0.8))
    ref = truth.copy()
    doubtful = np.zeros_like(box)
    doubtful[:O, :, :60] = True  # most of the wall: unconfident and wrong in the reference
    doubtful &= ~box
    ref[doubtful] *= 1.3
    mask = np.ones_like(box)
    mask[doubtful] = False
    conf = np.where(mask, 1.0, 0.1).astype(np.float32)
    inp = LayerAlignInput(ref_depth=ref[:O], ref_mask=mask[:O], depth=new, mask=mask, conf=conf, overlap=O)
    result = align_layers(inp)
    np.testing.assert_allclose(result.depth[~box], truth[~box], rtol=1e-3)
    # unweighted, the robust fit follows the (wrong) majority
    inp.conf, inp.mask, inp.ref_mask = np.ones_like(conf), np.ones_like(mask), np.ones_like(mask[:O])
    unweighted = align_layers(inp)
    assert np.median(unweighted.depth[~box] / truth[~box]) > 1.2


def test_temporal_smoothness_carries_scales_through_the_window():
    """Overlap measurements that disagree frame to frame are blended forward, not copied."""
    truth, box = boxes()
    new = truth * np.where(box, np.float32(1.25), np.float32(0.8))
    ref = truth.copy()
    jitter = np.array([1.0, 1.04, 0.96, 1.02], np.float32)[:, None, None]
    ref[:O] = np.where(box[:O], ref[:O] * jitter, ref[:O])
    result = align_layers(make_input(ref, new))
    box_scale = np.array([result.depth[t][box[t]].mean() / new[t][box[t]].mean() for t in range(N)])
    raw = 0.8 * jitter.ravel()  # what frame-by-frame copying would give on the overlap
    assert np.abs(np.diff(np.log(box_scale[:O]))).max() < np.abs(np.diff(np.log(raw))).max()
    np.testing.assert_allclose(box_scale[O:], box_scale[O - 1], rtol=1e-6)  # constant after the overlap


def test_a_surface_merged_for_a_frame_gets_its_own_scale_back():
    """Two walls side by side, 10 % apart in depth; the new window has the wider, left one 20 % short.
    On overlap frame 2 the right wall's depth comes within 1 % of the left's, so that frame has one
    layer, measured as the left wall: the right wall's samples keep their own scale through the
    merge, and it is exact again once the two part (it used to inherit the left's 1.25 in part)."""
    left = np.zeros((N, H, W), bool)
    left[:, :, :2 * W // 3] = True
    new = np.where(left, np.float32(8.0), np.float32(8.8))
    new[2][~left[2]] = 8.1
    truth = np.where(left, np.float32(10.0), new)
    result = align_layers(make_input(truth, new))
    assert np.unique(result.labels[2][result.labels[2] >= 0]).size == 1  # merged on frame 2
    right = ~left
    right[:3] = False  # frames 3.. (the last overlap frame, then propagation)
    np.testing.assert_allclose(result.depth[right], truth[right], rtol=EXACT)
    np.testing.assert_allclose(result.depth[left], truth[left], rtol=EXACT)


def test_near_and_far_layers_separate_on_a_wide_depth_range():
    """1.5 m vs 1.8 m and 40 m vs 60 m in one frame (range 1:40): four layers.

    A threshold of 10 % of the frame's depth range (5.9 m) would fuse the two near ones.
    """
    depth = np.empty((1, H, W), np.float32)
    depth[:, :, :24], depth[:, :, 24:48], depth[:, :, 48:72], depth[:, :, 72:] = 1.5, 1.8, 40.0, 60.0
    stride = LayerAlignParams().stride
    layers = segment_layers(log_depth(sample_grid(depth, stride)), LayerAlignParams())
    assert layers.count == 4
    labels = layers.labels[0]
    for cols in (slice(0, 6), slice(6, 12), slice(12, 18), slice(18, 24)):
        assert np.unique(labels[:, cols]).size == 1
    assert np.unique(labels[0, ::6]).size == 4


def test_slanted_ground_plane_stays_one_layer():
    """A ground plane from 2 m to 200 m (inverse depth linear in the row) is one layer."""
    rows = np.arange(H, dtype=np.float32) + 0.5
    inv = 1 / 200 + (1 / 2 - 1 / 200) * rows / H
    depth = np.repeat((1 / inv)[None, :, None], W, axis=2).astype(np.float32)
    rng = np.random.default_rng(0)
    depth *= 1 + 0.01 * rng.standard_normal(depth.shape).astype(np.float32)
    stride = LayerAlignParams().stride
    layers = segment_layers(log_depth(sample_grid(depth, stride)), LayerAlignParams())
    assert layers.count == 1
    assert (layers.labels == 0).mean() > 0.98


def test_tiny_layers_are_ignored():
    truth, box = boxes()
    speck = np.zeros_like(box)
    speck[:, 4:12, 80:84] = True  # two samples; a layer needs 1% of the 16x24 samples: 4
    truth[speck] = 4.0
    new = truth * np.where(box, np.float32(1.25), np.float32(0.8))
    new[speck] = 4.0 * 1.5
    params = LayerAlignParams(min_layer=0.01, min_pair_pixels=1)
    result = align_layers(make_input(truth, new), params)
    np.testing.assert_array_equal(result.depth[speck], new[speck])
    assert (result.labels[sample_grid(speck, params.stride)] == -1).all()
    np.testing.assert_allclose(result.depth[~speck], truth[~speck], rtol=EXACT)


def test_temporal_links_follow_surfaces_not_positions():
    """A wall that splits in two links to both parts; an object entering over it links to nothing."""
    depth = np.full((3, 32, 48), 20.0, np.float32)
    depth[1:, :, 22:26] = 5.0  # frame 1: a pole splits the wall into left and right
    depth[2, 8:20, 34:44] = 3.0  # frame 2: a box appears over the right part
    params = LayerAlignParams(stride=1, min_layer=0.01)
    z = log_depth(depth)
    layers = segment_layers(z, params)
    links = temporal_links(layers, z, params.link_iou, params.link_cover, params.link_log)
    pairs = set(zip(links.src.tolist(), links.dst.tolist()))
    wall0 = layers.labels[0, 0, 0]
    left1, right1, pole1 = layers.labels[1, 0, 0], layers.labels[1, 0, 47], layers.labels[1, 0, 23]
    box2 = layers.labels[2, 10, 40]
    assert len({left1, right1, pole1}) == 3
    assert (wall0, left1) in pairs and (wall0, right1) in pairs and (wall0, pole1) not in pairs
    assert not any(dst == box2 for _, dst in pairs)
    assert (pole1, layers.labels[2, 0, 23]) in pairs


def test_co_occurrence_matches_brute_force():
    rng = np.random.default_rng(1)
    a = rng.integers(-1, 5, size=(3, 7, 9))
    b = rng.integers(-1, 4, size=(3, 7, 9))
    src, dst, count = co_occurrence(a, b, 4)
    expected = {}
    for x, y in zip(a.ravel(), b.ravel()):
        if x >= 0 and y >= 0:
            expected[(x, y)] = expected.get((x, y), 0) + 1
    assert dict(zip(zip(src.tolist(), dst.tolist()), count.tolist())) == expected


def test_group_weighted_median_and_robust_mean():
    values = np.array([1.0, 2.0, 3.0, 10.0, 5.0, 5.0, 7.0])
    groups = np.array([0, 0, 0, 0, 2, 2, 2])
    weights = np.array([1.0, 1.0, 1.0, 0.5, 1.0, 1.0, 5.0])
    med = group_weighted_median(values, groups, weights, 3)
    assert med[0] == 2.0 and np.isnan(med[1]) and med[2] == 7.0
    # a gross outlier barely moves the Cauchy IRLS mean away from the inliers' mean
    vals = np.r_[np.full(20, 0.1), 3.0]
    mu = robust_group_mean(vals, np.zeros(21, np.int64), np.ones(21), 1, c=0.05, iterations=5)
    assert abs(mu[0] - 0.1) < 1e-3


def test_rejects_inconsistent_shapes():
    truth, _ = boxes()
    inp = make_input(truth, truth.copy())
    inp.ref_depth = truth[: O - 1]
    with pytest.raises(ValueError, match="ref_depth"):
        align_layers(inp)


def test_streaming_engine_with_lsa_meets_the_accuracy_targets(tmp_path):
    """Synthetic stream, 10 windows, first window free of layer distortion: the same
    predictions registered with and without LSA (issue 3's targets, one seed)."""
    from core.engine import align, reconstruct
    from core.run.settings import EngineSettings
    from core.synthetic import Scene, SceneConfig, SyntheticBackbone, SyntheticNoise, SyntheticSource, render_clip
    from laser_blender.evaluate import evaluate_run

    config = SceneConfig(width=256, height=192, num_frames=30 + 9 * 20)
    scene = Scene(config)
    _, gt_dir = render_clip(tmp_path / "clip", config)
    backbone = SyntheticBackbone(scene, SyntheticNoise(seed=0, first_window_clean=True), (256, 192))
    assert reconstruct(SyntheticSource(scene), backbone, tmp_path / "lsa", EngineSettings()) == "complete"
    assert align(tmp_path / "lsa" / "predictions", tmp_path / "sim3", EngineSettings(layer_align=False)) == "complete"
    lsa, sim3 = evaluate_run(tmp_path / "lsa", gt_dir), evaluate_run(tmp_path / "sim3", gt_dir)

    assert lsa["frames"]["matched"] == sim3["frames"]["matched"] == 210
    assert lsa["layer_log_ratio_std_mean"] <= 0.5 * sim3["layer_log_ratio_std_mean"]
    assert lsa["depth"]["abs_rel"] <= 0.6 * sim3["depth"]["abs_rel"]
    assert lsa["pointcloud"]["chamfer"] <= 0.7 * sim3["pointcloud"]["chamfer"]
    assert lsa["ate"]["rmse"] <= 1.05 * sim3["ate"]["rmse"]


def test_degenerate_inputs_leave_depth_unchanged():
    truth, box = boxes()
    new = truth * np.where(box, np.float32(1.25), np.float32(0.8))
    new[:, :8] = 0.0  # missing depth
    nothing = np.zeros(new.shape, bool)
    result = align_layers(LayerAlignInput(ref_depth=np.zeros_like(truth[:O]), ref_mask=nothing[:O], depth=new,
                                          mask=nothing, conf=np.zeros(new.shape, np.float32), overlap=O))
    np.testing.assert_array_equal(result.depth, new)
    assert (result.layer_source == 0).all()
    no_overlap = align_layers(LayerAlignInput(ref_depth=truth[:0], ref_mask=nothing[:0], depth=new, mask=~nothing,
                                              conf=np.ones(new.shape, np.float32), overlap=0))
    np.testing.assert_array_equal(no_overlap.depth, new)
    single = align_layers(LayerAlignInput(
        ref_depth=truth[:1], ref_mask=~nothing[:1], depth=new[:1], mask=~nothing[:1],
        conf=np.ones((1, H, W), np.float32), overlap=1))
    assert single.depth.shape == (1, H, W)
    empty = align_layers(make_input(truth, np.zeros_like(new)))  # no depth at all: no layers
    assert empty.layer_scale.size == 0 and not empty.depth.any()
