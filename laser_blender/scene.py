"""Build or extend a Blender scene from a run directory, a window at a time.

Everything a run becomes lives in one collection per run (``LASER <run name>``):

* a camera with one keyframe per source frame, its lens, sensor and shift taken
  from the run's intrinsics expressed at footage resolution (a run made with ``--zoom``
  keys the lens on the camera data at every frame);
* the footage as a MovieClip, shown as the camera's background;
* one point-cloud mesh per aligned window (vertices with ``Color``, ``conf``,
  ``frame`` and ``dynamic`` attributes) drawn as points in the viewport and in renders
  by a shared Geometry Nodes modifier (Mesh to Points) and a material reading ``Color``:
  static points accumulated over the shot, dynamic ones (moving things,
  :func:`laser_blender.points.window_dynamic`) only on their own frame;
* an Empty, the scene root, parent of the camera and the clouds: its matrix is the
  run's scene transform (``RUN/scene.json``: floor, origin, axes, scale), so changing
  that transform re-applies to the whole run without re-importing anything;
* with a camera solve (``RUN/solve.json``, ``RUN/bundles/``): the "bundles" mesh of the solve's
  track points (``Color``, ``error_px`` the RMS of each point's observations, ``observations``
  its track length), under the root and growing window by window; the per-frame solve error
  keyed on the camera as the custom property ``solve_error_px`` (graph it in the Graph Editor);
  solve.json's figures on the collection (``laser_solve``, JSON) for the add-on's Solve panel.

Adding a window never touches what earlier windows created (the bundles mesh only grows), so
a growing run is imported incrementally while the worker streams.

Conventions:

* The run is in OpenCV axes (camera x right, y down, z forward; poses
  camera-to-world) in whatever world frame the backbone chose. Vertices and camera
  keys are in that run world, local to the root; the root's matrix maps run world to
  Blender world (= the scene world, Z up): ``RunDir.scene_transform()``, by default the
  ground-plane orientation written when the run completed, else the first camera at the
  origin, upright, looking along +Y. A camera's local matrix is
  ``c2w @ diag(1, -1, -1, 1)`` (Blender cameras look down -z, y up).
* Source frame ``f`` (0-based) is Blender frame ``f + FRAME_START``.
* Pixel (row i, col j) is centred at (j + 0.5, i + 0.5).

``bpy`` is imported inside functions only, so engine processes can import this
module's numpy helpers without Blender.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from core.run.arrays import AlignedWindow
from core.run.manifest import InputGeometry
from core.run.files import RunDirError, read_npz_array
from core.run.rundir import PredictionsDir, RunDir, load_aligned
from core.run.scene_transform import SceneTransform
from core.run.solve import Bundles
from laser_blender.points import select_points, window_dynamic, window_points

if TYPE_CHECKING:  # pragma: no cover
    import bpy

FRAME_START = 1
CV_TO_BLENDER_CAMERA = np.diag([1.0, -1.0, -1.0, 1.0])
NODE_GROUP = "LASER points"
ROOT_TRANSFORM = "laser_scene"  # the root's copy of its SceneTransform (JSON): what undo restores
MATERIAL = "LASER point colour"
# Point colour attribute. Not "color": Cycles renders a point cloud attribute of that
# exact name black (Blender 4.5); "Color" is also Blender's default for meshes.
COLOR = "Color"
SOLVE_ERROR = "solve_error_px"  # the camera's custom property keyed with each frame's solve error
SOLVE_FIGURES = "laser_solve"  # the collection's copy of solve.json without the per-frame errors (JSON)
# Frames assumed when a run does not (yet) say how long the footage is: the budget
# is then spread as if the shot had this many frames, and never exceeded.
FALLBACK_FRAME_COUNT = 1000
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".exr"})


@dataclass
class SceneOptions:
    """How a run becomes scene content.

    Attributes:
        point_budget: most points imported for the whole run, spread evenly over frames.
        conf_percentile: drop this percentage (0-100) of each window's least
            confident masked pixels before subsampling.
        sensor_width: camera sensor width in mm (the lens follows from it).
        fps: frame rate used when the run and the footage do not give one.
        frame_count: frames of the shot, when known before the run completes
            (spreads the point budget); read from the run otherwise.
        footage: footage path overriding the run's ``source``.
        current_frame_only: show only the points of the current frame (dynamic scenes).
        seed: subsampling seed (combined with the window index: reproducible).
    """

    point_budget: int = 2_000_000
    conf_percentile: float = 0.0
    sensor_width: float = 36.0
    fps: float = 24.0
    frame_count: int | None = None
    footage: str | None = None
    current_frame_only: bool = False
    seed: int = 0


# --------------------------------------------------------------------------- numpy side

def footage_intrinsics(K: np.ndarray, geometry: InputGeometry) -> np.ndarray:
    """(3, 3) (or (N, 3, 3) per-frame) intrinsics at prediction resolution -> at footage resolution."""
    return geometry.intrinsics_to_footage(np.asarray(K, np.float64))


def camera_settings(K_footage: np.ndarray, footage: tuple[int, int], sensor_width: float) -> dict[str, Any]:
    """Blender camera and render settings reproducing the pinhole ``K_footage``.

    Horizontal sensor fit: ``lens = fx * sensor_width / W``; the principal point
    becomes a shift in units of the sensor width; ``fx != fy`` becomes a non-square
    pixel aspect (both aspects >= 1 as Blender requires).
    """
    W, H = footage
    fx, fy = float(K_footage[0, 0]), float(K_footage[1, 1])
    cx, cy = float(K_footage[0, 2]), float(K_footage[1, 2])
    aspect = fy / fx  # pixel width / height
    return {
        "lens": fx * sensor_width / W,
        "sensor_width": sensor_width,
        "shift_x": (W / 2 - cx) / W,
        "shift_y": (cy - H / 2) * fx / (fy * W),
        "pixel_aspect_x": max(aspect, 1.0),
        "pixel_aspect_y": max(1.0 / aspect, 1.0),
    }


def blender_camera_matrices(poses: np.ndarray, world: np.ndarray) -> np.ndarray:
    """(M, 4, 4) OpenCV camera-to-world run poses -> Blender camera matrices (``world``: run -> Blender;
    the identity gives the camera's keys, local to the scene root)."""
    return world @ np.asarray(poses, np.float64) @ CV_TO_BLENDER_CAMERA


def fps_and_base(fps: float) -> tuple[int, float]:
    """Blender's (fps, fps_base) for a frame rate; 29.97 -> (30, 1.001)."""
    whole = max(1, round(fps))
    return whole, whole / fps


def window_quota(options: SceneOptions, frames: int, frame_count: int, imported: int) -> int:
    """Points a window of ``frames`` frames may add: its share, never past the budget."""
    share = int(options.point_budget * frames / max(frame_count, 1))
    return max(0, min(share, options.point_budget - imported))


def footage_clip_file(footage: str | None) -> Path | None:
    """The file Blender opens as the footage's MovieClip: a video itself, or an image
    folder's first image (Blender then reads the numbered sequence); None if absent."""
    if not footage:
        return None
    path = Path(footage).resolve()
    if path.is_file():
        return path
    if path.is_dir():
        images = [p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
        return min(images, key=lambda p: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)],
                   default=None)
    return None


