"""Streaming memory is flat: peak RSS for 300 vs 3000 synthetic frames at 518x392.

Each length runs in a fresh subprocess (so ``ru_maxrss`` is its own high-water mark)
through the real engine: synthetic frames rendered on the fly, the synthetic
backbone, registration with layer alignment, and the run directory written to a
temporary folder (predictions included) that is deleted afterwards.

    .venv/bin/python benchmarks/bench_memory.py [--frames 300 3000] [--json out.json]
    .venv/bin/python benchmarks/bench_memory.py --refine --size 512x384   # with the camera solve

``--refine`` adds the camera solve: the scene is textured (so it tracks) and predicted at half the
footage size, like a network's input.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_once(frames: int, width: int, height: int, layer_align: bool, refine: bool, workdir: Path) -> dict:
    sys.path.insert(0, str(ROOT))
    from core.engine import reconstruct
    from core.run.settings import EngineSettings
    from core.synthetic import Scene, SceneConfig, SyntheticBackbone, SyntheticSource

    scene = Scene(SceneConfig(width=width, height=height, num_frames=frames, texture=refine))
    backbone = SyntheticBackbone(scene, size=(width // 2, height // 2) if refine else None)
    t0 = time.perf_counter()
    status = reconstruct(SyntheticSource(scene), backbone, workdir / "run",
                         EngineSettings(window=30, overlap=10, layer_align=layer_align, refine=refine))
    return {"frames": frames, "status": status, "seconds": round(time.perf_counter() - t0, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "disk_gb": round(sum(p.stat().st_size for p in (workdir / "run").rglob("*") if p.is_file()) / 1e9, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, nargs="+", default=[300, 3000])
    ap.add_argument("--size", default="518x392")
    ap.add_argument("--no-layer-align", dest="layer_align", action="store_false")
    ap.add_argument("--refine", action="store_true", help="with the camera solve (see above)")
    ap.add_argument("--json", type=Path, help="write results here")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))

    if args.child:
        print(json.dumps(run_once(args.child, w, h, args.layer_align, args.refine, args.workdir)))
        return

    results = []
    for n in args.frames:
        workdir = Path(tempfile.mkdtemp(prefix="laser-mem-"))
        try:
            cmd = [sys.executable, __file__, "--child", str(n), "--size", args.size, "--workdir", str(workdir)]
            if not args.layer_align:
                cmd.append("--no-layer-align")
            if args.refine:
                cmd.append("--refine")
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            results.append(json.loads(out.strip().splitlines()[-1]))
            print(json.dumps(results[-1]), flush=True)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    base = results[0]["peak_rss_mb"]
    summary = {"size": args.size, "layer_align": args.layer_align, "refine": args.refine, "runs": results,
               "peak_rss_growth": {r["frames"]: round(r["peak_rss_mb"] / base - 1, 3) for r in results}}
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
