"""`laser-blender reconstruct --backbone pi3|vggt|da3 --weights FILE` end to end on CPU, through the
real CLI: checkpoint loading, preprocessing, adapter, streaming, run directory; then
`laser-blender blend` on the DA3 run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.run.files import list_windows
from core.run.tum import read_tum
from core.synthetic import SceneConfig, render_clip
from run_files import iter_aligned, read_run
from tiny_models import write_tiny_checkpoint

CLI = str(Path(sys.executable).with_name("laser-blender"))


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return render_clip(tmp_path_factory.mktemp("clip"), SceneConfig(width=160, height=120, num_frames=14))[0]


@pytest.fixture(scope="module")
def reconstructed(clip, fixtures_dir, tmp_path_factory):
    """backbone -> (finished ``reconstruct`` process, run directory), each run once, from a
    checkpoint of the tiny reference network written like the released ones."""
    runs = {}

    def run(backbone: str) -> tuple[subprocess.CompletedProcess, Path]:
        if backbone not in runs:
            tmp = tmp_path_factory.mktemp(backbone)
            weights = write_tiny_checkpoint(fixtures_dir, backbone, tmp / f"{backbone}.safetensors")
            run_dir = tmp / "run"
            r = subprocess.run([CLI, "reconstruct", str(clip), "-o", str(run_dir), "--backbone", backbone,
                                "--weights", str(weights), "--device", "cpu", "--window", "6", "--overlap", "2",
                                "--no-layer-align"], capture_output=True, text=True, timeout=600)
            runs[backbone] = (r, run_dir)
        return runs[backbone]

    return run


@pytest.mark.parametrize("network, licence, size", [
    ("pi3", "non-commercial", None),
    ("vggt", "non-commercial", None),
    ("da3", "apache-2.0: commercial use permitted", (504, 378)),
])
def test_reconstruct_with_tiny_checkpoint(network, licence, size, reconstructed):
    r, run_dir = reconstructed(network)
    assert r.returncode == 0, r.stderr
    assert licence in r.stderr.lower()  # the licence is stated at start
    meta = json.loads((run_dir / "predictions" / "meta.json").read_text())
    assert meta["geometry"]["footage"] == [160, 120]
    w, h = meta["width"], meta["height"]
    assert w % 14 == 0 and h % 14 == 0 and abs(w / h - 4 / 3) < 0.05
    assert size is None or (w, h) == size
    run = read_run(run_dir)
    assert run["status"] == "complete" and run["frames_done"] == 14
    assert [i for i, _ in list_windows(run_dir / "predictions")] == [0, 1, 2]  # 14 frames, step 4
    wins = list(iter_aligned(run_dir))
    frames = np.concatenate([w_.frames for w_ in wins])
    np.testing.assert_array_equal(frames, np.arange(14))
    for win in wins:
        assert win.depth.shape[1:] == (h, w) and np.isfinite(win.depth).all()
        assert np.isfinite(win.poses).all() and win.K[0, 0] > 0
    times, poses = read_tum(run_dir / "trajectory.tum")
    assert len(times) == 14 and np.isfinite(poses).all()


@pytest.mark.parametrize("backbone, repo", [("pi3", "yyfz233/Pi3"), ("da3-small", "depth-anything/DA3-SMALL")])
def test_missing_weights_error_through_cli(backbone, repo, clip, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    r = subprocess.run([CLI, "reconstruct", str(clip), "-o", str(tmp_path / "run"), "--backbone", backbone],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert repo in r.stderr and "model.safetensors" in r.stderr and "--weights" in r.stderr


def test_da3_run_becomes_a_blend(reconstructed, tmp_path):
    import bpy

    r, run_dir = reconstructed("da3")
    assert r.returncode == 0, r.stderr
    out = tmp_path / "da3.blend"
    b = subprocess.run([CLI, "blend", str(run_dir), "-o", str(out)], capture_output=True, text=True, timeout=300)
    assert b.returncode == 0, b.stderr
    bpy.ops.wm.open_mainfile(filepath=str(out))
    (coll,) = [c for c in bpy.data.collections if c.get("laser_run")]
    (cam,) = [o for o in coll.objects if o.type == "CAMERA"]
    assert list(coll["laser_windows"]) == [0, 1, 2] and bpy.context.scene.camera == cam
    assert len(cam.animation_data.action.fcurves[0].keyframe_points) == 14
    assert sum(len(o.data.vertices) for o in coll.objects if o.type == "MESH") > 0
