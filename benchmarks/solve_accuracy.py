"""Accuracy of the camera solve against ground truth, beside the unrefined (registered) cameras.

The synthetic shot (textured surfaces, the moving object in view, footage filtered 2x like a real
camera's) streams through the synthetic backbone (default network noise) twice per seed: with
the solve (``refine=True``) and without it (``refine=False``, ``--no-refine``). Per run, from ground truth:

* ``gt_px``: static scene points' exact pixels in every frame, triangulated with the run's cameras
  and reprojected with them (RMS, footage pixels): what a matchmover sees as a CG object sliding;
* ``ate``: camera-centre error after a Sim(3) fit (scene units, the truth's);
* ``focal_err``: relative focal-length error at footage resolution (a zoom's worst frame);
* ``rms_px``: the run's own solve error (solve.json), which should estimate ``gt_px`` honestly;
* ``lens_px``: the largest distance over the frame between where the run's lens (focal length and
  distortion) and the true lens put the same rays (footage pixels; a zoom's worst frame).

    .venv/bin/python benchmarks/solve_accuracy.py [--size 1280x720] [--frames 90] [--seeds 0 1 2] [--json out.json]
        [--figure docs/images/solve_error.png] [--focal-bias 0.03] [--distortion -0.08 0.02] [--zoom 1.5]

``--focal-bias`` makes the network's focal length wrong by that fraction for the whole shot (the solve
refines it over the first frames). ``--distortion K1 K2`` renders the footage through that radial
distortion and refines with ``--refine-distortion``; ``gt_px`` is then measured in the ideal (undistorted)
image, the lens itself by ``lens_px``. ``--zoom FACTOR`` zooms the lens in by that factor and back out
every 60 frames (``SceneConfig.zoom``), the network's focal length off by 0.5 % per frame
(``SyntheticNoise.focal_noise``), and runs with ``--zoom``.

``--figure`` plots the per-frame solve error of the first seed with and without refinement.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _results import save_results  # noqa: E402  (beside this script)

from core.engine import reconstruct  # noqa: E402
from core.geometry.distortion import distort  # noqa: E402
from core.metrics import ate, triangulated_reprojection_errors, triangulated_reprojection_rms  # noqa: E402
from core.run.rundir import RunDir  # noqa: E402
from core.run.settings import EngineSettings  # noqa: E402
from core.synthetic import Scene, SceneConfig, SyntheticBackbone, SyntheticNoise, SyntheticSource  # noqa: E402
from core.synthetic.solve_truth import StaticTruth, static_truth  # noqa: E402

PREDICTION = (256, 144)


def run_cameras(run: RunDir) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(frames (N,), world_from_cam (N, 4, 4), footage K (N, 3, 3)) of a finished run."""
    windows = list(run.iter_aligned())
    frames = np.concatenate([w.frames for w in windows])
    poses = np.concatenate([w.poses for w in windows]).astype(np.float64)
    K = np.concatenate([w.frame_intrinsics for w in windows]).astype(np.float64)
    return frames, poses, run.read_manifest().geometry.intrinsics_to_footage(K)


def true_K(scene: Scene, frames: np.ndarray) -> np.ndarray:
    """(N, 3, 3) the scene's footage intrinsics at ``frames`` (a zoom's change)."""
    c = scene.config
    return np.stack([scene.K(c.width, c.height, int(f)) for f in frames])


def per_frame_truth_px(poses: np.ndarray, K: np.ndarray, truth: StaticTruth) -> np.ndarray:
    """(F,) RMS per frame of the triangulated-and-reprojected true observations."""
    err, seen = triangulated_reprojection_errors(poses, K, truth.uv, truth.seen)
    return np.sqrt((np.where(seen, err, 0.0) ** 2).sum(1) / np.maximum(seen.sum(1), 1))


def lens_px(scene: Scene, frames: np.ndarray, K: np.ndarray, distortion: tuple[float, float] | None) -> float:
    """Largest pixel distance over the frame, over ``frames``, between the true lens and ``K`` (N, 3, 3) with
    ``distortion`` on the same rays."""
    (w, h), worst = (scene.config.width, scene.config.height), 0.0
    u, v = np.meshgrid(np.linspace(0, w, 65), np.linspace(0, h, 37))
    for K_true, K_found in zip(true_K(scene, frames), K):
        x, y = (u - K_true[0, 2]) / K_true[0, 0], (v - K_true[1, 2]) / K_true[1, 1]
        true = np.stack(distort(x, y, scene.config.distortion)) * np.diag(K_true)[:2, None, None]
        found = np.stack(distort(x, y, distortion or (0.0, 0.0))) * np.diag(K_found)[:2, None, None]
        worst = max(worst, float(np.abs(found - true).max()))
    return worst


