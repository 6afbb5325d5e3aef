"""Registration cost per frame: Sim(3) alone and Sim(3) + layer-wise scale alignment (LSA).

Synthetic-backbone windows (518x392, window 30, overlap 10, layer-scale inconsistency
on) of the textured synthetic scene's frames (real images: segmentation uses their colour,
the parallax measurement tracks them) are predicted once up front; then the registration of each window after the
first is timed, ``--repeats`` times, with LSA off and on. A window adds
``window - overlap`` frames to the stream, so cost per frame = cost per window / 20.
LSA's own split (segmentation, matching, scale solve, keyframe memory, parallax, apply) comes
from its timings; the time to add a window's keyframes to the memory counts in the
window's total. The keyframe memory fills up (12 keyframes, one every 10 frames)
within the default 8 windows.

    .venv/bin/python benchmarks/bench_registration.py [--windows 8] [--repeats 5] [--json out.json]

Run it pinned to one core (``taskset -c 1 ...``) on a busy machine and read the median.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _results import save_results  # noqa: E402  (beside this script)

from core.layer_align import LayerAligner  # noqa: E402
from core.registration import register_window  # noqa: E402
from core.synthetic import Scene, SceneConfig, SyntheticBackbone, SyntheticNoise  # noqa: E402

STAGES = ("segment", "match", "solve", "memory", "parallax", "apply")


def predict_windows(width: int, height: int, window: int, overlap: int, count: int) -> list:
    step = window - overlap
    scene = Scene(SceneConfig(width=width, height=height, num_frames=window + (count - 1) * step, texture=True))
    backbone = SyntheticBackbone(scene, SyntheticNoise(seed=0), (width, height))
    images = np.stack([scene.render(f, width, height)["colors"] for f in range(window + (count - 1) * step)])
    return [backbone.predict(images[k * step:k * step + window], np.arange(k * step, k * step + window))
            for k in range(count)]


def time_stream(preds: list, overlap: int, layer_align: bool) -> tuple[list[float], list[dict[str, float]]]:
    """Seconds per window (windows after the first) and LSA's split per window."""
    splits: list[dict[str, float]] = []
    seconds, reference, K = [], None, None
    aligner = LayerAligner() if layer_align else None
    for index, pred in enumerate(preds):
        t0 = time.perf_counter()
        result, K = register_window(index, pred, overlap=overlap, K=K, reference=reference, conf_keep=0.5,
                                    refiner=aligner)
        if aligner is not None:
            aligner.observe(result.window)
            if aligner.last is not None and index > 0:
                splits.append(aligner.last.timings)
        if index > 0:
            seconds.append(time.perf_counter() - t0)
        reference = result.reference
    return seconds, splits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="518x392")
    ap.add_argument("--window", type=int, default=30)
    ap.add_argument("--overlap", type=int, default=10)
    ap.add_argument("--windows", type=int, default=8, help="windows per stream (the first is not timed)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    step = args.window - args.overlap

    preds = predict_windows(width, height, args.window, args.overlap, args.windows)
    sim3, full, split = [], [], []
    for _ in range(args.repeats):
        sim3 += time_stream(preds, args.overlap, False)[0]
        seconds, splits = time_stream(preds, args.overlap, True)
        full += seconds
        split += splits

    def ms_per_frame(values) -> float:
        return 1000 * float(np.median(values)) / step

    lsa_stages = {k: ms_per_frame([s[k] for s in split]) for k in STAGES}
    results = {
        "setup": {"size": [width, height], "window": args.window, "overlap": args.overlap,
                  "frames_per_window": step, "windows_timed": len(sim3), "cpu": platform.processor() or platform.machine(),
                  "cpus_allowed": len(os.sched_getaffinity(0))},
        "ms_per_frame_median": {
            "sim3_only": ms_per_frame(sim3),
            "sim3_plus_lsa": ms_per_frame(full),
            "lsa": ms_per_frame([sum(s.values()) for s in split]),
            **{f"lsa_{k}": v for k, v in lsa_stages.items()},
        },
        "ms_per_frame_max": {"sim3_plus_lsa": 1000 * float(np.max(full)) / step},
    }
    r = results["ms_per_frame_median"]
    print(f"registration at {width}x{height}, window {args.window}, overlap {args.overlap} "
          f"({step} new frames per window), median of {len(full)} windows, "
          f"{results['setup']['cpus_allowed']} CPU(s) allowed")
    print(f"{'stage':28s} {'ms / frame':>10s}")
    print(f"{'Sim(3) registration only':28s} {r['sim3_only']:10.2f}")
    for k in STAGES:
        print(f"{'  LSA ' + k:28s} {r['lsa_' + k]:10.2f}")
    print(f"{'  LSA total':28s} {r['lsa']:10.2f}")
    print(f"{'Sim(3) + LSA':28s} {r['sim3_plus_lsa']:10.2f}   (target <= 20; reference LSA alone ~375)")
    save_results(results, args.json)


if __name__ == "__main__":
    main()
