"""Every setting of a run, with its default, bounds and description, defined once.

The job protocol (``laser_blender.protocol.Job``), the engine, the command-line
options and the Blender add-on's properties all take their fields from the models
here: a default, a limit or a help text changes in this file only.

* :class:`LayerAlignParams`: layer-wise scale alignment (``core.layer_align``);
* :class:`StreamSettings`: what a job says about streaming and registration;
* :class:`EngineSettings`: those plus what only the engine process decides;
* :data:`BACKBONES`: the networks a user can name, with their licences.

Every float is finite (inf and NaN are rejected). Imports pydantic and the standard
library only: it ships inside Blender.
"""

from __future__ import annotations

import re
import types
from typing import Annotated, Any, Callable, Literal, NamedTuple, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, FiniteFloat, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo


class BackboneInfo(NamedTuple):
    """A ``--backbone`` choice: what a user should know before picking it, and the weights behind it.

    Attributes:
        description: one line for menus and help.
        licence: licence of the released weights, in a few words.
        commercial: whether those weights may be used commercially.
        network: the network that runs ("pi3", "vggt", "da3"); None when it is no network.
        variant: the network's size preset, None when it has one size.
        repo, filename: the released weights on the Hugging Face Hub.
    """

    description: str
    licence: str
    commercial: bool
    network: str | None = None
    variant: str | None = None
    repo: str | None = None
    filename: str | None = None

    @property
    def config(self) -> dict[str, Any] | None:
        """The network configuration of the released weights (None: the network's default)."""
        return {"variant": self.variant} if self.variant else None


_NON_COMMERCIAL = "non-commercial"
BACKBONES: dict[str, BackboneInfo] = {
    "pi3": BackboneInfo("π³: permutation-equivariant visual geometry (default)", f"CC BY-NC 4.0, {_NON_COMMERCIAL}",
                        False, "pi3", None, "yyfz233/Pi3", "model.safetensors"),
    "vggt": BackboneInfo("VGGT: visual geometry grounded transformer",
                         f"VGGT-1B licence, {_NON_COMMERCIAL} (the commercial checkpoint "
                         "facebook/VGGT-1B-Commercial is gated)", False, "vggt", None, "facebook/VGGT-1B", "model.pt"),
    "da3": BackboneInfo("Depth Anything 3, the base model (alias of da3-base)", "Apache-2.0", True,
                        "da3", "base", "depth-anything/DA3-BASE", "model.safetensors"),
    "da3-small": BackboneInfo("Depth Anything 3, small model", "Apache-2.0", True,
                              "da3", "small", "depth-anything/DA3-SMALL", "model.safetensors"),
    "da3-base": BackboneInfo("Depth Anything 3, base model", "Apache-2.0", True,
                             "da3", "base", "depth-anything/DA3-BASE", "model.safetensors"),
    "synthetic": BackboneInfo("Ground-truth scene rendered by laser-blender demo", "testing only", True),
}
"""Every ``--backbone`` name; "da3" is DA3-BASE."""
BackboneName = Literal[tuple(BACKBONES)]  # type: ignore[valid-type]

_FROZEN = ConfigDict(extra="forbid", frozen=True)
Share = Annotated[FiniteFloat, Field(ge=0, le=1)]
Positive = Annotated[FiniteFloat, Field(gt=0)]
NonNegative = Annotated[FiniteFloat, Field(ge=0)]


