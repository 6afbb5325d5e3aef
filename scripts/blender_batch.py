"""Reconstruct shots into .blend files from Blender's command line, through the engine's worker.

    blender -b --python scripts/blender_batch.py -- shot1.mp4 shot2.mp4 [--out DIR] [options]

Each shot runs in the engine's worker subprocess (its own Python, with torch) and is
imported window by window into an empty scene, saved as ``DIR/<shot>.blend`` (the
run directory goes to ``DIR/runs/<shot>``). A shot that fails still gets a .blend
with every window finished before the failure; the exit status is 1 then.

Blender's Python needs pydantic: install the laser-blender extension (it bundles
it), or run this script with the bpy module from the project's venv
(``.venv/bin/python scripts/blender_batch.py -- ...``). The engine's Python is
``--engine-python``, else auto-detected (``LASER_BLENDER_PYTHON``, the checkout's
``.venv``, ``laser-blender`` on PATH).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # this checkout's laser_blender and core, in Blender's Python too
    sys.path.insert(0, str(REPO))

from laser_blender.blendfile import add_scene_arguments, reconstruct_to_blend, scene_options  # noqa: E402
from laser_blender.client import find_engine_python  # noqa: E402
from laser_blender.commands._options import add_registration_arguments, add_stream_arguments  # noqa: E402
from laser_blender.protocol import Job  # noqa: E402


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="blender -b --python scripts/blender_batch.py --",
                                     description="Reconstruct shots into .blend files.")
    parser.add_argument("shots", nargs="+", help="video files or image folders")
    parser.add_argument("--out", type=Path, default=Path("laser_blends"), help="output folder (default ./laser_blends)")
    parser.add_argument("--engine-python", help="the engine's Python (default: auto-detect)")
    parser.add_argument("--backbone", choices=("pi3", "vggt", "synthetic"), default="pi3")
    parser.add_argument("--weights", help="checkpoint file or Hugging Face repo id")
    parser.add_argument("--synthetic-scene", metavar="GT_DIR", help="ground truth of a synthetic clip")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    add_stream_arguments(parser)
    add_registration_arguments(parser)
    add_scene_arguments(parser)
    return parser.parse_args(argv)


def shot_job(args: argparse.Namespace, shot: Path, run_dir: Path) -> Job:
    return Job(input=str(shot.absolute()), run_dir=str(run_dir.absolute()), backbone=args.backbone,
               weights=args.weights,
               synthetic_scene=args.synthetic_scene and str(Path(args.synthetic_scene).absolute()),
               window=args.window, overlap=args.overlap, stride=args.stride, start=args.start,
               max_frames=args.max_frames, conf_keep=args.conf_keep, layer_align=args.layer_align,
               focal_px=args.focal_px, focal_mm=args.focal_mm, sensor_width_mm=args.sensor_width_mm,
               device=args.device)


def report(level: str, message: str) -> None:
    print(f"laser-blender: {level.lower()}: {message}", file=sys.stderr, flush=True)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    python = args.engine_python or find_engine_python()
    if not python:
        report("ERROR", "no engine Python found; pass --engine-python or set LASER_BLENDER_PYTHON")
        return 2
    failed = 0
    for shot in map(Path, args.shots):
        name = shot.stem if shot.suffix else shot.name
        state, blend = reconstruct_to_blend(shot_job(args, shot, args.out / "runs" / name),
                                            args.out / f"{name}.blend", python, scene_options(args), report)
        print(f"{shot}: {state.status}, {len(state.windows)} windows, {state.points:,} points -> "
              f"{blend or 'no .blend'}", flush=True)
        failed += state.status != "finished"
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else sys.argv[1:]))
