"""The catalogue of bad input: what a new user gets wrong, and the clear answer each gets.

Every case runs the real command line (or the worker) as a subprocess and asserts:
the documented exit code, that the first line of stderr names the file or option at
fault, that no traceback is printed, and that nothing already computed was lost or mixed.
Classes: bad footage, bad options, bad predictions, bad weights, bad paths, corrupted
runs, reruns and resumes. The client and protocol side (bad lines, dying and stalling
workers) is fuzzed in ``test_protocol_fuzz.py``.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from core.run.rundir import RunDir
from core.synthetic import SceneConfig, render_clip

REPO = Path(__file__).resolve().parents[1]
CLI = [str(Path(sys.executable).with_name("laser-blender"))]
USER_ERROR, INTERNAL_ERROR, CANCELLED = 2, 1, 130


def cli(*args, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True, timeout=timeout, **kw)


def assert_user_error(result: subprocess.CompletedProcess, *named: str) -> str:
    """Exit 2, no traceback, and the first stderr line names every string in ``named``; returns that line."""
    assert result.returncode == USER_ERROR, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("laser-blender: error:")]
    assert lines, result.stderr
    for name in named:
        assert name in lines[0], (name, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> tuple[Path, Path]:
    return render_clip(tmp_path_factory.mktemp("clip"), SceneConfig(width=64, height=48, num_frames=24))


def synthetic(clip: tuple[Path, Path]) -> list[str]:
    """Options for a small synthetic run of ``clip``."""
    return ["--backbone", "synthetic", "--synthetic-scene", str(clip[1]), "--window", "8", "--overlap", "3"]


def aligned_files(run_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((run_dir / "aligned").glob("w*.npz"))}


def run_files(run_dir: Path) -> dict[str, bytes]:
    """Every file of a run directory (relative path -> bytes): to show nothing was touched."""
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(clip, tmp_path_factory) -> Path:
    """A complete run of ``clip`` (24 frames, 5 windows) with its predictions."""
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    result = cli("reconstruct", clip[0], "-o", run_dir, *synthetic(clip), "--no-layer-align")
    assert result.returncode == 0, result.stderr
    return run_dir


@pytest.fixture
def predictions(finished_run, tmp_path) -> Path:
    """A copy of the finished run's predictions, as another tool might hand them over."""
    return Path(shutil.copytree(finished_run / "predictions", tmp_path / "predictions"))


def edit_window(path: Path, **arrays) -> None:
    """Rewrite some arrays of an .npz window file."""
    with np.load(path) as z:
        data = {k: z[k] for k in z.files}
    data.update(arrays)
    np.savez(path, **data)


# --------------------------------------------------------------------------- bad footage

@pytest.mark.parametrize("kind", ["missing", "corrupt video", "empty folder", "text file"])
def test_bad_footage(clip, tmp_path, kind):
    footage = {"missing": tmp_path / "nope.mp4", "corrupt video": tmp_path / "broken.mp4",
               "empty folder": tmp_path / "frames", "text file": tmp_path / "notes.txt"}[kind]
    if kind == "corrupt video":
        footage.write_bytes(np.random.default_rng(0).bytes(5000))
    elif kind == "empty folder":
        footage.mkdir()
    elif kind == "text file":
        footage.write_text("not a video\n")
    result = cli("reconstruct", footage, "-o", tmp_path / "run", *synthetic(clip))
    assert_user_error(result, str(footage))
    assert "--resume" not in result.stderr  # nothing was written that a resume could continue


def test_damaged_frames_are_warned_about_by_index(clip, tmp_path):
    """A video damaged mid-stream: the run goes on, but the frames the decoder had to patch are named."""
    data = bytearray(clip[0].read_bytes())
    at = int(len(data) * 0.4)
    data[at:at + 300] = np.random.default_rng(3).bytes(300)
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(bytes(data))
    result = cli("reconstruct", damaged, "-o", tmp_path / "run", *synthetic(clip))
    warnings = [line for line in result.stderr.splitlines() if line.startswith("laser-blender: warning:")]
    assert any(f"{damaged}: frame" in w and "damaged in the file" in w for w in warnings), result.stderr
    assert "[mpeg4 @" not in result.stderr and "Traceback" not in result.stderr, result.stderr
    if result.returncode != 0:  # where the decoder could go no further, the error names that frame
        assert_user_error(result, str(damaged), "frame")


