"""Figure for docs/lsa.md: per-layer depth scale over time, Sim(3)-only vs LSA.

Streams the synthetic scene through the synthetic backbone (per-layer depth-scale
inconsistency on, first window free of it), registers the same predictions with and
without layer-wise scale alignment, and plots, for every scene layer and frame, the
median ratio of registered to true depth (after the one global scale of the depth
metric). A layer whose scale is consistent over time is a flat line at 1.

    .venv/bin/python scripts/figure_lsa.py [--out docs/lsa_scales.png] [--seed 0] [--size 256x192]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.engine import align, reconstruct  # noqa: E402
from core.groundtruth import load_ground_truth  # noqa: E402
from core.run.rundir import RunDir  # noqa: E402
from core.run.settings import EngineSettings  # noqa: E402
from core.synthetic import Scene, SceneConfig, SyntheticBackbone, SyntheticNoise, SyntheticSource, render_clip  # noqa: E402
from laser_blender.evaluate import evaluate_run, layer_log_ratios  # noqa: E402


def layer_curves(run_dir: Path, gt_dir: Path, scale: float) -> dict[int, tuple[list[int], list[float]]]:
    """Per scene layer: (frames, median log(scale * depth / true depth)) of a run."""
    gt = load_ground_truth(gt_dir)
    curves: dict[int, tuple[list[int], list[float]]] = {}
    for win in RunDir(run_dir).iter_aligned():
        for i, frame in enumerate(win.frames.tolist()):
            for layer, value in layer_log_ratios(scale * win.depth[i], gt.depth(frame), gt.layers(frame)):
                frames, values = curves.setdefault(layer, ([], []))
                frames.append(frame)
                values.append(value)
    return curves


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "lsa_scales.png")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", default="256x192")
    ap.add_argument("--windows", type=int, default=10)
    ap.add_argument("--workdir", type=Path, help="keep the runs here (default: a temporary folder)")
    args = ap.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    config = EngineSettings(window=30, overlap=10)
    frames = config.window + (args.windows - 1) * config.step

    with tempfile.TemporaryDirectory(prefix="figure_lsa_") as tmp:
        work = args.workdir or Path(tmp)
        scene_config = SceneConfig(width=width, height=height, num_frames=frames)
        scene = Scene(scene_config)
        _, gt_dir = render_clip(work / "clip", scene_config)
        backbone = SyntheticBackbone(scene, SyntheticNoise(seed=args.seed, first_window_clean=True), (width, height))
        reconstruct(SyntheticSource(scene, frames), backbone, work / "lsa", config)
        align(work / "lsa" / "predictions", work / "sim3", EngineSettings(layer_align=False))
        runs = {}
        for name in ("sim3", "lsa"):
            metrics = evaluate_run(work / name, gt_dir)
            runs[name] = (metrics, layer_curves(work / name, gt_dir, metrics["depth"]["scale"]))
        names = load_ground_truth(gt_dir).layer_names

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), sharey=True)
    colors = plt.get_cmap("tab10")
    titles = {"sim3": "Sim(3) registration only", "lsa": "Sim(3) + layer-wise scale alignment"}
    for ax, (name, (metrics, curves)) in zip(axes, runs.items()):
        for layer, (f, v) in sorted(curves.items()):
            ax.plot(f, np.exp(v), color=colors(layer % 10), lw=1.4, label=names.get(layer, f"layer {layer}"))
        for start in range(0, frames, config.step):
            ax.axvline(start, color="0.85", lw=0.6, zorder=0)
        ax.set_title(f"{titles[name]}\nper-layer log-ratio std {metrics['layer_log_ratio_std_mean']:.3f}, "
                     f"Abs Rel {metrics['depth']['abs_rel']:.3f}", fontsize=10)
        ax.set_xlabel("frame (grey lines: window starts)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("registered / true depth (one global scale)")
    axes[1].legend(fontsize=8, loc="upper right")
    fig.suptitle(f"Synthetic scene, depth 2.8-90 m, {args.windows} windows of 30 (overlap 10), seed {args.seed}",
                 fontsize=10)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
