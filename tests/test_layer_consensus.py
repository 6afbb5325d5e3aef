"""Layer alignment as a running consensus over windows, colour-aware segmentation, and the
synthetic scene layouts (boxes) it is measured on."""

from __future__ import annotations

import numpy as np
import pytest

from core.layer_align import LayerAligner, LayerAlignInput, LayerAlignParams, align_layers
from core.layer_align.segment import _components, _merge_links, block_chroma, log_depth, segment_layers
from core.registration import register_window
from core.synthetic import Scene, SceneConfig, SyntheticBackbone, SyntheticNoise
from core.synthetic.scenes import SCENE_TYPES

N, O, H, W = 12, 4, 64, 96


def ground_and_crate(frames: int = N) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A fronto-parallel wall at 10 m whose right part is a crate at the *same* depth.

    Returns (depth (frames, H, W), crate mask, colours (frames, H, W, 3) uint8): the wall is
    a grey checkerboard (brightness only), the crate red.
    """
    depth = np.full((frames, H, W), 10.0, np.float32)
    crate = np.zeros((frames, H, W), bool)
    crate[:, 16:56, 48:88] = True  # on sample-block boundaries (stride 4)
    checker = ((np.arange(H)[:, None] // 8 + np.arange(W)[None, :] // 8) % 2).astype(np.float32)
    grey = (90 + 80 * checker)[None, :, :, None] * np.ones((frames, 1, 1, 3), np.float32)
    colors = np.where(crate[..., None], np.array([200, 40, 30], np.float32), grey).astype(np.uint8)
    return depth, crate, colors


def test_colour_separates_surfaces_that_meet_in_depth():
    depth, crate, colors = ground_and_crate()
    z = log_depth(depth[:, 2::4, 2::4])
    p = LayerAlignParams()
    chroma = block_chroma(colors, 4)
    by_depth = segment_layers(z, LayerAlignParams(color_edge=0.0))
    by_colour = segment_layers(z, p, chroma)
    assert by_depth.count == N  # one layer per frame: the depths meet
    lab = by_colour.labels[0]
    inside, outside = lab[crate[0, 2::4, 2::4]], lab[~crate[0, 2::4, 2::4]]
    # the crate is its own layer, and the checkerboard (a brightness pattern) does not cut the wall
    assert np.unique(inside[inside >= 0]).size == 1 and np.unique(outside[outside >= 0]).size == 1
    assert set(np.unique(inside)) != set(np.unique(outside))
    # brightness alone (shading across the whole frame) never separates
    shaded = (colors.astype(np.float32) * np.linspace(0.6, 1.0, W)[None, None, :, None]).astype(np.uint8)
    assert segment_layers(z, p, block_chroma(shaded, 4)).count == 2 * N


def corner(noise: float = 0.0, frames: int = 2) -> np.ndarray:
    """(frames, 96, 128) depth of the outside corner of a building: two walls at 45 degrees to the
    view (normals (-1, 0, 1) and (1, 0, 1)) meet at (0, 0, 5) m, column 64 (focal 80 px, centre
    (64, 48)), with continuous depth; the depths of both change by 3-5 % per 4 pixels."""
    ray_x = (np.arange(128, dtype=np.float32) - 64) / 80
    depth = np.broadcast_to((5.0 / (1 + np.abs(ray_x))).astype(np.float32), (frames, 96, 128))
    rng = np.random.default_rng(0)
    return (depth * (1 + noise * rng.standard_normal(depth.shape))).astype(np.float32)


@pytest.mark.parametrize("noise", [0.0, 0.01])
def test_surfaces_meeting_in_a_corner_separate_by_orientation(noise):
    depth = corner(noise)
    z = log_depth(depth[:, 2::4, 2::4])
    # min_layer: on this small grid (24 x 32 samples) the default makes single samples layers
    assert segment_layers(z, LayerAlignParams(crease=0.0, min_layer=0.01)).count == 2  # depth alone: one per frame
    by_orientation = segment_layers(z, LayerAlignParams(min_layer=0.01))
    for t in range(2):
        lab = by_orientation.labels[t]
        cols = np.arange(2, 128, 4)
        left, right = lab[:, cols < 52], lab[:, cols > 76]  # clear of the corner by the slopes' reach
        a, b = (np.bincount(side[side >= 0]).argmax() for side in (left, right))
        assert a != b and (left == a).mean() > 0.98 and (right == b).mean() > 0.98  # (noise at the border)
        # the slopes are measured over CREASE_BASE samples on either side, so the samples within
        # two of the corner may form slivers of their own
        assert np.isin(lab, [a, b]).mean() >= 28 / 32 - 0.01


def test_a_fragment_on_a_corner_does_not_bridge_the_surfaces_it_touches():
    """Two walls meet in a crease (their direct boundary does not connect); a 4-sample fragment on the
    corner connects to both. It joins one of them, never both: a room's ceiling and far wall were one
    layer through such fragments (room seed 0), and took one scale."""
    comp = np.zeros((1, 6, 12), np.int32)
    comp[0, :, :6], comp[0, :, 6:] = 1, 3
    comp[0, :2, 6:8] = 2  # the fragment: 4 samples, above min_area (3), below crease_area (15)
    a_h, b_h = comp[:, :, :-1], comp[:, :, 1:]
    a_v, b_v = comp[:, :-1, :], comp[:, 1:, :]
    crease = lambda a, b: ((a == 1) & (b == 3)) | ((a == 3) & (b == 1))  # noqa: E731
    soft_h, soft_v = ~crease(a_h, b_h), ~crease(a_v, b_v)
    unmeasured_h, unmeasured_v = np.full(soft_h.shape, np.nan), np.full(soft_v.shape, np.nan)
    join_h, join_v = _merge_links(comp, soft_h, soft_v, soft_h, soft_v, unmeasured_h, unmeasured_v, 0.5, 3, 15, 0.025)
    merged = _components(comp > 0, (a_h == b_h) | join_h, (a_v == b_v) | join_v)[0]
    wall_a, fragment, wall_b = merged[5, 0], merged[0, 6], merged[5, 11]
    assert wall_a != wall_b and fragment in (wall_a, wall_b)
    # two large regions across soft links still merge
    big = comp.copy()
    big[0, :2, 6:8] = 3
    join_h, join_v = _merge_links(big, np.ones_like(soft_h), np.ones_like(soft_v), np.ones_like(soft_h),
                                  np.ones_like(soft_v), unmeasured_h, unmeasured_v, 0.5, 3, 15, 0.025)
    assert join_h[0, 5, 5] and join_h.sum() == 6


@pytest.mark.parametrize("turn", [0.0, 0.02])
def test_regions_whose_boundary_turns_the_same_way_do_not_merge(turn):
    """A corner far from the image centre turns by less than the per-link threshold (0.025): every
    link of the boundary passes the loose test, but the turns agree in sign and size along it
    (0.02 +- 0.008 here), so the mean sees the corner through the noise. The same boundary with
    turns of 0 +- 0.008 (one plane, split by the first pass) merges."""
    comp = np.zeros((1, 16, 12), np.int32)
    comp[0, :, :6], comp[0, :, 6:] = 1, 2
    soft_h, soft_v = np.ones((1, 16, 11), bool), np.ones((1, 15, 12), bool)
    turn_h = np.full(soft_h.shape, np.nan)
    turn_h[0, :, 5] = turn + 0.008 * np.random.default_rng(0).standard_normal(16)
    join_h, _ = _merge_links(comp, soft_h, soft_v, soft_h, soft_v, turn_h, np.full(soft_v.shape, np.nan),
                             0.5, 3, 15, 0.025)
    assert join_h[0, :, 5].all() == (turn == 0.0)


def test_colours_change_the_alignment_of_a_touching_object():
    """Wall at 10 m, crate at 8 m; the new window puts both at 9 m (scale errors 0.9 and 1.125),
    so by depth alone they are one layer and one of them gets the other's scale."""
    truth, crate, colors = ground_and_crate()
    truth[crate] = 8.0
    new = np.full(truth.shape, 9.0, np.float32)
    ones = np.ones(new.shape, bool)
    base = dict(ref_depth=truth[:O], ref_mask=ones[:O], depth=new, mask=ones, conf=np.ones(new.shape, np.float32),
                overlap=O)
    coloured = align_layers(LayerAlignInput(**base, colors=colors, ref_colors=colors[:O]))
    # away from the crate's outline (full-resolution edges are resolved by depth, equal here)
    edge = np.zeros_like(crate)
    edge[:, 12:60, 44:92] = True
    edge[:, 20:52, 52:84] = False
    np.testing.assert_allclose(coloured.depth[~edge], truth[~edge], rtol=2.0 ** -11)  # float16 scales
    depth_only = align_layers(LayerAlignInput(**base))
    assert np.abs(depth_only.depth / truth - 1).max() > 0.1
    with pytest.raises(ValueError, match="colors"):
        align_layers(LayerAlignInput(**base, colors=colors[:, :10], ref_colors=colors[:O]))


