"""The scene transform in the real Blender (bpy): one root applies it, the Scene panel's edits move it
without re-importing, undo keeps scene.json in step; dynamic points; align-made runs' frame range."""

from __future__ import annotations

import bpy
import numpy as np
import pytest

from core.engine import align
from core.run.rundir import RunDir
from core.run.scene_transform import SceneTransform, Units
from core.run.settings import EngineSettings
from laser_blender import scene_edit
from laser_blender.blendfile import write_blend
from laser_blender.driver import orient_completed_run
from laser_blender.scene import CV_TO_BLENDER_CAMERA, FRAME_START, SceneOptions, import_run
from oriented_run import CONFIG, make_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run_dir = make_run(tmp_path_factory.mktemp("scene_orient") / "run")
    orient_completed_run(RunDir(run_dir))
    return run_dir


@pytest.fixture
def scene():
    bpy.ops.wm.read_factory_settings(use_empty=True)
    return bpy.context.scene


def cloud_positions(run) -> tuple[list, list[np.ndarray]]:
    """The point objects and their vertices in the Blender world (the root's matrix applied)."""
    world = run.world_from_run
    objects, positions = run.point_objects, []
    for obj in objects:
        co = np.empty(3 * len(obj.data.vertices), np.float32)
        obj.data.vertices.foreach_get("co", co)
        positions.append(co.reshape(-1, 3).astype(np.float64) @ world[:3, :3].T + world[:3, 3])
    return objects, positions


def select(objects, chosen: dict[int, np.ndarray]) -> None:
    """Select vertices ``chosen[object index]`` and nothing else."""
    for k, obj in enumerate(objects):
        flags = np.zeros(len(obj.data.vertices), bool)
        flags[chosen.get(k, [])] = True
        obj.data.vertices.foreach_set("select", flags)


def camera_matrix(scene, run, frame: int) -> np.ndarray:
    scene.frame_set(frame + FRAME_START)
    m = np.array(run.camera.matrix_world)
    m[:3, :3] /= np.linalg.norm(m[:3, :3], axis=0)  # the root's scale reaches the camera object
    return m


def expected_camera(run_dir, transform: SceneTransform, frame: int) -> np.ndarray:
    poses = np.concatenate([w.poses for w in RunDir(run_dir).iter_aligned()])
    return transform.apply_poses(poses[frame:frame + 1].astype(np.float64))[0] @ CV_TO_BLENDER_CAMERA


def test_root_carries_the_transform_and_scene_edits_move_it_without_reimport(scene, run_dir):
    run = import_run(scene, run_dir, SceneOptions(point_budget=30_000))
    auto = RunDir(run_dir).scene_transform()
    assert np.allclose(run.world_from_run, auto.matrix(), atol=1e-5)
    assert np.allclose(camera_matrix(scene, run, 17), expected_camera(run_dir, auto, 17), atol=1e-4)
    objects, positions = cloud_positions(run)
    meshes = [(o.name, o.data.name, len(o.data.vertices)) for o in objects]
    height = float(np.median(auto.apply_poses(np.concatenate([w.poses for w in RunDir(run_dir).iter_aligned()]))
                             [:, 2, 3]))

    # Set Floor from 40 ground vertices after a reset: the same floor comes back
    scene_edit.reset(run)
    assert RunDir(run_dir).scene_transform().method == "first camera"
    ground = {k: np.flatnonzero(np.abs(p[:, 2]) < 0.01 * height)[:40] for k, p in enumerate(positions)}
    assert sum(len(v) for v in ground.values()) >= 40
    select(objects, ground)
    scene_edit.floor_from_points(run, scene_edit.selected_points(run, objects))
    floor = RunDir(run_dir).scene_transform()
    assert np.degrees(np.arccos(np.clip(floor.rotation[2] @ np.asarray(auto.rotation[2]), -1, 1))) < 1.0
    _, positions = cloud_positions(run)
    assert np.abs(np.concatenate([p[ground[k]] for k, p in enumerate(positions)])[:, 2]).max() < 0.03 * height

    # Set Origin, Set X Axis, Set Scale: one vertex, another, then two at a known distance
    select(objects, {0: [5]})
    scene_edit.origin_from_points(run, scene_edit.selected_points(run, objects))
    select(objects, {1: [7]})
    scene_edit.x_axis_from_points(run, scene_edit.selected_points(run, objects))
    _, positions = cloud_positions(run)
    assert np.allclose(positions[0][5], 0, atol=1e-4 * height)
    assert abs(positions[1][7][1]) < 1e-4 * height and positions[1][7][0] > 0
    select(objects, {0: [5], 1: [7]})
    message = scene_edit.scale_from_points(run, scene_edit.selected_points(run, objects), 2.5)
    assert "metres" in message
    _, positions = cloud_positions(run)
    assert np.linalg.norm(positions[0][5] - positions[1][7]) == pytest.approx(2.5, rel=1e-5)
    final = RunDir(run_dir).scene_transform()
    assert final.units == Units.metres and final.method == "floor, origin, X axis, scale 2.5 m"
    assert np.allclose(run.world_from_run, final.matrix(), atol=1e-5)
    assert np.allclose(camera_matrix(scene, run, 17), expected_camera(run_dir, final, 17), atol=1e-4)
    # nothing was re-imported: the same objects and meshes, parented to the root
    assert [(o.name, o.data.name, len(o.data.vertices)) for o in run.point_objects] == meshes
    assert all(o.parent == run.root for o in [*run.point_objects, run.camera])

    with pytest.raises(scene_edit.OrientError, match="exactly 2"):
        scene_edit.scale_from_points(run, scene_edit.selected_points(run, objects)[:1], 2.0)

    # after an undo the root holds an earlier transform: scene.json follows it
    run.root[scene_edit.ROOT_TRANSFORM] = floor.model_dump_json()
    scene_edit.sync_scene_files(scene)
    assert RunDir(run_dir).scene_transform() == floor
    # an orientation set outside Blender (laser-blender orient) shows when the run is imported again
    RunDir(run_dir).write_scene_transform(floor)
    assert import_run(scene, run_dir).points == run.points  # nothing new to import
    assert np.allclose(run.world_from_run, floor.matrix(), atol=1e-5)
    scene_edit.auto_floor(run)  # leave the run as the module found it
    assert RunDir(run_dir).scene_transform().method.startswith("ground plane (auto")


