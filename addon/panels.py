"""The LASER sidebar panel, in the Movie Clip Editor and the 3D Viewport."""

from __future__ import annotations

import bpy

from core.run.manifest import RunStatus
from core.run.scene_transform import Units
from laser_blender import scene_edit

from . import export_menu, operators, properties


def draw_panel(layout, context) -> None:
    """The panel's sections, each collapsible (see :data:`SECTIONS`)."""
    for idname, title, draw in SECTIONS:
        header, body = layout.panel(f"LASER_{idname}")
        header.label(text=title)
        if body is not None:
            draw(body, context)


def draw_reconstruct(layout, context) -> None:
    settings = context.scene.laser
    session = operators.session_for(context.scene)
    state = session.state if session else None

    col = layout.column()
    col.prop(settings, "footage")
    if not settings.footage:
        clip = getattr(context, "edit_movieclip", None) or context.scene.active_clip
        col.label(text=f"Using clip: {clip.name}" if clip else "No footage: pick a file or open a clip",
                  icon="FILE_MOVIE" if clip else "ERROR")
    col.prop(settings, "runs_dir")

    box = layout.box()
    box.prop(settings, "backbone")
    box.prop(settings, "synthetic_scene" if settings.backbone == "synthetic" else "weights")
    row = box.row(align=True)
    row.prop(settings, "window")
    row.prop(settings, "overlap")
    box.prop(settings, "stride")
    box.prop(settings, "layer_align")
    if settings.layer_align:
        lsa = box.box().column(align=True)
        for name in properties.LAYER_PROPERTIES:
            lsa.prop(settings, f"lsa_{name}")
    box.prop(settings, "zoom")
    row = box.row()
    row.prop(settings, "use_focal")
    row.enabled = not settings.zoom  # a zoom estimates the focal length of every frame
    sub = box.column(align=True)
    sub.prop(settings, "focal_mm")
    sub.enabled = settings.use_focal and not settings.zoom
    box.prop(settings, "sensor_width")
    box.prop(settings, "refine")
    row = box.row()
    row.prop(settings, "refine_distortion")
    row.enabled = settings.refine and not settings.zoom  # the solve's lens pass, for a fixed lens

    box = layout.box()
    box.prop(settings, "point_budget")
    box.prop(settings, "conf_percentile")
    box.prop(settings, "current_frame_only")

    layout.prop(settings, "overwrite")
    row = layout.row(align=True)
    row.scale_y = 1.4
    if state and state.running:
        row.operator(operators.LASER_OT_cancel.bl_idname, icon="CANCEL")
    else:
        row.operator(operators.LASER_OT_reconstruct.bl_idname, icon="PLAY")
        if state and state.status in (RunStatus.failed, RunStatus.cancelled):
            row.operator(operators.LASER_OT_reconstruct.bl_idname, text="Resume", icon="FILE_REFRESH").resume = True
    if state:
        layout.progress(factor=state.fraction, type="BAR", text=state.progress_text())
        layout.label(text=f"{len(state.windows)} windows, {state.points:,} points ({state.status_text})")
    error = operators.LAST_ERROR.get(context.scene.name_full)
    if error:
        err = layout.box()
        err.alert = True
        for k in range(0, min(len(error), 400), 60):
            err.label(text=error[k:k + 60], icon="ERROR" if k == 0 else "BLANK1")
    layout.operator(operators.LASER_OT_import_run.bl_idname, icon="IMPORT")


def draw_solve(layout, context) -> None:
    """The camera solve of the active object's run, like the Movie Clip Editor's "Solve error"."""
    if scene_edit.run_collection(context.active_object) is None:
        layout.label(text="Select a run's point cloud or camera", icon="INFO")
        return
    report = scene_edit.shown_solve(context.active_object)
    if report is None:
        layout.label(text="No camera solve in this run")
        return
    col = layout.column(align=True)
    col.label(text=report.error_text())
    col.label(text=f"{report.points:,} points, {report.inliers:,} inlier observations")
    if report.distortion is not None:
        col.label(text=f"Distortion k1 {report.distortion[0]:.4f}, k2 {report.distortion[1]:.4f}")
    col.label(text="Per frame: the camera's solve_error_px curve")


def draw_scene(layout, context) -> None:
    """Orientation and scale of the active object's run, like the Movie Clip Editor's Solve > Orientation."""
    transform = scene_edit.shown_transform(context.active_object)
    if transform is None:
        layout.label(text="Select a run's point cloud or camera", icon="INFO")
        return
    col = layout.column(align=True)
    col.label(text=f"Set by: {transform.method}"[:70])
    col.label(text="Unit: metres" if transform.units == Units.metres else "Unit: the network's (no distance given)")
    layout.label(text="From selected points (Edit Mode):")
    row = layout.row(align=True)
    row.operator(operators.LASER_OT_set_floor.bl_idname)
    row.operator(operators.LASER_OT_set_origin.bl_idname)
    row.operator(operators.LASER_OT_set_x_axis.bl_idname)
    row = layout.row(align=True)
    row.prop(context.scene.laser, "scale_distance")
    row.operator(operators.LASER_OT_set_scale.bl_idname)
    row = layout.row(align=True)
    row.prop(context.scene.laser, "camera_height")
    row.operator(operators.LASER_OT_set_camera_height.bl_idname, text="Set")
    row = layout.row(align=True)
    row.operator(operators.LASER_OT_auto_floor.bl_idname, icon="AUTO")
    row.operator(operators.LASER_OT_reset_scene.bl_idname, icon="LOOP_BACK")


def draw_export(layout, context) -> None:
    """The formats Blender has no exporter of its own for (also in File > Export), on the active object's run."""
    col = layout.column(align=True)
    for op in export_menu.OPERATORS:
        col.operator(op.bl_idname, text=op.bl_label.removesuffix(" (LASER)"), icon="EXPORT")


SECTIONS: list[tuple[str, str, object]] = [
    ("reconstruct", "Reconstruct", draw_reconstruct),
    ("solve", "Solve", draw_solve),
    ("scene", "Scene", draw_scene),
    ("export", "Export", draw_export),
]
"""(id, title, draw(layout, context)) of the panel's sections, in order: Reconstruct, Solve, Scene, Export
(a feature adds its section at its place in this order)."""


class _LaserPanel:
    """The sidebar panel; one subclass per editor it appears in."""

    bl_label = "LASER Reconstruction"
    bl_region_type = "UI"
    bl_category = "LASER"

    def draw(self, context):
        draw_panel(self.layout, context)


class LASER_PT_clip(_LaserPanel, bpy.types.Panel):
    bl_space_type = "CLIP_EDITOR"


class LASER_PT_view3d(_LaserPanel, bpy.types.Panel):
    bl_space_type = "VIEW_3D"


CLASSES = (LASER_PT_clip, LASER_PT_view3d)
