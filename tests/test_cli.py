"""The laser-blender command line, run as a real subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from core.run.files import list_windows
from core.run.tum import read_tum
from core.synthetic import SceneConfig, render_clip
from run_files import read_run

CLI = [str(Path(sys.executable).with_name("laser-blender"))]


def _cli(*args, **kw):
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True, timeout=300, **kw)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    out = tmp_path_factory.mktemp("clip")
    return render_clip(out, SceneConfig(width=128, height=96, num_frames=400))


def test_reconstruct_then_align_then_evaluate(clip, tmp_path):
    video, gt = clip
    r = _cli("reconstruct", video, "-o", tmp_path / "run", "--backbone", "synthetic", "--synthetic-scene", gt,
             "--max-frames", 60, "--window", 16, "--overlap", 6, "--no-layer-align")
    assert r.returncode == 0, r.stderr
    run = read_run(tmp_path / "run")
    assert run["status"] == "complete" and run["frames_done"] == 60
    # the camera solve is left to its default: 128 px wide footage is too small for it, and the summary says so
    assert "no camera solve: the footage (128x96) is under 512 px wide" in r.stderr
    assert not (tmp_path / "run" / "solve.json").exists()
    r = _cli("align", tmp_path / "run", "-o", tmp_path / "run2", "--no-layer-align")
    assert r.returncode == 0, r.stderr
    assert "camera solve" not in r.stderr  # no footage given: nothing to solve, nothing to say
    a, b = read_tum(tmp_path / "run" / "trajectory.tum"), read_tum(tmp_path / "run2" / "trajectory.tum")
    np.testing.assert_allclose(a[1], b[1], atol=1e-5)
    r = _cli("evaluate", tmp_path / "run", "--gt", gt)
    assert r.returncode == 0, r.stderr
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["ate"]["rmse"] < 0.05 * metrics["ate"]["length"]


def test_ctrl_c_finishes_current_window_and_marks_cancelled(clip, tmp_path):
    video, gt = clip
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(CLI + ["reconstruct", str(video), "-o", str(run_dir), "--backbone", "synthetic",
                                   "--synthetic-scene", str(gt), "--window", "12", "--overlap", "4",
                                   "--no-layer-align"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not list_windows(run_dir / "aligned") and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "run finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "cancelled" in err
    run = read_run(run_dir)
    windows = list_windows(run_dir / "aligned")
    assert run["status"] == "cancelled"
    assert run["windows_done"] == len(windows) >= 1
    assert len(read_tum(run_dir / "trajectory.tum")[0]) == run["frames_done"] < 400

    r = _cli("reconstruct", video, "-o", run_dir, "--backbone", "synthetic", "--synthetic-scene", gt,
             "--window", 12, "--overlap", 4, "--no-layer-align", "--resume")
    assert r.returncode == 0, r.stderr
    times, _ = read_tum(run_dir / "trajectory.tum")
    np.testing.assert_allclose(times * 30.0, np.arange(400), atol=1e-4)


@pytest.mark.parametrize("bad,needle", [("missing.mp4", "missing.mp4"), ("not_a_video.mp4", "not_a_video.mp4")])
def test_bad_input_gives_clear_error(tmp_path, bad, needle):
    if bad == "not_a_video.mp4":
        (tmp_path / bad).write_bytes(os.urandom(4096))
    r = _cli("reconstruct", tmp_path / bad, "-o", tmp_path / "run", "--backbone", "pi3")
    assert r.returncode == 2
    assert needle in r.stderr and "Traceback" not in r.stderr


def test_no_predictions_keeps_only_the_registered_result(clip, tmp_path):
    video, gt = clip
    r = _cli("reconstruct", video, "-o", tmp_path / "run", "--backbone", "synthetic", "--synthetic-scene", gt,
             "--max-frames", 30, "--window", 12, "--overlap", 4, "--no-predictions", "--no-refine")
    assert r.returncode == 0, r.stderr
    assert "camera solve" not in r.stderr  # asked off: nothing to explain
    assert list_windows(tmp_path / "run" / "predictions") == []
    assert (tmp_path / "run" / "predictions" / "meta.json").exists()
    assert len(list_windows(tmp_path / "run" / "aligned")) == 4
    assert read_run(tmp_path / "run")["settings"]["save_predictions"] is False


def test_invalid_settings_are_rejected(tmp_path, clip):
    video, gt = clip
    r = _cli("reconstruct", video, "-o", tmp_path / "run", "--backbone", "synthetic", "--synthetic-scene", gt,
             "--window", 10, "--overlap", 10)
    assert r.returncode == 2 and "overlap" in r.stderr and "Traceback" not in r.stderr


def test_align_accepts_foreign_predictions_and_rejects_malformed_ones(tmp_path):
    """A predictions/ directory written by another tool (plain numpy) registers; broken ones fail clearly."""
    from core.geometry.camera import unproject
    from core.synthetic import Scene

    scene = Scene(SceneConfig(width=64, height=48))
    pred = tmp_path / "pred"
    pred.mkdir()
    (pred / "meta.json").write_text(json.dumps({"window": 8, "overlap": 3, "height": 48, "width": 64}))
    for k, start in enumerate(range(0, 18, 5)):
        frames = np.arange(start, min(start + 8, 20))
        renders = [scene.render(int(f), 64, 48) for f in frames]
        np.savez(pred / f"w{k:05d}.npz", frames=frames,
                 points=unproject(np.stack([r["depth"] for r in renders]), scene.K(64, 48)),
                 poses=scene.pose(frames).astype(np.float32),
                 conf=np.ones((len(frames), 48, 64), np.float32),
                 colors=np.stack([r["colors"] for r in renders]))
    r = _cli("align", pred, "-o", tmp_path / "run", "--no-layer-align")
    assert r.returncode == 0, r.stderr
    _, poses = read_tum(tmp_path / "run" / "trajectory.tum")
    np.testing.assert_allclose(poses, scene.pose(np.arange(20)), atol=1e-4)

    with np.load(pred / "w00002.npz") as z:
        np.savez(pred / "w00002.npz", **{k: z[k] for k in z.files if k != "conf"})
    r = _cli("align", pred, "-o", tmp_path / "run2", "--no-layer-align")
    assert r.returncode == 2 and "w00002.npz" in r.stderr and "conf" in r.stderr
    assert read_run(tmp_path / "run2")["status"] == "failed"
    assert len(list_windows(tmp_path / "run2" / "aligned")) == 2  # finished windows kept

    (pred / "meta.json").unlink()
    r = _cli("align", pred, "-o", tmp_path / "run3")
    assert r.returncode == 2 and "meta.json" in r.stderr
