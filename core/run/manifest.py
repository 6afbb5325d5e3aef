"""What a run directory says about itself: ``run.json`` and ``predictions/meta.json`` as models.

Runs written before these models existed read unchanged: every field they lacked
has a default, and unknown fields (from newer versions or other tools) are ignored
on read (``run.json``) or kept (``meta.json``, which other tools write too).
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, FiniteFloat, PositiveInt, model_validator

from core.run.settings import EngineSettings


class RunStatus(str, enum.Enum):
    """Where a run stands; the one vocabulary of run.json, the worker protocol and the Blender session."""

    running = "running"
    complete = "complete"
    cancelled = "cancelled"
    failed = "failed"

    def __str__(self) -> str:
        return self.value


Size = tuple[PositiveInt, PositiveInt]


class InputGeometry(BaseModel):
    """How a footage frame becomes a network input, computed once per stream.

    The frame (``footage`` = (W, H)) is resized to ``resized`` = (W', H') and then
    cropped to ``size`` = (w, h) starting at pixel ``offset`` = (x0, y0) of the
    resized image. A prediction pixel coordinate (u, v) (pixel centres at +0.5)
    maps to footage coordinates as ``((u + x0) * W / W', (v + y0) * H / H')``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    footage: Size
    resized: Size
    size: Size
    offset: tuple[int, int] = (0, 0)

    @classmethod
    def resize_only(cls, footage: tuple[int, int], size: tuple[int, int]) -> "InputGeometry":
        """A plain resize of ``footage`` (W, H) to ``size`` (w, h), no crop."""
        return cls(footage=footage, resized=size, size=size)

    def to_footage(self) -> np.ndarray:
        """(3, 3) matrix mapping homogeneous prediction pixels to footage pixels."""
        sx = self.footage[0] / self.resized[0]
        sy = self.footage[1] / self.resized[1]
        return np.array(
            [[sx, 0.0, self.offset[0] * sx], [0.0, sy, self.offset[1] * sy], [0.0, 0.0, 1.0]]
        )

    def intrinsics_to_footage(self, K: np.ndarray) -> np.ndarray:
        """Express (3, 3) (or (N, 3, 3) per-frame) intrinsics at prediction resolution at footage resolution."""
        return self.to_footage() @ K


class SourceInfo(BaseModel):
    """What a run was made from: footage (``path`` and its facts, what a frame source reports) or
    another run's predictions.

    ``fps`` is None for image folders; ``num_frames`` counts the frames the source yields after
    start/stride/max_frames, None only when a video container does not say how long it is.
    """

    model_config = ConfigDict(extra="ignore")

    path: str | None = None
    width: PositiveInt | None = None
    height: PositiveInt | None = None
    fps: FiniteFloat | None = None
    num_frames: int | None = Field(None, ge=0)
    start: int = Field(0, ge=0, description="first source frame read")
    stride: int = Field(1, ge=1, description="every stride-th frame from start was read")
    predictions: str | None = Field(None, description="the predictions/ directory an `align` run registered")


class RunManifest(BaseModel):
    """``run.json``: what was run, with which settings, and how far it got."""

    model_config = ConfigDict(extra="ignore")

    source: SourceInfo = SourceInfo()
    settings: EngineSettings = EngineSettings()
    backbone: str = "unknown"
    geometry: InputGeometry | None = None
    status: RunStatus = RunStatus.running
    windows_done: int = Field(0, ge=0)
    frames_done: int = Field(0, ge=0)
    last_frame: int | None = None
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    job: dict[str, Any] | None = Field(None, description="the job as given, so a resume or re-run repeats it")

    @model_validator(mode="before")
    @classmethod
    def _registered_without_parallax(cls, data: Any) -> Any:
        """Runs written before layer alignment measured parallax (their settings name no
        ``parallax_gap``) were registered without it: read them so, so a resume continues them alike."""
        settings = data.get("settings") if isinstance(data, dict) else None
        if isinstance(settings, dict) and "parallax_gap" not in (settings.get("layer") or {}):
            layer = {**(settings.get("layer") or {}), "parallax_gap": 0}
            data = {**data, "settings": {**settings, "layer": layer}}
        return data


class PredictionsMeta(BaseModel):
    """``predictions/meta.json``: window layout and resolution of the raw predictions.

    Other tools write predictions directories too: only window, overlap, height and
    width are required, and fields this version does not know are kept.
    """

    model_config = ConfigDict(extra="allow")

    window: int = Field(ge=2)
    overlap: int = Field(ge=0)
    height: PositiveInt
    width: PositiveInt
    fps: FiniteFloat | None = None
    backbone: str | None = None
    geometry: InputGeometry | None = None

    @model_validator(mode="after")
    def _overlap_below_window(self) -> "PredictionsMeta":
        if self.overlap >= self.window:
            raise ValueError(f"need 0 <= overlap < window, got window={self.window} overlap={self.overlap}")
        return self

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) of the predictions."""
        return self.height, self.width


_IGNORED_SETTINGS = ("queue_size", "save_predictions")  # change neither the registered result nor its inputs
_JOB_IDENTITY = ("weights", "synthetic_scene")  # what a job adds to the backbone's identity


def resume_differences(old: RunManifest, new: RunManifest) -> list[str]:
    """What a resume of ``old`` with ``new`` would change, one phrase each ("window 30 (now 12)").

    Compared: the footage (resolved path, size, fps, frame count, start, stride), the
    backbone and its weights, and every setting that changes results. Footage and job
    facts the old run did not record (runs written by earlier versions) are not compared.
    """
    def path(value: str | None) -> str | None:
        return None if value is None else str(Path(value).expanduser().resolve())

    recorded = [("footage", path(old.source.path), path(new.source.path))]
    recorded += [(f"footage {name}", getattr(old.source, name), getattr(new.source, name))
                 for name in ("width", "height", "fps", "num_frames", "start", "stride")]
    if old.job is not None and new.job is not None:
        recorded += [(name, old.job.get(name), new.job.get(name)) for name in _JOB_IDENTITY]
    pairs = [(name, was, now) for name, was, now in recorded if was is not None]
    pairs.append(("backbone", old.backbone, new.backbone))
    old_settings, new_settings = old.settings.model_dump(), new.settings.model_dump()
    old_layer, new_layer = old_settings.pop("layer"), new_settings.pop("layer")
    # the camera solve by what it does on the footage (refine unset follows its width), not how it was asked
    old_settings["refine"] = old.settings.solves(old.source.width)
    new_settings["refine"] = new.settings.solves(new.source.width)
    pairs += [(name, value, new_settings[name]) for name, value in old_settings.items() if name not in _IGNORED_SETTINGS]
    if old.settings.layer_align or new.settings.layer_align:
        pairs += [(f"layer alignment {name}", value, new_layer[name]) for name, value in old_layer.items()]
    return [f"{name} {was} (now {now})" for name, was, now in pairs if was != now]
