"""The add-on's Scene panel as plain functions: floor, origin, X axis and scale from selected points.

Each edit computes the new scene transform with :mod:`laser_blender.orient` (points in
the scene world: the selected vertices' world positions), writes ``RUN/scene.json``
and sets the run's root (:meth:`RunScene.apply_scene_transform`): one matrix changes,
no point is re-imported. The root also keeps the transform (``laser_scene``), so that
after an undo or redo :func:`sync_scene_files` writes back the ``scene.json`` the
scene shows. ``bpy`` is imported inside functions.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Iterable

import numpy as np

from core.geometry.plane import fit_plane
from core.run.rundir import RunDir
from core.run.scene_transform import SceneTransform
from core.run.solve import SolveReport
from laser_blender.orient import (
    OrientError,
    auto_orientation,
    cameras_up,
    describe,
    run_cameras,
    set_camera_height,
    set_floor,
    set_origin,
    set_scale_distance,
    set_x_axis,
)
from laser_blender.scene import ROOT_TRANSFORM, SOLVE_FIGURES, RunScene

if TYPE_CHECKING:  # pragma: no cover
    import bpy

def run_collection(obj):
    """The run collection holding ``obj`` (a cloud, the camera or the root); None for any other object."""
    return next((c for c in obj.users_collection if c.get("laser_run")), None) if obj is not None else None


def run_of(scene: "bpy.types.Scene", obj) -> RunScene | None:
    """The run whose collection holds ``obj``; None for any other object."""
    coll = run_collection(obj)
    return None if coll is None else RunScene.open(scene, Path(coll["laser_run"]))


def shown_transform(obj) -> SceneTransform | None:
    """The scene transform the run of ``obj`` shows (its root's copy; cheap enough for a panel)."""
    coll = run_collection(obj)
    root = None if coll is None else next((o for o in coll.objects if o.get("laser_root")), None)
    held = None if root is None else root.get(ROOT_TRANSFORM)
    return None if held is None else SceneTransform.model_validate_json(held)


def shown_solve(obj) -> SolveReport | None:
    """The camera solve's figures of the run of ``obj`` as imported (cheap enough for a panel); None
    for any other object or a run without a solve."""
    coll = run_collection(obj)
    held = None if coll is None else coll.get(SOLVE_FIGURES)
    return None if held is None else SolveReport.model_validate_json(held)


def selected_points(run: RunScene, objects: Iterable) -> np.ndarray:
    """(n, 3) scene-world positions of the selected vertices of ``run``'s point clouds and solve bundles
    among ``objects`` (edit-mode selections are read after syncing them)."""
    clouds = {o.name for o in [*run.point_objects, *filter(None, [run.bundles_object])]}
    world = run.world_from_run  # clouds are children of the root with their vertices in run coordinates
    out = []
    for obj in objects:
        if obj.name not in clouds:
            continue
        if obj.mode == "EDIT":
            obj.update_from_editmode()
        mesh = obj.data
        n = len(mesh.vertices)
        select = np.zeros(n, bool)
        mesh.vertices.foreach_get("select", select)
        pos = np.empty(3 * n, np.float32)
        mesh.vertices.foreach_get("co", pos)
        local = pos.reshape(-1, 3)[select].astype(np.float64)
        out.append(local @ world[:3, :3].T + world[:3, 3])
    return np.concatenate(out) if out else np.zeros((0, 3))


def _need(points: np.ndarray, count: int, what: str, exact: bool = False) -> None:
    if len(points) < count or (exact and len(points) != count):
        raise OrientError(f"{what} needs {'exactly' if exact else 'at least'} {count} selected point"
                          f"{'s' * (count != 1)} of the cloud, {len(points)} selected")


def apply(run: RunScene, transform: SceneTransform) -> str:
    """Write ``transform`` to the run's scene.json and the root; returns the line a user reads."""
    run.info.run.write_scene_transform(transform)
    run.apply_scene_transform(transform)
    return describe(transform)


def floor_from_points(run: RunScene, points: np.ndarray) -> str:
    """The plane through the selected points (least squares) becomes the floor, up towards the cameras."""
    _need(points, 3, "Set Floor")
    current, cameras = run.info.run.scene_transform(), run_cameras(run.info.run)
    plane = fit_plane(points).facing(cameras_up(current.apply_poses(cameras)))
    return apply(run, set_floor(current, plane, cameras))


def origin_from_points(run: RunScene, points: np.ndarray) -> str:
    """The selected points' centroid becomes the origin."""
    _need(points, 1, "Set Origin")
    return apply(run, set_origin(run.info.run.scene_transform(), points.mean(0)))


def x_axis_from_points(run: RunScene, points: np.ndarray) -> str:
    """Turn about Z so that the selected points' centroid lies on +X."""
    _need(points, 1, "Set X Axis")
    return apply(run, set_x_axis(run.info.run.scene_transform(), points.mean(0)))


def scale_from_points(run: RunScene, points: np.ndarray, metres: float) -> str:
    """The two selected points are ``metres`` apart (the scene becomes metres)."""
    _need(points, 2, "Set Scale", exact=True)
    return apply(run, set_scale_distance(run.info.run.scene_transform(), points[0], points[1], metres))


def camera_height(run: RunScene, metres: float) -> str:
    """The cameras' median height above the floor is ``metres`` (the scene becomes metres)."""
    return apply(run, set_camera_height(run.info.run.scene_transform(), run_cameras(run.info.run), metres))


def auto_floor(run: RunScene) -> str:
    """The automatic orientation (ground plane of the static cloud, else the first camera)."""
    return apply(run, auto_orientation(run.info.run))


def reset(run: RunScene) -> str:
    """Back to the first-camera anchoring (no floor, the network's unit)."""
    return apply(run, SceneTransform.first_camera(run_cameras(run.info.run)[0]))


def sync_scene_files(scene: "bpy.types.Scene") -> None:
    """After an undo or redo: write each run's scene.json from the transform its root holds."""
    for obj in scene.objects:
        held = obj.get(ROOT_TRANSFORM) if obj.get("laser_root") else None
        coll = run_collection(obj)
        if held is None or coll is None:
            continue
        run = RunDir(Path(coll["laser_run"]))
        transform = SceneTransform.model_validate_json(held)
        if run.root.is_dir() and (not run.scene_path.exists() or run.scene_transform() != transform):
            run.write_scene_transform(transform)
