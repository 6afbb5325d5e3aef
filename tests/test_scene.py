"""The scene builder in the real Blender (bpy 4.5): camera, footage, point cloud, extension."""

from __future__ import annotations

from pathlib import Path

import bpy
import cv2
import numpy as np
import pytest
from bpy_extras.object_utils import world_to_camera_view
from mathutils import Vector

from core.run.manifest import RunStatus
from core.run.rundir import RunDir, load_aligned
from core.run.solve import Bundles
from handmade_run import FOOTAGE, GEOMETRY, start_run, windows, write_run
from laser_blender.scene import COLOR, FRAME_START, RunScene, SceneOptions, import_run
from solved_run import add_solve


@pytest.fixture
def scene():
    """A fresh, empty Blender scene."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    return bpy.context.scene


def project(scene, cam, points_blender: np.ndarray) -> np.ndarray:
    """(n, 3) Blender world points -> (n, 2) footage pixels (u right, v down) through ``cam``."""
    W, H = FOOTAGE
    out = []
    for p in points_blender:
        x, y, _ = world_to_camera_view(scene, cam, Vector(p.tolist()))
        out.append((x * W, (1.0 - y) * H))
    return np.array(out)


def own_unprojection(run, win, m: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """The test's own pinhole unprojection of window pixels into ``run``'s Blender world points."""
    K, pose = win.K.astype(np.float64), win.poses[m].astype(np.float64)
    z = win.depth[m, i, j].astype(np.float64)
    cam = np.stack([(j + 0.5 - K[0, 2]) / K[0, 0] * z, (i + 0.5 - K[1, 2]) / K[1, 1] * z, z], 1)
    world = cam @ pose[:3, :3].T + pose[:3, 3]
    to_world = run.world_from_run
    return world @ to_world[:3, :3].T + to_world[:3, 3]


def footage_pixels(i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Prediction pixel centres -> footage pixel coordinates (resize + crop)."""
    h = np.stack([j + 0.5, i + 0.5, np.ones(len(i))], 1) @ GEOMETRY.to_footage().T
    return h[:, :2]


def test_projection_lands_on_source_pixels(scene, tmp_path):
    run = import_run(scene, write_run(tmp_path / "run"), SceneOptions(point_budget=20_000))
    rng = np.random.default_rng(1)
    for path in sorted((tmp_path / "run" / "aligned").glob("w*.npz")):
        win = load_aligned(path)
        for m in (0, len(win) - 1):
            scene.frame_set(int(win.frames[m]) + FRAME_START)
            i = rng.integers(4, win.depth.shape[1], 40)
            j = rng.integers(0, win.depth.shape[2], 40)
            uv = project(scene, run.camera, own_unprojection(run, win, m, i, j))
            err = np.linalg.norm(uv - footage_pixels(i, j), axis=1)
            assert err.max() < 0.5, f"frame {win.frames[m]}: reprojection error {err.max():.4f} px"
            assert err.max() < 0.01  # the conversion is exact up to float32 storage


def test_point_cloud_holds_unprojected_depth(scene, tmp_path):
    """Every imported point sits on its source pixel's ray at that pixel's depth."""
    run = import_run(scene, write_run(tmp_path / "run"), SceneOptions(point_budget=6_000))
    win = load_aligned(tmp_path / "run" / "aligned" / "w00001.npz")
    obj = next(o for o in run.point_objects if o.name.endswith("w00001"))
    mesh = obj.data
    n = len(mesh.vertices)
    pos = np.empty(3 * n, np.float32)
    mesh.attributes["position"].data.foreach_get("vector", pos)
    frame = np.empty(n, np.int32)
    mesh.attributes["frame"].data.foreach_get("value", frame)
    m = 2
    to_world = run.world_from_run  # vertices are local to the scene root
    pts = pos.reshape(-1, 3)[frame == win.frames[m]][:50] @ to_world[:3, :3].T + to_world[:3, 3]
    assert len(pts) == 50
    scene.frame_set(int(win.frames[m]) + FRAME_START)
    uv = project(scene, run.camera, pts.astype(np.float64))
    # back to prediction pixels: each point must come from a pixel centre
    pred = np.c_[uv, np.ones(len(uv))] @ np.linalg.inv(GEOMETRY.to_footage()).T
    ij = np.floor(pred[:, [1, 0]]).astype(int)
    assert np.abs(pred[:, :2] - (ij[:, [1, 0]] + 0.5)).max() < 0.01
    expected = own_unprojection(run, win, m, ij[:, 0], ij[:, 1])
    assert np.abs(expected - pts).max() < 1e-4


