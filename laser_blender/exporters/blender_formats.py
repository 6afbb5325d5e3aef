"""FBX, Alembic and USD through Blender's own exporters (the bpy module), on the scene the
add-on and ``laser-blender blend`` build (:func:`laser_blender.scene.import_run`).

What they carry: the camera, animated on every frame (keys as built: location and rotation
under the scene root, whose matrix is the scene transform), with its lens and sensor; the
point cloud and the camera solve's bundles, when the run has them, as vertex-only meshes
(the Geometry Nodes display modifier is left out, so the vertices themselves are written).
Blender's own axis conventions per format apply (FBX: -Z forward, +Y up; Alembic and USD: +Y up).
"""

from __future__ import annotations

from pathlib import Path

from core.run.files import output_file
from laser_blender.blendfile import empty_scene, stdout_to_stderr
from laser_blender.exporters import ExportOptions, ExportSummary
from laser_blender.scene import SceneOptions, import_run


def build_scene(run_dir: Path, options: ExportOptions):
    """An empty Blender session holding the run's scene, its clouds as bare vertices; returns the RunScene."""
    with stdout_to_stderr():
        run = import_run(empty_scene(), Path(run_dir), SceneOptions(
            point_budget=options.max_points, conf_percentile=options.conf_percentile,
            sensor_width=options.sensor_width, seed=options.seed))
    for obj in [*run.point_objects, *filter(None, [run.bundles_object])]:
        obj.modifiers.clear()
    return run


def write(scene, path: Path, fmt: str) -> None:
    """Write the whole of ``scene`` to ``path`` with Blender's exporter for ``fmt`` (fbx, alembic, usd)."""
    import bpy

    with stdout_to_stderr():
        if fmt == "fbx":
            bpy.ops.export_scene.fbx(filepath=str(path), object_types={"EMPTY", "CAMERA", "MESH"},
                                     use_mesh_modifiers=False, bake_anim=True, bake_anim_use_nla_strips=False,
                                     bake_anim_use_all_actions=False, bake_anim_simplify_factor=0.0,
                                     add_leaf_bones=False)
        elif fmt == "alembic":
            bpy.ops.wm.alembic_export(filepath=str(path), start=scene.frame_start, end=scene.frame_end,
                                      export_hair=False, export_particles=False)
        else:
            bpy.ops.wm.usd_export(filepath=str(path), export_animation=True, export_materials=False)


def export(run_dir: Path, path: Path, options: ExportOptions, fmt: str) -> ExportSummary:
    path = output_file(path)
    run = build_scene(run_dir, options)
    write(run.scene, path, fmt)
    keys = run.camera.animation_data.action.fcurves[0].keyframe_points  # one key per registered frame
    return ExportSummary(path=path, format=fmt, frames=len(keys), points=run.points, files=(path,))
