"""Layer scales from the parallax inside a window, and the camera path rescaled to agree with the depth."""

from __future__ import annotations

import numpy as np
import pytest

from core.layer_align import LayerAligner, LayerAlignInput, align_layers
from core.layer_align.link import layer_tracks, temporal_links
from core.layer_align.parallax import parallax_scales, partner_frames, shrinkage
from core.layer_align.segment import block_chroma, log_depth, sample_grid, segment_layers
from core.layer_align.solve import confidence_weights
from core.registration import register_window
from core.run.arrays import WindowPrediction
from core.run.manifest import RunManifest
from core.run.settings import LayerAlignParams
from core.synthetic import Scene, SceneConfig, SyntheticBackbone, SyntheticNoise

SIZE = (192, 144)
FIRST = 40  # the camera dollies and sways here: a window of 20 frames sees parallax
FRAMES = np.arange(FIRST, FIRST + 20)


@pytest.fixture(scope="module")
def scene() -> Scene:
    return Scene(SceneConfig(width=SIZE[0], height=SIZE[1], num_frames=120, texture=True))


def _predict(scene: Scene, noise: SyntheticNoise, frames: np.ndarray = FRAMES) -> WindowPrediction:
    images = np.stack([scene.render(int(f), *SIZE)["colors"] for f in frames])
    return SyntheticBackbone(scene, noise, SIZE).predict(images, frames)


def _measure(scene: Scene, pred: WindowPrediction, params: LayerAlignParams):
    """Per scene layer (ground-truth id): the largest segmented layer's measurement and its true log factor."""
    s = params.stride
    z = log_depth(sample_grid(pred.points[..., 2], s))
    layers = segment_layers(z, params, block_chroma(pred.colors, s))
    links = temporal_links(layers, z, params.link_iou, params.link_cover, params.link_log)
    track = layer_tracks(layers, links, 0.5)
    weight = confidence_weights(sample_grid(pred.conf, s), np.isfinite(z))
    K = scene.K(*SIZE)
    measured = parallax_scales(z, pred.colors, pred.poses.astype(np.float64), K, layers, weight, track,
                               np.zeros(layers.count), s, params)
    truth = sample_grid(np.stack([scene.render(int(f), *SIZE)["layers"] for f in pred.frames]), s)
    majority = np.array([np.bincount(truth[layers.labels == k]).argmax() for k in range(layers.count)])
    return layers, measured, majority


def test_partner_frames_stay_in_the_window():
    assert partner_frames(30, 10).tolist() == [*range(10, 30), *range(10, 20)]
    assert partner_frames(6, 10).tolist() == [5, 5, 5, 0, 0, 0]  # shorter than the gap: the far end


@pytest.mark.parametrize("exact,tolerance", [(True, 0.015), (False, 0.07)])
def test_parallax_recovers_each_layers_depth_error(scene, exact, tolerance):
    """Each layer's depth is off by its own factor; the camera motion measures it, where there is parallax.
    Exact: only the layer errors; else also the default pose and depth noise, which bias it here by 4-6 %
    (the ground: 0.073 or 0.090 for a truth of 0.030, depending on which of its samples the per-layer
    subsample draws; `parallax_bias` 0.04 is the error no measurement is trusted below)."""
    noise = SyntheticNoise(seed=3, window_sim3=False)
    if exact:
        noise = SyntheticNoise(seed=3, window_sim3=False, depth_noise=0.0, pose_rot_deg=0.0, pose_trans=0.0)
    pred = _predict(scene, noise)
    truth = -np.log(SyntheticBackbone(scene, noise, SIZE).layer_scales(FIRST))
    layers, measured, majority = _measure(scene, pred, LayerAlignParams())
    ground = (majority == 0) & (layers.area > 100)
    assert ground.sum() >= len(FRAMES) and (measured.information[ground] > 0).all()
    assert np.abs(measured.log_scale[ground] - truth[0]).max() < tolerance, (measured.log_scale[ground][0], truth[0])
    # every layer measured precisely (sd under 8 %) is within 3 sd plus the tolerance of the truth
    # (the box, scene layer 3, measures at sd 5-7 % as its faces form one or two layers)
    precise = (measured.information > 1 / 0.08 ** 2) & (layers.area > 20)
    assert len(set(majority[precise])) >= 2
    sd = 1 / np.sqrt(measured.information[precise])
    assert np.all(np.abs(measured.log_scale[precise] - truth[majority[precise]]) < 3 * sd + tolerance)