def test_camera_keys_lens_and_scene_settings(scene, tmp_path):
    run = import_run(scene, write_run(tmp_path / "run", frame_count=18), SceneOptions(sensor_width=36.0))
    cam = run.camera
    fcurves = cam.animation_data.action.fcurves
    assert sorted((fc.data_path, fc.array_index) for fc in fcurves) == \
        [("location", k) for k in range(3)] + [("rotation_euler", k) for k in range(3)]
    for fc in fcurves:
        keys = np.empty(2 * len(fc.keyframe_points))
        fc.keyframe_points.foreach_get("co", keys)
        assert np.array_equal(keys[::2], np.arange(18) + FRAME_START)  # one key per frame
        assert {kp.interpolation for kp in fc.keyframe_points} == {"LINEAR"}
    rot = np.array([[fc.evaluate(f) for fc in fcurves if fc.data_path == "rotation_euler"]
                    for f in np.arange(18) + FRAME_START])
    assert np.abs(np.diff(rot, axis=0)).max() < 1.0  # Euler continuity through a >180 deg pan
    K = GEOMETRY.intrinsics_to_footage(windows(18)[0].K.astype(np.float64))
    assert cam.data.sensor_fit == "HORIZONTAL"
    assert cam.data.lens == pytest.approx(K[0, 0] * 36.0 / FOOTAGE[0], abs=1e-4)
    r = scene.render
    assert (r.resolution_x, r.resolution_y, r.fps, r.fps_base) == (*FOOTAGE, 24, 1.0)
    assert r.pixel_aspect_y / r.pixel_aspect_x == pytest.approx(K[0, 0] / K[1, 1], rel=1e-5)
    assert (scene.frame_start, scene.frame_end) == (1, 18)
    assert scene.camera == cam
    scene.frame_set(FRAME_START)  # anchored: first camera at the origin, upright, looking along +y
    assert np.allclose(np.array(cam.matrix_world), [[1, 0, 0, 0], [0, 0, -1, 0], [0, 1, 0, 0], [0, 0, 0, 1]],
                       atol=1e-5)


def test_points_budget_colours_and_render_setup(scene, tmp_path):
    budget = 5_000
    run = import_run(scene, write_run(tmp_path / "run", frame_count=18), SceneOptions(point_budget=budget))
    assert 0.99 * budget <= run.points <= budget
    total = 0
    for obj in run.point_objects:
        mesh = obj.data
        assert {COLOR, "conf", "frame"} <= set(mesh.attributes.keys())
        colors = np.empty(4 * len(mesh.vertices), np.float32)
        mesh.attributes[COLOR].data.foreach_get("color_srgb", colors)
        assert colors.reshape(-1, 4)[:, :3].std(axis=0).min() > 0.05  # real colours, not a constant
        evaluated = obj.evaluated_get(bpy.context.evaluated_depsgraph_get()).evaluated_geometry()
        assert evaluated.pointcloud is not None and len(evaluated.pointcloud.points) == len(mesh.vertices)
        total += len(mesh.vertices)
    assert total == run.points
    assert bpy.data.materials["LASER point colour"] in run.point_objects[0].data.materials[:]