@pytest.mark.parametrize("history", [0.0, 0.5, 0.75, 1.0])
def test_history_moves_layers_that_share_of_the_way_in_log_depth(history):
    truth, crate, _ = ground_and_crate()
    truth[crate] = 3.0  # a separate depth layer
    scale = np.where(crate, np.float32(1.25), np.float32(0.8))
    ones = np.ones(truth.shape, bool)
    inp = LayerAlignInput(ref_depth=truth[:O], ref_mask=ones[:O], depth=truth * scale, mask=ones,
                          conf=np.ones(truth.shape, np.float32), overlap=O, history=history)
    result = align_layers(inp)
    expected = truth * scale ** (1.0 - history)  # the running mean of the reference and this window
    np.testing.assert_allclose(result.depth, expected, rtol=2.0 ** -11)  # float16 scales


def stream(count: int = 4, width: int = 96, height: int = 72):
    scene = Scene(SceneConfig(width=width, height=height, num_frames=12 + (count - 1) * 8))
    backbone = SyntheticBackbone(scene, SyntheticNoise(seed=1), (width, height))
    images = np.stack([scene.render(i, width, height)["colors"] for i in range(scene.config.num_frames)])
    return [backbone.predict(images[k * 8:k * 8 + 12], np.arange(k * 8, k * 8 + 12)) for k in range(count)]