class LayerAlignParams(BaseModel):
    """Layer-wise scale alignment settings. Depth differences are relative (log depth)."""

    model_config = _FROZEN

    stride: int = Field(4, ge=1, description=(
        "segmentation, linking and scale statistics run on every stride-th pixel (block centres); "
        "labels are carried back to full resolution by block"))
    smooth_log: Positive = Field(0.02, description=(
        "width (log depth) of the edge-preserving smoothing before segmentation: noise well below it is "
        "averaged out, steps well above it are kept"))
    edge_log: Positive = Field(0.03, description=(
        "over-segmentation: neighbouring samples connect when their log depths differ by less than this, "
        "or when their step continues the surface on both sides to within this (relative)"))
    bridge: int = Field(5, ge=1, description=(
        "over-segmentation links count only where this many (odd) parallel links hold side by side, "
        "so regions do not leak through narrow contacts"))
    merge_log: Positive = Field(0.06, description=(
        "adjacent regions merge when enough of their common boundary passes the edge test at this looser "
        "log-depth step"))
    merge_share: Share = Field(0.5, description=(
        "share of their common boundary that must pass the looser merge step for two adjacent regions to merge"))
    color_edge: NonNegative = Field(0.04, description=(
        "neighbouring samples are not linked when their chromaticity (colour without brightness) differs by "
        "more than this, so objects touching the ground, or whose predicted depth meets the surface behind "
        "them, separate from it; 0 segments by depth only"))
    crease: NonNegative = Field(0.025, description=(
        "neighbouring samples are not linked where the surface turns across them by more than this "
        "(change of the inverse-depth slope per sample, relative), so walls meeting in a corner, or a "
        "wall and the ceiling, separate although their depths meet; two regions do not merge where their "
        "common boundary turns by half this on average (the same way on every link, beyond its noise): a "
        "corner far from the image centre turns little per sample; 0 turns the test off"))
    crease_min_layer: Share = Field(0.005, description=(
        "regions smaller than this share of the frame that only the crease test separates from a "
        "neighbour join it (the faces of a small box, slivers along a corner); they join one neighbour "
        "at most, so a fragment on a corner cannot make the surfaces on both sides one layer"))
    min_layer: Share = Field(0.001, description=(
        "layers smaller than this share of the frame are ignored (they keep the window's scale)"))
    link_iou: Share = Field(0.3, description=(
        "layers of consecutive frames are linked when the IoU of their depth-consistent shared samples "
        "is at least this (or when the cover test below holds)"))
    link_cover: Share = Field(0.5, description=(
        "layers of consecutive frames are also linked when their depth-consistent shared samples cover "
        "at least this share of the smaller layer"))
    link_log: Positive = Field(0.1, description=(
        "shared samples are depth-consistent when their log depth changes by less than this from one "
        "frame to the next"))
    match_cover: Share = Field(0.2, description=(
        "on an overlap frame, a previous-window layer is matched to a new layer when it covers at least "
        "this share of the new layer"))
    min_pair_pixels: int = Field(4, ge=1, description=(
        "matched pairs sharing fewer samples with depth in both windows are dropped"))
    unconfident_weight: Share = Field(0.1, description=(
        "fitting weight of samples outside either window's confidence mask relative to confident ones, "
        "so layers the mask leaves out (a far background) still get a scale"))
    irls_iters: int = Field(5, ge=0, description="IRLS iterations of the per-pair robust scale")
    irls_c: Positive = Field(0.05, description="Cauchy width of the per-pair IRLS, in log depth")
    pair_outlier_log: Positive = Field(0.1, description=(
        "pair scales further than this (log) from the weighted median of the pairs feeding the same layer "
        "are rejected"))
    max_scale: FiniteFloat = Field(2.0, gt=1, description=(
        "a layer's scale is clamped to within this factor of the window's Sim(3) scale, either way"))
    temporal_weight: NonNegative = Field(1.0, description=(
        "weight of the scale carried from the previous frame relative to a direct overlap measurement; "
        "larger is smoother"))
    memory_gate_log: NonNegative = Field(0.05, description=(
        "a layer without an overlap match takes the keyframe memory's scale only when it differs from the "
        "propagated one by more than this (log), or when nothing was propagated to it"))
    memory_min_blocks: int = Field(12, ge=1, description=(
        "a keyframe-memory scale counts only when at least this many sample blocks agree with it"))
    history_windows: int = Field(8, ge=0, description=(
        "each layer's depth is a running mean over this many earlier windows and the current one (log depth), "
        "so per-window errors, the first window's included, average out; 0 keeps the Sim(3) depth (apart from "
        "the parallax measurement)"))
    window_weight: FiniteFloat = Field(1.0, gt=0, le=1, description=(
        "weight of a new window in that running mean relative to each earlier one: consecutive windows "
        "share frames and a network's errors drift slowly, so a new window is not an independent "
        "measurement; lower keeps the layers steadier over time, 1 is the plain mean"))
    parallax_gap: int = Field(10, ge=0, description=(
        "frames between the two cameras whose parallax measures each layer's scale inside a window (a layer "
        "with the wrong depth scale does not meet itself when seen from both); 0 turns the parallax "
        "measurement off"))
    parallax_bias: NonNegative = Field(0.04, description=(
        "least error (log depth) of a parallax measurement, which no number of samples averages out (the "
        "tracker's and the poses' biases): a layer's scale, and the camera path's, move to the parallax "
        "measurement only as far as it clearly disagrees with them beyond its error"))
    parallax_noise: Positive = Field(0.5, description=(
        "tracking noise (pixels) of one sample followed into the other camera"))
    parallax_floor: NonNegative = Field(0.2, description=(
        "image-motion error (pixels) shared by all samples of a layer in one pair of frames (the poses' "
        "errors): a layer's parallax measurement is never more precise than this over its parallax"))
    parallax_texture: NonNegative = Field(1e-4, description=(
        "least corner strength (smallest eigenvalue of the 5x5 structure tensor of the frame, as OpenCV's "
        "cornerMinEigenVal) a sample needs to be tracked for the parallax measurement"))

    @field_validator("bridge")
    @classmethod
    def _odd(cls, bridge: int) -> int:
        if bridge % 2 == 0:
            raise ValueError(f"must be an odd number, got {bridge}")
        return bridge

    @model_validator(mode="after")
    def _edge_below_merge(self) -> "LayerAlignParams":
        if self.edge_log > self.merge_log:
            raise ValueError(f"edge_log ({self.edge_log}) must not exceed merge_log ({self.merge_log})")
        return self


