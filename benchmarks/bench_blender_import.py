"""Import speed of the scene builder in Blender: 5 million coloured points and 10,000 camera keys.

    .venv/bin/python benchmarks/bench_blender_import.py [--points 5000000] [--frames 10000] [--windows 10]

A run directory with run.json and meta.json is written; the aligned windows are
built in memory (the benchmark measures the import into Blender, not disk reads)
and added with ``RunScene.add_window``, exactly what each ``window_done`` event
does. Reported: seconds for the whole import, points/s, and the first evaluation
of the Geometry Nodes point clouds (what the viewport waits for).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from core.run.arrays import AlignedWindow
from core.run.manifest import InputGeometry, PredictionsMeta, RunManifest, SourceInfo
from core.run.rundir import RunDir, RunWriter


def make_windows(frames: int, windows: int, points: int) -> tuple[list[AlignedWindow], tuple[int, int]]:
    """``windows`` windows covering ``frames`` frames with exactly ``points`` pixels in all."""
    per_frame = points // frames
    h = max(d for d in range(1, int(np.sqrt(per_frame)) + 1) if per_frame % d == 0)
    w = per_frame // h
    assert h * w * frames == points, "--points must be a multiple of --frames"
    rng = np.random.default_rng(0)
    t = np.arange(frames)
    poses = np.tile(np.eye(4, dtype=np.float32), (frames, 1, 1))
    yaw = 0.002 * t
    poses[:, 0, 0], poses[:, 0, 2], poses[:, 2, 0], poses[:, 2, 2] = np.cos(yaw), np.sin(yaw), -np.sin(yaw), np.cos(yaw)
    poses[:, 0, 3], poses[:, 2, 3] = np.sin(0.001 * t), 0.001 * t
    K = np.array([[w, 0, w / 2], [0, w, h / 2], [0, 0, 1]], np.float32)
    out = []
    for index, frames_w in enumerate(np.array_split(np.arange(frames), windows)):
        m = len(frames_w)
        out.append(AlignedWindow(
            index=index, frames=frames_w.astype(np.int64), poses=poses[frames_w], K=K,
            depth=np.full((m, h, w), 3.0, np.float32),  # one static surface: no point is marked dynamic
            conf=rng.uniform(0, 1, (m, h, w)).astype(np.float32),
            colors=rng.integers(0, 256, (m, h, w, 3), dtype=np.uint8),
            mask=np.ones((m, h, w), bool)))
    return out, (w, h)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=5_000_000)
    parser.add_argument("--frames", type=int, default=10_000)
    parser.add_argument("--windows", type=int, default=10)
    args = parser.parse_args()

    import bpy

    from laser_blender.scene import RunScene, SceneOptions

    wins, (w, h) = make_windows(args.frames, args.windows, args.points)
    with tempfile.TemporaryDirectory() as tmp:
        writer = RunWriter(RunDir(Path(tmp) / "bench"), fps=24.0)
        writer.start(RunManifest(source=SourceInfo(num_frames=args.frames)))
        geometry = InputGeometry.resize_only((w, h), (w, h))
        writer.write_meta(PredictionsMeta(window=1000, overlap=0, height=h, width=w, geometry=geometry, fps=24.0))
        bpy.ops.wm.read_factory_settings(use_empty=True)
        scene = bpy.context.scene

        t0 = time.perf_counter()
        run = RunScene.open(scene, writer.run.root, SceneOptions(point_budget=args.points))
        for win in wins:
            run.add_window(win)
        t_import = time.perf_counter() - t0

        t1 = time.perf_counter()
        depsgraph = bpy.context.evaluated_depsgraph_get()
        shown = 0
        for obj in run.point_objects:
            geometry_set = obj.evaluated_get(depsgraph).evaluated_geometry()
            shown += len(geometry_set.pointcloud.points)
        t_eval = time.perf_counter() - t1

    keys = len(run.camera.animation_data.action.fcurves[0].keyframe_points)
    assert run.points == shown == args.points and keys == args.frames, (run.points, shown, keys)
    result = {"points": run.points, "camera_keys": keys, "windows": len(wins),
              "import_s": round(t_import, 3), "points_per_s": round(run.points / t_import),
              "first_eval_s": round(t_eval, 3), "bpy": bpy.app.version_string}
    print(f"imported {run.points:,} points and {keys:,} camera keys in {t_import:.2f} s "
          f"({run.points / t_import:,.0f} points/s); Geometry Nodes first evaluation {t_eval:.2f} s")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
