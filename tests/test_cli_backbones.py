"""`laser-blender reconstruct --backbone pi3|vggt --weights FILE` end to end on CPU, through the
real CLI: checkpoint loading, preprocessing, adapter, streaming, run directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.rundir import iter_aligned, list_windows, read_run, read_tum
from core.synthetic import SceneConfig, render_clip
from tiny_models import write_tiny_checkpoint

CLI = str(Path(sys.executable).with_name("laser-blender"))


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return render_clip(tmp_path_factory.mktemp("clip"), SceneConfig(width=160, height=120, num_frames=14))[0]


@pytest.mark.parametrize("network", ["pi3", "vggt"])
def test_reconstruct_with_tiny_checkpoint(network, clip, fixtures_dir, tmp_path):
    weights = write_tiny_checkpoint(fixtures_dir, network, tmp_path / f"{network}.safetensors")
    run_dir = tmp_path / "run"
    r = subprocess.run([CLI, "reconstruct", str(clip), "-o", str(run_dir), "--backbone", network,
                        "--weights", str(weights), "--device", "cpu", "--window", "6", "--overlap", "2",
                        "--no-layer-align"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "non-commercial" in r.stderr.lower()  # the licence is stated at start
    meta = json.loads((run_dir / "predictions" / "meta.json").read_text())
    assert meta["geometry"]["footage"] == [160, 120]
    w, h = meta["width"], meta["height"]
    assert w % 14 == 0 and h % 14 == 0 and abs(w / h - 4 / 3) < 0.05
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


def test_missing_weights_error_through_cli(clip, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    r = subprocess.run([CLI, "reconstruct", str(clip), "-o", str(tmp_path / "run"), "--backbone", "pi3"],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "yyfz233/Pi3" in r.stderr and "model.safetensors" in r.stderr and "--weights" in r.stderr
