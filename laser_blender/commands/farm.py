"""``laser-blender farm SHOT... -o OUT``: many shots, and long shots, across a Ray cluster."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pydantic import ValidationError

from laser_blender.commands._options import (
    BACKBONE_FIELDS,
    add_field_options,
    add_registration_arguments,
    add_stream_arguments,
    job_from_args,
    option_error,
)
from laser_blender.console import fail, graceful_interrupt
from laser_blender.outcome import ExitCode
from laser_blender.protocol import Job

help = "reconstruct many shots (videos, image folders, shot lists) on a Ray cluster"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("shots", nargs="+", metavar="SHOT",
                        help="video file, image folder, or shot list (.txt: one shot per line with optional "
                             "per-shot --name, --start, --stride, --max-frames, --focal-px, --focal-mm, "
                             "--sensor-width-mm)")
    parser.add_argument("-o", "--output", required=True, help="folder for the run directories (OUT/<shot>/), "
                                                              "on a filesystem every node sees at the same path")
    parser.add_argument("--address", help="Ray cluster to join: 'auto', HOST:PORT or ray://HOST:PORT "
                                          "(default: start Ray on this machine)")
    parser.add_argument("--blend", action="store_true", help="also build OUT/<shot>.blend for each shot run")
    parser.add_argument("--split-windows", action="store_true",
                        help="spread each shot's windows over several workers (registration runs here, in order)")
    parser.add_argument("--window-workers", type=int, metavar="N",
                        help="with --split-windows: windows predicted at once (default: the cluster's GPUs, "
                             "or CPUs for CPU backbones)")
    # Every reconstruct option but --resume: a farm run always continues what it finds.
    add_field_options(parser.add_argument_group("backbone"), Job, BACKBONE_FIELDS)
    add_field_options(parser, Job, ("overwrite", "save_predictions"))
    parser.set_defaults(resume=False)
    add_stream_arguments(parser)
    add_registration_arguments(parser)


def run(args: argparse.Namespace) -> int:
    try:
        from laser_blender.farm.run import run_farm
    except ModuleNotFoundError as e:
        if e.name != "ray":
            raise
        return fail("farm needs Ray: pip install 'laser-blender[farm]'")
    from laser_blender.farm.report import summary_table
    from laser_blender.farm.shots import collect_shots

    if args.window_workers is not None and args.window_workers < 1:
        return fail("--window-workers: must be at least 1")
    out = Path(args.output)
    try:
        base = job_from_args(args, out, out)
    except ValidationError as e:
        return fail(option_error(e))
    shots = collect_shots(args.shots)
    with graceful_interrupt() as cancel:
        report = run_farm(shots, base, out, address=args.address, split_windows=args.split_windows,
                          window_workers=args.window_workers, blend=args.blend, cancel=cancel)
    print(summary_table(report), file=sys.stderr)
    print(out / "farm.json")
    if report.failed:  # 1 when any failure is a bug (an internal error), else 2
        internal = any((s.error or "").startswith("internal error") for s in report.failed)
        return ExitCode.INTERNAL_ERROR if internal else ExitCode.USER_ERROR
    return ExitCode.CANCELLED if cancel.is_set() else ExitCode.OK