def test_confidence_percentile_drops_least_confident(scene, tmp_path):
    run = import_run(scene, write_run(tmp_path / "run"), SceneOptions(point_budget=10**7, conf_percentile=50))
    win = load_aligned(tmp_path / "run" / "aligned" / "w00000.npz")
    mesh = run.point_objects[0].data
    conf = np.empty(len(mesh.vertices), np.float32)
    mesh.attributes["conf"].data.foreach_get("value", conf)
    assert conf.min() >= np.percentile(win.conf[win.mask], 50)
    assert len(conf) == pytest.approx(win.mask.sum() / 2, rel=0.05)


def test_current_frame_only_shows_one_frame(scene, tmp_path):
    run = import_run(scene, write_run(tmp_path / "run"), SceneOptions(point_budget=3_000, current_frame_only=True))
    obj = run.point_objects[0]
    scene.frame_set(2 + FRAME_START)
    geometry = obj.evaluated_get(bpy.context.evaluated_depsgraph_get()).evaluated_geometry()
    shown = len(geometry.pointcloud.points)
    assert 0 < shown < len(obj.data.vertices) / 3


def test_progressive_extension_keeps_what_exists(scene, tmp_path):
    run_dir = tmp_path / "run"
    writer = start_run(run_dir, frame_count=18)
    wins = windows(18)
    writer.write_aligned(wins[0])
    run = import_run(scene, run_dir, SceneOptions(point_budget=9_000))
    first = run.point_objects[0]
    first_mesh, n_first = first.data, len(first.data.vertices)
    assert run.windows == {0} and n_first == 3_000
    assert len(run.camera.animation_data.action.fcurves[0].keyframe_points) == 6

    for win in wins[1:]:
        writer.write_aligned(win)
        RunScene.open(scene, run_dir, SceneOptions(point_budget=9_000)).sync()
    run = RunScene.open(scene, run_dir)
    assert run.windows == {0, 1, 2}
    assert run.point_objects[0] == first and first.data == first_mesh and len(first_mesh.vertices) == n_first
    assert len(run.camera.animation_data.action.fcurves[0].keyframe_points) == 18
    assert len([c for c in bpy.data.collections if c.get("laser_run")]) == 1
    assert len([o for o in bpy.data.objects if o.type == "CAMERA"]) == 1
    assert run.sync() == []  # nothing new: nothing added twice


def test_footage_becomes_movie_clip_background(scene, tmp_path):
    video = tmp_path / "clip.mp4"
    out = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, FOOTAGE)
    for f in range(18):
        out.write(np.full((FOOTAGE[1], FOOTAGE[0], 3), 10 * f, np.uint8))
    out.release()
    run_dir = write_run(tmp_path / "run", footage=str(video))
    run = import_run(scene, run_dir)
    bg = run.camera.data.background_images[0]
    assert bg.source == "MOVIE_CLIP" and Path(bg.clip.filepath) == video
    assert run.camera.data.show_background_images
    assert scene.active_clip == bg.clip
    assert bg.clip.frame_duration == 18
    # a solve that found the lens's distortion puts it on the clip's tracking camera (Movie Distortion node)
    report = add_solve(run_dir, distortion=(-0.12, 0.03), focal=950.0)
    run.sync_solve()
    lens = bg.clip.tracking.camera
    assert lens.distortion_model == "POLYNOMIAL" and (lens.k1, lens.k2, lens.k3) == pytest.approx((-0.12, 0.03, 0))
    assert lens.focal_length_pixels == pytest.approx(report.focal, rel=1e-6)
    assert tuple(lens.principal_point) == pytest.approx((0.0, 0.0))  # the centre


def test_partial_run_without_windows_builds_empty_camera(scene, tmp_path):
    run_dir = tmp_path / "run"
    start_run(run_dir, frame_count=18)
    run = import_run(scene, run_dir)
    assert run.windows == set() and run.points == 0
    assert run.camera.animation_data is None


