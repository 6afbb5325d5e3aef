"""Render the README picture: the demo scene's point cloud and camera path (docs/scene.png).

    .venv/bin/python scripts/render_readme.py [-o docs/scene.png] [--samples 16]

Renders the synthetic demo clip, reconstructs it with the streaming engine (the
same job path as ``laser-blender reconstruct``), builds the scene with the
add-on's scene builder and renders it headless with Cycles on the CPU from a
viewpoint above and behind the shot. The camera path is drawn as a tube, with a
frustum every few frames.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def reconstruct_demo(work: Path) -> Path:
    """Synthetic clip -> run directory (realistic synthetic backbone: noisy, per-window Sim(3))."""
    from core.engine import reconstruct
    from core.synthetic import SceneConfig, render_clip
    from laser_blender.driver import build_pipeline
    from laser_blender.protocol import Job

    clip, gt = render_clip(work / "demo", SceneConfig(width=256, height=192, num_frames=120))
    job = Job(input=str(clip), run_dir=str(work / "run"), backbone="synthetic", synthetic_scene=str(gt),
              window=16, overlap=4, device="cpu")
    source, backbone, settings = build_pipeline(job)
    reconstruct(source, backbone, Path(job.run_dir), settings, job=job.model_dump(mode="json"))
    return Path(job.run_dir)


def emission_material(name: str, rgb: tuple[float, float, float], strength: float = 2.0):
    import bpy

    mat = bpy.data.materials.new(name)
    mat.use_nodes = True
    emit = mat.node_tree.nodes.new("ShaderNodeEmission")
    emit.inputs["Color"].default_value = (*rgb, 1.0)
    emit.inputs["Strength"].default_value = strength
    mat.node_tree.links.new(emit.outputs["Emission"], mat.node_tree.nodes["Material Output"].inputs["Surface"])
    return mat


def camera_path_object(run, scene, radius: float, frustum_every: int = 15):
    """A curve through the camera centres plus frustum outlines, renderable as tubes."""
    import bpy
    from mathutils import Vector

    cam = run.camera
    frames = range(scene.frame_start, scene.frame_end + 1)
    curve = bpy.data.curves.new("camera path", "CURVE")
    curve.dimensions, curve.bevel_depth = "3D", radius
    centres, frustums = [], []
    for f in frames:
        scene.frame_set(f)
        m = cam.matrix_world.copy()
        centres.append(m.translation.copy())
        if (f - scene.frame_start) % frustum_every == 0:
            corners = [m @ Vector(c) for c in cam.data.view_frame(scene=scene)]
            frustums.append([m.translation, corners[0], corners[1], m.translation, corners[2], corners[3],
                             m.translation, corners[0], corners[3], corners[2], corners[1]])
    for points in (centres, *frustums):
        spline = curve.splines.new("POLY")
        spline.points.add(len(points) - 1)
        spline.points.foreach_set("co", np.array([(*p, 1.0) for p in points], np.float32).ravel())
    obj = bpy.data.objects.new("camera path", curve)
    curve.materials.append(emission_material("camera path", (0.1, 0.55, 1.0), 3.0))
    scene.collection.objects.link(obj)
    return obj, np.array(centres)


def render(run_dir: Path, out: Path, samples: int, size: tuple[int, int]) -> None:
    import bpy

    from laser_blender.scene import SceneOptions, import_run

    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    run = import_run(scene, run_dir, SceneOptions(point_budget=400_000))
    points = np.concatenate([_positions(o.data) for o in run.point_objects])
    scene.frame_set(scene.frame_start)
    first = run.camera.matrix_world.copy()
    origin = first.translation.copy()
    forward, up, right = -first.col[2].xyz, first.col[1].xyz, first.col[0].xyz
    depth = float(np.median(np.linalg.norm(points - np.array(origin), axis=1)))
    camera_path_object(run, scene, radius=depth * 0.004)

    # Above, behind and to the side of the shot, looking over the camera path into the scene.
    view = bpy.data.objects.new("README view", bpy.data.cameras.new("README view"))
    view.location = origin + depth * (-0.6 * forward + 0.45 * up + 0.3 * right)
    target = origin + depth * 0.45 * forward
    view.rotation_euler = (target - view.location).to_track_quat("-Z", "Y").to_euler()
    view.data.lens, view.data.clip_end = 24, depth * 100
    scene.collection.objects.link(view)
    scene.camera = view

    scene.world = bpy.data.worlds.new("README world")
    scene.world.color = (0.02, 0.02, 0.025)
    r = scene.render
    r.engine = "CYCLES"
    scene.cycles.device, scene.cycles.samples = "CPU", samples
    scene.cycles.use_denoising = False
    scene.view_settings.view_transform = "Standard"  # the footage's colours as they are
    r.resolution_x, r.resolution_y, r.resolution_percentage = *size, 100
    r.pixel_aspect_x = r.pixel_aspect_y = 1.0
    r.film_transparent = False
    r.image_settings.file_format = "PNG"
    r.filepath = str(out.absolute())
    scene.frame_set(scene.frame_end)
    out.parent.mkdir(parents=True, exist_ok=True)
    bpy.ops.render.render(write_still=True)


def _positions(mesh) -> np.ndarray:
    co = np.empty(3 * len(mesh.vertices), np.float32)
    mesh.attributes["position"].data.foreach_get("vector", co)
    return co.reshape(-1, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=REPO / "docs" / "scene.png")
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--size", type=int, nargs=2, default=(800, 450), metavar=("W", "H"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="laser-readme-") as tmp:
        render(reconstruct_demo(Path(tmp)), args.output, args.samples, tuple(args.size))
    print(args.output)


if __name__ == "__main__":
    main()
