"""Accuracy of layer-wise scale alignment (LSA) against Sim(3)-only registration.

On the synthetic scene (ground, far wall at 90 m, spheres from 2.8 m: depth range
1:30) and the synthetic backbone, for each seed:

1. ``laser-blender reconstruct`` equivalent with LSA on (predictions kept);
2. the same predictions re-registered with LSA off (``align --no-layer-align``);
3. both scored by ``laser_blender.evaluate.evaluate_run`` against the ground truth.

Scenarios (``SyntheticNoise`` settings, all other amplitudes at their defaults):

* ``layers``: per-layer depth-scale inconsistency on in every window;
* ``layers_clean_first``: the same, with the first window free of layer distortion
  (so the reference the stream is aligned to is the truth);
* ``no_layers``: layer inconsistency off (the no-harm check).

Prints a table and writes JSON (``--json``):

    .venv/bin/python benchmarks/lsa_accuracy.py [--seeds 0 1 2] [--windows 10] [--size 256x192]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _results import save_results  # noqa: E402  (beside this script)

from core.engine import align, reconstruct  # noqa: E402
from core.run.settings import EngineSettings  # noqa: E402
from core.synthetic import Scene, SceneConfig, SyntheticBackbone, SyntheticNoise, SyntheticSource, render_clip  # noqa: E402
from laser_blender.evaluate import evaluate_run  # noqa: E402

SCENARIOS = {
    "layers": SyntheticNoise(),
    "layers_clean_first": SyntheticNoise(first_window_clean=True),
    "no_layers": SyntheticNoise(layer_scale=0.0),
    # Opt-in: milder, slower layer distortion, where the camera path's scale drift
    # (left to the Sim(3) chain) shows most against the layer-aligned depth.
    "mild_slow_clean": SyntheticNoise(first_window_clean=True, layer_scale=0.1, layer_period=300.0),
}
DEFAULT_SCENARIOS = ["layers", "layers_clean_first", "no_layers"]
KEYS = ("layer_std", "abs_rel", "chamfer", "ate")


def summary(metrics: dict) -> dict[str, float]:
    """The four numbers the study compares, from an ``evaluate_run`` result."""
    return {"layer_std": metrics["layer_log_ratio_std_mean"], "abs_rel": metrics["depth"]["abs_rel"],
            "chamfer": metrics["pointcloud"]["chamfer"], "ate": metrics["ate"]["rmse"],
            "per_layer_std": metrics["layer_log_ratio_std"]}


def compare(scene: Scene, gt_dir: Path, noise: SyntheticNoise, workdir: Path, config: EngineSettings) -> dict:
    """Run one stream with LSA and re-register its predictions without; score both.

    Returns ``{"sim3": summary, "lsa": summary, "seconds": {...}}``.
    """
    lsa_run, sim3_run = workdir / "lsa", workdir / "sim3"
    c = scene.config
    t0 = time.perf_counter()
    status = reconstruct(SyntheticSource(scene, c.num_frames), SyntheticBackbone(scene, noise, (c.width, c.height)),
                         lsa_run, config.model_copy(update={"layer_align": True, "save_predictions": True}))
    t1 = time.perf_counter()
    status_sim3 = align(lsa_run / "predictions", sim3_run, config.model_copy(update={"layer_align": False}))
    t2 = time.perf_counter()
    if (status, status_sim3) != ("complete", "complete"):
        raise RuntimeError(f"runs did not complete: {status}, {status_sim3}")
    return {"lsa": summary(evaluate_run(lsa_run, gt_dir)), "sim3": summary(evaluate_run(sim3_run, gt_dir)),
            "seconds": {"reconstruct_lsa": round(t1 - t0, 2), "align_sim3": round(t2 - t1, 2)}}


def change(before: float, after: float) -> float:
    """Relative change after / before - 1."""
    return after / before - 1.0


def run_study(seeds: list[int], windows: int, size: tuple[int, int], window: int, overlap: int,
              workdir: Path, scenarios: list[str]) -> dict:
    frames = window + (windows - 1) * (window - overlap)
    config = SceneConfig(width=size[0], height=size[1], num_frames=frames)
    scene = Scene(config)
    _, gt_dir = render_clip(workdir / "clip", config)
    engine = EngineSettings(window=window, overlap=overlap)
    results: dict = {"setup": {"seeds": seeds, "windows": windows, "frames": frames, "size": list(size),
                               "window": window, "overlap": overlap}, "scenarios": {}}
    for name in scenarios:
        per_seed = []
        for seed in seeds:
            run = compare(scene, gt_dir, replace(SCENARIOS[name], seed=seed), workdir / f"{name}_{seed}", engine)
            run["seed"] = seed
            per_seed.append(run)
            shutil.rmtree(workdir / f"{name}_{seed}")
        mean = {mode: {k: float(np.mean([r[mode][k] for r in per_seed])) for k in KEYS} for mode in ("sim3", "lsa")}
        results["scenarios"][name] = {
            "runs": per_seed, "mean": mean,
            "change": {k: change(mean["sim3"][k], mean["lsa"][k]) for k in KEYS},
            "change_per_seed": {k: [change(r["sim3"][k], r["lsa"][k]) for r in per_seed] for k in KEYS},
        }
    return results


def print_table(results: dict) -> None:
    s = results["setup"]
    print(f"LSA vs Sim(3)-only: {len(s['seeds'])} seeds x {s['windows']} windows ({s['frames']} frames) "
          f"at {s['size'][0]}x{s['size'][1]}, window {s['window']}, overlap {s['overlap']}")
    print(f"{'scenario':20s} {'metric':10s} {'Sim(3) only':>12s} {'LSA':>10s} {'change':>8s}   per seed")
    for name, r in results["scenarios"].items():
        for k in KEYS:
            seeds = " ".join(f"{100 * v:+.1f}%" for v in r["change_per_seed"][k])
            print(f"{name:20s} {k:10s} {r['mean']['sim3'][k]:12.4f} {r['mean']['lsa'][k]:10.4f} "
                  f"{100 * r['change'][k]:+7.1f}%   {seeds}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--windows", type=int, default=10)
    ap.add_argument("--size", default="256x192", help="prediction (and ground-truth) size WxH")
    ap.add_argument("--window", type=int, default=30)
    ap.add_argument("--overlap", type=int, default=10)
    ap.add_argument("--scenarios", nargs="+", default=DEFAULT_SCENARIOS, choices=list(SCENARIOS))
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args()
    size = tuple(int(v) for v in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory(prefix="lsa_accuracy_") as tmp:
        results = run_study(args.seeds, args.windows, size, args.window, args.overlap, Path(tmp), args.scenarios)
    print_table(results)
    save_results(results, args.json)


if __name__ == "__main__":
    main()
