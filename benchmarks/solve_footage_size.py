"""How large footage must be for the camera solve to beat the network's cameras: why it is on by default from 512 px.

The orientation tests' shot (120 frames, ground plane, walls, a moving object; network depth without per-layer
scale errors unless ``--layer-errors``, predicted at ``--prediction``; layer alignment off unless
``--layer-align``) is rendered textured (flat-shaded with ``--flat``) at each of ``--sizes`` and reconstructed
twice: registered only (``refine=False``) and solved (``refine=True``: the lens pass, then every window). Per run,
against the truth:

* ``ground_off``: the largest distance of true ground points (out to 25 m) from Z = 0 after the run's automatic
  orientation, as a share of the cameras' median height (the orientation tests ask under 5 %), the truth
  brought into the run by the rotation that best maps the true cameras' rotations onto the run's, with the
  scale and shift that then fit the camera centres: the ground as the run's cameras see it, which is what a
  CG object placed on it shows;
* ``ground_off_path``: the same with the truth brought in by the Sim(3) that fits the camera centres alone.
  That rotation is only as good as the path's spread allows: the shot's centres spread 0.97, 0.38 and 0.06 m
  (RMS along their principal axes), so a few millimetres of path error tilt it by tenths of a degree, which
  the ground 25 m away shows as several % of the camera height;
* ``heading_deg``: the mean angle between the run's camera rotations and the true ones after the Sim(3) that
  fits the camera centres (a path that bends against its cameras);
* ``ate``: camera-centre RMSE after that Sim(3), as a share of the path length;
* ``chamfer`` (accuracy and completeness averaged) and ``abs_rel``: the point cloud and depth maps as users see
  them, against the true ones (``laser-blender evaluate``: scene units, after the path's Sim(3); Abs Rel after one
  global scale).

    .venv/bin/python benchmarks/solve_footage_size.py [--sizes 256x192 320x240 384x288 512x384] [--frames 120]
        [--prediction 128x96] [--flat] [--layer-errors] [--layer-align] [--seed 0]
        [--json benchmarks/results/solve_footage_size.json]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _results import save_results  # noqa: E402  (beside this script)

from core.engine import reconstruct  # noqa: E402
from core.geometry.rotations import procrustes_rotation, rotation_angle_deg  # noqa: E402
from core.geometry.transforms import umeyama_sim3  # noqa: E402
from core.metrics import ate  # noqa: E402
from core.run.rundir import RunDir  # noqa: E402
from core.run.settings import EngineSettings  # noqa: E402
from core.synthetic import (Scene, SceneConfig, SyntheticBackbone, SyntheticNoise, SyntheticSource,  # noqa: E402
                            render_clip)
from laser_blender.driver import orient_completed_run  # noqa: E402
from laser_blender.evaluate import evaluate_run  # noqa: E402
from laser_blender.orient import run_cameras  # noqa: E402


def _size(text: str) -> tuple[int, int]:
    w, h = (int(v) for v in text.lower().split("x"))
    return w, h


def measure(scene: Scene, run: RunDir, gt_dir: Path) -> dict:
    """Ground, heading, ATE and point cloud of a finished, oriented run against ``scene``'s truth (written to
    ``gt_dir``; see the module docstring)."""
    poses = run_cameras(run)
    truth = scene.pose(np.arange(len(poses)))
    scene_world = run.scene_transform()
    height = float(np.median(scene_world.apply_poses(poses)[:, 2, 3]))
    c = scene.config
    ground = np.array([[x, c.ground_height, z] for x in (-6.0, -2.0, 2.0, 6.0) for z in (2.0, 6.0, 12.0, 25.0)])

    def ground_off(s: float, R: np.ndarray, t: np.ndarray) -> float:
        """Largest |Z| of the true ground points brought into the run by ``s R x + t``, over the camera height."""
        scene_from_truth = scene_world.matrix() @ np.vstack([np.c_[s * R, t], [0, 0, 0, 1]])
        ground_z = ground @ scene_from_truth[:3, :3].T + scene_from_truth[:3, 3]
        return float(np.abs(ground_z[:, 2]).max() / height)

    R_cams, _ = procrustes_rotation(np.einsum("fij,fkj->ik", poses[:, :3, :3], truth[:, :3, :3]))
    src, dst = truth[:, :3, 3] @ R_cams.T, poses[:, :3, 3]
    src_c, dst_c = src - src.mean(0), dst - dst.mean(0)
    s_cams = float((src_c * dst_c).sum() / (src_c * src_c).sum())
    s, R, t = umeyama_sim3(truth[:, :3, 3], poses[:, :3, 3])
    angle = rotation_angle_deg(np.einsum("fji,fjk->fik", R @ truth[:, :3, :3], poses[:, :3, :3]))
    err = ate(poses, truth)
    cloud = evaluate_run(run.root, gt_dir)
    return {"ground_off": ground_off(s_cams, R_cams, dst.mean(0) - s_cams * src.mean(0)),
            "ground_off_path": ground_off(s, R, t), "heading_deg": float(angle.mean()),
            "ate_over_length": err["rmse_over_length"], "chamfer": cloud["pointcloud"]["chamfer"],
            "abs_rel": cloud["depth"]["abs_rel"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=_size, nargs="+", default=[(256, 192), (320, 240), (384, 288), (512, 384)])
    ap.add_argument("--frames", type=int, default=120)
    ap.add_argument("--prediction", type=_size, default=(128, 96))
    ap.add_argument("--flat", action="store_true", help="flat-shaded surfaces (few features to track)")
    ap.add_argument("--layer-errors", action="store_true",
                    help="the synthetic network's default noise, with its per-layer depth scale errors")
    ap.add_argument("--layer-align", action="store_true", help="layer-wise scale alignment on (as users run)")
    ap.add_argument("--seed", type=int, default=0, help="the synthetic network's noise seed")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    noise = SyntheticNoise(seed=args.seed, layer_scale=SyntheticNoise.layer_scale if args.layer_errors else 0.0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for width, height in args.sizes:
            config = SceneConfig(width=width, height=height, num_frames=args.frames, texture=not args.flat)
            scene = Scene(config)
            _, gt_dir = render_clip(Path(tmp) / f"{width}x{height}", config)
            row = {"size": [width, height]}
            for refine in (False, True):
                run = RunDir(Path(tmp) / f"{width}x{height}_{refine}")
                backbone = SyntheticBackbone(scene, noise, size=args.prediction)
                status = reconstruct(SyntheticSource(scene), backbone, run.root,
                                     EngineSettings(window=30, overlap=10, layer_align=args.layer_align,
                                                    refine=refine))
                assert status == "complete", status
                orient_completed_run(run)
                row["solved" if refine else "registered"] = measure(scene, run, gt_dir)
            rows.append(row)
            a, b = row["registered"], row["solved"]
            print(f"{width}x{height}: ground off Z=0 {a['ground_off']:.1%} -> {b['ground_off']:.1%} of the camera "
                  f"height ({a['ground_off_path']:.1%} -> {b['ground_off_path']:.1%} by the path), heading "
                  f"{a['heading_deg']:.2f} -> {b['heading_deg']:.2f} deg, ATE/length {a['ate_over_length']:.4f} -> "
                  f"{b['ate_over_length']:.4f}, Chamfer {a['chamfer']:.3f} -> {b['chamfer']:.3f}, Abs Rel "
                  f"{a['abs_rel']:.4f} -> {b['abs_rel']:.4f}", flush=True)
    save_results({"frames": args.frames, "prediction": list(args.prediction), "seed": args.seed,
                  "textured": not args.flat, "layer_errors": args.layer_errors,
                  "layer_align": args.layer_align, "rows": rows}, args.json)


if __name__ == "__main__":
    main()
