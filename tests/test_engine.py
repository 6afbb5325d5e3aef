"""Streaming engine: windowing, registration accuracy, run-directory format, cancel and resume."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from core import events
from core.engine import align, count_windows, iter_windows, reconstruct
from core.metrics import ate, depth_metrics
from core.run.files import list_windows
from core.run.settings import EngineSettings
from core.run.tum import read_tum
from core.synthetic import Scene, SceneConfig, SyntheticBackbone, SyntheticNoise, SyntheticSource
from run_files import iter_aligned, read_run

SMALL = SceneConfig(width=96, height=72, num_frames=130)


def _concat(run_dir):
    wins = list(iter_aligned(run_dir))
    cat = lambda k: np.concatenate([getattr(w, k) for w in wins])  # noqa: E731
    return wins, cat("frames"), cat("poses").astype(np.float64), cat("depth"), cat("mask")


@pytest.mark.parametrize("n,window,overlap", [(1, 5, 2), (5, 5, 2), (6, 5, 2), (8, 5, 2), (9, 5, 2), (130, 12, 4)])
def test_windows_cover_every_frame_once_with_overlap(n, window, overlap):
    wins = list(iter_windows(((i, None) for i in range(n)), window, overlap))
    assert len(wins) == count_windows(n, window, overlap)
    assert [k for k, _ in wins] == list(range(len(wins)))
    new = []
    for k, items in wins:
        idx = [i for i, _ in items]
        assert idx == list(range(idx[0], idx[-1] + 1)) and len(idx) <= window
        if k > 0:
            prev = [i for i, _ in wins[k - 1][1]]
            assert idx[:overlap] == prev[-overlap:]
            new += idx[overlap:]
        else:
            new += idx
    assert new == list(range(n))


def test_windows_skip_to_first_window():
    full = list(iter_windows(((i, None) for i in range(50)), 10, 3))
    resumed = list(iter_windows(((i, None) for i in range(21, 50)), 10, 3, first_window=3))
    assert [(k, [i for i, _ in items]) for k, items in resumed] == \
           [(k, [i for i, _ in items]) for k, items in full[3:]]


def test_noise_free_registration_recovers_trajectory_and_depth(tmp_path):
    scene = Scene(SMALL)
    status = reconstruct(SyntheticSource(scene), SyntheticBackbone(scene, SyntheticNoise.none(seed=3)),
                         tmp_path, EngineSettings(window=12, overlap=4, layer_align=False))
    assert status == "complete"
    wins, frames, poses, depth, mask = _concat(tmp_path)
    assert len(wins) >= 10
    np.testing.assert_array_equal(frames, np.arange(SMALL.num_frames))
    err = ate(poses, scene.pose(frames))
    assert err["rmse"] < 1e-3 * err["length"]
    gt = np.stack([scene.render(int(f), SMALL.width, SMALL.height)["depth"] for f in frames])
    assert depth_metrics(depth, gt, mask)["abs_rel"] < 1e-3
    # Focal estimated from the first window's points: exact up to float error.
    np.testing.assert_allclose(wins[0].K, scene.K(), rtol=1e-4)


def test_known_focal_overrides_estimate(tmp_path):
    scene = Scene(SMALL)
    reconstruct(SyntheticSource(scene, num_frames=20), SyntheticBackbone(scene, SyntheticNoise(seed=1)), tmp_path,
                EngineSettings(window=10, overlap=3, layer_align=False, focal_px=123.0))
    K = next(iter_aligned(tmp_path)).K
    assert K[0, 0] == pytest.approx(123.0) and K[1, 1] == pytest.approx(123.0)
    assert (K[0, 2], K[1, 2]) == (SMALL.width / 2, SMALL.height / 2)


def test_run_directory_format(tmp_path):
    scene = Scene(SMALL)
    src = SyntheticSource(scene, num_frames=30)
    reconstruct(src, SyntheticBackbone(scene), tmp_path, EngineSettings(window=12, overlap=4, layer_align=False))
    meta = json.loads((tmp_path / "predictions" / "meta.json").read_text())
    assert {k: meta[k] for k in ("window", "overlap", "height", "width")} == \
           {"window": 12, "overlap": 4, "height": 72, "width": 96}
    preds = list_windows(tmp_path / "predictions")
    assert [i for i, _ in preds] == [0, 1, 2, 3]
    with np.load(preds[1][1]) as z:
        n = len(z["frames"])
        assert z["frames"].dtype == np.int64 and z["frames"][0] == 8
        assert z["points"].shape == (n, 72, 96, 3) and z["points"].dtype == np.float32
        assert z["poses"].shape == (n, 4, 4) and z["poses"].dtype == np.float32
        assert z["conf"].shape == (n, 72, 96) and z["conf"].dtype == np.float32
        assert z["colors"].shape == (n, 72, 96, 3) and z["colors"].dtype == np.uint8
    with np.load(tmp_path / "aligned" / "w00001.npz") as z:
        assert z["frames"].tolist() == list(range(12, 20))
        assert z["K"].shape == (3, 3) and z["depth"].shape == (8, 72, 96) and z["depth"].dtype == np.float32
        assert z["poses"].shape == (8, 4, 4) and z["colors"].dtype == np.uint8 and z["conf"].shape == (8, 72, 96)
    times, poses = read_tum(tmp_path / "trajectory.tum")
    np.testing.assert_allclose(times, np.arange(30) / SMALL.fps, atol=1e-6)
    np.testing.assert_allclose(poses, _concat(tmp_path)[2], atol=1e-5)
    run = read_run(tmp_path)
    assert run["status"] == "complete" and run["windows_done"] == 4 and run["frames_done"] == 30


def test_align_reproduces_reconstruct_from_predictions(tmp_path):
    scene = Scene(SMALL)
    cfg = EngineSettings(window=12, overlap=4, layer_align=False)
    reconstruct(SyntheticSource(scene, num_frames=40), SyntheticBackbone(scene), tmp_path / "a", cfg)
    assert align(tmp_path / "a" / "predictions", tmp_path / "b", cfg) == "complete"
    _, fa, pa, da, _ = _concat(tmp_path / "a")
    _, fb, pb, db, _ = _concat(tmp_path / "b")
    np.testing.assert_array_equal(fa, fb)
    np.testing.assert_allclose(pa, pb, atol=1e-6)
    np.testing.assert_allclose(da, db, rtol=1e-6)
    meta_b = json.loads((tmp_path / "b" / "predictions" / "meta.json").read_text())
    assert meta_b["window"] == 12 and meta_b["overlap"] == 4


@pytest.mark.parametrize("layer_align", [False, True])
def test_cancel_keeps_finished_windows_and_resume_completes(tmp_path, layer_align):
    scene = Scene(SMALL)
    backbone = SyntheticBackbone(scene, SyntheticNoise(seed=2))
    cfg = EngineSettings(window=12, overlap=4, layer_align=layer_align)
    cancel = threading.Event()
    seen = []

    def on_event(e):
        if isinstance(e, events.WindowDone):
            seen.append(e.index)
            if len(seen) == 3:
                cancel.set()

    assert reconstruct(SyntheticSource(scene), backbone, tmp_path / "run", cfg,
                       on_event=on_event, cancel=cancel) == "cancelled"
    run = read_run(tmp_path / "run")
    assert run["status"] == "cancelled" and run["windows_done"] == 3
    assert [i for i, _ in list_windows(tmp_path / "run" / "aligned")] == [0, 1, 2]

    assert reconstruct(SyntheticSource(scene), backbone, tmp_path / "run", cfg, resume=True) == "complete"
    reconstruct(SyntheticSource(scene), backbone, tmp_path / "ref", cfg)
    _, fr, pr, dr, _ = _concat(tmp_path / "run")
    _, fe, pe, de, _ = _concat(tmp_path / "ref")
    np.testing.assert_array_equal(fr, np.arange(SMALL.num_frames))
    # A resumed run continues exactly where it stopped (poses to float32 rounding).
    np.testing.assert_allclose(pr, pe, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(dr, de)
    assert len(read_tum(tmp_path / "run" / "trajectory.tum")[0]) == SMALL.num_frames
    assert read_run(tmp_path / "run")["status"] == "complete"


def test_backbone_failure_marks_run_failed_and_keeps_windows(tmp_path):
    scene = Scene(SMALL)

    class Breaks(SyntheticBackbone):
        def predict(self, images, frames):
            if frames[0] >= 16:
                raise RuntimeError("GPU fell off the bus")
            return super().predict(images, frames)

    with pytest.raises(RuntimeError, match="GPU fell off"):
        reconstruct(SyntheticSource(scene), Breaks(scene), tmp_path, EngineSettings(window=12, overlap=4,
                                                                                   layer_align=False))
    run = read_run(tmp_path)
    assert run["status"] == "failed" and "GPU fell off" in run["error"]
    assert [i for i, _ in list_windows(tmp_path / "aligned")] == [0, 1]


def test_bounded_queue_applies_back_pressure(tmp_path):
    """A slow consumer keeps the producer at most queue_size windows ahead."""
    scene = Scene(SMALL)
    predicted, registered = [], []

    class Counting(SyntheticBackbone):
        def predict(self, images, frames):
            predicted.append(int(frames[0]))
            return super().predict(images, frames)

    def on_event(e):
        if isinstance(e, events.WindowDone):
            registered.append(e.index)
            ahead = len(predicted) - len(registered)
            assert ahead <= 2 + 1  # queue_size waiting + one being predicted
            threading.Event().wait(0.05)

    reconstruct(SyntheticSource(scene), Counting(scene), tmp_path,
                EngineSettings(window=12, overlap=4, layer_align=False, queue_size=2), on_event=on_event)
    assert len(registered) == count_windows(SMALL.num_frames, 12, 4)


def test_each_window_is_announced_before_it_is_registered(tmp_path):
    scene = Scene(SMALL)
    seen = []
    reconstruct(SyntheticSource(scene, num_frames=40), SyntheticBackbone(scene), tmp_path,
                EngineSettings(window=12, overlap=4, layer_align=False), on_event=seen.append)
    predicting = [e for e in seen if isinstance(e, events.Predicting)]
    done = [e for e in seen if isinstance(e, events.WindowDone)]
    assert [(e.index, e.first_frame, e.last_frame) for e in predicting] == [(0, 0, 11), (1, 8, 19), (2, 16, 27),
                                                                            (3, 24, 35), (4, 32, 39)]
    for d in done:
        assert seen.index(predicting[d.index]) < seen.index(d)