def test_no_baseline_is_no_measurement(scene):
    """Cameras that only rotate (every centre the same) show no parallax: nothing is measured."""
    pred = _predict(scene, SyntheticNoise.none(seed=1))
    poses = pred.poses.copy()
    poses[:, :3, 3] = poses[0, :3, 3]
    still = WindowPrediction(frames=pred.frames, points=pred.points, poses=poses, conf=pred.conf, colors=pred.colors)
    _, measured, _ = _measure(scene, still, LayerAlignParams())
    assert np.all(measured.information == 0) and np.all(measured.log_scale == 0)


def test_shrinkage_applies_clear_corrections_only():
    info, area = np.full(6, 1 / 0.03 ** 2), np.full(6, 100.0)   # each measured to 3 %, bias 2 %: error 3.6 %
    consistent = np.array([0.01, -0.02, 0.0, 0.03, -0.01, 0.09])  # one strays 2.5 errors: chance, not evidence
    assert np.all(shrinkage(consistent, info, 0.02, area) == 0)
    inconsistent = np.array([0.2, -0.15, 0.1, 0.03, -0.25, 0.12])   # every layer off: all corrected, most of the way
    share = shrinkage(inconsistent, info, 0.02, area)
    assert np.all(share > 0.5) and np.all(share < 1)
    one_off = np.array([0.01, -0.02, 0.0, 0.03, -0.01, 0.3])        # one object 8 errors off among correct layers
    share = shrinkage(one_off, info, 0.02, area)
    assert share[5] > 0.9 and np.all(share[:5] == 0)
    info[5] = 0.0  # not measured: nothing to correct
    assert shrinkage(one_off, info, 0.02, area)[5] == 0
    # pooled by the mean (a shot's camera-path offsets): a clearly large offset (4 errors) makes a moderate
    # one (1.9 errors) count, where the median says the typical offset is within its error
    offsets = np.array([0.01, -0.15, -0.02, 0.005, 0.07])
    assert shrinkage(offsets, info[:5], 0.02, area[:5])[4] == 0
    assert shrinkage(offsets, info[:5], 0.02, area[:5], robust=False)[4] > 0.5
    # one measurement alone (a first camera path): applied by how clearly it exceeds its own error
    assert shrinkage(np.array([0.005]), np.array([1e6]), 0.02, np.ones(1))[0] == 0
    assert 0.9 < shrinkage(np.array([0.1]), np.array([1e6]), 0.02, np.ones(1))[0] < 1


def _path_correction(scene: Scene, stretch: float, offsets: list[float] = (), information: list[float] = ()):
    """Layer alignment of one window whose cameras move ``stretch`` times too far for its depth, after
    earlier windows whose camera paths measured ``offsets``."""
    pred = _predict(scene, SyntheticNoise.none(seed=1))
    poses = pred.poses.copy()
    poses[:, :3, 3] = poses[0, :3, 3] + stretch * (poses[:, :3, 3] - poses[0, :3, 3])
    n, h, w = pred.points.shape[:3]
    empty = np.zeros((0, h, w))
    return align_layers(LayerAlignInput(ref_depth=empty.astype(np.float32), ref_mask=empty.astype(bool),
                                        depth=pred.points[..., 2], mask=np.ones((n, h, w), bool), conf=pred.conf,
                                        overlap=0, poses=poses.astype(np.float64), K=scene.K(*SIZE),
                                        colors=pred.colors, path_offsets=np.array(offsets),
                                        path_information=np.array(information)))


