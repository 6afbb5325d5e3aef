"""Operators: thin shells around :mod:`laser_blender.session` and :mod:`laser_blender.scene`.

Reconstruct runs the worker and imports each finished window as it arrives: from
the UI as a modal operator ticking the session on a timer; in background mode
(``blender -b``, scripts, the bpy module), where timers never fire, it loops until
the run ends.
"""

from __future__ import annotations

from pathlib import Path

import bpy
from bpy.props import BoolProperty, StringProperty
from bpy_extras.io_utils import ImportHelper
from pydantic import ValidationError

from core.errors import UserError
from core.run.manifest import RunStatus
from laser_blender import scene_edit
from laser_blender.client import WorkerClient, WorkerError
from laser_blender.scene import import_run
from laser_blender.session import ImportSession, SessionState

from . import preferences, properties

SESSIONS: dict[str, ImportSession] = {}  # scene name -> running or last session
LAST_ERROR: dict[str, str] = {}           # scene name -> last error message (shown in the panel)


def session_for(scene) -> ImportSession | None:
    return SESSIONS.get(scene.name_full)


def close_all() -> None:
    """Cancel running workers and join their threads (on unregister; the bpy module needs it)."""
    for session in SESSIONS.values():
        session.close(timeout=10)
    SESSIONS.clear()


def _tag_redraw(context) -> None:
    for window in context.window_manager.windows:
        for area in window.screen.areas:
            if area.type in {"VIEW_3D", "CLIP_EDITOR"}:
                area.tag_redraw()


class LASER_OT_reconstruct(bpy.types.Operator):
    """Reconstruct the footage: camera track and point cloud, imported window by window"""

    bl_idname = "laser.reconstruct"
    bl_label = "Reconstruct"

    resume: BoolProperty(name="Resume", default=False, options={"SKIP_SAVE"},
                         description="Continue the last cancelled or failed run from its last finished window")

    _timer = None
    _session: ImportSession | None = None

    @classmethod
    def poll(cls, context):
        session = session_for(context.scene)
        return session is None or not session.state.running

    def execute(self, context):
        scene, settings = context.scene, context.scene.laser
        LAST_ERROR.pop(scene.name_full, None)
        footage = properties.footage_path(context, settings)
        if not footage:
            return self._fail(context, "No footage: pick a file or open a movie clip")
        python = preferences.engine_python(context)
        if not python:
            return self._fail(context, "No engine Python: install the engine in the add-on preferences")
        fallback = Path(bpy.utils.extension_path_user(preferences.PACKAGE, path="runs", create=True))
        run_dir = properties.run_dir_for(settings, footage, fallback)
        try:
            job = properties.make_job(settings, footage, run_dir, preferences.prefs(context).device, self.resume)
        except ValidationError as e:
            return self._fail(context, properties.job_error(e))
        session = ImportSession(scene, WorkerClient(job, python=python, env=preferences.worker_env(context)),
                                properties.scene_options(settings), report=self._reporter())
        try:
            session.start()
        except WorkerError as e:
            return self._fail(context, str(e))
        SESSIONS[scene.name_full] = session
        if bpy.app.background:
            return self._finish(scene, session.run_to_end())
        self._session = session
        self._timer = context.window_manager.event_timer_add(0.2, window=context.window)
        context.window_manager.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        session = self._session  # not context.scene's: the user may switch scenes meanwhile
        session.tick()
        _tag_redraw(context)
        if session.state.running:
            return {"PASS_THROUGH"}
        context.window_manager.event_timer_remove(self._timer)
        session.close()
        result = self._finish(session.scene, session.state)
        bpy.ops.ed.undo_push(message="LASER Reconstruct")
        return result

    def _reporter(self):
        def report(level: str, message: str) -> None:
            self.report({level}, message)
        return report

    def _finish(self, scene, state: SessionState):
        if state.status == RunStatus.failed:
            LAST_ERROR[scene.name_full] = state.last_error
            return {"CANCELLED"}
        return {"FINISHED"}

    def _fail(self, context, message: str):
        LAST_ERROR[context.scene.name_full] = message
        self.report({"ERROR"}, message)
        return {"CANCELLED"}


