"""The shots of a farm run: video files, image folders, or shot list files naming them.

A shot list is a text file (``.txt``) with one shot per line: its path (relative to the
list's folder, or absolute) and optionally per-shot options::

    # comment lines and blank lines are ignored
    plates/sh010.mov
    plates/sh020 --focal-px 1450 --start 12 --max-frames 300
    /mnt/shots/sh030.mp4 --name sh030_v2 --stride 2

Per-shot options override the command's; ``--name`` sets the shot's run directory name
(default: the file name without its extension, or the folder name).
"""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, FiniteFloat, ValidationError

from core.errors import UserError
from core.run.settings import describe_errors
from laser_blender.commands._options import add_field_options, option_flag
from laser_blender.protocol import Job

SHOT_LIST_SUFFIX = ".txt"
SHOT_FIELDS = ("start", "stride", "max_frames", "focal_px", "focal_mm", "sensor_width_mm")
"""Job fields a shot list line may set for its shot."""
_FOCAL_FIELDS = ("focal_px", "focal_mm", "sensor_width_mm")
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"


class ShotListError(UserError):
    """A shot list line or a shot name that cannot be used."""


class Shot(BaseModel):
    """One shot: its footage, its name (the run directory ``OUT/<name>``) and its own options."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME_PATTERN, description="run directory name under OUT")
    input: str = Field(min_length=1, description="absolute path of a video file or image folder")
    start: int | None = Field(None, ge=0)
    stride: int | None = Field(None, ge=1)
    max_frames: int | None = Field(None, ge=1)
    focal_px: FiniteFloat | None = Field(None, gt=0)
    focal_mm: FiniteFloat | None = Field(None, gt=0)
    sensor_width_mm: FiniteFloat | None = Field(None, gt=0)

    def job(self, base: Job, out: Path) -> Job:
        """``base`` (the command's options) on this shot's footage into ``out/<name>``, with its own options.

        A focal length given for the shot replaces the command's (in pixels or mm).

        Raises:
            pydantic.ValidationError: the combination is invalid (e.g. focal_mm without a sensor width).
        """
        own = {name: value for name in SHOT_FIELDS if (value := getattr(self, name)) is not None}
        values = base.model_dump()
        if own.keys() & {"focal_px", "focal_mm"}:
            values.update(dict.fromkeys(("focal_px", "focal_mm"), None))
        values.update(own, input=self.input, run_dir=str((out / self.name).absolute()))
        return Job(**values)


def default_name(path: Path) -> str:
    """A shot's name from its footage: the file name without extension, or the folder name."""
    name = path.name if path.is_dir() else path.stem
    return re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip("._-") or "shot"


def _line_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shot list line", add_help=False, exit_on_error=False)
    parser.add_argument("path")
    parser.add_argument("--name")
    add_field_options(parser, Job, SHOT_FIELDS)
    return parser


def _shot_from_line(line: str, folder: Path, where: str) -> Shot:
    try:
        args = _line_parser().parse_args(shlex.split(line))
    except (argparse.ArgumentError, ValueError) as e:
        raise ShotListError(f"{where}: {e}") from None
    except SystemExit:  # argparse reports unknown arguments by exiting, even with exit_on_error=False
        raise ShotListError(f"{where}: cannot read {line!r}; per-shot options are --name and "
                            + ", ".join(option_flag(n, Job.model_fields[n]) for n in SHOT_FIELDS)) from None
    path = Path(args.path).expanduser()
    path = path if path.is_absolute() else folder / path
    own = {name: getattr(args, name) for name in SHOT_FIELDS
           if getattr(args, name) != Job.model_fields[name].default}
    try:
        return Shot(name=args.name or default_name(path), input=str(path.absolute()), **own)
    except ValidationError as e:
        raise ShotListError(f"{where}: " + "; ".join(describe_errors(e, lambda loc: "--" + "-".join(
            str(part).replace("_", "-") for part in loc)))) from None


def read_shot_list(path: Path) -> list[Shot]:
    """The shots a shot list file names (see the module docstring)."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ShotListError(f"{path}: cannot read the shot list: {e}") from None
    return [_shot_from_line(line, path.parent, f"{path}:{number}")
            for number, line in enumerate(text.splitlines(), 1)
            if line.strip() and not line.lstrip().startswith("#")]


def collect_shots(paths: list[str]) -> list[Shot]:
    """The shots of the command line: each path a video, an image folder or a shot list (``.txt``).

    Raises:
        ShotListError: a bad shot list line, or two shots with the same name.
    """
    shots: list[Shot] = []
    for given in paths:
        path = Path(given).expanduser()
        if path.suffix.lower() == SHOT_LIST_SUFFIX and path.is_file():
            shots += read_shot_list(path)
        else:
            shots.append(Shot(name=default_name(path), input=str(path.absolute())))
    seen: dict[str, Shot] = {}
    for shot in shots:
        if shot.name in seen:
            raise ShotListError(f"two shots are named {shot.name!r} ({seen[shot.name].input} and {shot.input}); "
                                "rename one, or give it --name in a shot list")
        seen[shot.name] = shot
    return shots
