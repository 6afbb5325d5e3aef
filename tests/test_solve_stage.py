"""The camera solve as an engine stage (``--refine``): accuracy, resume, align with footage, bad footage, CLI.

A textured synthetic shot (the moving object in view) streams through the synthetic backbone with
its default network noise, once with the solve and once without; the truth is static scene points'
exact pixels in every frame (``core.synthetic.solve_truth``).
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pycolmap
import pytest

from core import events
from core.engine import align, camera_solve, reconstruct
from core.metrics import ate, triangulated_reprojection_rms
from core.run.files import RunDirError
from core.run.manifest import InputGeometry, RunManifest, SourceInfo, resume_differences
from core.run.rundir import RunDir
from core.run.solve import Bundles
from core.run.settings import EngineSettings
from core.solve.bundle import Observations
from core.solve.stage import SolveParams, _anchors, _depth_factors, _parallax
from core.synthetic import Scene, SceneConfig, SyntheticBackbone, SyntheticNoise, SyntheticSource, render_clip
from core.synthetic.solve_truth import static_truth
from laser_blender.exporters import ExportOptions, export

SIZE, FRAMES, PREDICTION = (480, 270), 40, (192, 108)
SETTINGS = dict(window=16, overlap=6)


@pytest.fixture(scope="module")
def scene() -> Scene:
    return Scene(SceneConfig(width=SIZE[0], height=SIZE[1], num_frames=FRAMES, texture=True))


def _run(scene: Scene, run_dir: Path, refine: bool, source=None, **kw) -> str:
    backbone = SyntheticBackbone(scene, SyntheticNoise(seed=0), size=PREDICTION)
    return reconstruct(source or SyntheticSource(scene, supersample=2), backbone, run_dir,
                       EngineSettings(refine=refine, **SETTINGS), **kw)


def _cameras(run_dir: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(frames, world_from_cam (N, 4, 4), footage K (3, 3)) of a run."""
    run = RunDir(run_dir)
    windows = list(run.iter_aligned())
    K = run.read_manifest().geometry.intrinsics_to_footage(windows[0].K.astype(np.float64))
    return (np.concatenate([w.frames for w in windows]),
            np.concatenate([w.poses for w in windows]).astype(np.float64), K)


@pytest.fixture(scope="module")
def runs(scene, tmp_path_factory) -> dict[bool, Path]:
    root = tmp_path_factory.mktemp("solve_stage")
    for refine in (False, True):
        assert _run(scene, root / f"refine_{refine}", refine) == "complete"
    return {refine: root / f"refine_{refine}" for refine in (False, True)}


def test_refined_cameras_hold_static_points_better_than_the_network(scene, runs):
    """Static points triangulated with the refined cameras reproject closer to their true pixels,
    the path is closer to the truth, and solve.json's error is an honest estimate of the true one."""
    truth = static_truth(scene, np.arange(FRAMES))
    figures = {}
    for refine, run_dir in runs.items():
        frames, poses, K = _cameras(run_dir)
        np.testing.assert_array_equal(frames, np.arange(FRAMES))
        figures[refine] = (triangulated_reprojection_rms(poses, K, truth.uv, truth.seen),
                           ate(poses, scene.pose(frames))["rmse"])
    (px_before, ate_before), (px_after, ate_after) = figures[False], figures[True]
    assert px_after < 0.5 * px_before, figures
    assert ate_after < 0.5 * ate_before, figures
    report = RunDir(runs[True]).read_solve()
    assert RunDir(runs[False]).read_solve() is None
    assert px_after / 2 <= report.rms_px <= max(2 * px_after, px_after + 0.3), (report.rms_px, px_after)
    assert sorted(report.per_frame_px) == list(range(FRAMES))
    bundles = RunDir(runs[True]).read_bundles()
    assert len(bundles.xyz) == report.points > 100 and len(bundles.obs_xy) == report.inliers


