"""``laser-blender demo``: render a synthetic clip with ground truth, reconstruct it, score it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from laser_blender.commands._options import add_stream_arguments
from laser_blender.commands.reconstruct import run_job

help = "render a synthetic clip, reconstruct it end to end and print its accuracy against ground truth"


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}") from None
    return w, h


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", default="demo", help="folder for clip, ground truth and run (default ./demo)")
    parser.add_argument("--frames", type=int, default=150, help="clip length (default 150)")
    parser.add_argument("--size", type=_size, default=(384, 288), help="footage size WxH (default 384x288)")
    parser.add_argument("--seed", type=int, default=0, help="synthetic backbone noise seed")
    parser.add_argument("--no-layer-align", dest="layer_align", action="store_false",
                        help="Sim(3) registration only")
    add_stream_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from core.run.files import write_json
    from core.run.rundir import RunDir
    from core.synthetic import SceneConfig, render_clip
    from laser_blender.evaluate import evaluate_run, format_report
    from laser_blender.protocol import Job

    out = Path(args.output).absolute()
    scene = SceneConfig(width=args.size[0], height=args.size[1], num_frames=args.frames)
    with tqdm(total=args.frames, desc="render clip", unit="frame", file=sys.stderr, disable=None) as bar:
        clip, gt_dir = render_clip(out, scene, progress=lambda done, total: bar.update(done - bar.n))
    run_dir = out / "run"
    job = Job(input=str(clip), run_dir=str(run_dir), backbone="synthetic", synthetic_scene=str(gt_dir),
              window=args.window, overlap=args.overlap, stride=args.stride, start=args.start,
              max_frames=args.max_frames, layer_align=args.layer_align)
    code = run_job(job)
    if code != 0:
        return code
    metrics = evaluate_run(run_dir, gt_dir)
    write_json(RunDir(run_dir).metrics_path, metrics)
    print(f"clip: {clip}\nground truth: {gt_dir}\nrun: {run_dir}\n")
    print(format_report(metrics))
    return 0
