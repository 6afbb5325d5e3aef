"""``laser-blender export RUN -o cloud.ply``: the run's coloured point cloud for other tools."""

from __future__ import annotations

import argparse
import sys

from laser_blender.console import fail

help = "export a run's coloured point cloud (.ply, .glb or .xyz; cameras are in RUN/trajectory.tum)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run directory (complete or still growing)")
    parser.add_argument("-o", "--output", required=True, help="output file: .ply, .glb or .xyz")
    parser.add_argument("--max-points", type=int, default=2_000_000, help="point budget (default 2,000,000)")
    parser.add_argument("--drop-least-confident", type=float, default=0.0, metavar="PERCENT",
                        help="leave out this percentage of each window's least confident pixels")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random subsampling")


def run(args: argparse.Namespace) -> int:
    from laser_blender.export import export_point_cloud

    if not 0 <= args.drop_least_confident < 100:
        return fail(f"--drop-least-confident must be in [0, 100), got {args.drop_least_confident}")
    summary = export_point_cloud(args.run, args.output, args.max_points, args.drop_least_confident, args.seed)
    print(f"laser-blender: {summary.points:,} points from {summary.frames} frames "
          f"({summary.windows} windows)", file=sys.stderr)
    print(summary.path)
    return 0