def test_camera_path_rescaled_to_the_depth(scene):
    """A window whose cameras move 20 % too far for its depth: the layers keep their depth, the path shrinks."""
    result = _path_correction(scene, 1.2)
    assert result.path_log_scale == pytest.approx(-np.log(1.2), abs=0.02)
    assert result.path_offset == pytest.approx(np.log(1.2), abs=0.02) and result.path_information > 0
    assert np.abs(np.log(result.depth_factor)).max() < 0.02  # the layers agree with each other: unchanged


def test_a_moderate_path_offset_is_weighed_against_the_shots_earlier_windows(scene):
    """7 % off is within what the network's pose noise alone gives a window's path (about 2 errors of the
    measurement): after windows whose paths all agreed with their depth it is left; in a shot whose
    windows' paths were clearly off it is corrected."""
    alone = _path_correction(scene, 1.07)
    assert alone.path_offset == pytest.approx(np.log(1.07), abs=0.015)
    info = [alone.path_information] * 4
    calm = _path_correction(scene, 1.07, [0.01, -0.02, 0.015, -0.005], info)
    assert calm.path_log_scale == 0
    drifting = _path_correction(scene, 1.07, [0.15, -0.12, 0.2, -0.1], info)
    assert -alone.path_offset < drifting.path_log_scale < -0.6 * alone.path_offset


def test_registration_scales_a_windows_path_to_its_depth(scene):
    """End to end: the second window's network cameras move 20 % too far for its depth. Sim(3) keeps that
    in the camera path; layer alignment measures it by parallax and registers the path at the depth's scale."""
    noise = SyntheticNoise.none(seed=2)
    first = _predict(scene, noise, np.arange(FIRST - 14, FIRST + 6))
    second = _predict(scene, noise)
    poses = second.poses.copy()
    poses[:, :3, 3] = poses[0, :3, 3] + 1.2 * (poses[:, :3, 3] - poses[0, :3, 3])
    second = WindowPrediction(frames=second.frames, points=second.points, poses=poses, conf=second.conf,
                              colors=second.colors)

    def step_ratio(refiner) -> float:
        """Camera steps of the second window's new frames over the first window's, against the truth's."""
        a, K = register_window(0, first, overlap=6, K=None, reference=None, conf_keep=0.5, refiner=refiner)
        if refiner is not None:
            refiner.observe(a.window)
        b, _ = register_window(1, second, overlap=6, K=K, reference=a.reference, conf_keep=0.5, refiner=refiner)
        steps = lambda p: np.linalg.norm(np.diff(p[:, :3, 3], axis=0), axis=1).sum()  # noqa: E731
        true = lambda f: steps(np.stack([scene.pose(int(i)) for i in f]))  # noqa: E731
        return (steps(b.window.poses) / true(b.window.frames)) / (steps(a.window.poses) / true(a.window.frames))

    assert step_ratio(None) == pytest.approx(1.2, abs=0.02)
    assert step_ratio(LayerAligner()) == pytest.approx(1.0, abs=0.03)


def test_runs_written_before_the_parallax_read_without_it():
    """run.json of an earlier version names no parallax_gap: that run was registered without it."""
    old = RunManifest.model_validate({"settings": {"window": 20, "layer": {"max_scale": 1.5}}})
    assert old.settings.layer.parallax_gap == 0 and old.settings.layer.max_scale == 1.5
    older = RunManifest.model_validate({"settings": {"window": 20}})  # before layer settings were saved
    assert older.settings.layer.parallax_gap == 0
    today = RunManifest()
    assert today.settings.layer.parallax_gap == 10
    assert RunManifest.model_validate_json(today.model_dump_json()).settings.layer.parallax_gap == 10