def test_the_solve_uses_the_tracks_where_the_network_is_unsure(runs):
    """The confidence mask keeps the network's surest half of the pixels; the footage tracks the rest as well,
    and those tracks are solved too (they start from the network's unmasked depth), not left out."""
    run = RunDir(runs[True])
    report, bundles = run.read_solve(), run.read_bundles()
    to_footage = run.read_manifest().geometry.intrinsics_to_footage(np.eye(3))
    masks = {int(f): w.mask[i] for w in run.iter_aligned() for i, f in enumerate(w.frames)}
    pixel = ((bundles.obs_xy - to_footage[:2, 2]) / np.diag(to_footage)[:2]).astype(int)
    h, w = next(iter(masks.values())).shape
    pixel = np.clip(pixel, 0, [w - 1, h - 1])
    sure = np.array([masks[int(f)][r, c] for f, (c, r) in zip(bundles.obs_frame, pixel)])
    assert (~sure).mean() > 0.3, (~sure).mean()  # 0.03 when only tracks with confident depth were solved
    assert report.points > 0.6 * report.tracks, (report.points, report.tracks)  # 0.35 then


def test_resumed_solve_equals_an_uninterrupted_one(scene, runs, tmp_path):
    cancel, done = threading.Event(), []

    def on_event(e):
        if isinstance(e, events.WindowDone):
            done.append(e.index)
            if len(done) == 2:
                cancel.set()

    assert _run(scene, tmp_path / "run", True, on_event=on_event, cancel=cancel) == "cancelled"
    assert _run(scene, tmp_path / "run", True, resume=True) == "complete"
    _, resumed, _ = _cameras(tmp_path / "run")
    _, whole, _ = _cameras(runs[True])
    path_length = np.linalg.norm(np.diff(whole[:, :3, 3], axis=0), axis=1).sum()
    np.testing.assert_allclose(resumed, whole, atol=1e-5 * path_length)
    a, b = RunDir(tmp_path / "run").read_solve(), RunDir(runs[True]).read_solve()
    assert a.points == b.points and a.rms_px == pytest.approx(b.rms_px, rel=1e-6)


class BlankFootage(SyntheticSource):
    """The scene's frames for the network, but featureless grey footage (a lens cap, a blown-out shot)."""

    def frame_pairs(self, geometry=None, skip=0, warn=None):
        for index, image, footage in super().frame_pairs(geometry, skip, warn):
            yield index, image, np.full_like(footage, 128)


def test_textureless_footage_keeps_the_network_cameras_and_says_why(scene, runs, tmp_path):
    notices = []
    status = _run(scene, tmp_path / "run", True, source=BlankFootage(scene, supersample=2),
                  on_event=lambda e: notices.append(e.message) if isinstance(e, events.Notice) else None)
    assert status == "complete"
    skipped = [m for m in notices if "camera solve skipped" in m]
    assert len(skipped) == len(list(RunDir(tmp_path / "run").iter_aligned())) and "textureless" in skipped[0]
    # the network's cameras, up to float32 rounding of the work done alongside
    np.testing.assert_allclose(_cameras(tmp_path / "run")[1], _cameras(runs[False])[1], rtol=0, atol=1e-6)


def test_align_with_footage_refines_like_reconstruct(scene, runs, tmp_path):
    """Saved predictions re-registered with their footage get the cameras of a run that refined as it went."""
    status = align(runs[False] / "predictions", tmp_path / "aligned", EngineSettings(refine=True, **SETTINGS),
                   footage=SyntheticSource(scene, supersample=2))
    assert status == "complete"
    frames, poses, K = _cameras(tmp_path / "aligned")
    frames_ref, poses_ref, K_ref = _cameras(runs[True])
    np.testing.assert_array_equal(frames, frames_ref)
    np.testing.assert_allclose(K, K_ref)
    # the predictions went through float32 files: equal within float rounding, as a resumed run
    path_length = np.linalg.norm(np.diff(poses_ref[:, :3, 3], axis=0), axis=1).sum()
    np.testing.assert_allclose(poses, poses_ref, rtol=0, atol=1e-5 * path_length)
    report, report_ref = RunDir(tmp_path / "aligned").read_solve(), RunDir(runs[True]).read_solve()
    assert report.rms_px == pytest.approx(report_ref.rms_px, rel=1e-3) and report.points == report_ref.points