def test_render_shows_point_colours(scene, tmp_path):
    """Cycles renders the points in their colours: seen from the run's own camera, the
    current frame's points reproduce the footage (red = column, green = row gradient)."""
    import_run(scene, write_run(tmp_path / "run"), SceneOptions(point_budget=200_000, current_frame_only=True))
    r = scene.render
    r.engine, scene.cycles.device, scene.cycles.samples = "CYCLES", "CPU", 1
    scene.cycles.filter_width = 0.01  # one ray per pixel centre, no blur across pixels
    scene.view_settings.view_transform = "Standard"
    r.resolution_percentage, r.filepath = 25, str(tmp_path / "render.png")
    scene.frame_set(FRAME_START)
    bpy.ops.render.render(write_still=True)
    image = bpy.data.images.load(str(tmp_path / "render.png"))
    w, h = image.size
    px = np.empty(w * h * 4, np.float32)
    image.pixels.foreach_get(px)
    px = px.reshape(h, w, 4)[::-1, :, :3]  # Blender images are stored bottom-up
    # expected colour of each render pixel: the prediction pixel under its centre
    v, u = (np.mgrid[0:h, 0:w] + 0.5) * (FOOTAGE[1] / h)
    pred = np.stack([u.ravel(), v.ravel(), np.ones(u.size)], 1) @ np.linalg.inv(GEOMETRY.to_footage()).T
    i, j = np.floor(pred[:, 1]).reshape(h, w), np.floor(pred[:, 0]).reshape(h, w)
    inside = (i >= 4) & (i < GEOMETRY.size[1])  # the masked band and the crop show nothing
    lit = px.max(axis=2) > 0.02
    far_outside = (i < 2) | (i >= GEOMETRY.size[1] + 2)  # points have a radius: allow the edges
    assert lit[inside].mean() > 0.9 and lit[far_outside].mean() < 0.02
    err_r = np.abs(px[..., 0] - (255 * j / GEOMETRY.size[0]).astype(np.uint8) / 255)[inside & lit]
    err_g = np.abs(px[..., 1] - (255 * i / GEOMETRY.size[1]).astype(np.uint8) / 255)[inside & lit]
    assert np.median(err_r) < 0.02 and np.median(err_g) < 0.02


def test_session_turns_an_unreadable_window_into_an_error(scene, tmp_path):
    """A window_done naming a corrupt file ends the session with a clear error, keeping what was imported."""
    from laser_blender.client import WorkerClient
    from laser_blender.protocol import Job, WindowDone
    from laser_blender.session import ImportSession

    run_dir = write_run(tmp_path / "run", n_windows=1)
    bad = run_dir / "aligned" / "w00001.npz"
    bad.write_bytes(b"not an npz")
    session = ImportSession(scene, WorkerClient(Job(input="clip.mp4", run_dir=str(run_dir))))
    session.apply(WindowDone(index=0, frames=list(range(6)), path=str(run_dir / "aligned" / "w00000.npz")))
    session.apply(WindowDone(index=1, frames=list(range(6, 12)), path=str(bad)))
    assert session.state.status == RunStatus.failed and str(bad) in session.state.last_error
    assert session.run.windows == {0} and session.state.windows == [0]


