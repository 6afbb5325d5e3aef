"""Per-scene reconstruction settings (``scene.laser``) and how they become a job and scene options."""

from __future__ import annotations

import re
from pathlib import Path

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, IntProperty, StringProperty

from laser_blender.protocol import Job
from laser_blender.scene import SceneOptions

BACKBONES = (
    ("pi3", "π³", "pi3: permutation-equivariant visual geometry (default)"),
    ("vggt", "VGGT", "VGGT: visual geometry grounded transformer"),
    ("synthetic", "Synthetic", "ground-truth scene rendered by laser-blender demo (testing)"),
)


class LaserSettings(bpy.types.PropertyGroup):
    footage: StringProperty(
        name="Footage", subtype="FILE_PATH",
        description="Video file or image folder; empty: the active movie clip")
    runs_dir: StringProperty(
        name="Runs", subtype="DIR_PATH", default="//laser_runs/",
        description="Folder for run directories ('//' = next to the .blend)")
    backbone: EnumProperty(name="Backbone", items=BACKBONES, default="pi3")
    weights: StringProperty(
        name="Weights", subtype="FILE_PATH",
        description="Checkpoint file or Hugging Face repo id; empty: the backbone's default")
    synthetic_scene: StringProperty(
        name="Synthetic Scene", subtype="DIR_PATH",
        description="Ground-truth folder of a synthetic clip (Synthetic backbone only)")
    window: IntProperty(name="Window", default=30, min=2, soft_max=64, description="Frames per window")
    overlap: IntProperty(name="Overlap", default=10, min=1, soft_max=32,
                         description="Frames shared by consecutive windows")
    stride: IntProperty(name="Stride", default=1, min=1, soft_max=8, description="Use every N-th frame")
    layer_align: BoolProperty(name="Layer Alignment", default=True,
                              description="Layer-wise depth scale alignment after the Sim(3) registration")
    use_focal: BoolProperty(name="Known Focal Length", default=False,
                            description="Use a known lens instead of estimating it")
    focal_mm: FloatProperty(name="Focal Length", default=35.0, min=1.0, soft_max=300.0, unit="CAMERA",
                            description="Known focal length in mm")
    sensor_width: FloatProperty(name="Sensor Width", default=36.0, min=1.0, soft_max=70.0, unit="CAMERA",
                                description="Camera sensor width in mm")
    point_budget: IntProperty(name="Point Budget", default=2_000_000, min=0, soft_max=20_000_000,
                              description="Most points imported for the whole shot")
    conf_percentile: FloatProperty(name="Drop Least Confident", default=0.0, min=0.0, max=99.0,
                                   subtype="PERCENTAGE",
                                   description="Share of each window's least confident pixels left out")
    current_frame_only: BoolProperty(name="Current Frame Points Only", default=False,
                                     description="Show only the points of the current frame (moving scenes)")


def footage_path(context, settings: LaserSettings) -> str | None:
    """The footage to reconstruct: the setting, else the clip in the editor, else the scene's active clip."""
    if settings.footage:
        return bpy.path.abspath(settings.footage)
    clip = getattr(context, "edit_movieclip", None) or context.scene.active_clip
    return bpy.path.abspath(clip.filepath, library=clip.library) if clip else None


def run_dir_for(settings: LaserSettings, footage: str, fallback_root: Path) -> Path:
    """``<runs>/<footage name>``; the runs folder falls back to ``fallback_root`` for unsaved files."""
    root = settings.runs_dir
    if root.startswith("//") and not bpy.data.filepath:
        root_path = fallback_root
    else:
        root_path = Path(bpy.path.abspath(root))
    name = re.sub(r"[^\w.-]+", "_", Path(footage.rstrip("/\\")).stem) or "shot"
    return root_path / name


def make_job(settings: LaserSettings, footage: str, run_dir: Path, device: str, resume: bool) -> Job:
    """The worker job for these settings (raises pydantic.ValidationError on inconsistent values)."""
    return Job(
        input=footage, run_dir=str(run_dir), backbone=settings.backbone,
        weights=settings.weights or None,
        synthetic_scene=bpy.path.abspath(settings.synthetic_scene) if settings.synthetic_scene else None,
        window=settings.window, overlap=settings.overlap, stride=settings.stride,
        layer_align=settings.layer_align,
        focal_mm=settings.focal_mm if settings.use_focal else None,
        sensor_width_mm=settings.sensor_width if settings.use_focal else None,
        device=device, resume=resume,
    )


def scene_options(settings: LaserSettings, frame_count: int | None = None) -> SceneOptions:
    return SceneOptions(point_budget=settings.point_budget, conf_percentile=settings.conf_percentile,
                        sensor_width=settings.sensor_width, current_frame_only=settings.current_frame_only,
                        frame_count=frame_count)


CLASSES = (LaserSettings,)


def register() -> None:
    bpy.types.Scene.laser = bpy.props.PointerProperty(type=LaserSettings)


def unregister() -> None:
    del bpy.types.Scene.laser
