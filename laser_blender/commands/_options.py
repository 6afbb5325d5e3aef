"""Command-line options made from the settings' pydantic fields, and their errors named by flag.

Every option's flag, type, default and help come from one field of
:class:`~laser_blender.protocol.Job` or :class:`~core.run.settings.LayerAlignParams`:
``conf_keep`` becomes ``--conf-keep``, the layer-alignment parameter ``max_scale``
``--lsa-max-scale``, a switch that is on by default ``--no-layer-align``. The parsed
values are validated once, by the model they came from.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Iterable, Literal, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from core.run.settings import EngineSettings, LayerAlignParams, describe_errors, field_type
from laser_blender.protocol import Job

LAYER_PREFIX = "lsa-"
BACKBONE_FIELDS = ("backbone", "weights", "synthetic_scene", "device", "dtype")
STREAM_FIELDS = ("window", "overlap", "stride", "start", "max_frames")
REGISTRATION_FIELDS = ("conf_keep", "layer_align", "refine", "refine_distortion", "focal_px", "focal_mm",
                       "sensor_width_mm", "zoom")
RUN_FIELDS = ("resume", "overwrite", "save_predictions")
JOB_FIELDS = BACKBONE_FIELDS + RUN_FIELDS + STREAM_FIELDS + REGISTRATION_FIELDS
_FLAGS = {"save_predictions": "--no-predictions"}  # flags older than this naming rule


def option_flag(name: str, field: FieldInfo, prefix: str = "") -> str:
    """The flag of a field: ``--conf-keep``, ``--lsa-max-scale``, ``--no-layer-align`` for a switch on by default
    (a switch left unset by default, like ``refine``, has both: ``--refine`` and ``--no-refine``)."""
    if name in _FLAGS and not prefix:
        return _FLAGS[name]
    negate = "no-" if field.default is True else ""
    return "--" + negate + prefix + name.replace("_", "-")


def _dest(name: str, prefix: str = "") -> str:
    """Where the option of a field leaves its value: ``args.conf_keep``, ``args.lsa_max_scale``."""
    return (prefix + name).replace("-", "_")


def _argument(field: FieldInfo) -> dict[str, Any]:
    """``add_argument`` keywords for a field: type or choices, default, help with the default."""
    kind, help_text = field_type(field), field.description or ""
    if kind is bool and field.default is None:
        return {"action": argparse.BooleanOptionalAction, "default": None, "help": help_text}
    if kind is bool:
        return {"action": "store_false" if field.default else "store_true", "default": field.default,
                "help": f"do not {help_text}" if field.default else help_text}
    if field.default is not None:
        help_text += f" (default {field.default})"
    if get_origin(kind) is Literal:
        return {"choices": get_args(kind), "default": field.default, "help": help_text}
    return {"type": kind, "default": field.default, "help": help_text,
            "metavar": {int: "N", float: "X"}.get(kind, None)}


def add_field_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup, model: type[BaseModel],
                      names: Iterable[str], prefix: str = "") -> None:
    """One option per field of ``model`` in ``names`` (flag :func:`option_flag`, value in ``args.<_dest>``)."""
    for name in names:
        field = model.model_fields[name]
        parser.add_argument(option_flag(name, field, prefix), dest=_dest(name, prefix), **_argument(field))


def add_stream_arguments(parser: argparse.ArgumentParser) -> None:
    """Which frames are read and how they are grouped into windows."""
    add_field_options(parser.add_argument_group("streaming"), Job, STREAM_FIELDS)


def add_registration_arguments(parser: argparse.ArgumentParser) -> None:
    """Registration and layer-alignment options (see docs/lsa.md for the ``--lsa-*`` parameters)."""
    add_field_options(parser.add_argument_group("registration"), Job, REGISTRATION_FIELDS)
    group = parser.add_argument_group("layer alignment", "parameters of layer-wise scale alignment "
                                                         "(docs/lsa.md)")
    add_field_options(group, LayerAlignParams, LayerAlignParams.model_fields, LAYER_PREFIX)


def add_job_arguments(parser: argparse.ArgumentParser) -> None:
    """Every option of a job but its input and run directory."""
    add_field_options(parser.add_argument_group("backbone"), Job, BACKBONE_FIELDS)
    add_field_options(parser, Job, RUN_FIELDS)
    add_stream_arguments(parser)
    add_registration_arguments(parser)


def _layer_from_args(args: argparse.Namespace) -> dict[str, Any]:
    return {name: getattr(args, _dest(name, LAYER_PREFIX)) for name in LayerAlignParams.model_fields}


def _from_args(args: argparse.Namespace, model: type[BaseModel], names: Iterable[str]) -> dict[str, Any]:
    return {name: getattr(args, name) for name in names if name in model.model_fields}


def job_from_args(args: argparse.Namespace, footage: str | Path, run_dir: str | Path) -> Job:
    """The job the options added by :func:`add_job_arguments` ask for, on ``footage`` into ``run_dir``.

    Paths are made absolute (the worker may run elsewhere).

    Raises:
        pydantic.ValidationError: for bad or contradictory values (see :func:`option_error`).
    """
    values = _from_args(args, Job, JOB_FIELDS)
    if args.synthetic_scene:
        values["synthetic_scene"] = str(Path(args.synthetic_scene).absolute())
    return Job(**values, input=str(Path(footage).absolute()), run_dir=str(Path(run_dir).absolute()),
               layer=_layer_from_args(args))


def settings_from_args(args: argparse.Namespace) -> EngineSettings:
    """The engine settings the options added by :func:`add_registration_arguments` ask for.

    Window and overlap keep their defaults (``align`` takes them from the predictions).

    Raises:
        pydantic.ValidationError: for bad values (see :func:`option_error`).
    """
    return EngineSettings(**_from_args(args, EngineSettings, REGISTRATION_FIELDS), layer=_layer_from_args(args))


def _flag_at(loc: tuple) -> str | None:
    """The flag of the option behind a validation error's location, or None."""
    if len(loc) == 1 and loc[0] in JOB_FIELDS:
        return option_flag(loc[0], Job.model_fields[loc[0]])
    if len(loc) == 2 and loc[0] == "layer" and loc[1] in LayerAlignParams.model_fields:
        return option_flag(loc[1], LayerAlignParams.model_fields[loc[1]], LAYER_PREFIX)
    return None


def option_error(error: ValidationError) -> str:
    """``error`` in the options' terms: ``--window: must be at least 2``, one problem per line."""
    return "\n".join(describe_errors(error, _flag_at))