SOLVE_MIN_WIDTH = 512
"""Footage narrower than this (pixels) is camera-solved only when ``refine`` is on: its tracks do not beat the
network. The orientation tests' 120-frame shot predicted at 128x96, ground off Z = 0 as a share of the camera
height, registered -> solved: 2.7 % -> 22.6 % at 256x192, 15.2 % at 320x240, 7.4 % at 384x288, 1.8 % at 512x384
(benchmarks/solve_footage_size.py)."""


class StreamSettings(BaseModel):
    """Streaming and registration settings: the part of the engine's settings a job carries."""

    model_config = _FROZEN

    window: int = Field(30, ge=2, description="frames per window")
    overlap: int = Field(10, ge=1, description="frames shared by consecutive windows")
    conf_keep: FiniteFloat = Field(0.5, gt=0, le=1, description="share of most confident pixels kept per frame")
    layer_align: bool = Field(True, description="run layer-wise scale alignment after the Sim(3) registration")
    refine: bool | None = Field(None, description=(
        "refine the cameras against the footage (feature tracks at full resolution, bundle adjustment; "
        f"the solve error goes to solve.json). Default (unset): on when there is footage at least {SOLVE_MIN_WIDTH} "
        "px wide (on smaller footage the tracks do not beat the network's cameras, see the README); "
        "`align` needs --footage for it"))
    refine_distortion: bool = Field(False, description=(
        "with the camera solve (which it turns on): also solve the lens's radial distortion (k1, k2 of "
        "Blender's polynomial model) over the first frames, for footage shot through a real lens (solve.json, "
        "the COLMAP export)"))
    focal_px: FiniteFloat | None = Field(None, gt=0, description=(
        "known focal length in footage pixels (overrides the estimate)"))
    zoom: bool = Field(False, description=(
        "the lens zooms: estimate a focal length per frame (the network's per-frame intrinsics, or each "
        "frame's points), smoothed over time, keyed on the Blender camera's lens; a fixed lens otherwise"))
    save_predictions: bool = Field(True, description=(
        "keep the raw backbone output in RUN/predictions/ (about 7.5 MB per frame at 518x392); "
        "without it the run cannot be re-registered with `align`"))
    layer: LayerAlignParams = Field(LayerAlignParams(), description="layer-wise scale alignment parameters")

    def solves(self, footage_width: int | None) -> bool:
        """Whether the camera solve runs on footage ``footage_width`` pixels wide (None: no footage): ``refine``
        on, or unset with footage at least ``SOLVE_MIN_WIDTH`` wide or the distortion asked for."""
        if footage_width is None or self.refine is False:
            return False
        return bool(self.refine or self.refine_distortion or footage_width >= SOLVE_MIN_WIDTH)

    def why_no_solve(self, footage: tuple[int, int] | None) -> str | None:
        """Why the camera solve does not run on ``footage`` (W, H) when it was left to the default; None otherwise."""
        if self.refine is not None or footage is None or self.solves(footage[0]):
            return None
        return (f"no camera solve: the footage ({footage[0]}x{footage[1]}) is under {SOLVE_MIN_WIDTH} px wide, too "
                "small for its tracks to beat the network's cameras (--refine solves it anyway)")

    @model_validator(mode="after")
    def _overlap_below_window(self) -> "StreamSettings":
        if self.overlap >= self.window:
            raise ValueError(f"overlap ({self.overlap}) must be smaller than window ({self.window})")
        if self.zoom and self.focal_px is not None:
            raise ValueError("zoom estimates a focal length per frame: it cannot take a known fixed focal_px")
        if self.refine_distortion and self.refine is False:
            raise ValueError("refine_distortion is part of the camera solve: it cannot be used with refine off")
        if self.refine_distortion and self.zoom:
            raise ValueError("refine_distortion solves one fixed lens: it cannot be used with zoom")
        return self