class LASER_OT_cancel(bpy.types.Operator):
    """Stop the reconstruction after the current window (finished windows stay; Resume continues)"""

    bl_idname = "laser.cancel"
    bl_label = "Cancel"

    @classmethod
    def poll(cls, context):
        session = session_for(context.scene)
        return session is not None and session.state.running

    def execute(self, context):
        session_for(context.scene).cancel()
        self.report({"INFO"}, "Cancelling after the current window")
        return {"FINISHED"}


class LASER_OT_import_run(bpy.types.Operator, ImportHelper):
    """Import a run directory (complete or still running): camera, footage and point cloud"""

    bl_idname = "laser.import_run"
    bl_label = "Import Run"
    bl_options = {"REGISTER", "UNDO"}

    filter_glob: StringProperty(default="run.json", options={"HIDDEN"})

    def execute(self, context):
        path = Path(bpy.path.abspath(self.filepath))
        run_dir = path.parent if path.name == "run.json" else path
        try:
            run = import_run(context.scene, run_dir, properties.scene_options(context.scene.laser))
        except UserError as e:
            self.report({"ERROR"}, f"Cannot import {run_dir}: {e}")
            return {"CANCELLED"}
        self.report({"INFO"}, f"Imported {run_dir.name}: {len(run.windows)} windows, {run.points:,} points")
        return {"FINISHED"}


class _SceneEdit:
    """An edit of the active run's scene transform (its collection holds the active object)."""

    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        return scene_edit.run_collection(context.active_object) is not None

    def execute(self, context):
        run = scene_edit.run_of(context.scene, context.active_object)
        try:
            message = self.edit(context, run)
        except UserError as e:
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        self.report({"INFO"}, message)
        return {"FINISHED"}

    @staticmethod
    def points(context, run):
        objects = context.objects_in_mode if context.mode == "EDIT_MESH" else context.selected_objects
        return scene_edit.selected_points(run, objects)


class LASER_OT_set_floor(_SceneEdit, bpy.types.Operator):
    """The plane through the selected points becomes the floor (Z = 0, +Z up)"""

    bl_idname = "laser.set_floor"
    bl_label = "Set Floor"

    def edit(self, context, run):
        return scene_edit.floor_from_points(run, self.points(context, run))


class LASER_OT_set_origin(_SceneEdit, bpy.types.Operator):
    """The selected points' centre becomes the origin"""

    bl_idname = "laser.set_origin"
    bl_label = "Set Origin"

    def edit(self, context, run):
        return scene_edit.origin_from_points(run, self.points(context, run))


class LASER_OT_set_x_axis(_SceneEdit, bpy.types.Operator):
    """Turn the scene about Z so that the selected point lies on +X"""

    bl_idname = "laser.set_x_axis"
    bl_label = "Set X Axis"

    def edit(self, context, run):
        return scene_edit.x_axis_from_points(run, self.points(context, run))


class LASER_OT_set_scale(_SceneEdit, bpy.types.Operator):
    """The two selected points are the given distance apart: the scene becomes metres"""

    bl_idname = "laser.set_scale"
    bl_label = "Set Scale"

    def edit(self, context, run):
        return scene_edit.scale_from_points(run, self.points(context, run), context.scene.laser.scale_distance)


class LASER_OT_set_camera_height(_SceneEdit, bpy.types.Operator):
    """The cameras' median height above the floor is the given height: the scene becomes metres"""

    bl_idname = "laser.set_camera_height"
    bl_label = "Set Camera Height"

    def edit(self, context, run):
        return scene_edit.camera_height(run, context.scene.laser.camera_height)


class LASER_OT_auto_floor(_SceneEdit, bpy.types.Operator):
    """Find the ground plane of the static cloud again (else anchor the first camera)"""

    bl_idname = "laser.auto_floor"
    bl_label = "Automatic Floor"

    def edit(self, context, run):
        return scene_edit.auto_floor(run)


class LASER_OT_reset_scene(_SceneEdit, bpy.types.Operator):
    """Back to the first camera at the origin, in the network's unit"""

    bl_idname = "laser.reset_scene"
    bl_label = "Reset"

    def edit(self, context, run):
        return scene_edit.reset(run)


SCENE_OPERATORS = (LASER_OT_set_floor, LASER_OT_set_origin, LASER_OT_set_x_axis, LASER_OT_set_scale,
                   LASER_OT_set_camera_height, LASER_OT_auto_floor, LASER_OT_reset_scene)
CLASSES = (LASER_OT_reconstruct, LASER_OT_cancel, LASER_OT_import_run, *SCENE_OPERATORS)
