"""Tiny pi3, VGGT and DA3 on CPU: milliseconds per window through the engine adapter.

A regression check that needs no GPU: the tiny configurations of the reference
fixtures (same module tree as the full networks, shrunk) with random weights, one
window of ``--frames`` random frames at ``--size``, timed through
``NetworkBackbone.predict`` (uint8 in, WindowPrediction out) after a warm-up.

    .venv/bin/python benchmarks/bench_backbone_cpu.py [--frames 8] [--size 112x84] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _results import save_results  # noqa: E402  (beside this script)

from core.backbones import NETWORKS  # noqa: E402  (torch-free; after the path is set)


def fixtures_dir() -> Path:
    env = os.environ.get("LASER_FIXTURES")
    return Path(env) if env else ROOT.parent / "shared" / "fixtures"


def bench(network: str, config: dict, frames: int, size: tuple[int, int], repeats: int) -> dict:
    from core.backbones.adapter import load_backbone

    backbone = load_backbone(network, "random", device="cpu", dtype="float32", config=config)
    w, h = size
    images = np.random.default_rng(0).integers(0, 256, (frames, h, w, 3), dtype=np.uint8)
    indices = np.arange(frames, dtype=np.int64)
    backbone.predict(images, indices)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        backbone.predict(images, indices)
        times.append((time.perf_counter() - t0) * 1e3)
    return {
        "network": f"{network}-tiny",
        "parameters": sum(p.numel() for p in backbone.model.parameters()),
        "ms_per_window_median": round(statistics.median(times), 1),
        "ms_per_window_min": round(min(times), 1),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=list(NETWORKS))
    ap.add_argument("--frames", type=int, default=8, help="frames per window")
    ap.add_argument("--size", default="112x84", help="WxH, multiples of 14")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()

    import torch

    w, h = (int(v) for v in args.size.split("x"))
    configs = {n: json.loads((fixtures_dir() / f"{n}_tiny_config.json").read_text()) for n in args.networks}
    result = {
        "benchmark": "tiny backbones on CPU, one window through the adapter",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "frames": args.frames,
        "size": [w, h],
        "repeats": args.repeats,
        "results": [bench(n, configs[n], args.frames, (w, h), args.repeats) for n in args.networks],
    }
    print(json.dumps(result, indent=1))
    save_results(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
