"""Camera solve cost per frame on footage: decode, KLT tracking, bundle adjustment; and its accuracy.

A textured synthetic shot (moving object in view) is rendered at ``--size`` and written to an mp4;
then it is decoded (``core.frames``), tracked (``core.solve.tracks``) and one window is adjusted
(``core.solve.bundle``): the first ``--fixed`` frames are exact and fixed (frames already emitted),
the others start from ground truth with network-like noise (0.15 deg, 1 cm, 3 % depth scale per frame).
Adjustment per frame = the window's solve time / its new frames. Each is timed ``--repeats`` times (decoding
and tracking every frame, the adjustment) and the fastest pass's per-frame median is reported: this machine's
timings vary by 10-30 % between runs. Accuracy: ground-truth static track points reprojected (the tests'
measure is stricter: triangulated with the cameras), before and after.

    .venv/bin/python benchmarks/bench_solve.py [--size 1920x1080] [--frames 30] [--fixed 10] [--repeats 3]
        [--json out.json]
    .venv/bin/python benchmarks/bench_solve.py --engine --frames 90   # what the solve adds to a whole run

``--engine`` times whole runs instead (``engine_cost``): the clip decoded by the engine, predicted by the
synthetic backbone, registered with layer alignment, with and without the camera solve. There the tracking
(inference thread) and the adjustment (registration thread) overlap, and every window tracks the frames it
shares with the next as well.

Pinned to one core (``taskset -c 1 ...``) it says what the solve costs beside a busy inference thread; unpinned,
OpenCV's tracking and the adjustment's BLAS use both cores.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _results import save_results  # noqa: E402  (beside this script)

from core.engine import reconstruct  # noqa: E402
from core.frames import open_source  # noqa: E402
from core.geometry.rotations import rotvec_to_rotation  # noqa: E402
from core.solve.bundle import Observations, adjust, initial_points  # noqa: E402
from core.solve.tracks import Tracker  # noqa: E402
from core.run.settings import EngineSettings  # noqa: E402
from core.synthetic import SyntheticBackbone, SyntheticNoise  # noqa: E402
from core.synthetic.scene import Scene, SceneConfig  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="1920x1080")
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--fixed", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3, help="passes over the frames (and adjustments) timed")
    ap.add_argument("--engine", action="store_true",
                    help="instead: what the solve adds to a whole run (see the module docstring)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    width, height = map(int, args.size.lower().split("x"))
    scene = Scene(SceneConfig(width=width, height=height, texture=True, num_frames=args.frames))
    K, truth = scene.K(), scene.pose(np.arange(args.frames))

    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "clip.mp4"
        writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (width, height))
        depths = []
        for f in range(args.frames):
            r = scene.render(f)
            writer.write(cv2.cvtColor(r["colors"], cv2.COLOR_RGB2BGR))
            depths.append(r["depth"])
        writer.release()
        if args.engine:
            save_results(engine_cost(scene, clip, args.repeats), args.json)
            return

        decode_ms, track_ms = [], []  # per pass: the median over its frames
        for _ in range(args.repeats):  # the same frames and tracks each pass; the least disturbed pass counts
            tracker, rows, decode, track = Tracker((width, height)), [], [], []
            stream = open_source(clip).frames()
            for f in range(args.frames):
                t0 = time.perf_counter()
                _, rgb = next(stream)
                t1 = time.perf_counter()
                tracks = tracker.step(f, rgb)
                t2 = time.perf_counter()
                decode.append(1e3 * (t1 - t0))
                track.append(1e3 * (t2 - t1))
                pix = np.minimum(np.floor(tracks.xy).astype(int), [width - 1, height - 1])
                rows.append((np.full(len(tracks.ids), f), tracks.ids, tracks.xy.astype(np.float64),
                             depths[f][pix[:, 1], pix[:, 0]]))
            decode_ms.append(float(np.median(decode)))
            track_ms.append(float(np.median(track[1:])))

    rng = np.random.default_rng(args.seed)
    frame, ids, xy, depth = (np.concatenate(a) for a in zip(*rows))
    _, point = np.unique(ids, return_inverse=True)
    noisy = truth.copy()
    noisy[:, :3, :3] = truth[:, :3, :3] @ rotvec_to_rotation(rng.normal(0, np.radians(0.15), (args.frames, 3)))
    noisy[:, :3, 3] += rng.normal(0, 0.01, (args.frames, 3))
    fixed = np.arange(args.frames) < args.fixed
    noisy[fixed] = truth[fixed]
    obs = Observations(frame, point, xy, depth * np.exp(rng.normal(0, 0.03, args.frames))[frame])
    adjust_ms = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        result = adjust(noisy, fixed, K, obs, initial_points(noisy, K, obs, point.max() + 1))
        adjust_ms.append(1e3 * (time.perf_counter() - t0) / (~fixed).sum())

    def ate(T: np.ndarray) -> float:
        return float(np.sqrt((np.linalg.norm(T[:, :3, 3] - truth[:, :3, 3], axis=1) ** 2).mean()))

    med = {"decode_ms": min(decode_ms), "tracking_ms": min(track_ms), "adjustment_ms": min(adjust_ms)}
    med["total_ms"] = sum(med.values())
    results = {"machine": platform.processor() or platform.machine(), "size": [width, height],
               "frames": args.frames, "fixed": args.fixed, "repeats": args.repeats, "observations": len(frame),
               "points": int(point.max() + 1), "inlier_fraction": float(result.inlier.mean()),
               "rms_px": result.rms_px, "ate_m": {"before": ate(noisy), "after": ate(result.world_from_cam)},
               "per_frame_median_ms": med}
    print(f"{width}x{height}, {args.frames} frames ({args.fixed} fixed): {len(frame)} observations, "
          f"{results['points']} tracks, {100 * results['inlier_fraction']:.1f}% inliers, rms {result.rms_px:.3f} px")
    print(f"ATE {results['ate_m']['before'] * 100:.2f} cm -> {results['ate_m']['after'] * 100:.2f} cm")
    print("per frame: " + ", ".join(f"{k[:-3]} {v:.1f} ms" for k, v in med.items()))
    save_results(results, args.json)


def engine_cost(scene: Scene, clip: Path, repeats: int) -> dict:
    """Wall time per frame of whole runs on ``clip`` (decoded by the engine, the synthetic backbone predicting at
    256x144, windows 30/10, the focal length given so there is no lens pass) without and with the camera solve,
    interleaved ``repeats`` times; the fastest of each."""
    frames = scene.config.num_frames
    settings = {False: EngineSettings(refine=False, focal_px=float(scene.K()[0, 0])),
                True: EngineSettings(refine=True, focal_px=float(scene.K()[0, 0]))}
    wall: dict[bool, list[float]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats):
            for refine in (False, True):
                backbone = SyntheticBackbone(scene, SyntheticNoise(), size=(256, 144))
                t0 = time.perf_counter()
                status = reconstruct(open_source(clip), backbone, Path(tmp) / f"run{r}_{refine}", settings[refine])
                wall[refine].append(1e3 * (time.perf_counter() - t0) / frames)
                assert status == "complete", status
    out = {"frames": frames, "size": [scene.config.width, scene.config.height], "repeats": repeats,
           "run_ms_per_frame": {"without_solve": min(wall[False]), "with_solve": min(wall[True])}}
    out["solve_ms_per_frame"] = out["run_ms_per_frame"]["with_solve"] - out["run_ms_per_frame"]["without_solve"]
    print(f"whole run, {frames} frames at {scene.config.width}x{scene.config.height}: "
          f"{out['run_ms_per_frame']['without_solve']:.1f} ms/frame without the solve, "
          f"{out['run_ms_per_frame']['with_solve']:.1f} with it: the solve adds {out['solve_ms_per_frame']:.1f} ms")
    return out


if __name__ == "__main__":
    main()