def test_start_beyond_the_end_names_the_option(clip, tmp_path):
    assert_user_error(cli("reconstruct", clip[0], "-o", tmp_path / "run", *synthetic(clip), "--start", 500),
                      "start=500", str(clip[0]))


# --------------------------------------------------------------------------- bad options

@pytest.mark.parametrize("options, flag", [
    (["--window", "1"], "--window"),
    (["--window", "8", "--overlap", "8"], "--overlap"),
    (["--overlap", "0"], "--overlap"),
    (["--focal-px", "inf"], "--focal-px"),
    (["--focal-px", "nan"], "--focal-px"),
    (["--focal-px", "-3"], "--focal-px"),
    (["--conf-keep", "0"], "--conf-keep"),
    (["--lsa-max-scale", "0.5"], "--lsa-max-scale"),
    (["--lsa-bridge", "4"], "--lsa-bridge"),
    (["--stride", "0"], "--stride"),
])
def test_bad_option_names_the_flag(clip, tmp_path, options, flag):
    result = cli("reconstruct", clip[0], "-o", tmp_path / "run", "--backbone", "synthetic",
                 "--synthetic-scene", clip[1], *options)
    assert_user_error(result, flag)
    assert not (tmp_path / "run").exists()


def test_resume_and_overwrite_together_are_refused(clip, finished_run):
    before = run_files(finished_run)
    assert_user_error(cli("reconstruct", clip[0], "-o", finished_run, *synthetic(clip), "--resume", "--overwrite"),
                      "--resume", "--overwrite")
    assert run_files(finished_run) == before


# --------------------------------------------------------------------------- bad paths

def test_output_that_is_a_file(clip, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("keep me")
    assert_user_error(cli("reconstruct", clip[0], "-o", blocker, *synthetic(clip)), str(blocker), "-o")
    assert blocker.read_text() == "keep me"


def test_output_dev_null(clip):
    assert_user_error(cli("reconstruct", clip[0], "-o", "/dev/null", *synthetic(clip)), "/dev/null")


def test_a_full_disk_names_the_file_and_claims_nothing(clip, tmp_path):
    """Writes that fail (here: over a file-size limit, as a full disk or a quota fails them) are one line
    naming the file; with nothing finished, nothing claims that ``--resume`` would help."""
    run_dir = tmp_path / "run"

    def limit_file_size():  # the child's own limit: every file over 100 kB fails to write (EFBIG)
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))

    result = cli("reconstruct", clip[0], "-o", run_dir, *synthetic(clip), preexec_fn=limit_file_size)
    line = assert_user_error(result, str(run_dir / "predictions" / "w00000.npz"), "File too large")
    assert "--resume" not in result.stderr and "kept" not in result.stderr, result.stderr
    manifest = RunDir(run_dir).read_manifest()
    assert manifest.status.value == "failed" and manifest.error == line.removeprefix("laser-blender: error: ")
    assert not list(run_dir.rglob("*.tmp")) and not list((run_dir / "predictions").glob("w*.npz"))


