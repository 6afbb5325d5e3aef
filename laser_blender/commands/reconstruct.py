"""``laser-blender reconstruct INPUT -o RUN``: stream footage through a backbone into a run directory."""

from __future__ import annotations

import argparse
import sys

from pydantic import ValidationError

from core.run.manifest import RunStatus
from laser_blender.commands._options import add_job_arguments, job_from_args, option_error
from laser_blender.console import fail, graceful_interrupt, print_solve, progress_bar
from laser_blender.protocol import Job

help = "reconstruct a video file or image folder into a run directory"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="video file (any format OpenCV reads) or folder of images")
    parser.add_argument("-o", "--output", required=True, help="run directory to write")
    parser.add_argument("--blend", metavar="FILE", help="also build a .blend scene from the run")
    add_job_arguments(parser)


def run_job(job: Job, desc: str = "reconstruct") -> int:
    """Run a job in this process with a progress bar; returns the exit code."""
    from laser_blender.driver import run_job as drive

    with graceful_interrupt() as cancel, progress_bar(desc) as on_event:
        outcome = drive(job, on_event, cancel)
    if outcome.status == RunStatus.failed:
        kept = f" (finished windows are kept in {job.run_dir}; `--resume` continues)" if outcome.resumable else ""
        return fail(outcome.error + kept, outcome.exit_code)
    print_solve(job.run_dir)
    if outcome.status == RunStatus.cancelled:
        print(f"laser-blender: cancelled after {outcome.windows} windows ({outcome.frames} frames); they are in "
              f"{job.run_dir} (`--resume` continues)", file=sys.stderr)
    return outcome.exit_code


def run(args: argparse.Namespace) -> int:
    try:
        job = job_from_args(args, args.input, args.output)
    except ValidationError as e:
        return fail(option_error(e))
    code = run_job(job)
    if code == 0:
        print(job.run_dir)
    if code == 0 and args.blend:
        from laser_blender.blendfile import write_blend

        print(write_blend(job.run_dir, args.blend))
    return code
