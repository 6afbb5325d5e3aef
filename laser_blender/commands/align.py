"""``laser-blender align PRED_DIR -o RUN``: re-register saved predictions without a network."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pydantic import ValidationError

from core.run.manifest import RunStatus
from core.run.rundir import RunDir
from laser_blender.commands._options import (
    add_field_options,
    add_registration_arguments,
    option_error,
    settings_from_args,
)
from laser_blender.console import fail, graceful_interrupt, print_solve, progress_bar
from laser_blender.driver import orient_completed_run
from laser_blender.orient import describe
from laser_blender.outcome import ExitCode
from laser_blender.protocol import Job

help = "re-register a predictions/ directory (window and overlap from its meta.json)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("predictions", help="a predictions/ directory (or a run directory holding one)")
    parser.add_argument("-o", "--output", required=True, help="run directory to write")
    parser.add_argument("--footage", metavar="PATH", help=(
        "the video or image folder the predictions were made from (their frames index its frames): "
        "the run is at its resolution, and the camera solve runs on it (--no-refine skips it)"))
    add_field_options(parser, Job, ("overwrite",))
    add_registration_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from core.engine import align
    from core.frames import open_source

    try:
        config = settings_from_args(args)
    except ValidationError as e:
        return fail(option_error(e))
    pred_dir = Path(args.predictions)
    if RunDir(pred_dir).predictions.meta_path.exists():
        pred_dir = RunDir(pred_dir).predictions.path
    if args.focal_mm is not None:
        return fail("align takes --focal-px (footage pixels); convert mm with focal_mm / sensor_width_mm * width")
    footage = open_source(args.footage) if args.footage else None
    with graceful_interrupt() as cancel, progress_bar("align") as on_event:
        status = align(pred_dir, Path(args.output), config, footage=footage, on_event=on_event, cancel=cancel,
                       overwrite=args.overwrite)
    if status == RunStatus.complete:
        orient_completed_run(RunDir(args.output))
        print(f"laser-blender: {describe(RunDir(args.output).scene_transform())}", file=sys.stderr)
    print_solve(args.output)
    print(args.output)
    if status == RunStatus.cancelled:
        print("laser-blender: cancelled", file=sys.stderr)
        return ExitCode.CANCELLED
    return ExitCode.OK
