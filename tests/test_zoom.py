"""Zoom shots (``--zoom``): per-frame focal lengths from the network, smoothed over time, keyed on the lens."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import bpy
import numpy as np
import pycolmap
import pytest

from core import events
from core.engine import reconstruct
from core.geometry.fitting import robust_smooth
from core.groundtruth import load_ground_truth
from core.lens import ZoomLens
from core.run.arrays import AlignedWindow
from core.run.manifest import RunStatus
from core.run.rundir import RunDir
from core.run.settings import EngineSettings
from core.solve.bundle import scaled_focal
from core.synthetic import Scene, SceneConfig, SyntheticBackbone, SyntheticNoise, SyntheticSource, render_clip
from laser_blender.exporters import ExportOptions, export
from laser_blender.scene import FRAME_START, SceneOptions, import_run

CLI = [str(Path(sys.executable).with_name("laser-blender"))]
FRAMES = 70
ZOOM = SceneConfig(width=128, height=96, num_frames=FRAMES, zoom=1.8, zoom_period=100)  # 1.8x in over 50 frames
NOISE = SyntheticNoise(focal_noise=0.005)  # 0.5% per-frame focal noise on top of the usual corruption


def _focal_errors(run_dir: Path, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(frames, relative focal error per frame) of a run against (N,) true focal lengths at footage resolution."""
    run = RunDir(run_dir)
    wins = list(run.iter_aligned())
    frames = np.concatenate([w.frames for w in wins])
    K = run.geometry().intrinsics_to_footage(np.concatenate([w.frame_K for w in wins]).astype(np.float64))
    return frames, K[:, 0, 0] / truth[frames] - 1


