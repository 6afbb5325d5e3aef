"""Per-scene reconstruction settings (``scene.laser``) and how they become a job and scene options.

The properties that mirror job settings take their default, limits and tooltip from the
pydantic fields (``core.run.settings``, ``laser_blender.protocol.Job``) through
:func:`field_property`; only labels and slider ranges are the add-on's own.
"""

from __future__ import annotations

import re
from pathlib import Path

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, IntProperty, StringProperty
from pydantic import BaseModel, ValidationError

from core.run.settings import BACKBONES, LayerAlignParams, describe_errors, field_bounds, field_type
from laser_blender.protocol import Job
from laser_blender.scene import SceneOptions

BACKBONE_ITEMS = tuple((name, name, f"{info.description}. Licence: {info.licence}")
                       for name, info in BACKBONES.items())
# The layer-alignment parameters the panel shows, as properties ``lsa_<name>``.
LAYER_PROPERTIES = ("max_scale", "min_layer", "pair_outlier_log", "temporal_weight")
_PROPERTY = {bool: BoolProperty, int: IntProperty, float: FloatProperty}


def _single(value: float) -> float:
    """A float property's value as the user sees it: Blender stores single precision (0.002 reads 0.0020000001)."""
    return float(f"{value:.7g}")


def _limits(bounds: dict[str, float], kind: type) -> dict[str, float]:
    """Blender's (inclusive) min/max for pydantic bounds; an exclusive bound moves one step inside."""
    step = 1 if kind is int else 1e-6
    limits = {}
    if "ge" in bounds or "gt" in bounds:
        limits["min"] = bounds["ge"] if "ge" in bounds else bounds["gt"] + step
    if "le" in bounds or "lt" in bounds:
        limits["max"] = bounds["le"] if "le" in bounds else bounds["lt"] - step
    return limits


def field_property(model: type[BaseModel], field_name: str, **overrides):
    """A bool, int or float property mirroring one pydantic field: its default, limits and description.

    ``overrides`` (a label, soft limits, a default where the field's is None, display
    options) are passed on to the property as given.
    """
    field = model.model_fields[field_name]
    kind = field_type(field)
    text = field.description or ""
    keywords = {"name": field_name.replace("_", " ").title(), "description": text[:1].upper() + text[1:],
                **({} if field.default is None else {"default": field.default}),
                **({} if kind is bool else _limits(field_bounds(field), kind)), **overrides}
    return _PROPERTY[kind](**keywords)


class LaserSettings(bpy.types.PropertyGroup):
    footage: StringProperty(
        name="Footage", subtype="FILE_PATH",
        description="Video file or image folder; empty: the active movie clip")
    runs_dir: StringProperty(
        name="Runs", subtype="DIR_PATH", default="//laser_runs/",
        description="Folder for run directories ('//' = next to the .blend)")
    backbone: EnumProperty(name="Backbone", items=BACKBONE_ITEMS, default=Job.model_fields["backbone"].default,
                           description="The reconstruction network (each one's tooltip names its weights' licence)")
    weights: StringProperty(
        name="Weights", subtype="FILE_PATH",
        description="Checkpoint file or Hugging Face repo id; empty: the backbone's default")
    synthetic_scene: StringProperty(
        name="Synthetic Scene", subtype="DIR_PATH",
        description="Ground-truth folder of a synthetic clip (Synthetic backbone only)")
    window: field_property(Job, "window", soft_max=64)
    overlap: field_property(Job, "overlap", soft_max=32)
    stride: field_property(Job, "stride", soft_max=8)
    layer_align: field_property(Job, "layer_align", name="Layer Alignment")
    lsa_max_scale: field_property(LayerAlignParams, "max_scale", name="Max Layer Scale", soft_max=4.0)
    lsa_min_layer: field_property(LayerAlignParams, "min_layer", name="Min Layer Size", soft_max=0.05,
                                  precision=4, step=0.01)
    lsa_pair_outlier_log: field_property(LayerAlignParams, "pair_outlier_log", name="Outlier Threshold",
                                         soft_max=1.0)
    lsa_temporal_weight: field_property(LayerAlignParams, "temporal_weight", name="Temporal Smoothing",
                                        soft_max=10.0)
    zoom: field_property(Job, "zoom", name="Zoom Lens")
    refine: field_property(Job, "refine", name="Camera Solve", default=True)  # on: the engine's rule (unset)
    refine_distortion: field_property(Job, "refine_distortion", name="Solve Lens Distortion")
    use_focal: BoolProperty(name="Known Focal Length", default=False,
                            description="Use a known lens instead of estimating it")
    focal_mm: field_property(Job, "focal_mm", name="Focal Length", default=35.0, soft_min=1.0, soft_max=300.0,
                             unit="CAMERA")
    sensor_width: field_property(Job, "sensor_width_mm", name="Sensor Width", default=36.0, soft_min=1.0,
                                 soft_max=70.0, unit="CAMERA")
    point_budget: IntProperty(name="Point Budget", default=2_000_000, min=0, soft_max=20_000_000,
                              description="Most points imported for the whole shot")
    conf_percentile: FloatProperty(name="Drop Least Confident", default=0.0, min=0.0, max=99.0,
                                   subtype="PERCENTAGE",
                                   description="Share of each window's least confident pixels left out")
    current_frame_only: BoolProperty(name="Current Frame Points Only", default=False,
                                     description="Show only the points of the current frame (moving scenes)")
    overwrite: field_property(Job, "overwrite", name="Overwrite Earlier Run")
    scale_distance: FloatProperty(name="Distance", default=1.0, min=1e-6, soft_max=100.0, unit="LENGTH",
                                  description="Metres between the two selected points (Set Scale)")
    camera_height: FloatProperty(name="Camera Height", default=1.6, min=1e-6, soft_max=100.0, unit="LENGTH",
                                 description="The cameras' median height above the floor in metres")


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
        layer={name: _single(getattr(settings, f"lsa_{name}")) for name in LAYER_PROPERTIES},
        zoom=settings.zoom, refine=None if settings.refine else False,
        refine_distortion=settings.refine and settings.refine_distortion and not settings.zoom,
        focal_mm=_single(settings.focal_mm) if settings.use_focal and not settings.zoom else None,
        sensor_width_mm=_single(settings.sensor_width) if settings.use_focal and not settings.zoom else None,
        device=device, resume=resume, overwrite=settings.overwrite and not resume,
    )


def _label(loc: tuple) -> str | None:
    """The label of the property behind a job field (``("layer", "max_scale")`` -> ``"Max Layer Scale"``)."""
    if len(loc) == 2 and loc[0] == "layer":
        prop = f"lsa_{loc[1]}"
    elif len(loc) == 1:
        prop = {"sensor_width_mm": "sensor_width"}.get(loc[0], loc[0])
    else:
        return None
    rna = LaserSettings.bl_rna.properties.get(prop)
    return f'"{rna.name}"' if rna else None


def job_error(error: ValidationError) -> str:
    """What is wrong with the settings :func:`make_job` was given, naming each property by its label."""
    return "; ".join(describe_errors(error, _label))


def scene_options(settings: LaserSettings, frame_count: int | None = None) -> SceneOptions:
    return SceneOptions(point_budget=settings.point_budget, conf_percentile=settings.conf_percentile,
                        sensor_width=settings.sensor_width, current_frame_only=settings.current_frame_only,
                        frame_count=frame_count)


CLASSES = (LaserSettings,)


def register() -> None:
    bpy.types.Scene.laser = bpy.props.PointerProperty(type=LaserSettings)


def unregister() -> None:
    del bpy.types.Scene.laser
