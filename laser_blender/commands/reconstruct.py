"""``laser-blender reconstruct INPUT -o RUN``: stream footage through a backbone into a run directory."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pydantic import ValidationError

from laser_blender.commands._options import add_registration_arguments, add_stream_arguments
from laser_blender.console import EXIT_CANCELLED, fail, graceful_interrupt, progress_bar, user_errors

help = "reconstruct a video file or image folder into a run directory"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="video file (any format OpenCV reads) or folder of images")
    parser.add_argument("-o", "--output", required=True, help="run directory to write")
    parser.add_argument("--backbone", choices=("pi3", "vggt", "synthetic"), default="pi3")
    parser.add_argument("--weights", help="checkpoint file (.safetensors/.pt) or Hugging Face repo id")
    parser.add_argument("--synthetic-scene", metavar="GT_DIR",
                        help="ground truth of a synthetic clip (backbone 'synthetic')")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"))
    parser.add_argument("--resume", action="store_true", help="continue a cancelled or crashed run")
    parser.add_argument("--blend", metavar="FILE", help="also build a .blend scene from the run")
    parser.add_argument("--no-predictions", dest="save_predictions", action="store_false",
                        help="do not keep the raw backbone output (about 7.5 MB per frame at 518x392); "
                             "without it the run cannot be re-registered with `align`")
    add_stream_arguments(parser)
    add_registration_arguments(parser)


def job_from_args(args: argparse.Namespace, run_dir: str):
    from laser_blender.protocol import Job

    return Job(input=str(Path(args.input).absolute()), run_dir=str(Path(run_dir).absolute()),
               backbone=args.backbone, weights=args.weights,
               synthetic_scene=args.synthetic_scene and str(Path(args.synthetic_scene).absolute()),
               window=args.window, overlap=args.overlap, stride=args.stride, start=args.start,
               max_frames=args.max_frames, conf_keep=args.conf_keep, layer_align=args.layer_align,
               save_predictions=args.save_predictions,
               focal_px=args.focal_px, focal_mm=args.focal_mm, sensor_width_mm=args.sensor_width_mm,
               device=args.device, dtype=args.dtype, resume=args.resume)


def run_job(job, desc: str = "reconstruct") -> int:
    """Run a job in this process with a progress bar; returns the exit code."""
    from core.engine import reconstruct
    from laser_blender.job import build_pipeline

    try:
        source, backbone, config, info = build_pipeline(job)
    except user_errors() as e:
        return fail(str(e))
    notice = getattr(backbone, "licence", None)
    if notice:
        print(f"laser-blender: {notice}", file=sys.stderr)
    with graceful_interrupt() as cancel, progress_bar(desc) as on_event:
        try:
            status = reconstruct(source, backbone, Path(job.run_dir), config, on_event=on_event,
                                 cancel=cancel, resume=job.resume, run_info=info)
        except user_errors() as e:
            return fail(f"{e} (finished windows are kept in {job.run_dir}; `--resume` continues)")
    if status == "cancelled":
        print(f"laser-blender: cancelled; finished windows are in {job.run_dir} (`--resume` continues)",
              file=sys.stderr)
        return EXIT_CANCELLED
    return 0


def run(args: argparse.Namespace) -> int:
    try:
        job = job_from_args(args, args.output)
    except ValidationError as e:
        return fail("; ".join(err["msg"] for err in e.errors()))
    code = run_job(job)
    if code == 0:
        print(job.run_dir)
    if code == 0 and args.blend:
        from laser_blender.blendfile import write_blend

        print(write_blend(job.run_dir, args.blend))
    return code