def test_aligner_counts_windows_and_resume_continues_the_consensus():
    preds = stream()
    params = LayerAlignParams(history_windows=2, window_weight=1.0)
    aligner, reference, K, windows = LayerAligner(params), None, None, []
    histories = []
    for index, pred in enumerate(preds):
        histories.append(aligner.history())
        result, K = register_window(index, pred, overlap=4, K=K, reference=reference, conf_keep=0.5, refiner=aligner)
        aligner.observe(result.window)
        windows.append(result.window)
        reference = result.reference
    assert histories == [0.0, 0.5, 2 / 3, 2 / 3]  # m / (m + 1), m = min(n, history_windows)
    lighter = LayerAligner(LayerAlignParams(history_windows=2, window_weight=0.5))
    lighter.restore(windows[:3])
    assert lighter.history() == 2 / 2.5  # a new window counts half as much as each earlier one
    resumed = LayerAligner(params)
    resumed.restore(windows[:3])
    assert resumed.windows == 3 and resumed.history() == histories[3]
    # the factors are float16 values: the run directory stores them exactly, so a resumed run continues exactly
    factors = np.concatenate([w.depth_factor for w in windows])
    assert (factors != 1).any() and np.array_equal(factors, factors.astype(np.float16).astype(np.float32))
    # the camera-path measurements the next window is weighed against come back from the windows
    assert any(info > 0 for info in aligner.path_information)
    assert resumed.path_offsets == aligner.path_offsets[:3] and resumed.path_information == aligner.path_information[:3]
    # with no history and no parallax measurement the refiner leaves the Sim(3) depth as it is
    none = LayerAligner(LayerAlignParams(history_windows=0, parallax_gap=0))
    none.restore(windows[:1])
    first, K0 = register_window(0, preds[0], overlap=4, K=None, reference=None, conf_keep=0.5)
    second, _ = register_window(1, preds[1], overlap=4, K=K0, reference=first.reference, conf_keep=0.5, refiner=none)
    np.testing.assert_array_equal(second.window.depth_factor, 1.0)


@pytest.mark.parametrize("kind", sorted(SCENE_TYPES))
def test_scene_layouts_render_their_boxes_with_ground_truth(kind):
    config = SCENE_TYPES[kind](3, width=80, height=60)
    assert SceneConfig.from_dict(config.to_dict()) == config
    scene = Scene(config)
    r = scene.render(0)
    boxes = [scene.box_base + j for j in range(len(config.boxes))]
    seen = np.isin(r["layers"], boxes)
    assert seen.any() and np.isfinite(r["depth"]).all() and (r["depth"] > 0).all()
    # a box pixel's world point lies on its box's surface
    ids = r["layers"][seen]
    pts = r["points"][seen]
    box = [config.boxes[i - scene.box_base] for i in ids]
    centre = np.array([b.center for b in box])
    half = np.array([b.half for b in box])
    assert (np.abs(pts - centre) <= half + 1e-3).all()
    assert np.isclose(np.abs(pts - centre) / half, 1.0, atol=1e-3).any(-1).all()
    # a different seed draws a different layout of the same kind
    assert SCENE_TYPES[kind](4).boxes != config.boxes