# --------------------------------------------------------------------------- run facts

@dataclass
class RunInfo:
    """What the scene needs from a run directory besides its windows."""

    run: RunDir
    geometry: InputGeometry
    fps: float | None
    frame_count: int | None
    footage: str | None

    @property
    def name(self) -> str:
        return self.run.name

    @classmethod
    def read(cls, run_dir: Path) -> "RunInfo":
        run = RunDir(Path(run_dir).resolve())
        manifest = run.read_manifest()
        source = manifest.source
        return cls(run=run, geometry=run.geometry(), fps=run.fps(),
                   frame_count=source.num_frames or _predicted_frames(source.predictions, manifest.last_frame),
                   footage=source.path)


def _predicted_frames(predictions: str | None, last_frame: int | None) -> int | None:
    """Frames of a run made from saved predictions (``align``, no footage): up to the last predicted
    frame when that directory is still there, else up to the last registered frame."""
    if not predictions:
        return None
    windows = PredictionsDir(Path(predictions)).windows()
    if windows:
        return int(read_npz_array(windows[-1][1], "frames")[-1]) + 1
    return None if last_frame is None else last_frame + 1


# --------------------------------------------------------------------------- Blender side

def _ensure_node_group():
    """The shared Geometry Nodes group: mesh vertices -> coloured points."""
    import bpy

    group = bpy.data.node_groups.get(NODE_GROUP)
    if group is not None:
        return group
    group = bpy.data.node_groups.new(NODE_GROUP, "GeometryNodeTree")
    iface = group.interface
    iface.new_socket("Geometry", in_out="INPUT", socket_type="NodeSocketGeometry")
    radius = iface.new_socket("Radius", in_out="INPUT", socket_type="NodeSocketFloat")
    radius.default_value, radius.min_value = 0.01, 0.0
    iface.new_socket("Current Frame Only", in_out="INPUT", socket_type="NodeSocketBool")
    iface.new_socket("Geometry", in_out="OUTPUT", socket_type="NodeSocketGeometry")

    nodes, links = group.nodes, group.links
    g_in = nodes.new("NodeGroupInput")
    g_out = nodes.new("NodeGroupOutput")
    frame_attr = nodes.new("GeometryNodeInputNamedAttribute")
    frame_attr.data_type = "INT"
    frame_attr.inputs["Name"].default_value = "frame"
    time = nodes.new("GeometryNodeInputSceneTime")
    source_frame = nodes.new("ShaderNodeMath")
    source_frame.operation = "SUBTRACT"
    source_frame.inputs[1].default_value = FRAME_START
    same = nodes.new("FunctionNodeCompare")
    same.data_type, same.operation = "FLOAT", "EQUAL"
    same.inputs["Epsilon"].default_value = 0.5
    all_frames = nodes.new("FunctionNodeBooleanMath")
    all_frames.operation = "NOT"
    dynamic_attr = nodes.new("GeometryNodeInputNamedAttribute")
    dynamic_attr.data_type = "BOOLEAN"
    dynamic_attr.inputs["Name"].default_value = "dynamic"
    static = nodes.new("FunctionNodeBooleanMath")
    static.operation = "NIMPLY"  # all frames and not dynamic
    show = nodes.new("FunctionNodeBooleanMath")
    show.operation = "OR"
    to_points = nodes.new("GeometryNodeMeshToPoints")
    set_mat = nodes.new("GeometryNodeSetMaterial")
    set_mat.inputs["Material"].default_value = _ensure_material()

    links.new(time.outputs["Frame"], source_frame.inputs[0])
    links.new(frame_attr.outputs["Attribute"], same.inputs["A"])
    links.new(source_frame.outputs[0], same.inputs["B"])
    links.new(g_in.outputs["Current Frame Only"], all_frames.inputs[0])
    links.new(all_frames.outputs[0], static.inputs[0])
    links.new(dynamic_attr.outputs["Attribute"], static.inputs[1])
    links.new(static.outputs[0], show.inputs[0])
    links.new(same.outputs[0], show.inputs[1])
    links.new(g_in.outputs["Geometry"], to_points.inputs["Mesh"])
    links.new(show.outputs[0], to_points.inputs["Selection"])
    links.new(g_in.outputs["Radius"], to_points.inputs["Radius"])
    links.new(to_points.outputs["Points"], set_mat.inputs["Geometry"])
    links.new(set_mat.outputs["Geometry"], g_out.inputs["Geometry"])
    for x, node in enumerate((g_in, time, source_frame, same, show, to_points, set_mat, g_out)):
        node.location = (200 * x, 0)
    frame_attr.location, all_frames.location = (400, -200), (600, -200)
    dynamic_attr.location, static.location = (400, -400), (600, -400)
    return group