def test_image_folder_footage_becomes_sequence_clip(scene, tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    for f in (10, 9, 11):  # natural order: 9, 10, 11
        cv2.imwrite(str(frames / f"shot_{f}.png"), np.full((FOOTAGE[1], FOOTAGE[0], 3), f, np.uint8))
    run = import_run(scene, write_run(tmp_path / "run", footage=str(frames)))
    clip = run.camera.data.background_images[0].clip
    assert Path(clip.filepath).name == "shot_9.png" and clip.source == "SEQUENCE"
    assert (scene.render.fps, scene.render.fps_base) == (24, 1.0)  # from the run: sequences have none


def test_solve_streams_into_bundles_and_keyed_error(scene, tmp_path):
    """A run with a camera solve, streamed window by window through the import session: the bundles mesh
    grows under the root, its points project onto their observations through the Blender camera, the
    camera keys each frame's solve error and the collection keeps the run's figures for the panel."""
    from core.run.solve import SolveTally
    from laser_blender.client import WorkerClient
    from laser_blender.protocol import Job, WindowDone
    from laser_blender.scene import SOLVE_ERROR
    from laser_blender.scene_edit import shown_solve
    from laser_blender.session import ImportSession
    from solved_run import write_window_solve

    run_dir = tmp_path / "run"
    writer, wins, tally = start_run(run_dir, frame_count=18), windows(18), SolveTally()
    session = ImportSession(scene, WorkerClient(Job(input="clip.mp4", run_dir=str(run_dir))),
                            SceneOptions(point_budget=3_000))
    solved, mesh = [], None
    for win in wins:  # as the engine writes them: the window's solve, then the window
        solved.append(write_window_solve(writer, wins, win.index, tally))
        writer.write_aligned(win)
        session.apply(WindowDone(index=win.index, frames=win.frames.tolist(),
                                 path=str(RunDir(run_dir).aligned_path(win.index))))
        run = session.run
        bundles = run.bundles_object
        assert bundles.parent == run.root and bundles not in run.point_objects
        assert len(run.point_objects) == win.index + 1
        mesh = mesh or bundles.data
        assert bundles.data == mesh and len(mesh.vertices) == sum(len(b.xyz) for b in solved)  # grown in place
    report = RunDir(run_dir).read_solve()

    every = Bundles.concatenate(solved)
    n = len(every.xyz)
    pos, rgba = np.empty(3 * n, np.float32), np.empty(4 * n, np.float32)
    mesh.attributes["position"].data.foreach_get("vector", pos)
    mesh.attributes[COLOR].data.foreach_get("color_srgb", rgba)
    tracks = np.empty(n, np.int32)
    mesh.attributes["observations"].data.foreach_get("value", tracks)
    np.testing.assert_allclose(pos.reshape(-1, 3), every.xyz, atol=1e-6)  # run world, local to the root
    np.testing.assert_allclose(rgba.reshape(-1, 4)[:, :3], every.rgb / 255, atol=1e-6)
    np.testing.assert_array_equal(tracks, np.bincount(every.obs_point, minlength=n))
    evaluated = bundles.evaluated_get(bpy.context.evaluated_depsgraph_get()).evaluated_geometry()
    assert len(evaluated.pointcloud.points) == n  # drawn as points

    pick = np.random.default_rng(0).choice(len(every.obs_point), 40, replace=False)
    to_world = run.world_from_run
    for k in pick:
        scene.frame_set(int(every.obs_frame[k]) + FRAME_START)
        world = every.xyz[every.obs_point[k]] @ to_world[:3, :3].T + to_world[:3, 3]
        assert np.abs(project(scene, run.camera, world[None]) - every.obs_xy[k]).max() < 2e-3

    fc = run.camera.animation_data.action.fcurves.find(f'["{SOLVE_ERROR}"]')
    keys = np.empty(2 * len(fc.keyframe_points))
    fc.keyframe_points.foreach_get("co", keys)
    assert np.array_equal(keys[::2], np.arange(18) + FRAME_START)
    np.testing.assert_allclose(keys[1::2], [report.per_frame_px[f] for f in range(18)], atol=1e-6)
    assert len(set(report.per_frame_px.values())) > 10  # a curve worth graphing, not a constant
    assert shown_solve(run.camera) == report.model_copy(update={"per_frame_px": {}})
    assert shown_solve(run.point_objects[0]).error_text() == f"Solve error: {report.rms_px:.2f} px"

    import_run(scene, run_dir)  # importing again adds nothing twice
    assert len(mesh.vertices) == n and len(fc.keyframe_points) == 18


def test_run_without_solve_has_no_bundles(scene, tmp_path):
    from laser_blender.scene_edit import shown_solve

    run = import_run(scene, write_run(tmp_path / "run"), SceneOptions(point_budget=3_000))
    assert run.bundles_object is None and shown_solve(run.camera) is None
    assert "solve_error_px" not in run.camera
