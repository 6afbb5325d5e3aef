"""``laser-blender blend RUN -o shot.blend``: a .blend scene from a run directory (complete or partial)."""

from __future__ import annotations

import argparse

from laser_blender.console import fail, user_errors

help = "build a .blend (animated camera, footage, point cloud) from a run directory"


def add_scene_arguments(parser: argparse.ArgumentParser) -> None:
    """Scene-building options shared with the headless batch entry."""
    from laser_blender.scene import SceneOptions

    d = SceneOptions()
    g = parser.add_argument_group("scene")
    g.add_argument("--point-budget", type=int, default=d.point_budget,
                   help=f"most points imported for the whole shot (default {d.point_budget:,})")
    g.add_argument("--conf-percentile", type=float, default=d.conf_percentile, metavar="P",
                   help="drop the P%% least confident pixels of each window (default 0)")
    g.add_argument("--sensor-width", type=float, default=d.sensor_width, metavar="MM",
                   help=f"camera sensor width in mm; the lens follows from it (default {d.sensor_width:g})")
    g.add_argument("--current-frame-only", action="store_true",
                   help="show only the current frame's points (dynamic scenes)")


def scene_options(args: argparse.Namespace):
    from laser_blender.scene import SceneOptions

    return SceneOptions(point_budget=args.point_budget, conf_percentile=args.conf_percentile,
                        sensor_width=args.sensor_width, current_frame_only=args.current_frame_only)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run directory (written by reconstruct; may still be growing)")
    parser.add_argument("-o", "--output", required=True, help=".blend file to write")
    add_scene_arguments(parser)


def run(args: argparse.Namespace) -> int:
    if args.point_budget < 0 or not 0 <= args.conf_percentile < 100 or args.sensor_width <= 0:
        return fail("need --point-budget >= 0, 0 <= --conf-percentile < 100 and --sensor-width > 0")
    try:
        from laser_blender.blendfile import write_blend

        path = write_blend(args.run, args.output, scene_options(args))
    except user_errors() as e:
        return fail(str(e))
    print(path)
    return 0