def _ensure_material():
    """Unlit material showing each point's colour attribute (looks like the footage)."""
    import bpy

    mat = bpy.data.materials.get(MATERIAL)
    if mat is not None:
        return mat
    mat = bpy.data.materials.new(MATERIAL)
    mat.use_nodes = True
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    nodes.clear()
    attr = nodes.new("ShaderNodeAttribute")
    attr.attribute_type, attr.attribute_name = "GEOMETRY", COLOR
    emit = nodes.new("ShaderNodeEmission")
    out = nodes.new("ShaderNodeOutputMaterial")
    links.new(attr.outputs["Color"], emit.inputs["Color"])
    links.new(emit.outputs["Emission"], out.inputs["Surface"])
    attr.location, emit.location, out.location = (-400, 0), (-200, 0), (0, 0)
    return mat


class RunScene:
    """The collection holding one run's camera, footage and points in a Blender scene.

    State lives in the collection's custom properties (``laser_run`` run directory,
    ``laser_windows`` imported window indices, ``laser_points`` point count,
    ``laser_radius`` point radius, ``laser_bundle_windows`` the windows whose solve points
    are in the bundles mesh, ``laser_solve`` solve.json without its per-frame errors), so a
    saved .blend can be extended later. The root
    Empty (``laser_root`` set; ``laser_scene`` its SceneTransform as JSON) parents the
    camera and the clouds.
    """

    def __init__(self, scene: "bpy.types.Scene", info: RunInfo, options: SceneOptions):
        self.scene = scene
        self.info = info
        self.options = options
        self.collection = self._ensure_collection()
        self.root = self._ensure_root()
        self.camera = self._ensure_camera()

    # ---------------------------------------------------------------- setup

    @classmethod
    def open(cls, scene: "bpy.types.Scene", run_dir: Path, options: SceneOptions | None = None) -> "RunScene":
        """Find or create the collection of ``run_dir`` in ``scene`` (needs run.json and meta.json)."""
        return cls(scene, RunInfo.read(run_dir), options or SceneOptions())

    def _ensure_collection(self):
        import bpy

        key = str(self.info.run.root)
        for coll in self.scene.collection.children_recursive:
            if coll.get("laser_run") == key:
                return coll
        coll = bpy.data.collections.new(f"LASER {self.info.name}")
        coll["laser_run"] = key
        coll["laser_windows"] = []
        coll["laser_points"] = 0
        self.scene.collection.children.link(coll)
        return coll

    def _ensure_root(self):
        import bpy

        for obj in self.collection.objects:
            if obj.get("laser_root"):
                return obj
        if self.collection.get("laser_anchor") is not None:  # points baked in Blender's world, no root
            raise RunDirError(f"{self.collection.name} was imported by an earlier laser-blender (no scene root); "
                              "delete the collection and import the run again")
        root = bpy.data.objects.new(f"{self.info.name} scene", None)
        root["laser_root"] = True
        root.empty_display_type = "ARROWS"
        self.collection.objects.link(root)
        self.root = root
        self.apply_scene_transform()
        return root

    def _ensure_camera(self):
        import bpy

        for obj in self.collection.objects:
            if obj.type == "CAMERA":
                return obj
        cam = bpy.data.objects.new(f"{self.info.name} camera", bpy.data.cameras.new(f"{self.info.name} camera"))
        cam.rotation_mode = "XYZ"
        cam.data.sensor_fit = "HORIZONTAL"
        cam.parent = self.root
        self.collection.objects.link(cam)
        self._setup_scene_and_footage(cam)
        return cam

    def _setup_scene_and_footage(self, cam) -> None:
        """Resolution, fps and frame range from the footage; the clip as camera background."""
        import bpy

        scene, info, opts = self.scene, self.info, self.options
        W, H = info.geometry.footage
        scene.render.resolution_x, scene.render.resolution_y = W, H
        scene.render.resolution_percentage = 100
        scene.camera = cam
        clip_file = footage_clip_file(opts.footage or info.footage)
        clip = None
        if clip_file is not None:
            clip = bpy.data.movieclips.load(str(clip_file), check_existing=True)
            clip.frame_start = FRAME_START
            scene.active_clip = clip
            bg = cam.data.background_images.new()
            bg.source, bg.clip = "MOVIE_CLIP", clip
            cam.data.show_background_images = True
        fps = info.fps or (clip.fps if clip is not None and clip.fps > 0 else None) or opts.fps
        scene.render.fps, scene.render.fps_base = fps_and_base(fps)
        frames = self.frame_count(clip)
        scene.frame_start = FRAME_START
        scene.frame_end = FRAME_START + max(frames, 1) - 1

    def frame_count(self, clip=None) -> int:
        """Frames of the shot: option, run, or footage; a fallback if none says."""
        if self.options.frame_count:
            return self.options.frame_count
        if self.info.frame_count:
            return self.info.frame_count
        if clip is not None and clip.frame_duration > 1:
            return clip.frame_duration
        return FALLBACK_FRAME_COUNT

    # ---------------------------------------------------------------- state

    @property
    def windows(self) -> set[int]:
        """Indices of the windows already in the scene."""
        return {int(i) for i in self.collection.get("laser_windows", [])}

    @property
    def points(self) -> int:
        return int(self.collection.get("laser_points", 0))

    @property
    def world_from_run(self) -> np.ndarray:
        """(4, 4) run-world -> Blender-world map: the root's matrix (the scene transform)."""
        return np.array(self.root.matrix_world, np.float64)

    def apply_scene_transform(self, transform: SceneTransform | None = None) -> None:
        """Set the root to ``transform`` (default: the run's ``scene.json``, or its first-camera anchoring).

        Nothing else changes: vertices and camera keys are local to the root. Called from an
        operator this is one undo step.
        """
        transform = transform or self.info.run.scene_transform()
        self.root.matrix_world = _matrix(transform.matrix())
        self.root[ROOT_TRANSFORM] = transform.model_dump_json()
        for view_layer in self.scene.view_layers:  # children's matrix_world follow now, not at the next redraw
            view_layer.update()

    @property
    def point_objects(self) -> list:
        """The dense point clouds (one mesh per window), not the solve's bundles."""
        return sorted((o for o in self.collection.objects if o.type == "MESH" and not o.get("laser_bundles")),
                      key=lambda o: o.name)

    @property
    def bundles_object(self):
        """The mesh of the camera solve's track points; None while the run has none."""
        return next((o for o in self.collection.objects if o.get("laser_bundles")), None)

    # ---------------------------------------------------------------- windows

    def add_window(self, win: AlignedWindow) -> int:
        """Add a window's camera keys and points; a window already present is skipped.

        Returns the number of points added.
        """
        if win.index in self.windows or len(win) == 0:
            return 0
        if not self.windows:
            self._set_lens(win.K)
        self._add_camera_keys(win.frames, win.poses)
        if win.frame_K is not None:
            self._key_lens(win.frames, win.frame_K)
        added = self._add_points(win)
        first = not self.windows
        self.collection["laser_windows"] = sorted(self.windows | {win.index})
        self.collection["laser_points"] = self.points + added
        if first:  # the first-camera anchoring needs the first window
            self.apply_scene_transform()
        self.sync_solve()
        return added

    def add_window_file(self, path: Path) -> int:
        """Load an ``aligned/wNNNNN.npz`` and add it."""
        return self.add_window(load_aligned(path))

    def sync(self) -> list[int]:
        """Add every window on disk that the scene lacks; returns their indices."""
        done = self.windows
        new = []
        for index, path in self.info.run.aligned_windows():
            if index not in done:
                self.add_window(load_aligned(path, index))
                new.append(index)
        self.sync_solve()
        return new

    # ---------------------------------------------------------------- camera solve

    def sync_solve(self) -> None:
        """Bring the solve up to date with the disk: add the bundles of imported windows the mesh lacks,
        key every frame's solve error on the camera and keep solve.json's figures (nothing without a solve)."""
        run = self.info.run
        report = run.read_solve()
        if report is None:
            return
        done, imported = {int(i) for i in self.collection.get("laser_bundle_windows", [])}, self.windows
        for index, _ in run.bundle_windows():
            if index in imported and index not in done:
                self._add_bundles(run.load_bundles(index))
                done.add(index)
        self.collection["laser_bundle_windows"] = sorted(done)
        self.collection[SOLVE_FIGURES] = report.model_copy(update={"per_frame_px": {}}).model_dump_json()
        if report.per_frame_px and self.camera.animation_data is not None:
            self._key_solve_error(report.per_frame_px)
        if report.distortion is not None and report.focal and self.scene.active_clip is not None:
            self._set_clip_lens(self.scene.active_clip, report.focal, report.distortion)

    def _set_clip_lens(self, clip, focal: float, distortion: tuple[float, float]) -> None:
        """The solve's lens on the footage clip's tracking camera: its focal length in footage pixels and
        the radial k1, k2 (Blender's polynomial model, the solve's), principal point at the centre as
        solved. What the compositor's Movie Distortion node and the clip editor's undistorted view use."""
        cam = clip.tracking.camera
        cam.sensor_width = self.camera.data.sensor_width
        cam.units = "PIXELS"
        cam.focal_length_pixels = focal
        cam.distortion_model = "POLYNOMIAL"
        cam.k1, cam.k2, cam.k3 = distortion[0], distortion[1], 0.0

    def _add_bundles(self, bundles: Bundles) -> None:
        """Append a window's track points to the bundles mesh (created under the root on first use)."""
        import bpy

        obj = self.bundles_object
        if obj is None:
            mesh = bpy.data.meshes.new(f"{self.info.name} bundles")
            mesh.color_attributes.new(COLOR, "BYTE_COLOR", "POINT")
            mesh.attributes.new("error_px", "FLOAT", "POINT")
            mesh.attributes.new("observations", "INT", "POINT")
            mesh.color_attributes.active_color_name = COLOR
            obj = bpy.data.objects.new(mesh.name, mesh)
            obj["laser_bundles"] = True
            obj.parent = self.root
            mod = obj.modifiers.new("LASER points", "NODES")
            mod.node_group = _ensure_node_group()
            mod[_socket_id(mod.node_group, "Radius")] = self.collection.get("laser_radius") or 0.01
            mesh.materials.append(_ensure_material())
            self.collection.objects.link(obj)
        p = len(bundles.xyz)
        if p == 0:
            return
        count = np.bincount(bundles.obs_point, minlength=p)
        err_sq = np.bincount(bundles.obs_point, bundles.obs_err.astype(np.float64) ** 2, p)
        rgba = np.ones((p, 4), np.float32)
        rgba[:, :3] = bundles.rgb * np.float32(1 / 255)
        mesh = obj.data
        old = len(mesh.vertices)
        mesh.vertices.add(p)
        for name, prop, new in (("position", "vector", bundles.xyz.astype(np.float32)),
                                (COLOR, "color_srgb", rgba),
                                ("error_px", "value", np.sqrt(err_sq / np.maximum(count, 1)).astype(np.float32)),
                                ("observations", "value", count.astype(np.int32))):
            data = mesh.attributes[name].data
            values = np.empty((old + p) * (new.size // p), new.dtype)
            data.foreach_get(prop, values)  # the earlier windows' values, then this window's
            values[old * (new.size // p):] = new.ravel()
            data.foreach_set(prop, values)
        mesh.update()

    def _key_solve_error(self, per_frame_px: dict[int, float]) -> None:
        """Key the camera's ``solve_error_px`` at every solved frame (replacing earlier keys: later windows
        may re-solve a shared frame)."""
        cam = self.camera
        if SOLVE_ERROR not in cam:
            cam[SOLVE_ERROR] = 0.0
            cam.id_properties_ui(SOLVE_ERROR).update(description="RMS reprojection error of the camera solve's "
                                                                 "inlier tracks in this frame (footage pixels)",
                                                     min=0.0, subtype="NONE")
        fc = cam.animation_data.action.fcurve_ensure_for_datablock(cam, f'["{SOLVE_ERROR}"]')
        fc.keyframe_points.clear()
        frames = np.array(sorted(per_frame_px), np.float64)
        _append_keys(fc, frames + FRAME_START, np.array([per_frame_px[int(f)] for f in frames]))

    def _set_lens(self, K: np.ndarray) -> None:
        s = camera_settings(footage_intrinsics(K, self.info.geometry), self.info.geometry.footage,
                            self.options.sensor_width)
        cam = self.camera.data
        cam.sensor_width, cam.lens = s["sensor_width"], s["lens"]
        cam.shift_x, cam.shift_y = s["shift_x"], s["shift_y"]
        self.scene.render.pixel_aspect_x = s["pixel_aspect_x"]
        self.scene.render.pixel_aspect_y = s["pixel_aspect_y"]

    def _key_lens(self, frames: np.ndarray, frame_K: np.ndarray) -> None:
        """Key the camera's focal length (mm, LINEAR) at ``frames`` from their (M, 3, 3) intrinsics (a zoom)."""
        import bpy

        cam = self.camera.data
        if cam.animation_data is None:
            cam.animation_data_create()
        if cam.animation_data.action is None:
            cam.animation_data.action = bpy.data.actions.new(f"{cam.name} lens")
        geometry = self.info.geometry
        lens = [camera_settings(K, geometry.footage, cam.sensor_width)["lens"]
                for K in footage_intrinsics(frame_K, geometry)]
        fc = cam.animation_data.action.fcurve_ensure_for_datablock(cam, "lens")
        _append_keys(fc, np.asarray(frames, np.float64) + FRAME_START, np.array(lens))

    def _add_camera_keys(self, frames: np.ndarray, poses: np.ndarray) -> None:
        """Append location/rotation keys (LINEAR) for ``frames``, keeping Euler continuity."""
        import bpy
        from mathutils import Euler, Matrix

        obj = self.camera
        if obj.animation_data is None:
            obj.animation_data_create()
        if obj.animation_data.action is None:
            obj.animation_data.action = bpy.data.actions.new(f"{obj.name} action")
        action = obj.animation_data.action
        curves = [action.fcurve_ensure_for_datablock(obj, path, index=k)
                  for path in ("location", "rotation_euler") for k in range(3)]

        mats = blender_camera_matrices(poses, np.eye(4))  # local to the root
        values = np.empty((len(frames), 6))
        values[:, :3] = mats[:, :3, 3]
        previous = self._last_euler(curves[3:])
        for n, m in enumerate(mats):
            rot = Matrix(m[:3, :3].tolist()).to_euler("XYZ", previous) if previous else \
                Matrix(m[:3, :3].tolist()).to_euler("XYZ")
            values[n, 3:] = rot
            previous = Euler(rot)
        keys_at = np.asarray(frames, np.float64) + FRAME_START
        for k, fc in enumerate(curves):
            _append_keys(fc, keys_at, values[:, k])
        if not self.windows:  # the object's own transform, for frame-less display
            obj.matrix_basis = Matrix(mats[0].tolist())

    @staticmethod
    def _last_euler(rot_curves):
        from mathutils import Euler

        if not len(rot_curves[0].keyframe_points):
            return None
        return Euler([fc.keyframe_points[-1].co[1] for fc in rot_curves], "XYZ")

    def _add_points(self, win: AlignedWindow) -> int:
        import bpy

        quota = window_quota(self.options, len(win), self.frame_count(), self.points)
        m, i, j = select_points(win, quota, self.options.conf_percentile, self.options.seed)
        n = len(m)
        if n == 0:
            return 0
        local = window_points(win, m, i, j)  # run world, local to the root
        name = f"{self.info.name} w{win.index:05d}"
        mesh = bpy.data.meshes.new(name)
        mesh.vertices.add(n)
        mesh.attributes["position"].data.foreach_set("vector", local.astype(np.float32).ravel())
        rgba = np.ones((n, 4), np.float32)
        rgba[:, :3] = win.colors[m, i, j] * np.float32(1 / 255)
        mesh.color_attributes.new(COLOR, "BYTE_COLOR", "POINT").data.foreach_set("color_srgb", rgba.ravel())
        mesh.attributes.new("conf", "FLOAT", "POINT").data.foreach_set("value", win.conf[m, i, j])
        mesh.attributes.new("frame", "INT", "POINT").data.foreach_set(
            "value", win.frames[m].astype(np.int32))
        mesh.attributes.new("dynamic", "BOOLEAN", "POINT").data.foreach_set(
            "value", window_dynamic(self.info.run, win)[m, i, j])
        mesh.color_attributes.active_color_name = COLOR
        mesh.update()

        obj = bpy.data.objects.new(name, mesh)
        obj.parent = self.root
        mod = obj.modifiers.new("LASER points", "NODES")
        mod.node_group = _ensure_node_group()
        radius = self.collection.get("laser_radius") or self._point_radius(win, n)
        self.collection["laser_radius"] = radius
        mod[_socket_id(mod.node_group, "Radius")] = radius
        mod[_socket_id(mod.node_group, "Current Frame Only")] = self.options.current_frame_only
        obj.data.materials.append(_ensure_material())
        self.collection.objects.link(obj)
        return n

    def _point_radius(self, win: AlignedWindow, n: int) -> float:
        """0.8 x the spacing of the imported samples at the median depth: surfaces look closed."""
        valid = win.mask & (win.depth > 0)
        depth = float(np.median(win.depth[valid])) if valid.any() else 1.0
        pixels_per_point = valid.sum() / max(n, 1)
        return 0.8 * depth * math.sqrt(max(pixels_per_point, 1.0)) / float(win.K[0, 0])


def _matrix(m: np.ndarray):
    from mathutils import Matrix

    return Matrix(np.asarray(m, np.float64).tolist())


def _socket_id(group, name: str) -> str:
    return next(item.identifier for item in group.interface.items_tree
                if item.item_type == "SOCKET" and item.in_out == "INPUT" and item.name == name)


def _append_keys(fc, frames: np.ndarray, values: np.ndarray) -> None:
    """Append keys to an F-curve in bulk (``foreach_set``), LINEAR interpolation."""
    import bpy

    old = len(fc.keyframe_points)
    co = np.empty(2 * (old + len(frames)), np.float32)
    if old:
        fc.keyframe_points.foreach_get("co", co[: 2 * old])
    co[2 * old:] = np.stack([frames, values], axis=1).ravel()
    fc.keyframe_points.add(len(frames))
    pts = fc.keyframe_points
    pts.foreach_set("co", co)
    linear = bpy.types.Keyframe.bl_rna.properties["interpolation"].enum_items["LINEAR"].value
    pts.foreach_set("interpolation", np.full(len(pts), linear, np.int32))
    fc.update()


def import_run(scene: "bpy.types.Scene", run_dir: Path, options: SceneOptions | None = None) -> RunScene:
    """Build (or extend) the scene content of a run directory, complete or partial; the root takes
    the run's current scene transform (an ``orient`` made since the last import shows)."""
    run = RunScene.open(scene, run_dir, options)
    run.sync()
    run.apply_scene_transform()
    return run

