"""``laser-blender export RUN -o PATH [--format F]``: the run's cameras and points for other pipelines."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from laser_blender.console import fail
from laser_blender.exporters import FORMATS

help = ("export a run for other tools: COLMAP, nerfstudio, Nuke .chan, FBX, Alembic, USD, TUM, "
        "or a point cloud (.ply, .glb, .xyz)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run directory (complete or still growing)")
    parser.add_argument("-o", "--output", required=True,
                        help="output file, or folder for COLMAP; the format follows the suffix: "
                             + ", ".join(f"{s} ({f.name})" for f in FORMATS.values() for s in f.suffixes)
                             + ", no suffix (colmap)")
    parser.add_argument("--format", choices=list(FORMATS), help="the format, when the suffix does not say it")
    parser.add_argument("--text", action="store_true", help="COLMAP: text files (.txt) instead of binary (.bin)")
    parser.add_argument("--images", nargs="?", const="", metavar="DIR",
                        help="also write the footage frames as images (COLMAP, nerfstudio) into DIR (default: "
                             "images/ beside the output; for a COLMAP model in .../sparse/N, .../images)")
    parser.add_argument("--max-points", type=int, default=None,
                        help="point budget (default 2,000,000 for clouds, 200,000 otherwise)")
    parser.add_argument("--drop-least-confident", type=float, default=0.0, metavar="PERCENT",
                        help="leave out this percentage of each window's least confident pixels")
    parser.add_argument("--sensor-width", type=float, default=36.0, metavar="MM",
                        help="camera sensor width in mm for FBX, Alembic, USD (default 36)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random subsampling")


def run(args: argparse.Namespace) -> int:
    from laser_blender.exporters import ExportOptions, format_for

    if not 0 <= args.drop_least_confident < 100:
        return fail(f"--drop-least-confident must be in [0, 100), got {args.drop_least_confident}")
    fmt = format_for(args.output, args.format)
    output = Path(args.output).absolute()
    images = None
    if args.images is not None:
        if fmt.name not in ("colmap", "nerfstudio"):
            return fail(f"--images applies to COLMAP and nerfstudio exports, not {fmt.name}")
        beside = output.parent.parent if fmt.name == "colmap" and output.parent.name == "sparse" else output.parent
        images = Path(args.images).absolute() if args.images else beside / "images"
    options = ExportOptions(max_points=args.max_points, conf_percentile=args.drop_least_confident, seed=args.seed,
                            text=args.text, images=images, sensor_width=args.sensor_width)
    summary = fmt.export(args.run, output, options)
    note = ""
    if images is not None:
        from laser_blender.exporters.images import write_frames
        from laser_blender.exporters.shot import read_shot

        note = f", {len(write_frames(args.run, read_shot(args.run), images))} images in {images}"
    points = f"{summary.points:,} points from " if summary.points else ""
    print(f"laser-blender: {fmt.name}: {points}{summary.frames} frames{note}", file=sys.stderr)
    print(summary.path)
    return 0
