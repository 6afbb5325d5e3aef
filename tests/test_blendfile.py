"""Headless .blend building: ``laser-blender blend`` and the ``blender -b`` batch script, as subprocesses."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import bpy

from core.synthetic import SceneConfig, render_clip
from handmade_run import write_run

REPO = Path(__file__).resolve().parents[1]


def open_blend(path: Path) -> dict:
    """What a saved .blend holds, read back in this process's Blender."""
    bpy.ops.wm.open_mainfile(filepath=str(path))
    (coll,) = [c for c in bpy.data.collections if c.get("laser_run")]
    cam = next(o for o in coll.objects if o.type == "CAMERA")
    return {"windows": list(coll["laser_windows"]), "points": sum(len(o.data.vertices) for o in coll.objects
                                                                  if o.type == "MESH"),
            "keys": len(cam.animation_data.action.fcurves[0].keyframe_points),
            "camera": bpy.context.scene.camera == cam, "frame_end": bpy.context.scene.frame_end}


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "laser_blender.cli", *args], capture_output=True, text=True,
                          timeout=300)


def test_blend_command_builds_from_partial_run(tmp_path):
    run_dir = write_run(tmp_path / "run", frame_count=18, n_windows=2)  # still "running"
    result = cli("blend", str(run_dir), "-o", str(tmp_path / "out" / "shot.blend"), "--point-budget", "4000")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{tmp_path / 'out' / 'shot.blend'}\n"  # only the path on stdout
    got = open_blend(tmp_path / "out" / "shot.blend")
    assert got == {"windows": [0, 1], "points": got["points"], "keys": 12, "camera": True, "frame_end": 18}
    assert 0 < got["points"] <= 4000


def test_blend_command_explains_a_non_run(tmp_path):
    result = cli("blend", str(tmp_path), "-o", str(tmp_path / "x.blend"))
    assert result.returncode == 2 and not (tmp_path / "x.blend").exists()
    assert "not a laser-blender run directory" in result.stderr


def test_batch_script_reconstructs_shots_into_blends(tmp_path):
    clip, gt = render_clip(tmp_path / "synthetic", SceneConfig(width=96, height=64, num_frames=20))
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "blender_batch.py"), "--", str(clip), str(tmp_path / "missing.mp4"),
         "--out", str(tmp_path / "blends"), "--engine-python", sys.executable, "--backbone", "synthetic",
         "--synthetic-scene", str(gt), "--window", "8", "--overlap", "2", "--device", "cpu",
         "--point-budget", "10000"],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr  # one shot failed
    assert f"{clip}: complete, 3 windows, 10,000 points -> {tmp_path / 'blends' / 'clip.blend'}" in result.stdout
    assert "missing.mp4: failed" in result.stdout and "no such file" in result.stderr
    got = open_blend(tmp_path / "blends" / "clip.blend")
    assert got["windows"] == [0, 1, 2] and got["keys"] == 20 and got["points"] == 10_000
