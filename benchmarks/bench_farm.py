"""The farm's throughput on this machine: one long shot with 1 vs 2 parallel inference workers
(``--split-windows``), and several short shots one after another vs on the farm.

Synthetic footage and backbone (the backbone renders the scene's ground truth, so its
prediction costs about what a small network's would on a CPU); layer alignment off, so
the ratios show how inference spreads. Ray runs locally on this machine (127.0.0.1 only,
``--cpus`` CPUs); a warm-up shot starts its workers before anything is timed.

    .venv/bin/python benchmarks/bench_farm.py [--size 256x192] [--long-frames 240] [--shots 4]
        [--short-frames 80] [--cpus 2] [--json benchmarks/results/farm.json]
"""

from __future__ import annotations

import argparse
import os
import platform
import secrets
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # Ray binds to the loopback address only
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
if "RAY_AUTH_MODE" not in os.environ:  # token authentication with a token of this run's own
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))

from _results import save_results  # noqa: E402  (beside this script)

import ray  # noqa: E402

from core.synthetic import SceneConfig, render_clip  # noqa: E402
from laser_blender.farm.run import run_farm  # noqa: E402
from laser_blender.farm.shots import Shot  # noqa: E402
from laser_blender.farm.tasks import run_one  # noqa: E402
from laser_blender.protocol import Job  # noqa: E402


def _shot(name: str, clip: Path) -> Shot:
    return Shot(name=name, input=str(clip))


def _farm(shots: list[Shot], base: Job, out: Path, **options) -> dict:
    report = run_farm(shots, base, out, **options)
    assert not report.failed, report.failed
    frames = sum(s.frames for s in report.shots)
    return {"frames": frames, "seconds": round(report.seconds, 3), "fps": round(frames / report.seconds, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="256x192", help="footage WxH")
    parser.add_argument("--long-frames", type=int, default=240)
    parser.add_argument("--shots", type=int, default=4, help="short shots")
    parser.add_argument("--short-frames", type=int, default=80)
    parser.add_argument("--window", type=int, default=16)
    parser.add_argument("--overlap", type=int, default=4)
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    width, height = map(int, args.size.split("x"))

    work = Path(tempfile.mkdtemp(prefix="bench_farm_"))
    try:
        long, gt = render_clip(work / "long", SceneConfig(width=width, height=height, num_frames=args.long_frames))
        short, _ = render_clip(work / "short", SceneConfig(width=width, height=height,
                                                           num_frames=args.short_frames))
        base = Job(input=str(long), run_dir=str(work), backbone="synthetic", synthetic_scene=str(gt),
                   window=args.window, overlap=args.overlap, layer_align=False)
        ray.init(num_cpus=args.cpus, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        _farm([_shot(f"warm{i}", short) for i in range(args.cpus)], base, work / "warm")  # start the workers

        results: dict = {"machine": platform.processor() or platform.machine(), "cpus": args.cpus,
                         "size": [width, height], "window": args.window, "overlap": args.overlap}
        long_shot = [_shot("long", long)]
        results["long_shot"] = {f"{n}_workers": _farm(long_shot, base, work / f"split{n}", split_windows=True,
                                                      window_workers=n) for n in (1, 2)}
        results["long_shot"]["speedup"] = round(results["long_shot"]["2_workers"]["fps"]
                                                / results["long_shot"]["1_workers"]["fps"], 3)

        shorts = [_shot(f"s{i}", short) for i in range(args.shots)]
        t0, frames = time.perf_counter(), 0
        for shot in shorts:  # one after another in this process: what `laser-blender reconstruct` does
            result = run_one(shot.name, shot.job(base, work / "sequential"), threading.Event(), None)
            frames += result.frames
        seconds = time.perf_counter() - t0
        results["short_shots"] = {
            "sequential": {"frames": frames, "seconds": round(seconds, 3), "fps": round(frames / seconds, 2)},
            "farm": _farm(shorts, base, work / "farm"),
        }
        results["short_shots"]["speedup"] = round(results["short_shots"]["farm"]["fps"]
                                                  / results["short_shots"]["sequential"]["fps"], 3)
        for name in ("long_shot", "short_shots"):
            print(name, results[name])
        save_results(results, args.json)
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