def test_blend_and_export_into_unwritable_places(finished_run, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert_user_error(cli("blend", finished_run, "-o", blocker / "shot.blend"), str(blocker / "shot.blend"))
    assert_user_error(cli("export", finished_run, "-o", blocker / "cloud.ply"), str(blocker))


# --------------------------------------------------------------------------- reruns and resumes

def test_rerun_into_a_finished_run_is_refused_and_touches_nothing(clip, finished_run):
    before = run_files(finished_run)
    line = assert_user_error(cli("reconstruct", clip[0], "-o", finished_run, *synthetic(clip)),
                             str(finished_run), "--resume", "--overwrite")
    assert "complete run of 5 registered windows" in line
    assert run_files(finished_run) == before


def test_overwrite_replaces_the_whole_run(clip, finished_run, tmp_path):
    run_dir = Path(shutil.copytree(finished_run, tmp_path / "run"))
    (run_dir / "notes.txt").write_text("mine")
    result = cli("reconstruct", clip[0], "-o", run_dir, *synthetic(clip), "--max-frames", 10, "--overwrite")
    assert result.returncode == 0, result.stderr
    manifest = json.loads((run_dir / "run.json").read_text())
    assert manifest["frames_done"] == 10 and manifest["windows_done"] == 2
    assert sorted(aligned_files(run_dir)) == ["w00000.npz", "w00001.npz"]
    assert len(list((run_dir / "predictions").glob("w*.npz"))) == 2
    result = cli("export", run_dir, "-o", tmp_path / "cloud.ply")
    assert result.returncode == 0 and "from 10 frames" in result.stderr, result.stderr
    assert (run_dir / "notes.txt").read_text() == "mine"  # only the run's own files go


@pytest.mark.parametrize("change, named", [
    ({"--window": "10"}, "window 8 (now 10)"),
    ({"--layer-align": None}, "layer_align False (now True)"),
    ({"--stride": "2"}, "footage stride 1 (now 2)"),
    ({"--focal-px": "60"}, "focal_px None (now 60.0)"),
    ({"--refine": None}, "refine False (now True)"),  # the solve as it runs: unset on 64 px wide footage is off
])
def test_resume_with_other_settings_is_refused(clip, finished_run, tmp_path, change, named):
    run_dir = Path(shutil.copytree(finished_run, tmp_path / "run"))
    before = run_files(run_dir)
    options = {"--backbone": "synthetic", "--synthetic-scene": str(clip[1]), "--window": "8", "--overlap": "3",
               "--no-layer-align": None, **change}
    if "--layer-align" in options:  # the finished run had layer alignment off; resume with it on
        del options["--layer-align"], options["--no-layer-align"]
    args = [a for flag, value in options.items() for a in (flag, value) if a is not None]
    line = assert_user_error(cli("reconstruct", clip[0], "-o", run_dir, *args, "--resume"), "cannot resume", named)
    assert "--overwrite" in line
    assert run_files(run_dir) == before


def test_resume_with_another_video_of_the_same_size_is_refused(clip, finished_run, tmp_path):
    other = render_clip(tmp_path / "other", SceneConfig(width=64, height=48, num_frames=24, sway=3.0))
    run_dir = Path(shutil.copytree(finished_run, tmp_path / "run"))
    before = run_files(run_dir)
    assert_user_error(cli("reconstruct", other[0], "-o", run_dir, "--backbone", "synthetic", "--synthetic-scene",
                          other[1], "--window", 8, "--overlap", 3, "--no-layer-align", "--resume"),
                      "cannot resume", f"footage {clip[0]} (now {other[0]})")
    assert run_files(run_dir) == before


def test_align_in_place_needs_overwrite_and_never_mixes(finished_run, tmp_path):
    run_dir = Path(shutil.copytree(finished_run, tmp_path / "run"))
    before = run_files(run_dir)
    assert_user_error(cli("align", run_dir, "-o", run_dir), str(run_dir), "--overwrite")
    assert run_files(run_dir) == before
    # A window that cannot be registered half-way: the old windows are gone, never mixed with new ones.
    edit_window(run_dir / "predictions" / "w00003.npz", poses=np.full((8, 4, 4), np.nan, np.float32))
    result = cli("align", run_dir, "-o", run_dir, "--overwrite")
    assert_user_error(result, "window 3")
    assert sorted(aligned_files(run_dir)) == ["w00000.npz", "w00001.npz", "w00002.npz"]
    assert json.loads((run_dir / "run.json").read_text())["status"] == "failed"
    assert len(list((run_dir / "predictions").glob("w*.npz"))) == 5  # the input is kept


# --------------------------------------------------------------------------- bad predictions

def _bad_poses(kind: str, n: int) -> np.ndarray:
    poses = np.tile(np.eye(4, dtype=np.float32), (n, 1, 1))
    if kind == "nan pose":
        poses[2, 0, 3] = np.nan
    elif kind == "inf pose":
        poses[2, 1, 1] = np.inf
    elif kind == "reflected rotation":
        poses[2, :3, :3] = np.diag([1, 1, -1])
    elif kind == "scaled rotation":
        poses[2, :3, :3] *= 3  # det 27
    elif kind == "singular rotation":
        poses[2, :3, :3] = 0
    return poses


@pytest.mark.parametrize("kind", ["nan pose", "inf pose", "reflected rotation", "scaled rotation",
                                  "singular rotation"])
def test_unusable_poses_name_the_window_and_frame(predictions, tmp_path, kind):
    path = predictions / "w00001.npz"
    with np.load(path) as z:
        frames = z["frames"]
    edit_window(path, poses=_bad_poses(kind, len(frames)))
    result = cli("align", predictions, "-o", tmp_path / "run")
    assert_user_error(result, "window 1", f"frame {frames[2]}")
    manifest = json.loads((tmp_path / "run" / "run.json").read_text())
    assert manifest["status"] == "failed" and manifest["windows_done"] == 1  # window 0 is kept
    assert "finished windows are kept" not in result.stderr or "--resume" in result.stderr


def test_bad_intrinsics_duplicate_frames_and_layout(predictions, tmp_path):
    path = predictions / "w00000.npz"
    with np.load(path) as z:
        frames, n = z["frames"], len(z["frames"])
    edit_window(path, intrinsics=np.zeros((n, 3, 3), np.float32))
    assert_user_error(cli("align", predictions, "-o", tmp_path / "a"), "window 0", "intrinsics")
    edit_window(path, intrinsics=np.tile(np.diag([50.0, 50.0, 1.0]).astype(np.float32), (n, 1, 1)),
                frames=np.concatenate([frames[:2], frames[1:-1]]))
    assert_user_error(cli("align", predictions, "-o", tmp_path / "b"), "window 0", "frame indices")
    edit_window(path, frames=frames)
    meta = json.loads((predictions / "meta.json").read_text())
    (predictions / "meta.json").write_text(json.dumps({**meta, "width": meta["width"] + 14}))
    assert_user_error(cli("align", predictions, "-o", tmp_path / "c"), str(path), "meta.json")


def test_no_windows_is_an_error_not_an_empty_complete_run(predictions, tmp_path):
    for path in predictions.glob("w*.npz"):
        path.unlink()
    assert_user_error(cli("align", predictions, "-o", tmp_path / "run"), str(predictions), "no prediction windows")


@pytest.mark.parametrize("damage", ["truncated", "zero bytes"])
def test_damaged_prediction_file_is_named(predictions, tmp_path, damage):
    path = predictions / "w00002.npz"
    path.write_bytes(path.read_bytes()[:1000] if damage == "truncated" else b"")
    assert_user_error(cli("align", predictions, "-o", tmp_path / "run"), str(path))
    assert sorted(aligned_files(tmp_path / "run")) == ["w00000.npz", "w00001.npz"]


def test_a_few_bad_pixels_are_dropped_and_nothing_is_nan(predictions, tmp_path):
    path = predictions / "w00001.npz"
    with np.load(path) as z:
        points, conf = z["points"].copy(), z["conf"].copy()
    points[:, :5, :7] = np.nan
    points[:, 10, 10] = np.inf
    conf[:, -3:, -3:] = np.nan
    edit_window(path, points=points, conf=conf)
    result = cli("align", predictions, "-o", tmp_path / "run")
    assert result.returncode == 0, result.stderr
    trajectory = np.loadtxt(tmp_path / "run" / "trajectory.tum")
    assert trajectory.shape == (24, 8) and np.isfinite(trajectory).all()
    assert cli("export", tmp_path / "run", "-o", tmp_path / "cloud.xyz").returncode == 0
    assert np.isfinite(np.loadtxt(tmp_path / "cloud.xyz")).all()


# --------------------------------------------------------------------------- corrupted runs

@pytest.mark.parametrize("damage", ["truncated", "zero bytes"])
def test_damaged_aligned_window(clip, finished_run, tmp_path, damage):
    run_dir = Path(shutil.copytree(finished_run, tmp_path / "run"))
    path = run_dir / "aligned" / "w00003.npz"
    path.write_bytes(path.read_bytes()[:2000] if damage == "truncated" else b"")
    assert_user_error(cli("export", run_dir, "-o", tmp_path / "cloud.ply"), str(path))
    assert_user_error(cli("blend", run_dir, "-o", tmp_path / "shot.blend"), str(path))
    line = assert_user_error(cli("reconstruct", clip[0], "-o", run_dir, *synthetic(clip), "--no-layer-align",
                                 "--resume"), str(path))
    assert "delete w00003.npz and the later window files" in line
    assert json.loads((run_dir / "run.json").read_text())["status"] == "failed"  # no longer says complete
    # Doing what the message says redoes the run from that window.
    for name in ("w00003.npz", "w00004.npz"):
        (run_dir / "aligned" / name).unlink()
    result = cli("reconstruct", clip[0], "-o", run_dir, *synthetic(clip), "--no-layer-align", "--resume")
    assert result.returncode == 0, result.stderr
    redone, uninterrupted = list(RunDir(run_dir).iter_aligned()), list(RunDir(finished_run).iter_aligned())
    assert [w.frames.tolist() for w in redone] == [w.frames.tolist() for w in uninterrupted]
    for a, b in zip(redone, uninterrupted):  # as the engine's own resume test: poses reloaded from float32
        np.testing.assert_allclose(a.poses, b.poses, atol=1e-5)
        np.testing.assert_allclose(a.depth, b.depth, rtol=1e-5)


def test_resume_removes_what_a_killed_write_left(clip, finished_run, tmp_path):
    """A process killed mid-write leaves a hidden temporary file; the next writer of the run removes it."""
    run_dir = Path(shutil.copytree(finished_run, tmp_path / "run"))
    leftovers = [run_dir / "aligned" / ".w00004.npz.k1ll3d.tmp", run_dir / "predictions" / ".w00004.npz.x.tmp",
                 run_dir / ".run.json.y.tmp"]
    for path in leftovers:
        path.write_bytes(b"half a window")
    result = cli("reconstruct", clip[0], "-o", run_dir, *synthetic(clip), "--no-layer-align", "--resume")
    assert result.returncode == 0, result.stderr
    assert not any(path.exists() for path in leftovers)
    assert aligned_files(run_dir) == aligned_files(finished_run)


def test_unreadable_run_json_is_named(finished_run, tmp_path):
    run_dir = Path(shutil.copytree(finished_run, tmp_path / "run"))
    (run_dir / "run.json").write_text("{ not json")
    assert_user_error(cli("export", run_dir, "-o", tmp_path / "cloud.ply"), str(run_dir / "run.json"))


def test_files_are_readable_by_other_users(finished_run):
    for path in [finished_run / "run.json", finished_run / "predictions" / "meta.json",
                 *sorted((finished_run / "aligned").glob("*.npz"))]:
        assert path.stat().st_mode & 0o044 == 0o044, path


# --------------------------------------------------------------------------- interrupts

def test_second_ctrl_c_exits_quietly_and_keeps_finished_windows(tmp_path):
    video, gt = render_clip(tmp_path / "long", SceneConfig(width=64, height=48, num_frames=400))
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(CLI + ["reconstruct", str(video), "-o", str(run_dir), "--backbone", "synthetic",
                                   "--synthetic-scene", str(gt), "--window", "12", "--overlap", "4"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not list((run_dir / "aligned").glob("w*.npz")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == CANCELLED, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    windows = sorted((run_dir / "aligned").glob("w*.npz"))
    assert windows and all(np.load(w)["depth"].size for w in windows)  # every file on disk is whole


# --------------------------------------------------------------------------- the first run of the set-up

def test_first_setup_prints_nothing_alarming(tmp_path):
    """bootstrap.sh on a fresh checkout: no 'No such file or directory' before it installs."""
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "bootstrap.sh", repo / "scripts")
    (repo / "pyproject.toml").write_text("")
    venv = repo / ".venv" / "bin"
    venv.mkdir(parents=True)
    fake = venv / "python"  # stands in for the venv's pip: what is under test is the script around it
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    result = subprocess.run(["bash", str(repo / "scripts" / "bootstrap.sh")], capture_output=True, text=True,
                            timeout=120, env={**os.environ, "PYTHON": sys.executable})
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith("Installing laser-blender") and "No such file" not in result.stderr, result.stderr
    assert (repo / ".venv" / ".laser-blender-installed").exists()


# --- weights (the weights cases live below this line) ---

WORKER = [sys.executable, "-m", "laser_blender.worker"]
WEIGHTS_KINDS = ["text file", "truncated safetensors", "zero bytes", "random bytes .pt", "folder", "another network",
                 "not a state dict"]
DEVICES = {"cuda": "CUDA is not available", "cuda:7": "CUDA", "nonsense": "not a device", "mps": "MPS"}
WORKER_CASES = ["truncated safetensors", "cuda without a GPU"]


@pytest.fixture(scope="module")
def checkpoints(fixtures_dir, tmp_path_factory) -> dict[str, Path]:
    """Real checkpoints of the tiny pi3 and VGGT networks (what ``--weights FILE`` loads), by network."""
    from tiny_models import write_tiny_checkpoint

    root = tmp_path_factory.mktemp("weights")
    return {net: write_tiny_checkpoint(fixtures_dir, net, root / f"{net}.safetensors") for net in ("pi3", "vggt")}


def bad_weights(kind: str, checkpoints: dict[str, Path], folder: Path) -> tuple[Path, str]:
    """A bad ``--weights`` file of ``kind`` for ``--backbone pi3`` in ``folder``, and a phrase its error must say.
    (More kinds, in process: ``test_weights.py``.)"""
    import torch

    good = checkpoints["pi3"].read_bytes()
    path = folder / {"text file": "weights.txt", "truncated safetensors": "pi3.safetensors",
                     "zero bytes": "pi3.safetensors", "random bytes .pt": "pi3.pt", "folder": "weights",
                     "another network": "vggt.safetensors", "not a state dict": "pi3.pt"}[kind]
    if kind == "text file":
        path.write_text("these are my weights\n")
        return path, "a text file"
    if kind == "truncated safetensors":
        path.write_bytes(good[:len(good) // 2])
        return path, "truncated"
    if kind == "zero bytes":
        path.write_bytes(b"")
        return path, "empty"
    if kind == "random bytes .pt":
        path.write_bytes(np.random.default_rng(0).bytes(5000))
        return path, "not a checkpoint"
    if kind == "folder":
        path.mkdir()
        (path / "model.safetensors").write_bytes(good)
        return path, str(path / "model.safetensors")  # says which file inside to pass
    if kind == "another network":
        shutil.copy(checkpoints["vggt"], path)
        return path, "--backbone vggt"
    torch.save({"epoch": 3, "lr": 1e-4}, path)  # not a state dict
    return path, "not a state dict"


def pi3_options(weights: Path | str, device: str = "cpu") -> list[str]:
    return ["--backbone", "pi3", "--weights", str(weights), "--device", device, "--window", "4", "--overlap", "1",
            "--max-frames", "7", "--no-layer-align"]


def pi3_job(clip, run_dir: Path, **kw) -> dict:
    return {"input": str(clip[0]), "run_dir": str(run_dir), "backbone": "pi3", "device": "cpu",
            "window": 4, "overlap": 1, "max_frames": 7, **kw}


def run_worker(job: dict, folder: Path) -> tuple[subprocess.CompletedProcess, list]:
    """The worker on a job file in ``folder``: its exit status and decoded events."""
    from laser_blender.protocol import decode

    job_file = folder / "job.json"
    job_file.write_text(json.dumps(job))
    result = subprocess.run([*WORKER, str(job_file)], capture_output=True, text=True, timeout=300, cwd=folder)
    return result, [decode(line) for line in result.stdout.splitlines()]


@pytest.fixture(scope="module")
def launched(clip, checkpoints, tmp_path_factory):
    """Every weights and device case, its process started at once: each spends most of its ~3 s importing
    torch, so together they take the time of a few. Case -> (folder, file or option, phrase, future result)."""
    from concurrent.futures import ThreadPoolExecutor

    root = tmp_path_factory.mktemp("launched")
    cases = {}
    with ThreadPoolExecutor(max_workers=max(4, os.cpu_count() or 1)) as pool:
        for kind in WEIGHTS_KINDS:
            folder = root / f"weights-{kind.replace(' ', '-')}"
            folder.mkdir()
            weights, says = bad_weights(kind, checkpoints, folder)
            future = pool.submit(cli, "reconstruct", clip[0], "-o", folder / "run", *pi3_options(weights))
            cases[kind] = (folder, f"--weights {weights}:", says, future)
        for device, says in DEVICES.items():
            folder = root / f"device-{device.replace(':', '-')}"
            folder.mkdir()
            future = pool.submit(cli, "reconstruct", clip[0], "-o", folder / "run",
                                 *pi3_options(checkpoints["pi3"], device))
            cases[device] = (folder, f"--device {device}:", says, future)
        for case in WORKER_CASES:
            folder = root / f"worker-{case.replace(' ', '-')}"
            folder.mkdir()
            if case == "cuda without a GPU":
                job = pi3_job(clip, folder / "run", weights=str(checkpoints["pi3"]), device="cuda")
                named = "--device cuda:"
            else:
                weights, _ = bad_weights(case, checkpoints, folder)
                job, named = pi3_job(clip, folder / "run", weights=str(weights)), f"--weights {weights}:"
            cases[f"worker {case}"] = (folder, named, "", pool.submit(run_worker, job, folder))
        yield cases


def assert_not_complete(run_dir: Path) -> None:
    """A failed attempt never leaves run.json saying complete."""
    manifest = run_dir / "run.json"
    assert not manifest.exists() or json.loads(manifest.read_text())["status"] != "complete"


@pytest.mark.parametrize("kind", WEIGHTS_KINDS)
def test_bad_weights(launched, kind):
    folder, named, says, future = launched[kind]
    result = future.result()
    line = assert_user_error(result, named, says)
    assert "internal error" not in result.stderr
    if kind == "another network":  # what to do on the first line, the diff after it
        assert "do not fit the pi3 network" in line and "unexpected in the checkpoint" in result.stderr
    else:
        assert result.stderr.count("\n") == 1, result.stderr  # one line
    assert "--resume" not in result.stderr  # nothing was written that a resume could continue
    assert_not_complete(folder / "run")


@pytest.mark.parametrize("device", DEVICES)
def test_unusable_device(launched, device):
    import torch

    if device.startswith("cuda") and torch.cuda.is_available() and torch.cuda.device_count() > 7 * (device != "cuda"):
        pytest.skip(f"this machine has {device}")
    if device == "mps" and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    folder, named, says, future = launched[device]
    result = future.result()
    assert_user_error(result, named, says, "use ")
    assert "internal error" not in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert_not_complete(folder / "run")


@pytest.mark.parametrize("case", WORKER_CASES)
def test_worker_reports_bad_weights_and_devices_as_user_errors(launched, case):
    import torch

    if case == "cuda without a GPU" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    folder, named, _, future = launched[f"worker {case}"]
    result, events = future.result()
    assert result.returncode == USER_ERROR, result.stderr
    errors = [e for e in events if e.type == "error"]
    assert len(errors) == 1 and events[-1] is errors[0], events
    message = errors[0].message
    assert message.startswith(named) and "\n" not in message and "internal error" not in message, message
    assert "Traceback" not in result.stderr
    assert_not_complete(folder / "run")


def test_worker_job_with_a_bad_dtype_is_an_invalid_job(clip, checkpoints, tmp_path):
    result, events = run_worker(pi3_job(clip, tmp_path / "run", weights=str(checkpoints["pi3"]), dtype="int8"),
                                tmp_path)
    assert result.returncode == USER_ERROR, result.stderr
    assert len(events) == 1 and events[0].type == "error", events
    assert "invalid job" in events[0].message and "dtype" in events[0].message
    assert not (tmp_path / "run").exists()  # a job that never started writes nothing


def test_bad_weights_with_overwrite_keep_the_earlier_run(clip, finished_run, checkpoints, tmp_path):
    """Weights are checked before anything is replaced: a failed --overwrite loses no window."""
    run_dir = Path(shutil.copytree(finished_run, tmp_path / "run"))
    windows = {p: p.read_bytes() for p in sorted(run_dir.glob("*/w*.npz"))}
    assert len(windows) == 10  # 5 aligned, 5 predictions
    weights, _ = bad_weights("truncated safetensors", checkpoints, tmp_path)
    assert_user_error(cli("reconstruct", clip[0], "-o", run_dir, *pi3_options(weights), "--overwrite"),
                      f"--weights {weights}:", "truncated")
    assert {p: p.read_bytes() for p in sorted(run_dir.glob("*/w*.npz"))} == windows