def test_static_points_accumulate_and_dynamic_ones_show_on_their_frame(scene, run_dir):
    run = import_run(scene, run_dir, SceneOptions(point_budget=60_000))
    frame = 50
    scene.frame_set(frame + FRAME_START)
    depsgraph = bpy.context.evaluated_depsgraph_get()
    total_dynamic = 0
    for obj in run.point_objects:
        n = len(obj.data.vertices)
        dynamic, frames = np.zeros(n, bool), np.zeros(n, np.int32)
        obj.data.attributes["dynamic"].data.foreach_get("value", dynamic)
        obj.data.attributes["frame"].data.foreach_get("value", frames)
        geometry = obj.evaluated_get(depsgraph).evaluated_geometry()
        shown = len(geometry.pointcloud.points)
        assert shown == (~dynamic).sum() + (dynamic & (frames == frame)).sum()
        total_dynamic += dynamic.sum()
    assert 0 < total_dynamic < 0.05 * run.points  # the moving ball, a small part of the shot


def test_blend_of_an_align_made_run_spans_its_frames(run_dir, tmp_path):
    out = tmp_path / "aligned"
    assert align(run_dir / "predictions", out, EngineSettings(layer_align=False)) == "complete"
    write_blend(out, tmp_path / "shot.blend", point_budget=2_000)
    scene = bpy.context.scene
    assert (scene.frame_start, scene.frame_end) == (FRAME_START, FRAME_START + CONFIG.num_frames - 1)


def test_scene_panel_operators_edit_the_active_run_in_edit_mode(scene, run_dir):
    """The add-on's operators on the active cloud's edit-mode selection (the same plain functions)."""
    import addon

    addon.register()
    try:
        run = import_run(scene, run_dir, SceneOptions(point_budget=5_000))
        objects, positions = cloud_positions(run)
        obj = objects[0]
        bpy.context.view_layer.objects.active = obj
        k = int(np.argmin(np.abs(positions[0][:, 2])))  # a floor point
        select(objects, {0: [k]})
        bpy.ops.object.mode_set(mode="EDIT")
        assert bpy.ops.laser.set_origin() == {"FINISHED"}
        bpy.ops.object.mode_set(mode="OBJECT")
        _, positions = cloud_positions(run)
        assert np.allclose(positions[0][k], 0, atol=1e-5)
        scene.laser.camera_height = 1.6
        assert bpy.ops.laser.set_camera_height() == {"FINISHED"}
        transform = RunDir(run_dir).scene_transform()
        assert transform.units == Units.metres and transform.method.endswith("origin, camera height 1.6 m")
        assert np.allclose(run.world_from_run, transform.matrix(), atol=1e-5)
        assert bpy.ops.laser.auto_floor() == {"FINISHED"}  # leave the run as the module found it
    finally:
        addon.unregister()
