"""``laser-blender farm`` on a real local Ray cluster that this module starts, on 127.0.0.1 only, and stops.

The head node is ``ray start --head --block`` in its own session with its own temporary
directory; teardown ends that process (Ray drains and stops its children) and then any
process left in its session. Nothing here addresses anything but this machine's loopback.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from core.run.files import list_windows
from core.run.tum import read_tum
from core.synthetic import SceneConfig, render_clip
from run_files import iter_aligned, read_run

BIN = Path(sys.executable).parent
ENV = {
    **os.environ,
    # Ray's switch for machines that must not form a multi-host cluster: every Ray process
    # takes the loopback address as its node address and binds to it.
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    # The cluster and its clients share a token of their own (never ~/.ray/auth_token).
    "RAY_AUTH_MODE": "token",
    "RAY_AUTH_TOKEN": secrets.token_hex(32),
}
SHORT = dict(width=64, height=48, num_frames=48)
LONG = dict(width=64, height=48, num_frames=120)
STREAM = ["--window", "8", "--overlap", "2"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _session_processes(sid: int) -> list[int]:
    """Processes of session ``sid`` (the head node's ``ray start`` and everything it started)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getsid(int(entry.name)) == sid:
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


@pytest.fixture(scope="module")
def cluster():
    """(address, session id of the head node's processes)."""
    temp = Path(tempfile.mkdtemp(prefix="lbray", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    port = _free_port()
    log = open(temp / "head.log", "w")
    head = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
         "--num-cpus=2", "--num-gpus=0", f"--temp-dir={temp}", "--include-dashboard=false",
         "--disable-usage-stats"], stdout=log, stderr=subprocess.STDOUT, env=ENV, start_new_session=True)
    try:
        deadline = time.time() + 120
        while "Ray runtime started" not in (temp / "head.log").read_text():
            assert head.poll() is None and time.time() < deadline, (temp / "head.log").read_text()
            time.sleep(0.2)
        yield f"127.0.0.1:{port}", head.pid
    finally:
        head.terminate()
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
        for pid in _session_processes(head.pid):
            os.kill(pid, signal.SIGKILL)
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def footage(tmp_path_factory):
    """Three short shots, one corrupt file, one long shot, and their scene's ground truth."""
    root = tmp_path_factory.mktemp("footage")
    short, gt = render_clip(root / "short", SceneConfig(**SHORT))
    long, _ = render_clip(root / "long", SceneConfig(**LONG))  # the same scene, more frames
    shots = root / "shots"
    shots.mkdir()
    for name in ("s1", "s2", "s3"):
        shutil.copy(short, shots / f"{name}.mp4")
    (shots / "bad.mp4").write_bytes(b"this is not a video\n" * 100)
    shutil.copy(long, shots / "long.mp4")
    return shots, gt


@pytest.fixture(scope="module")
def single_process(footage, tmp_path_factory):
    """The long shot reconstructed by ``laser-blender reconstruct``, in one process."""
    shots, gt = footage
    run = tmp_path_factory.mktemp("single") / "long"
    r = subprocess.run([str(BIN / "laser-blender"), "reconstruct", str(shots / "long.mp4"), "-o", str(run),
                        "--backbone", "synthetic", "--synthetic-scene", str(gt), *STREAM],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return run


def _farm_args(cluster, footage, out, *args):
    shots, gt = footage
    return [str(BIN / "laser-blender"), "farm", *[str(a) for a in args], "-o", str(out), "--address", cluster[0],
            "--backbone", "synthetic", "--synthetic-scene", str(gt), *STREAM]


def _farm(cluster, footage, out, *args):
    return subprocess.run(_farm_args(cluster, footage, out, *args), capture_output=True, text=True, env=ENV,
                          timeout=300)


def _statuses(out: Path) -> dict[str, str]:
    return {s["name"]: s["status"] for s in json.loads((out / "farm.json").read_text())["shots"]}


def _files(run: Path) -> list[str]:
    """The run's files (not its log, nor the hidden temporary file a killed writer may leave behind)."""
    return sorted(str(p.relative_to(run)) for p in run.rglob("*")
                  if p.is_file() and p.name != "worker.log" and not p.name.startswith("."))


def _assert_same_run(run: Path, reference: Path, tol: float) -> None:
    """Same files, same frames, camera positions within ``tol`` of the reference's path length."""
    assert _files(run) == _files(reference)
    (ta, pa), (tb, pb) = read_tum(run / "trajectory.tum"), read_tum(reference / "trajectory.tum")
    np.testing.assert_array_equal(ta, tb)
    length = np.linalg.norm(np.diff(pb[:, :3], axis=0), axis=1).sum()
    assert length > 0
    np.testing.assert_allclose(pa[:, :3], pb[:, :3], rtol=0, atol=tol * length)
    for a, b in zip(iter_aligned(run), iter_aligned(reference), strict=True):
        np.testing.assert_array_equal(a.frames, b.frames)
        np.testing.assert_allclose(a.poses, b.poses, rtol=0, atol=tol * length)


def test_bad_shot_fails_alone_and_rerun_skips_complete_shots(cluster, footage, tmp_path):
    shots, _ = footage
    inputs = [shots / "s1.mp4", shots / "s2.mp4", shots / "bad.mp4", shots / "s3.mp4"]
    r = _farm(cluster, footage, tmp_path, *inputs)
    assert r.returncode == 2, r.stderr
    assert _statuses(tmp_path) == {"s1": "complete", "s2": "complete", "bad": "failed", "s3": "complete"}
    report = {s["name"]: s for s in json.loads((tmp_path / "farm.json").read_text())["shots"]}
    assert "bad.mp4" in report["bad"]["error"] and "bad.mp4" in r.stderr
    for name in ("s1", "s2", "s3"):
        assert read_run(tmp_path / name)["status"] == "complete"
        assert report[name]["frames"] == SHORT["num_frames"] and report[name]["fps"] > 0
        assert f"farm: {name}: complete ({SHORT['num_frames']} frames)" in r.stderr
    assert "3 complete, 1 failed" in r.stderr

    mtimes = {name: (tmp_path / name / "run.json").stat().st_mtime_ns for name in ("s1", "s2", "s3")}
    r = _farm(cluster, footage, tmp_path, *inputs)
    assert r.returncode == 2, r.stderr
    assert _statuses(tmp_path) == {"s1": "skipped", "s2": "skipped", "bad": "failed", "s3": "skipped"}
    assert mtimes == {name: (tmp_path / name / "run.json").stat().st_mtime_ns for name in ("s1", "s2", "s3")}

    r = _farm(cluster, footage, tmp_path / "good", *inputs[:2])
    assert r.returncode == 0, r.stderr


def _shot_worker(sid: int, shot: str) -> int | None:
    """The Ray worker running ``shot``'s task (Ray titles it ``ray::<task name>``), in our cluster's session."""
    for pid in _session_processes(sid):
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
        except OSError:
            continue
        if title == f"ray::laser-blender shot {shot}":
            return pid
    return None


def test_killed_worker_is_retried_and_its_shot_completes(cluster, footage, single_process, tmp_path):
    shots, _ = footage
    run = tmp_path / "long"
    farm = subprocess.Popen(_farm_args(cluster, footage, tmp_path, shots / "long.mp4"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV)
    deadline = time.time() + 120
    while not list_windows(run / "aligned"):
        assert farm.poll() is None and time.time() < deadline, "the shot ended before a worker could be killed"
        time.sleep(0.01)
    worker = _shot_worker(cluster[1], "long")
    assert worker is not None, "no Ray worker titled 'ray::laser-blender shot long'"
    os.kill(worker, signal.SIGKILL)
    killed_at = len(list_windows(run / "aligned"))
    out, err = farm.communicate(timeout=300)
    assert farm.returncode == 0, err
    assert killed_at < 20, "killed after the last window"  # 120 frames = 20 windows
    assert read_run(run)["windows_done"] == 20
    assert _statuses(tmp_path) == {"long": "complete"}
    # Resumed from its last finished window: layer factors are stored as float16 (1e-3).
    _assert_same_run(run, single_process, 1e-3)


def test_split_windows_match_a_single_process_run(cluster, footage, single_process, tmp_path):
    shots, _ = footage
    r = _farm(cluster, footage, tmp_path, shots / "long.mp4", "--split-windows", "--window-workers", "2")
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "farm.json").read_text())
    assert report["split_windows"] and _statuses(tmp_path) == {"long": "complete"}
    _assert_same_run(tmp_path / "long", single_process, 1e-6)


def test_shot_list_gives_each_shot_its_own_options(tmp_path):
    from laser_blender.farm.shots import ShotListError, collect_shots
    from laser_blender.protocol import Job

    (tmp_path / "plates").mkdir()
    (tmp_path / "plates" / "sh020").mkdir()
    shot_list = tmp_path / "shots.txt"
    shot_list.write_text("# a comment\n\nplates/sh010.mov\n"
                         "plates/sh020 --focal-mm 35 --sensor-width-mm 36 --start 12 --max-frames 300\n"
                         "'/mnt/my shots/sh030.mp4' --name sh030_v2 --stride 2\n")
    shots = collect_shots([str(shot_list), str(tmp_path / "extra.mp4")])
    assert [s.name for s in shots] == ["sh010", "sh020", "sh030_v2", "extra"]
    assert shots[0].input == str(tmp_path / "plates" / "sh010.mov")
    assert shots[2].input == "/mnt/my shots/sh030.mp4" and shots[2].stride == 2
    base = Job(input="x", run_dir="x", focal_px=1000.0, stride=3)
    job = shots[1].job(base, tmp_path / "out")
    assert (job.focal_mm, job.focal_px, job.start, job.max_frames, job.stride) == (35, None, 12, 300, 3)
    assert job.run_dir == str(tmp_path / "out" / "sh020") and job.input == str(tmp_path / "plates" / "sh020")
    assert shots[0].job(base, tmp_path / "out").focal_px == 1000.0

    for line, needle in [("a.mp4 --bogus 3", "--bogus"), ("a.mp4 --stride 0", "--stride"),
                         ("a.mp4 --start x", "--start")]:
        shot_list.write_text(f"# first\n{line}\n")
        with pytest.raises(ShotListError, match=rf"shots\.txt:2: .*{needle}"):
            collect_shots([str(shot_list)])
    with pytest.raises(ShotListError, match="two shots are named 'a'"):
        collect_shots([str(tmp_path / "a.mp4"), str(tmp_path / "x" / "a.mov")])
