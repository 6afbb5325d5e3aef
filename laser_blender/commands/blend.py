"""``laser-blender blend RUN -o shot.blend``: a .blend scene from a run directory (complete or partial)."""

from __future__ import annotations

import argparse

from laser_blender.blendfile import add_scene_arguments, scene_options, write_blend
from laser_blender.console import fail

help = "build a .blend (animated camera, footage, point cloud) from a run directory"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run directory (written by reconstruct; may still be growing)")
    parser.add_argument("-o", "--output", required=True, help=".blend file to write")
    add_scene_arguments(parser)


def run(args: argparse.Namespace) -> int:
    if args.point_budget < 0 or not 0 <= args.conf_percentile < 100 or args.sensor_width <= 0:
        return fail("need --point-budget >= 0, 0 <= --conf-percentile < 100 and --sensor-width > 0")
    print(write_blend(args.run, args.output, scene_options(args)))
    return 0