@pytest.fixture(scope="module")
def zoom_run(tmp_path_factory):
    """A synthetic zoom shot reconstructed by ``laser-blender reconstruct --zoom`` (pi3-like: the focal is
    only in the predicted points), and its ground truth."""
    root = tmp_path_factory.mktemp("zoom")
    video, gt = render_clip(root, ZOOM, noise=NOISE)
    r = subprocess.run(CLI + [str(a) for a in ("reconstruct", video, "-o", root / "run", "--backbone", "synthetic",
                                               "--synthetic-scene", gt, "--window", 16, "--overlap", 6, "--zoom")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return root / "run", load_ground_truth(gt)


def test_focal_within_one_percent_on_every_frame(zoom_run):
    run_dir, gt = zoom_run
    assert gt.frame_K is not None and gt.frame_K[:, 0, 0].max() / gt.frame_K[:, 0, 0].min() > 1.7
    frames, err = _focal_errors(run_dir, gt.frame_K[:, 0, 0])
    assert np.array_equal(frames, np.arange(FRAMES))
    worst = np.abs(err).argmax()
    assert abs(err[worst]) < 0.01, f"frame {frames[worst]}: focal off by {err[worst]:.2%}"


def test_blender_camera_lens_is_keyed_per_frame(zoom_run):
    run_dir, gt = zoom_run
    bpy.ops.wm.read_factory_settings(use_empty=True)
    run = import_run(bpy.context.scene, run_dir, SceneOptions(sensor_width=36.0, point_budget=2000))
    cam = run.camera.data
    fcurve = cam.animation_data.action.fcurves.find("lens")
    assert fcurve is not None and len(fcurve.keyframe_points) == FRAMES
    lens = np.array([fcurve.evaluate(f + FRAME_START) for f in range(FRAMES)])
    truth = gt.frame_K[:, 0, 0] * 36.0 / gt.width
    assert np.abs(lens / truth - 1).max() < 0.01
    bpy.context.scene.frame_set(FRAME_START + 50)  # the lens follows the frame
    assert cam.lens == pytest.approx(truth[50], rel=0.01)


def test_colmap_writes_each_frames_camera(zoom_run, tmp_path):
    run_dir, gt = zoom_run
    export(run_dir, tmp_path / "sparse", "colmap", ExportOptions(max_points=500))
    rec = pycolmap.Reconstruction(tmp_path / "sparse")
    assert len(rec.images) == FRAMES and len(rec.cameras) > FRAMES // 2  # one camera per distinct lens
    images = sorted(rec.images.values(), key=lambda im: im.image_id)  # in frame order
    focal = np.array([rec.cameras[im.camera_id].calibration_matrix()[0, 0] for im in images])
    assert np.abs(focal / gt.frame_K[:, 0, 0] - 1).max() < 0.01


@pytest.mark.parametrize("suffix", ["fbx", "usdc"])
def test_lens_animation_survives_blenders_own_exporters(zoom_run, tmp_path, suffix):
    """The keyed lens read back through Blender's FBX and USD importers, frame by frame (Alembic
    cameras come back with one lens: Blender's Alembic importer reads camera data once)."""
    run_dir, _ = zoom_run
    summary = export(run_dir, tmp_path / f"shot.{suffix}", options=ExportOptions(max_points=500, sensor_width=36.0))
    built = [c for c in bpy.data.objects if c.type == "CAMERA"][0].data.animation_data.action.fcurves.find("lens")
    lens = np.array([built.evaluate(f + FRAME_START) for f in range(FRAMES)])
    bpy.ops.wm.read_factory_settings(use_empty=True)
    if suffix == "fbx":  # the importer's Animation Offset defaults to 1 frame: 0 keeps frame f at f
        bpy.ops.import_scene.fbx(filepath=str(summary.path), anim_offset=0)
    else:
        bpy.ops.wm.usd_import(filepath=str(summary.path))
    scene, cam = bpy.context.scene, next(o for o in bpy.context.scene.objects if o.type == "CAMERA")
    back = []
    for f in range(FRAMES):
        scene.frame_set(f + FRAME_START)
        back.append(cam.data.lens)
    np.testing.assert_allclose(back, lens, atol=0.01)


def test_predicted_intrinsics_are_followed(tmp_path):
    """VGGT-like: the network's per-frame intrinsics are the raw estimates; a fixed-lens run of the same
    shot keeps one K (no ``frame_K``)."""
    scene = Scene(SceneConfig(width=96, height=72, num_frames=50, zoom=1.6, zoom_period=100))
    backbone = SyntheticBackbone(scene, SyntheticNoise(focal_noise=0.005, predict_intrinsics=True))
    settings = EngineSettings(window=16, overlap=6, layer_align=False, save_predictions=False)
    reconstruct(SyntheticSource(scene), backbone, tmp_path / "zoom", settings.model_copy(update={"zoom": True}))
    truth = np.array([scene.K(96, 72, f)[0, 0] for f in range(50)])
    frames, err = _focal_errors(tmp_path / "zoom", truth)
    assert len(frames) == 50 and np.abs(err).max() < 0.01

    reconstruct(SyntheticSource(scene), backbone, tmp_path / "fixed", settings)
    assert all(w.frame_K is None for w in RunDir(tmp_path / "fixed").iter_aligned())


def test_robust_smooth_follows_a_ramp_through_outliers():
    t = np.arange(60)
    truth = 0.5 * (1 - np.cos(2 * np.pi * t / 100))
    noisy = truth + 0.005 * np.random.default_rng(0).standard_normal(60)
    noisy[[10, 11, 30, 59]] += [0.3, -0.2, 0.5, 0.4]  # wrong predictions, one at the very end
    curve = robust_smooth(np.concatenate([t, t[20:]]), np.concatenate([noisy, truth[20:]]), t, stiffness=1000)
    assert np.abs(curve - truth).max() < 0.01


def test_zoom_refuses_a_fixed_focal_length(tmp_path):
    r = subprocess.run(CLI + ["reconstruct", str(tmp_path / "clip.mp4"), "-o", str(tmp_path / "run"),
                              "--zoom", "--focal-px", "500"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--zoom" in r.stderr and "--focal-px" in r.stderr, r.stderr


def test_resumed_zoom_run_keeps_following_the_lens(tmp_path):
    """A cancelled zoom run resumed from disk: the lens state comes back from the windows' ``frame_K``."""
    scene = Scene(SceneConfig(width=96, height=72, num_frames=60, zoom=1.6, zoom_period=100))
    backbone = SyntheticBackbone(scene, SyntheticNoise(focal_noise=0.005))
    settings = EngineSettings(window=16, overlap=6, layer_align=False, save_predictions=False, zoom=True)
    cancel = threading.Event()

    def stop_after_two(event):
        if isinstance(event, events.WindowDone) and event.index == 1:
            cancel.set()

    status = reconstruct(SyntheticSource(scene), backbone, tmp_path / "run", settings, on_event=stop_after_two,
                         cancel=cancel)
    assert status == RunStatus.cancelled and len(RunDir(tmp_path / "run").aligned_windows()) == 2
    assert reconstruct(SyntheticSource(scene), backbone, tmp_path / "run", settings, resume=True) == RunStatus.complete
    truth = np.array([scene.K(96, 72, f)[0, 0] for f in range(60)])
    frames, err = _focal_errors(tmp_path / "run", truth)
    assert np.array_equal(frames, np.arange(60)) and np.abs(err).max() < 0.01


def test_restored_lens_reuses_the_registered_focal_lengths():
    """``ZoomLens.restore`` (a resume) gives the shared frames the focal lengths they were registered with."""
    scene = Scene(SceneConfig(width=64, height=48, num_frames=30, zoom=1.6, zoom_period=100))
    backbone = SyntheticBackbone(scene, SyntheticNoise(focal_noise=0.005, predict_intrinsics=True))
    first, second = (backbone.predict(np.zeros((16, 48, 64, 3), np.uint8), np.arange(s, s + 16)) for s in (0, 10))
    running = ZoomLens()
    K0 = running.intrinsics(0, first, np.ones(first.conf.shape, bool))
    window = AlignedWindow(index=0, frames=first.frames, poses=first.poses, K=np.median(K0, axis=0).astype(np.float32),
                           depth=first.points[..., 2], conf=first.conf, colors=first.colors,
                           mask=np.ones(first.conf.shape, bool), frame_K=K0.astype(np.float32))
    restored = ZoomLens()
    restored.restore([window])
    K1 = restored.intrinsics(1, second, np.ones(second.conf.shape, bool))
    np.testing.assert_allclose(K1[:6], K0[10:], rtol=1e-6)  # the overlap keeps its registered lens
    np.testing.assert_allclose(K1[6:, 0, 0], running.intrinsics(1, second, np.ones(second.conf.shape, bool))[6:, 0, 0],
                               rtol=0.005)


def test_a_solved_lens_resumes_as_it_runs():
    """The camera solve's focal lengths (``ZoomLens.solved``) replace the frames' network estimates: the next
    window's shared frames reuse them, and a lens restored from the written windows (a resume) gives the next
    window exactly the running lens's intrinsics."""
    scene = Scene(SceneConfig(width=64, height=48, num_frames=40, zoom=1.6, zoom_period=100))
    backbone = SyntheticBackbone(scene, SyntheticNoise(focal_noise=0.005))
    preds = [backbone.predict(np.zeros((16, 48, 64, 3), np.uint8), np.arange(s, s + 16)) for s in (0, 10, 20)]
    everywhere = np.ones(preds[0].conf.shape, bool)
    running, windows = ZoomLens(), []
    for index, pred in enumerate(preds[:2]):
        new = slice(0 if index == 0 else 6, None)
        K = running.intrinsics(index, pred, everywhere)[new]
        frame_K = scaled_focal(K, np.linspace(0.99, 1.02, len(K))).astype(np.float32)  # what a solve found
        running.solved(pred.frames[new], frame_K[:, 0, 0])
        windows.append(AlignedWindow(index=index, frames=pred.frames[new], poses=pred.poses[new],
                                     K=np.median(frame_K, axis=0), depth=pred.points[new, ..., 2],
                                     conf=pred.conf[new], colors=pred.colors[new], mask=everywhere[new],
                                     frame_K=frame_K))
    restored = ZoomLens()
    restored.restore(windows)
    after = running.intrinsics(2, preds[2], everywhere)
    np.testing.assert_allclose(after[:6], windows[1].frame_K[4:], rtol=1e-6)  # frames 20-25 as solved
    np.testing.assert_allclose(restored.intrinsics(2, preds[2], everywhere), after, rtol=1e-9)