def test_align_refuses_footage_that_does_not_match_the_predictions(scene, runs, tmp_path):
    short = Scene(SceneConfig(width=SIZE[0], height=SIZE[1], num_frames=FRAMES - 5, texture=True))
    missing = rf"frame {FRAMES - 1}, which footage synthetic:480x270 \({FRAMES - 5} frames"
    with pytest.raises(RunDirError, match=missing):  # before anything is written
        align(runs[False] / "predictions", tmp_path / "short", EngineSettings(**SETTINGS),
              footage=SyntheticSource(short))
    assert not (tmp_path / "short").exists()
    small = Scene(SceneConfig(width=320, height=180, num_frames=FRAMES, texture=True))
    with pytest.raises(RunDirError, match=r"footage synthetic:320x180 \(320x180\) does not match .*480x270 footage"):
        align(runs[False] / "predictions", tmp_path / "small", EngineSettings(**SETTINGS),
              footage=SyntheticSource(small))


def test_a_zooms_focal_lengths_are_solved_frame_by_frame(tmp_path):
    """With --zoom the solve refines each new frame's focal length with its camera (the frames already
    emitted keep theirs): the lens is nearer the truth on every frame than the network's smoothed focal
    (0.5 % per-frame noise), and the cameras hold static points far better. solve.json and the summary say
    so (no single focal), and the COLMAP export carries each frame's refined focal. A run cancelled after
    two windows and resumed equals an uninterrupted one, lens included."""
    zoom = Scene(SceneConfig(width=SIZE[0], height=SIZE[1], num_frames=FRAMES, texture=True, zoom=1.5,
                             zoom_period=60))
    truth = static_truth(zoom, np.arange(FRAMES))
    true_focal = np.array([zoom.K(*SIZE, f)[0, 0] for f in range(FRAMES)])

    def run(name, refine, **kw):
        backbone = SyntheticBackbone(zoom, SyntheticNoise(seed=0, focal_noise=0.005), size=PREDICTION)
        return reconstruct(SyntheticSource(zoom, supersample=2), backbone, tmp_path / name,
                           EngineSettings(refine=refine, zoom=True, **SETTINGS), **kw)

    def cameras(name):
        run_dir = RunDir(tmp_path / name)
        windows = list(run_dir.iter_aligned())
        lens = run_dir.geometry().intrinsics_to_footage(np.concatenate([w.frame_K for w in windows]))
        return np.concatenate([w.poses for w in windows]).astype(np.float64), lens

    figures, focal_err = {}, {}
    for refine in (False, True):
        assert run(str(refine), refine) == "complete"
        poses, lens = cameras(str(refine))
        figures[refine] = triangulated_reprojection_rms(poses, lens, truth.uv, truth.seen)
        focal_err[refine] = np.abs(lens[:, 0, 0] / true_focal - 1).max()
    report = RunDir(tmp_path / "True").read_solve()
    assert report.points > 100 and report.focal is None and report.focal_refined
    assert report.summary().endswith("; focal length per frame, refined)")
    export(tmp_path / "True", tmp_path / "sparse", "colmap", ExportOptions(max_points=200))
    rec = pycolmap.Reconstruction(tmp_path / "sparse")
    images = sorted(rec.images.values(), key=lambda im: im.image_id)  # in frame order
    exported = np.array([rec.cameras[im.camera_id].calibration_matrix()[0, 0] for im in images])
    np.testing.assert_allclose(exported, cameras("True")[1][:, 0, 0], rtol=1e-5)
    assert focal_err[True] < 0.004 and focal_err[True] < 0.5 * focal_err[False], focal_err  # 0.24 vs 0.90 %
    assert figures[True] < 0.5 * figures[False], figures  # 0.25 vs 0.71 px

    cancel = threading.Event()

    def stop_after_two(event):
        if isinstance(event, events.WindowDone) and event.index == 1:
            cancel.set()

    assert run("resumed", True, on_event=stop_after_two, cancel=cancel) == "cancelled"
    assert run("resumed", True, resume=True) == "complete"
    (resumed, resumed_lens), (whole, whole_lens) = cameras("resumed"), cameras("True")
    path_length = np.linalg.norm(np.diff(whole[:, :3, 3], axis=0), axis=1).sum()
    np.testing.assert_allclose(resumed, whole, atol=1e-5 * path_length)
    np.testing.assert_allclose(resumed_lens, whole_lens, rtol=1e-5)


