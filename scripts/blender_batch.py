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

from pydantic import ValidationError  # noqa: E402

from core.run.manifest import RunStatus  # noqa: E402
from laser_blender.blendfile import add_scene_arguments, reconstruct_to_blend, scene_options  # noqa: E402
from laser_blender.client import find_engine_python  # noqa: E402
from laser_blender.commands._options import add_job_arguments, job_from_args, option_error  # noqa: E402


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="blender -b --python scripts/blender_batch.py --",
                                     description="Reconstruct shots into .blend files.")
    parser.add_argument("shots", nargs="+", help="video files or image folders")
    parser.add_argument("--out", type=Path, default=Path("laser_blends"), help="output folder (default ./laser_blends)")
    parser.add_argument("--engine-python", help="the engine's Python (default: auto-detect)")
    add_job_arguments(parser)
    add_scene_arguments(parser)
    return parser.parse_args(argv)


def report(level: str, message: str) -> None:
    print(f"laser-blender: {level.lower()}: {message}", file=sys.stderr, flush=True)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    names = {shot: shot.stem if shot.suffix else shot.name for shot in map(Path, args.shots)}
    try:
        jobs = {shot: job_from_args(args, shot, args.out / "runs" / name) for shot, name in names.items()}
    except ValidationError as e:
        report("ERROR", option_error(e))
        return 2
    python = args.engine_python or find_engine_python()
    if not python:
        report("ERROR", "no engine Python found; pass --engine-python or set LASER_BLENDER_PYTHON")
        return 2
    failed = 0
    for shot, job in jobs.items():
        state, blend = reconstruct_to_blend(job, args.out / f"{names[shot]}.blend", python, scene_options(args),
                                            report)
        print(f"{shot}: {state.status}, {len(state.windows)} windows, {state.points:,} points -> "
              f"{blend or 'no .blend'}", flush=True)
        failed += state.status != RunStatus.complete
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else sys.argv[1:]))
