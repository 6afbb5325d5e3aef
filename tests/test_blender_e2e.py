"""End to end in the real Blender: synthetic clip -> engine (worker subprocess or in-process) -> scene.

Checks against the synthetic ground truth: one camera key per frame, the lens, and
the 0.5 px projection of ground-truth points through the built Blender camera.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import bpy
import numpy as np
import pytest
from bpy_extras.object_utils import world_to_camera_view
from mathutils import Vector

from core.engine import reconstruct
from core.geometry.transforms import umeyama_sim3
from core.groundtruth import load_ground_truth
from core.run.files import list_windows
from core.run.manifest import RunStatus
from core.run.rundir import RunDir
from core.run.settings import EngineSettings
from core.synthetic import Scene, SceneConfig, SyntheticBackbone, SyntheticNoise, SyntheticSource, render_clip
from laser_blender.client import WorkerClient
from laser_blender.protocol import Job, WindowDone
from laser_blender.scene import COLOR, FRAME_START, SceneOptions, import_run
from laser_blender.session import ImportSession
from run_files import iter_aligned, read_run

W, H = 128, 96


@pytest.fixture
def scene():
    bpy.ops.wm.read_factory_settings(use_empty=True)
    return bpy.context.scene


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> tuple[Path, Path]:
    return render_clip(tmp_path_factory.mktemp("synthetic"), SceneConfig(width=W, height=H, num_frames=30))


def job(clip: tuple[Path, Path], run_dir: Path, **fields) -> Job:
    return Job(input=str(clip[0]), run_dir=str(run_dir), backbone="synthetic", synthetic_scene=str(clip[1]),
               window=8, overlap=2, device="cpu", **fields)


def keys(cam) -> np.ndarray:
    fc = cam.animation_data.action.fcurves[0]
    co = np.empty(2 * len(fc.keyframe_points))
    fc.keyframe_points.foreach_get("co", co)
    return co[::2]


def gt_projection_errors(scene, run, gt_dir: Path, frames) -> np.ndarray:
    """Pixel distance between where the GT says its points are and where the Blender camera sees them.

    GT points (GT depth unprojected with GT K and pose) are mapped into the run's world
    by the Sim(3) between the GT and the run's camera centres, then into Blender's world.
    """
    gt = load_ground_truth(gt_dir)
    _, run_poses = _run_trajectory(run.info.run.root)
    to_world = run.world_from_run
    s, R, t = umeyama_sim3(gt.poses[:, :3, 3], run_poses[:, :3, 3])
    rng = np.random.default_rng(0)
    errors = []
    for f in frames:
        depth = gt.depth(f)
        i, j = rng.integers(0, H, 30), rng.integers(0, W, 30)
        z = depth[i, j]
        K = gt.K
        cam_pts = np.stack([(j + 0.5 - K[0, 2]) / K[0, 0] * z, (i + 0.5 - K[1, 2]) / K[1, 1] * z, z], 1)
        world_gt = cam_pts @ gt.poses[f, :3, :3].T + gt.poses[f, :3, 3]
        world_run = s * world_gt @ R.T + t
        world_bl = world_run @ to_world[:3, :3].T + to_world[:3, 3]
        scene.frame_set(int(f) + FRAME_START)
        for p, u, v in zip(world_bl, j + 0.5, i + 0.5):
            x, y, _ = world_to_camera_view(scene, run.camera, Vector(p.tolist()))
            errors.append(np.hypot(x * W - u, (1 - y) * H - v))
    return np.array(errors)


def own_projection_errors(scene, run) -> np.ndarray:
    """Pixel distance between the run's own depth, unprojected with its K and pose and seen by
    the Blender camera, and the footage pixel it came from (first and last frame of each window)."""
    run_dir, to_world = run.info.run.root, run.world_from_run
    geometry = RunDir(run_dir).predictions.read_meta().geometry
    W_f, H_f = geometry.footage
    rng = np.random.default_rng(0)
    errors = []
    for win in iter_aligned(run_dir):
        K = win.K.astype(np.float64)
        for m in (0, len(win) - 1):
            i, j = np.nonzero(win.mask[m])
            pick = rng.choice(len(i), 20, replace=False)
            i, j = i[pick], j[pick]
            z = win.depth[m, i, j].astype(np.float64)
            cam_pts = np.stack([(j + 0.5 - K[0, 2]) / K[0, 0] * z, (i + 0.5 - K[1, 2]) / K[1, 1] * z, z], 1)
            pose = win.poses[m].astype(np.float64)
            world = (cam_pts @ pose[:3, :3].T + pose[:3, 3]) @ to_world[:3, :3].T + to_world[:3, 3]
            source = np.c_[j + 0.5, i + 0.5, np.ones(len(i))] @ geometry.to_footage().T
            scene.frame_set(int(win.frames[m]) + FRAME_START)
            for p, (u, v, _) in zip(world, source):
                x, y, _ = world_to_camera_view(scene, run.camera, Vector(p.tolist()))
                errors.append(np.hypot(x * W_f - u, (1 - y) * H_f - v))
    return np.array(errors)


def solve_projection_errors(scene, run, bundles) -> np.ndarray:
    """(M,) pixel distance between each solve observation and its track point seen by the Blender camera."""
    to_world = run.world_from_run
    W_f, H_f = RunDir(run.info.run.root).geometry().footage
    world = bundles.xyz[bundles.obs_point] @ to_world[:3, :3].T + to_world[:3, 3]
    errors = np.empty(len(world))
    for frame in np.unique(bundles.obs_frame):
        scene.frame_set(int(frame) + FRAME_START)
        for k in np.flatnonzero(bundles.obs_frame == frame):
            x, y, _ = world_to_camera_view(scene, run.camera, Vector(world[k].tolist()))
            errors[k] = np.hypot(x * W_f - bundles.obs_xy[k, 0], (1 - y) * H_f - bundles.obs_xy[k, 1])
    return errors


def _run_trajectory(run_dir: Path):
    wins = list(iter_aligned(run_dir))
    return np.concatenate([w.frames for w in wins]), np.concatenate([w.poses for w in wins]).astype(np.float64)


def test_noise_free_run_projects_ground_truth_within_half_a_pixel(scene, clip, tmp_path):
    """In-process engine on exact predictions (each window in its own Sim(3)), then the scene."""
    gt = load_ground_truth(clip[1])
    synthetic = Scene(SceneConfig.from_dict(gt.extra["scene"]))
    backbone = SyntheticBackbone(synthetic, SyntheticNoise.none(), size=(96, 72))
    status = reconstruct(SyntheticSource(synthetic), backbone, tmp_path / "run",
                         EngineSettings(window=8, overlap=2, layer_align=False, focal_px=float(gt.K[0, 0])))
    assert status == "complete"
    run = import_run(scene, tmp_path / "run", SceneOptions(point_budget=20_000))
    assert np.array_equal(keys(run.camera), np.arange(30) + FRAME_START)
    err = gt_projection_errors(scene, run, clip[1], frames=(0, 7, 15, 29))
    assert err.max() < 0.5, f"max GT reprojection error {err.max():.3f} px"


def test_worker_stream_builds_scene_progressively(scene, clip, tmp_path):
    gt = load_ground_truth(clip[1])
    budget = 12_000
    session = ImportSession(scene, WorkerClient(job(clip, tmp_path / "run", focal_px=float(gt.K[0, 0]), refine=True),
                                                python=sys.executable), SceneOptions(point_budget=budget))
    session.start()
    seen_windows = 0
    try:
        while session.state.running:
            for event in session.client.poll(timeout=5.0):
                session.apply(event)
                if isinstance(event, WindowDone):
                    seen_windows += 1
                    # the scene already holds this window: its camera keys and its points
                    assert set(event.frames) <= {int(k) - FRAME_START for k in keys(session.run.camera)}
                    assert any(o.name.endswith(f"w{event.index:05d}") for o in session.run.point_objects)
                    assert len(session.run.windows) == seen_windows
    finally:
        session.close()
    assert session.state.status == RunStatus.complete and session.state.last_error is None
    assert seen_windows == 5  # 30 frames, window 8, overlap 2
    run = session.run
    cam = run.camera
    assert np.array_equal(keys(cam), np.arange(30) + FRAME_START)  # one key per frame
    assert cam.data.lens == pytest.approx(gt.K[0, 0] * 36.0 / W, abs=0.1)  # GT lens, 36 mm sensor
    assert 0 < run.points <= budget
    colors = np.empty(4 * len(run.point_objects[0].data.vertices), np.float32)
    run.point_objects[0].data.attributes[COLOR].data.foreach_get("color_srgb", colors)
    assert colors.reshape(-1, 4)[:, :3].std(axis=0).min() > 0.02
    err = own_projection_errors(scene, run)
    assert err.max() < 0.5, f"max reprojection error {err.max():.3f} px"
    assert bpy.data.movieclips and scene.active_clip.filepath == str(clip[0])

    # the engine's camera solve (--refine): every window's track points, and the solve error
    # measured again through the built Blender camera
    report, bundles = RunDir(run.info.run.root).read_solve(), RunDir(run.info.run.root).read_bundles()
    assert len(run.bundles_object.data.vertices) == len(bundles.xyz) > 100
    residual = solve_projection_errors(scene, run, bundles)
    print(f"solve rms {report.rms_px:.4f} px; through the Blender camera {np.sqrt(np.mean(residual ** 2)):.4f} px")
    assert np.sqrt(np.mean(residual ** 2)) == pytest.approx(report.rms_px, rel=0.02)
    solve_keys = cam.animation_data.action.fcurves.find('["solve_error_px"]').keyframe_points
    assert [k.co[0] for k in solve_keys] == [f + FRAME_START for f in sorted(report.per_frame_px)]


def _worker_pids() -> list[int]:
    """Child processes of this process running the worker."""
    pids = []
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        for pid in (task / "children").read_text().split():
            if b"laser_blender.worker" in Path(f"/proc/{pid}/cmdline").read_bytes():
                pids.append(int(pid))
    return pids


def test_sigkill_keeps_imported_windows_and_resume_finishes(scene, tmp_path_factory, tmp_path):
    long_clip = render_clip(tmp_path_factory.mktemp("long"), SceneConfig(width=64, height=48, num_frames=900))
    run_dir = tmp_path / "run"
    session = ImportSession(scene, WorkerClient(job(long_clip, run_dir), python=sys.executable),
                            SceneOptions(point_budget=50_000)).start()
    try:
        killed = False
        while session.state.running:
            for event in session.client.poll(timeout=5.0):
                session.apply(event)
                if isinstance(event, WindowDone) and not killed:
                    (pid,) = _worker_pids()
                    os.kill(pid, signal.SIGKILL)
                    killed = True
    finally:
        session.close()
    state = session.state
    assert killed and state.status == RunStatus.failed
    assert "SIGKILL" in state.last_error and "Resume" in state.last_error
    on_disk = [i for i, _ in list_windows(run_dir / "aligned")]
    assert 0 < len(on_disk) < 150 and read_run(run_dir)["status"] == "running"  # killed mid-run
    assert sorted(session.run.windows) == on_disk  # every finished window is in the scene
    kept = len(keys(session.run.camera))

    resumed = ImportSession(scene, WorkerClient(job(long_clip, run_dir, resume=True), python=sys.executable),
                            SceneOptions(point_budget=50_000)).start()
    assert resumed.run_to_end(poll_s=5.0).status == RunStatus.complete
    assert resumed.run.collection == session.run.collection  # extended, not rebuilt
    assert kept < 900 and np.array_equal(keys(resumed.run.camera), np.arange(900) + FRAME_START)
    assert resumed.run.points <= 50_000