def test_the_lens_is_solved_over_the_first_frames(runs, tmp_path):
    """Footage through a barrel distortion, the network's focal length 3 % long on every frame: with
    --refine-distortion the solve finds the lens over the first 90 frames, before the first window is
    written: its pixels (focal and distortion) within 0.6 px of the true lens's over the whole frame, the
    focal within 0.5 %. At this footage size the 0.3 px the solve issue asks is not met on every seed: seeds
    0/1/2 measure 0.57/0.13/0.12 px (0.38/0.19/0.61 before the lens pass checked the tracks again through the
    lens it found), k2 25-38 % high on each; at 1280x720 it is met on every seed (README, *Lens*). Every
    window, solve.json and the notices carry it. A shot too short to determine the focal keeps the
    network's; a given focal length is not refined."""
    truth_k = (-0.08, 0.02)
    scene = Scene(SceneConfig(width=SIZE[0], height=SIZE[1], num_frames=90, texture=True, distortion=truth_k))
    backbone = SyntheticBackbone(scene, SyntheticNoise(seed=0, focal_bias=0.03), size=PREDICTION)
    notices = []
    settings = EngineSettings(refine=True, refine_distortion=True)
    assert reconstruct(SyntheticSource(scene, supersample=2), backbone, tmp_path / "run", settings,
                       on_event=lambda e: notices.append(e.message) if isinstance(e, events.Notice) else None
                       ) == "complete"
    run, K = RunDir(tmp_path / "run"), scene.K()
    report = run.read_solve()
    assert report.focal_refined and abs(report.focal / K[0, 0] - 1) < 0.005, (report.focal, K[0, 0])
    u, v = np.meshgrid(np.linspace(0, SIZE[0], 49), np.linspace(0, SIZE[1], 28))
    x, y = (u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1]  # rays over the whole frame
    r2 = x * x + y * y
    true_px = np.stack([x, y]) * (1 + truth_k[0] * r2 + truth_k[1] * r2 * r2) * K[0, 0]
    k1, k2 = report.distortion
    found_px = np.stack([x, y]) * (1 + k1 * r2 + k2 * r2 * r2) * report.focal
    assert np.abs(found_px - true_px).max() < 0.6
    assert len({tuple(w.K.ravel()) for w in run.iter_aligned()}) == 1
    assert _cameras(tmp_path / "run")[2][0, 0] == pytest.approx(report.focal, rel=1e-6)
    assert any(m.startswith("focal length refined: 411.4 -> ") and "lens distortion solved" in m for m in notices)
    assert report.rms_px < 0.3
    # the 40-frame shot does not determine it: the network's is kept, and no distortion was asked for
    short = RunDir(runs[True]).read_solve()
    assert not short.focal_refined and short.distortion is None
    np.testing.assert_array_equal(_cameras(runs[True])[2], _cameras(runs[False])[2])
    geometry = run.geometry()
    assert camera_solve(EngineSettings(refine=True), geometry).refine_focal
    assert not camera_solve(EngineSettings(refine=True, focal_px=400.0), geometry).refine_focal
    assert not camera_solve(EngineSettings(refine=True, zoom=True), geometry).refine_focal
    with pytest.raises(ValueError, match="refine_distortion is part of the camera solve: it cannot be used with"):
        EngineSettings(refine=False, refine_distortion=True)
    with pytest.raises(ValueError, match="refine_distortion solves one fixed lens"):
        EngineSettings(refine=True, refine_distortion=True, zoom=True)


def test_footage_under_512_px_wide_is_solved_only_when_asked(caplog):
    small, large = (InputGeometry.resize_only(size, (128, 96)) for size in ((384, 288), (512, 384)))
    assert camera_solve(EngineSettings(), large) is not None
    with caplog.at_level("INFO", logger="core.engine"):
        assert camera_solve(EngineSettings(), small) is None
    assert "no camera solve: the footage (384x288) is under 512 px wide" in caplog.text
    assert camera_solve(EngineSettings(refine=True), small) is not None
    assert camera_solve(EngineSettings(refine_distortion=True), small).refine_distortion
    assert camera_solve(EngineSettings(refine=False), large) is None
    assert camera_solve(EngineSettings(refine=True), large, footage=False) is None


