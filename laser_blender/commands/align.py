"""``laser-blender align PRED_DIR -o RUN``: re-register saved predictions without a network."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from laser_blender.commands._options import add_registration_arguments
from laser_blender.console import EXIT_CANCELLED, fail, graceful_interrupt, progress_bar, user_errors

help = "re-register a predictions/ directory (window and overlap from its meta.json)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("predictions", help="a predictions/ directory (or a run directory holding one)")
    parser.add_argument("-o", "--output", required=True, help="run directory to write")
    add_registration_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from core.engine import EngineConfig, align

    pred_dir = Path(args.predictions)
    if (pred_dir / "predictions" / "meta.json").exists():
        pred_dir = pred_dir / "predictions"
    if args.focal_mm is not None:
        return fail("align takes --focal-px (footage pixels); convert mm with focal_mm / sensor_width_mm * width")
    try:
        config = EngineConfig(conf_keep=args.conf_keep, layer_align=args.layer_align, focal_px=args.focal_px)
        with graceful_interrupt() as cancel, progress_bar("align") as on_event:
            status = align(pred_dir, Path(args.output), config, on_event=on_event, cancel=cancel)
    except user_errors() as e:
        return fail(str(e))
    print(args.output)
    if status == "cancelled":
        print("laser-blender: cancelled", file=sys.stderr)
        return EXIT_CANCELLED
    return 0
