"""Accuracy of layer-wise scale alignment (LSA) against Sim(3)-only registration.

Scene types (``--scenes``): ``default``, the synthetic scene the method was developed
on (ground, far wall at 90 m, spheres from 2.8 m: depth range 1:30), and the layouts of
``core.synthetic.scenes`` it was not tuned on: ``street`` (objects standing on the
ground between walls, backdrop at 70 m), ``room`` (indoor, furniture against the walls),
``field`` (scattered objects, horizon at 400 m); their layout is drawn from the seed.
With the synthetic backbone, for each scene type, scenario and seed:

1. ``laser-blender reconstruct`` equivalent, predictions kept;
2. those predictions registered with LSA (``align``) and without (``align --no-layer-align``);
3. both scored by ``laser_blender.evaluate.evaluate_run`` against the ground truth.

Scenarios (``SyntheticNoise`` settings, all other amplitudes at their defaults):

* ``layers``: per-layer depth-scale inconsistency on in every window;
* ``layers_clean_first``: the same, with the first window free of layer distortion
  (so the reference the stream is aligned to is the truth);
* ``no_layers``: layer inconsistency off (the no-harm check).

Per run: ``layer_std`` (mean over scene layers of the temporal spread of their depth
scale), Abs Rel (one global scale), Chamfer (after the ATE similarity), ATE, and
``worst_layer``: the largest ratio LSA / Sim(3)-only of a layer's spread (each plus 0.005,
so spreads below depth noise do not count) among the layers covering more than 0.5 % of
the frames (in the LSA column; 1 in the Sim(3) column).

Prints a table and writes JSON (``--json``):

    .venv/bin/python benchmarks/lsa_accuracy.py [--scenes default street room field] [--seeds 0 1 2]
        [--windows 10] [--size 256x192] [--texture] [--quick]
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
from core.groundtruth import load_ground_truth  # noqa: E402
from core.synthetic import Scene, SceneConfig, SyntheticBackbone, SyntheticNoise, SyntheticSource, render_clip  # noqa: E402
from core.synthetic.scenes import SCENE_TYPES  # noqa: E402
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
SCENES = ["default", *SCENE_TYPES]
KEYS = ("layer_std", "abs_rel", "chamfer", "ate")
LARGE_LAYER = 0.005  # share of the frames a layer must cover to count for worst_layer
SPREAD_FLOOR = 0.005  # spreads are compared as (spread + this): below half a percent both are depth noise


def scene_config(scene: str, seed: int, width: int, height: int, frames: int, texture: bool = False) -> SceneConfig:
    """The scene of a type (its layout drawn from ``seed`` except for ``default``); ``texture``: every
    surface carries world-fixed texture (as real surfaces do), not only the checkered ground."""
    if scene == "default":
        return SceneConfig(width=width, height=height, num_frames=frames, texture=texture)
    return SCENE_TYPES[scene](seed, width=width, height=height, num_frames=frames, texture=texture)


def layer_shares(gt_dir: Path) -> dict[str, float]:
    """Share of all ground-truth pixels each scene layer covers (every 5th frame), by layer name."""
    gt = load_ground_truth(gt_dir)
    counts: dict[int, int] = {}
    total = 0
    for frame in gt.frames[::5].tolist():
        ids = gt.layers(int(frame))
        values, n = np.unique(ids, return_counts=True)
        for v, c in zip(values.tolist(), n.tolist()):
            counts[v] = counts.get(v, 0) + c
        total += ids.size
    return {gt.layer_names.get(k, f"layer {k}"): c / total for k, c in counts.items()}


def worst_layer(sim3: dict, lsa: dict, shares: dict[str, float]) -> float:
    """Largest LSA / Sim(3)-only ratio of per-layer spread among layers above ``LARGE_LAYER``."""
    ratios = [(lsa[k] + SPREAD_FLOOR) / (sim3[k] + SPREAD_FLOOR) for k in lsa
              if k in sim3 and shares.get(k, 0.0) > LARGE_LAYER]
    return float(max(ratios)) if ratios else 1.0


def summary(metrics: dict) -> dict[str, float]:
    """The four numbers the study compares, from an ``evaluate_run`` result."""
    return {"layer_std": metrics["layer_log_ratio_std_mean"], "abs_rel": metrics["depth"]["abs_rel"],
            "chamfer": metrics["pointcloud"]["chamfer"], "ate": metrics["ate"]["rmse"],
            "per_layer_std": metrics["layer_log_ratio_std"]}


def compare(scene: Scene, gt_dir: Path, noise: SyntheticNoise, workdir: Path, config: EngineSettings) -> dict:
    """Predict one stream, register its predictions with and without LSA; score both.

    Both registrations run through ``align`` on the same saved predictions, so they differ
    in layer alignment only (not in what ``reconstruct`` does besides registering).
    Returns ``{"sim3": summary, "lsa": summary, "seconds": {...}}``.
    """
    predicted, lsa_run, sim3_run = workdir / "predicted", workdir / "lsa", workdir / "sim3"
    c = scene.config
    status = reconstruct(SyntheticSource(scene, c.num_frames), SyntheticBackbone(scene, noise, (c.width, c.height)),
                         predicted, config.model_copy(update={"layer_align": False, "save_predictions": True}))
    t0 = time.perf_counter()
    status_lsa = align(predicted / "predictions", lsa_run, config.model_copy(update={"layer_align": True}))
    t1 = time.perf_counter()
    status_sim3 = align(predicted / "predictions", sim3_run, config.model_copy(update={"layer_align": False}))
    t2 = time.perf_counter()
    if (status, status_lsa, status_sim3) != ("complete",) * 3:
        raise RuntimeError(f"runs did not complete: {status}, {status_lsa}, {status_sim3}")
    out = {"lsa": summary(evaluate_run(lsa_run, gt_dir)), "sim3": summary(evaluate_run(sim3_run, gt_dir)),
           "seconds": {"align_lsa": round(t1 - t0, 2), "align_sim3": round(t2 - t1, 2)}}
    shares = layer_shares(gt_dir)
    out["sim3"]["worst_layer"] = 1.0
    out["lsa"]["worst_layer"] = worst_layer(out["sim3"]["per_layer_std"], out["lsa"]["per_layer_std"], shares)
    out["layer_share"] = shares
    return out


def change(before: float, after: float) -> float:
    """Relative change after / before - 1."""
    return after / before - 1.0


def run_study(scenes: list[str], seeds: list[int], windows: int, size: tuple[int, int], window: int,
              overlap: int, workdir: Path, scenarios: list[str], layer: dict | None = None,
              texture: bool = False) -> dict:
    frames = window + (windows - 1) * (window - overlap)
    engine = EngineSettings(window=window, overlap=overlap, refine=False, layer=layer or {})
    results: dict = {"setup": {"layer": engine.layer.model_dump(), "scenes": scenes, "seeds": seeds,
                               "windows": windows, "frames": frames, "size": list(size), "window": window,
                               "overlap": overlap, "texture": texture}, "scenes": {}}
    for scene_name in scenes:
        per_scenario: dict = {}
        clips: dict[int, tuple[Scene, Path]] = {}
        for name in scenarios:
            per_seed = []
            for seed in seeds:
                layout = 0 if scene_name == "default" else seed
                if layout not in clips:
                    config = scene_config(scene_name, layout, size[0], size[1], frames, texture)
                    clips[layout] = (Scene(config), render_clip(workdir / f"clip_{scene_name}_{layout}", config)[1])
                scene, gt_dir = clips[layout]
                tag = f"{scene_name}_{name}_{seed}"
                run = compare(scene, gt_dir, replace(SCENARIOS[name], seed=seed), workdir / tag, engine)
                run["seed"] = seed
                per_seed.append(run)
                shutil.rmtree(workdir / tag)
                print(f"  {tag}: " + ", ".join(
                    f"{k} {run['sim3'][k]:.4g} -> {run['lsa'][k]:.4g}" for k in (*KEYS, "worst_layer")), flush=True)
            keys = (*KEYS, "worst_layer")
            mean = {mode: {k: float(np.mean([r[mode][k] for r in per_seed])) for k in keys}
                    for mode in ("sim3", "lsa")}
            per_scenario[name] = {
                "runs": per_seed, "mean": mean,
                "change": {k: change(mean["sim3"][k], mean["lsa"][k]) for k in KEYS},
                "change_per_seed": {k: [change(r["sim3"][k], r["lsa"][k]) for r in per_seed] for k in KEYS},
                "worst_layer_per_seed": [r["lsa"]["worst_layer"] for r in per_seed],
            }
        results["scenes"][scene_name] = per_scenario
    return results


def print_table(results: dict) -> None:
    s = results["setup"]
    print(f"LSA vs Sim(3)-only: {len(s['seeds'])} seeds x {s['windows']} windows ({s['frames']} frames) "
          f"at {s['size'][0]}x{s['size'][1]}, window {s['window']}, overlap {s['overlap']}"
          + (", textured" if s.get("texture") else ""))
    print(f"{'scene':8s} {'scenario':20s} {'metric':11s} {'Sim(3) only':>12s} {'LSA':>10s} {'change':>8s}   per seed")
    for scene, scenarios in results["scenes"].items():
        for name, r in scenarios.items():
            for k in KEYS:
                seeds = " ".join(f"{100 * v:+.1f}%" for v in r["change_per_seed"][k])
                print(f"{scene:8s} {name:20s} {k:11s} {r['mean']['sim3'][k]:12.4f} {r['mean']['lsa'][k]:10.4f} "
                      f"{100 * r['change'][k]:+7.1f}%   {seeds}")
            worst = " ".join(f"{v:.2f}" for v in r["worst_layer_per_seed"])
            print(f"{scene:8s} {name:20s} {'worst_layer':11s} {1.0:12.4f} {r['mean']['lsa']['worst_layer']:10.4f} "
                  f"{'':8s}   {worst}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenes", nargs="+", default=SCENES, choices=SCENES)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--windows", type=int, default=10)
    ap.add_argument("--size", default="256x192", help="prediction (and ground-truth) size WxH")
    ap.add_argument("--window", type=int, default=30)
    ap.add_argument("--overlap", type=int, default=10)
    ap.add_argument("--scenarios", nargs="+", default=DEFAULT_SCENARIOS, choices=list(SCENARIOS))
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--lsa", nargs="+", default=[], metavar="NAME=VALUE",
                    help="LayerAlignParams fields to change, e.g. history_windows=4")
    ap.add_argument("--texture", action="store_true",
                    help="world-fixed texture on every surface (as real footage has): the parallax measurement "
                         "then sees every surface, not only the checkered ground and the objects' edges")
    ap.add_argument("--quick", action="store_true",
                    help="for iterating: seed 0 only, 8 windows at 192x144 (explicit --seeds/--windows/--size win)")
    args = ap.parse_args()
    if args.quick:
        given = {a.split("=")[0] for a in sys.argv[1:]}
        args.seeds = args.seeds if "--seeds" in given else [0]
        args.windows = args.windows if "--windows" in given else 8
        args.size = args.size if "--size" in given else "192x144"
    size = tuple(int(v) for v in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory(prefix="lsa_accuracy_") as tmp:
        results = run_study(args.scenes, args.seeds, args.windows, size, args.window, args.overlap, Path(tmp),
                            args.scenarios, dict(kv.split("=", 1) for kv in args.lsa), args.texture)
    print_table(results)
    save_results(results, args.json)


if __name__ == "__main__":
    main()