def test_a_resume_compares_what_the_solve_does_not_how_it_was_asked():
    def manifest(width: int, **settings) -> RunManifest:
        return RunManifest(source=SourceInfo(path="/shot.mp4", width=width, height=width // 2),
                           settings=EngineSettings(**settings))

    assert resume_differences(manifest(384, refine=False), manifest(384)) == []  # a run from before the default
    assert resume_differences(manifest(640, refine=True), manifest(640)) == []
    assert resume_differences(manifest(640, refine=False), manifest(640)) == ["refine False (now True)"]
    assert resume_differences(manifest(384), manifest(384, refine=True)) == ["refine False (now True)"]


def test_the_cli_solves_by_default_and_prints_the_solve_error(tmp_path):
    video, gt = render_clip(tmp_path / "clip", SceneConfig(width=512, height=288, num_frames=24, texture=True))
    cli = str(Path(sys.executable).with_name("laser-blender"))
    command = [cli, "reconstruct", str(video), "--backbone", "synthetic", "--synthetic-scene", str(gt),
               "--window", "12", "--overlap", "4"]
    r = subprocess.run(command + ["-o", str(tmp_path / "run")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    report = RunDir(tmp_path / "run").read_solve()
    assert report is not None and report.points > 0
    assert f"laser-blender: {report.summary()}" in r.stderr
    r = subprocess.run(command + ["-o", str(tmp_path / "plain"), "--no-refine"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert RunDir(tmp_path / "plain").read_solve() is None and "Solve error" not in r.stderr
    align_command = [cli, "align", str(tmp_path / "plain"), "-o"]
    r = subprocess.run(align_command + [str(tmp_path / "aligned"), "--footage", str(video)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    report = RunDir(tmp_path / "aligned").read_solve()
    assert report is not None and f"laser-blender: {report.summary()}" in r.stderr
    r = subprocess.run(align_command + [str(tmp_path / "no_footage"), "--refine"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0 and "camera solve skipped: align was given no footage" in r.stderr, r.stderr
    assert RunDir(tmp_path / "no_footage").read_solve() is None
    r = subprocess.run(align_command + [str(tmp_path / "unasked")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "camera solve skipped" not in r.stderr, r.stderr
    assert RunDir(tmp_path / "unasked").read_solve() is None


def test_a_windows_tracks_are_linked_to_the_previous_windows_solved_points():
    """A track is the previous window's solved point when their observations on the overlap frames (10-13 here)
    agree within ``link_px`` on ``link_views`` frames or more, and no other track or point claims either."""
    params = SolveParams()
    prev_xyz = np.array([[0.0, 0.0, 10.0], [1.0, 0.0, 20.0], [2.0, 1.0, 5.0]])
    prev_xy = np.array([[100.0, 50.0], [300.0, 80.0], [500.0, 200.0]])
    step = np.array([2.0, 0.5])  # the image motion per frame
    overlap = np.arange(10, 14)
    previous = Bundles(prev_xyz, np.zeros((3, 3), np.uint8), np.repeat(np.arange(3), 4), np.tile(overlap, 3),
                       (prev_xy[:, None] + (overlap - 10)[:, None] * step).reshape(-1, 2).astype(np.float32))
    frames = np.arange(10, 16)  # the window: 4 overlap frames, then 2 new ones
    # track 0 follows point 0 0.2 px off; track 1 meets point 1 on 2 frames only; tracks 2 and 3 both follow
    # point 2; track 4 is seen on the new frames only
    rows = [(0, 0, range(4), 0.2), (1, 1, range(2), 0.1), (1, 1, range(2, 6), 3.0), (2, 2, range(6), 0.1),
            (3, 2, range(6), -0.1), (4, 0, range(4, 6), 0.0)]
    frame, point, xy = [], [], []
    for track, near, at, off in rows:
        at = np.array(list(at))
        frame.append(at)
        point.append(np.full(len(at), track))
        xy.append(prev_xy[near] + at[:, None] * step + off)
    obs = Observations(np.concatenate(frame), np.concatenate(point), np.concatenate(xy),
                       np.full(sum(map(len, frame)), np.nan))
    world_from_cam = np.tile(np.eye(4), (len(frames), 1, 1))
    anchors = _anchors(obs, frames, 4, world_from_cam, previous, 5, params)
    linked = np.isfinite(anchors.xyz).all(1)
    np.testing.assert_array_equal(linked, [True, False, False, False, False])
    np.testing.assert_allclose(anchors.xyz[0], prev_xyz[0])
    assert anchors.sigma[0] == pytest.approx(params.link_sigma * np.linalg.norm(prev_xyz[0]))
    assert not np.isfinite(_anchors(obs, frames, 4, world_from_cam, None, 5, params).xyz).any()


def test_the_depth_rescale_trusts_tracks_by_their_parallax():
    """A track seen from cameras 1 m apart at 10 m has a parallax of 2 atan(0.05); one seen from a single
    place none."""
    world_from_cam = np.tile(np.eye(4), (3, 1, 1))
    world_from_cam[:, 0, 3] = [0.0, 0.5, 1.0]
    points = np.array([[0.5, 0.0, 10.0], [0.0, 0.0, 50.0], [np.nan, np.nan, np.nan]])
    obs = Observations(np.array([2, 0, 1, 0, 0]), np.array([0, 0, 0, 1, 2]), np.zeros((5, 2)), np.zeros(5))
    np.testing.assert_allclose(_parallax(world_from_cam, points, obs), [2 * np.arctan(0.05), 0.0, 0.0], atol=1e-12)


def test_the_depth_follows_the_solved_tracks_layer_by_layer():
    """Frame 0: a near wall (left, 5 m) and a far one (right, 20 m) that the network got 10 % too far and 5 %
    too near: each layer is rescaled by its own tracks (nearly: shrunk towards the frame's by the layers'
    spread against their uncertainty), a track with no weight (no parallax) does not count. Frame 1: a layer
    without tracks takes the frame's factor. Frame 2: too few tracks, its depth is kept. Where the layers
    differ by less than the solve's own bias between layers (``layer_bias``), every pixel takes its frame's."""
    params = SolveParams()
    depth = np.full((3, 64, 96), 5.0, np.float32)
    depth[:, :, 48:] = 20.0
    colors = np.zeros((3, 64, 96, 3), np.uint8)
    colors[:, :, 48:] = 200
    rng = np.random.default_rng(0)
    left, right = rng.uniform([2, 2], [46, 62], (100, 2)), rng.uniform([50, 2], [94, 62], (100, 2))
    xy = np.concatenate([left, right, left[:60], left[:5]])
    frame = np.repeat([0, 0, 1, 2], [100, 100, 60, 5])
    weight = np.ones(len(xy))
    weight[:10] = 0.0  # far tracks: their depth is not measured

    def factors(near: float, far: float) -> np.ndarray:
        log_ratio = np.concatenate([np.full(100, near), np.full(100, far), np.full(60, 0.02), np.zeros(5)])
        log_ratio[:10] = 1.0
        return np.log(_depth_factors(depth, colors, frame, xy, log_ratio, weight, params))

    near, far = -np.log(1.1), np.log(1.05)
    factor = factors(near, far)  # frame 0's weighted median is the far wall's (100 tracks against 90)
    np.testing.assert_allclose(factor[0][:, 48:], far, atol=1e-6)
    assert np.all(np.abs(factor[0][:, :48] - near) < 0.1 * abs(far - near)), factor[0][0, 0]
    np.testing.assert_allclose(factor[1], 0.02, atol=1e-6)
    np.testing.assert_array_equal(factor[2], 0.0)
    agreeing = factors(0.01, 0.0)
    np.testing.assert_allclose(agreeing[0], 0.0, atol=1e-6)
    np.testing.assert_allclose(agreeing[1], 0.02, atol=1e-6)