class EngineSettings(StreamSettings):
    """Everything the streaming engine is configured with."""

    queue_size: int = Field(2, ge=1, description="predicted windows allowed to wait for registration")

    @property
    def step(self) -> int:
        """Frames each window adds after the first."""
        return self.window - self.overlap


# --------------------------------------------------------------------------- field introspection

def field_type(field: FieldInfo) -> Any:
    """The type a field holds, without ``| None`` and ``Annotated`` metadata (a Literal stays a Literal)."""
    kind = field.annotation
    if get_origin(kind) in (Union, types.UnionType):
        kind = next(a for a in get_args(kind) if a is not type(None))
    while get_origin(kind) is Annotated:
        kind = get_args(kind)[0]
    return kind


def field_bounds(field: FieldInfo) -> dict[str, Any]:
    """The field's bounds as ``{"ge"|"gt"|"le"|"lt": value}``."""
    bounds: dict[str, Any] = {}
    for constraint in field.metadata:
        for key in ("ge", "gt", "le", "lt"):
            value = getattr(constraint, key, None)
            if value is not None:
                bounds[key] = value
    return bounds


# --------------------------------------------------------------------------- readable validation errors

_ERROR_TEXT = {
    "greater_than_equal": "must be at least {ge}",
    "greater_than": "must be greater than {gt}",
    "less_than_equal": "must be at most {le}",
    "less_than": "must be less than {lt}",
    "finite_number": "must be a finite number",
    "literal_error": "must be {expected}",
    "missing": "is required",
    "extra_forbidden": "is not a setting",
}
Loc = tuple[Union[int, str], ...]
_WORD = re.compile(r"(?<![\w'-])[a-z][a-z0-9_]*(?![\w'-])")  # a word that may be a field name


def _field_name(loc: Loc, word: str, name_of: Callable[[Loc], str | None]) -> str:
    """``word`` as ``name_of`` names it when it is a setting of the model at ``loc`` (a check on
    several fields) or next to the field at ``loc`` (a check on one field); else ``word``."""
    return name_of(loc + (word,)) or (loc and name_of(loc[:-1] + (word,))) or word


def describe_errors(error: ValidationError, name_of: Callable[[Loc], str | None]) -> list[str]:
    """One line per problem in ``error``, every setting named as ``name_of`` spells it.

    ``name_of`` maps a location (``("overlap",)``, ``("layer", "max_scale")``) to the
    name the user knows (a flag such as ``--lsa-max-scale``, a property label), or None
    for locations without one. Each line is ``"NAME: what is wrong"``; our own checks
    that involve several settings name them in the text (``"overlap (10) must be
    smaller than window (10)"``), where field names become ``name_of``'s names too.
    """
    lines = []
    for err in error.errors():
        loc, ctx = tuple(err["loc"]), err.get("ctx", {})
        if err["type"] == "value_error":
            text = _WORD.sub(lambda m: _field_name(loc, m[0], name_of), str(ctx["error"]))
        else:
            template = _ERROR_TEXT.get(err["type"])
            text = template.format(**ctx) if template else err["msg"]
        name = name_of(loc) if loc else None
        lines.append(f"{name}: {text}" if name else text)
    return lines
