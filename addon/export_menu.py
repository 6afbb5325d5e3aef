"""File > Export entries for the formats Blender has no exporter of its own for (COLMAP,
nerfstudio, Nuke .chan). Each operator is a thin shell over
:func:`laser_blender.exporters.export`, on the run of the active object (or the scene's
only run), in the scene world its ``scene.json`` holds."""

from __future__ import annotations

from pathlib import Path

import bpy
from bpy.props import BoolProperty, StringProperty
from bpy_extras.io_utils import ExportHelper

from core.errors import UserError
from laser_blender import scene_edit
from laser_blender.exporters import ExportOptions, export


def _run_dir(context) -> Path | None:
    """The run of the active object, else the scene's only run; None when neither says which."""
    coll = scene_edit.run_collection(context.active_object)
    if coll is None:
        runs = [c for c in context.scene.collection.children_recursive if c.get("laser_run")]
        coll = runs[0] if len(runs) == 1 else None
    return None if coll is None else Path(coll["laser_run"])


class _RunExport:
    bl_options = {"PRESET"}
    format_name = ""

    @classmethod
    def poll(cls, context):
        return _run_dir(context) is not None

    def export_options(self) -> ExportOptions:
        return ExportOptions()

    def execute(self, context):
        run_dir = _run_dir(context)
        try:
            summary = export(run_dir, self.filepath, self.format_name, self.export_options())
        except UserError as e:
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        self.report({"INFO"}, f"Exported {run_dir.name} as {summary.path}: {summary.frames} frames"
                              + (f", {summary.points:,} points" if summary.points else ""))
        return {"FINISHED"}


class LASER_OT_export_colmap(_RunExport, bpy.types.Operator):
    """Export the LASER run as a COLMAP sparse model folder (cameras, images, points3D)"""

    bl_idname = "laser.export_colmap"
    bl_label = "COLMAP Model (LASER)"
    format_name = "colmap"

    filepath: StringProperty(name="Folder", subtype="DIR_PATH")
    text: BoolProperty(name="Text Files", description="Write .txt files instead of .bin", default=False)

    def invoke(self, context, event):
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def export_options(self) -> ExportOptions:
        return ExportOptions(text=self.text)


class LASER_OT_export_nerfstudio(_RunExport, ExportHelper, bpy.types.Operator):
    """Export the LASER run as nerfstudio's transforms.json with its initial point cloud"""

    bl_idname = "laser.export_nerfstudio"
    bl_label = "nerfstudio transforms.json (LASER)"
    format_name = "nerfstudio"
    filename_ext = ".json"

    filter_glob: StringProperty(default="*.json", options={"HIDDEN"})


class LASER_OT_export_chan(_RunExport, ExportHelper, bpy.types.Operator):
    """Export the LASER run's camera as Nuke channels (.chan)"""

    bl_idname = "laser.export_chan"
    bl_label = "Nuke Camera .chan (LASER)"
    format_name = "chan"
    filename_ext = ".chan"

    filter_glob: StringProperty(default="*.chan", options={"HIDDEN"})


OPERATORS = (LASER_OT_export_colmap, LASER_OT_export_nerfstudio, LASER_OT_export_chan)
CLASSES = OPERATORS


def _menu(self, context) -> None:
    for op in OPERATORS:
        self.layout.operator(op.bl_idname, text=op.bl_label)


def register() -> None:
    bpy.types.TOPBAR_MT_file_export.append(_menu)


def unregister() -> None:
    bpy.types.TOPBAR_MT_file_export.remove(_menu)
