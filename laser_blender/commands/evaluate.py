"""``laser-blender evaluate RUN --gt GT_DIR [--json PATH]``: score a run against ground truth."""

from __future__ import annotations

import argparse
from pathlib import Path

help = "score a run directory against ground truth: ATE, RPE, depth, point cloud (prints, writes JSON)"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from laser_blender.evaluate import DEFAULT_MAX_POINTS

    parser.add_argument("run", help="run directory written by reconstruct or align")
    parser.add_argument("--gt", required=True, metavar="GT_DIR", help="ground-truth directory (gt.json, ...)")
    parser.add_argument("--json", metavar="PATH", help="where to write the metrics (default RUN/metrics.json)")
    parser.add_argument("--max-points", type=_positive_int, default=DEFAULT_MAX_POINTS,
                        help=f"point-cloud size cap for each cloud (default {DEFAULT_MAX_POINTS})")


def run(args: argparse.Namespace) -> int:
    from core.run.files import write_json
    from core.run.rundir import RunDir
    from laser_blender.evaluate import evaluate_run, format_report

    metrics = evaluate_run(args.run, args.gt, max_points=args.max_points)
    out = Path(args.json) if args.json else RunDir(args.run).metrics_path
    write_json(out, metrics)
    print(format_report(metrics))
    print(f"metrics: {out}")
    return 0