def measure(scene: Scene, truth: StaticTruth, run: RunDir) -> dict:
    frames, poses, K = run_cameras(run)
    report = run.read_solve()
    return {
        "lens_px": lens_px(scene, frames, K, report.distortion if report else None),
        "distortion": list(report.distortion) if report and report.distortion else None,
        "gt_px": triangulated_reprojection_rms(poses, K, truth.uv, truth.seen),
        "ate": ate(poses, scene.pose(frames))["rmse"],
        "focal_err": float(np.abs(K[:, 0, 0] / true_K(scene, frames)[:, 0, 0] - 1).max()),
        "rms_px": report.rms_px if report else None,
        "per_frame_gt_px": per_frame_truth_px(poses, K, truth).round(4).tolist(),
        "per_frame_px": {int(k): v for k, v in (report.per_frame_px if report else {}).items()},
    }


def study(size: tuple[int, int], frames: int, seeds: list[int], workdir: Path, focal_bias: float = 0.0,
          distortion: tuple[float, float] = (0.0, 0.0), zoom: float = 1.0) -> dict:
    scene = Scene(SceneConfig(width=size[0], height=size[1], num_frames=frames, texture=True, distortion=distortion,
                              zoom=zoom, zoom_period=60))
    truth = static_truth(scene, np.arange(frames))
    focal_noise = 0.005 if zoom != 1.0 else 0.0
    out: dict = {"setup": {"size": list(size), "frames": frames, "prediction": list(PREDICTION),
                           "points": int(truth.seen.any(0).sum()), "focal_bias": focal_bias,
                           "distortion": list(distortion), "zoom": zoom, "focal_noise": focal_noise}, "seeds": {}}
    for seed in seeds:
        row = {}
        for refine in (False, True):
            run = RunDir(workdir / f"s{seed}_{refine}")
            t0 = time.perf_counter()
            noise = SyntheticNoise(seed=seed, focal_bias=focal_bias, focal_noise=focal_noise)
            backbone = SyntheticBackbone(scene, noise, size=PREDICTION)
            settings = EngineSettings(refine=refine, refine_distortion=refine and any(distortion), zoom=zoom != 1.0)
            reconstruct(SyntheticSource(scene, supersample=2), backbone, run.root, settings, overwrite=True)
            row["refined" if refine else "unrefined"] = {**measure(scene, truth, run),
                                                         "seconds": round(time.perf_counter() - t0, 1)}
        a, b = row["unrefined"], row["refined"]
        print(f"seed {seed}: truth reprojection {a['gt_px']:.3f} -> {b['gt_px']:.3f} px, ATE {a['ate']:.4f} -> "
              f"{b['ate']:.4f}, focal error {100 * a['focal_err']:.2f} -> {100 * b['focal_err']:.2f} %, "
              f"lens {a['lens_px']:.2f} -> {b['lens_px']:.2f} px, solve error {b['rms_px']:.3f} px",
              flush=True)
        out["seeds"][seed] = row
    return out


def figure(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seed = next(iter(results["seeds"].values()))
    fig, ax = plt.subplots(figsize=(8, 3.2), dpi=120)
    for key, style in (("unrefined", "--"), ("refined", "-")):
        ax.plot(seed[key]["per_frame_gt_px"], style, label=f"{key}: true error (static points)")
    solve = seed["refined"]["per_frame_px"]
    ax.plot(list(solve), list(solve.values()), ":", label="refined: solve error (solve.json)")
    ax.set_xlabel("frame")
    ax.set_ylabel("reprojection error (px)")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax.set_title(f"Per-frame error, synthetic {results['setup']['size'][0]}x{results['setup']['size'][1]} shot")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="1280x720")
    ap.add_argument("--frames", type=int, default=90)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--json", type=Path)
    ap.add_argument("--figure", type=Path)
    ap.add_argument("--focal-bias", type=float, default=0.0)
    ap.add_argument("--distortion", type=float, nargs=2, default=(0.0, 0.0), metavar=("K1", "K2"))
    ap.add_argument("--zoom", type=float, default=1.0, metavar="FACTOR")
    args = ap.parse_args()
    size = tuple(int(v) for v in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory(prefix="solve_accuracy_") as tmp:
        results = study(size, args.frames, args.seeds, Path(tmp), args.focal_bias, tuple(args.distortion), args.zoom)
    if args.figure:
        figure(results, args.figure)
    save_results(results, args.json)


if __name__ == "__main__":
    main()
