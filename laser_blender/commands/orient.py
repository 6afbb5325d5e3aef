"""``laser-blender orient RUN [--floor auto|P:N] [--origin P] [--x-axis P] [--scale-distance P:Q=M]
[--camera-height H] [--reset]``: set the scene's floor, origin, axes and scale (``RUN/scene.json``).

Every point is in the scene world as it is *before* this command (the coordinates
Blender shows for the imported run, the ones every export writes). Edits apply in the
order reset, floor, origin, X axis, scale. Without an option: print the current setting.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

help = "set the scene's floor, origin, X axis and scale in metres (RUN/scene.json), or show them"


def _triple(text: str) -> np.ndarray:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 3 or not np.isfinite(values).all():
        raise argparse.ArgumentTypeError(f"expected three numbers x,y,z, got {text!r}")
    return np.array(values)


def _floor(text: str):
    if text == "auto":
        return text
    point, sep, normal = text.partition(":")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected 'auto' or x,y,z:nx,ny,nz (a point and the up normal), got {text!r}")
    n = _triple(normal)
    if not np.linalg.norm(n) > 0:
        raise argparse.ArgumentTypeError(f"the floor normal must not be zero, got {normal!r}")
    return _triple(point), n / np.linalg.norm(n)


def _distance(text: str) -> tuple[np.ndarray, np.ndarray, float]:
    points, sep, metres = text.partition("=")
    a, sep2, b = points.partition(":")
    try:
        value = float(metres)
    except ValueError:
        value = float("nan")
    if not (sep and sep2) or not value > 0 or not np.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected x1,y1,z1:x2,y2,z2=METRES with METRES > 0, got {text!r}")
    return _triple(a), _triple(b), value


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or not np.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a positive number of metres, got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run directory")
    parser.add_argument("--floor", type=_floor, metavar="auto|X,Y,Z:NX,NY,NZ",
                        help="the floor: 'auto' (the ground plane of the static cloud) or a point on it and its "
                             "up normal; it becomes Z = 0, +Z up, the origin under the first camera")
    parser.add_argument("--origin", type=_triple, metavar="X,Y,Z", help="this point becomes the origin")
    parser.add_argument("--x-axis", type=_triple, metavar="X,Y,Z",
                        help="turn about Z so that this point lies on +X")
    parser.add_argument("--scale-distance", type=_distance, metavar="X1,Y1,Z1:X2,Y2,Z2=METRES",
                        help="these two points are METRES apart (the scene becomes metres)")
    parser.add_argument("--camera-height", type=_positive, metavar="METRES",
                        help="the cameras' median height above the floor (the scene becomes metres)")
    parser.add_argument("--reset", action="store_true",
                        help="start again from the first-camera anchoring (no floor, network unit)")


def run(args: argparse.Namespace) -> int:
    from core.geometry.plane import Plane
    from core.run.rundir import RunDir
    from core.run.scene_transform import SceneTransform
    from laser_blender.orient import (
        OrientError,
        describe,
        find_ground,
        run_cameras,
        set_camera_height,
        set_floor,
        set_origin,
        set_scale_distance,
        set_x_axis,
        static_cloud,
    )

    run_dir = RunDir(args.run)
    run_dir.read_manifest()  # a clear error when this is no run
    start = run_dir.scene_transform()
    edits = (args.reset, args.floor, args.origin, args.x_axis, args.scale_distance, args.camera_height)
    if not any(e is not None and e is not False for e in edits):
        print(describe(start))
        return 0
    cameras = run_cameras(run_dir)
    run_from_scene = np.linalg.inv(start.matrix())

    def to_run(p: np.ndarray) -> np.ndarray:  # a point as given (scene world before this command) -> run world
        return run_from_scene[:3, :3] @ p + run_from_scene[:3, 3]

    current = SceneTransform.first_camera(cameras[0]) if args.reset else start
    if args.floor == "auto":
        search = find_ground(static_cloud(run_dir), cameras, current)
        if search.plane is None:
            raise OrientError(f"--floor auto: no credible ground plane ({search.reason}); "
                              "give one with --floor X,Y,Z:NX,NY,NZ")
        current = set_floor(current, search.plane, cameras, f"ground plane (auto: {search.reason})")
    elif args.floor is not None:
        point, normal = args.floor
        in_run = to_run(point)
        normal_run = run_from_scene[:3, :3] @ normal
        p, n = current.apply_points(in_run), np.asarray(current.rotation) @ normal_run
        n /= np.linalg.norm(n)
        current = set_floor(current, Plane(n, float(n @ p)), cameras)
    if args.origin is not None:
        current = set_origin(current, current.apply_points(to_run(args.origin)))
    if args.x_axis is not None:
        current = set_x_axis(current, current.apply_points(to_run(args.x_axis)))
    if args.scale_distance is not None:
        a, b, metres = args.scale_distance
        current = set_scale_distance(current, current.apply_points(to_run(a)), current.apply_points(to_run(b)), metres)
    if args.camera_height is not None:
        current = set_camera_height(current, cameras, args.camera_height)
    run_dir.write_scene_transform(current)
    print(describe(current), file=sys.stderr)
    print(run_dir.scene_path)
    return 0
