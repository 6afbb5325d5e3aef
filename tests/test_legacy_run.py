"""A run directory written before the typed run-directory contract still imports, exports and resumes.

``tests/fixtures/legacy_run`` was written by main at commit a5d0d95 (see
``tests/fixtures/make_legacy_run.py``): a 64x48 synthetic clip of 24 frames, window 8 /
overlap 3, layer alignment on, cancelled after 3 of its 5 windows. Its run.json is a
plain dict of that time and its aligned windows call the per-pixel layer factor
``layer_scale``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import trimesh

from core.metrics import path_length
from core.run.manifest import RunStatus
from core.run.rundir import RunDir
from core.run.tum import read_tum
from core.synthetic import SceneConfig, render_clip

FIXTURE = Path(__file__).parent / "fixtures" / "legacy_run"
CLI = [str(Path(sys.executable).with_name("laser-blender"))]
SCENE = SceneConfig(width=64, height=48, num_frames=24)  # what the fixture's clip was rendered from
STREAM = ["--window", "8", "--overlap", "3"]
WITHOUT_PARALLAX = ["--lsa-parallax-gap", "0"]  # as the fixture's code registered


def _cli(*args):
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True, timeout=300)


@pytest.fixture
def legacy(tmp_path) -> Path:
    return Path(shutil.copytree(FIXTURE, tmp_path / "legacy"))


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return render_clip(tmp_path_factory.mktemp("clip"), SCENE)


def test_legacy_run_reads_with_the_typed_contract(legacy):
    run = RunDir(legacy)
    manifest = run.read_manifest()
    assert manifest.status == RunStatus.cancelled and manifest.windows_done == 3 and manifest.frames_done == 18
    assert manifest.settings.window == 8 and manifest.settings.layer_align
    assert manifest.job is not None and manifest.job["backbone"] == "synthetic"
    assert run.geometry().size == (64, 48) and run.fps() == 30.0
    windows = list(run.iter_aligned())
    assert [w.index for w in windows] == [0, 1, 2]
    assert windows[0].depth_factor is None  # the first window is not layer-aligned
    assert all(w.depth_factor is not None and np.all(w.depth_factor > 0) for w in windows[1:])
    np.testing.assert_allclose(windows[1].sim3_depth * windows[1].depth_factor, windows[1].depth, rtol=1e-6)


def test_legacy_run_exports_and_builds_a_blend(legacy, tmp_path):
    r = _cli("export", legacy, "-o", tmp_path / "cloud.ply")
    assert r.returncode == 0, r.stderr
    cloud = trimesh.load(tmp_path / "cloud.ply")
    assert len(cloud.vertices) > 1000 and np.isfinite(cloud.vertices).all()
    r = _cli("blend", legacy, "-o", tmp_path / "legacy.blend")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "legacy.blend").stat().st_size > 0


def test_legacy_run_resumes_like_an_uninterrupted_run(legacy, clip, tmp_path):
    video, gt = clip
    # The fixture's footage was rendered again at another path: point the run at it, as
    # after moving a project (a resume refuses other footage).
    manifest = json.loads((legacy / "run.json").read_text())
    manifest["source"]["path"] = manifest["job"]["input"] = str(video)
    manifest["job"]["synthetic_scene"] = str(gt)
    (legacy / "run.json").write_text(json.dumps(manifest))
    # It was registered before layer alignment measured parallax: resuming it with today's default
    # would not continue it alike, and is refused naming the option.
    assert RunDir(legacy).read_manifest().settings.layer.parallax_gap == 0
    r = _cli("reconstruct", video, "-o", legacy, "--backbone", "synthetic", "--synthetic-scene", gt, *STREAM,
             "--resume")
    assert r.returncode == 2 and "parallax_gap 0 (now 10)" in r.stderr, r.stderr
    r = _cli("reconstruct", video, "-o", legacy, "--backbone", "synthetic", "--synthetic-scene", gt, *STREAM,
             *WITHOUT_PARALLAX, "--resume")
    assert r.returncode == 0, r.stderr
    r = _cli("reconstruct", video, "-o", tmp_path / "fresh", "--backbone", "synthetic", "--synthetic-scene", gt,
             *STREAM, *WITHOUT_PARALLAX)
    assert r.returncode == 0, r.stderr
    manifest = RunDir(legacy).read_manifest()
    assert manifest.status == RunStatus.complete and manifest.frames_done == 24 and manifest.windows_done == 5
    resumed, fresh = read_tum(legacy / "trajectory.tum")[1], read_tum(tmp_path / "fresh" / "trajectory.tum")[1]
    assert resumed.shape == fresh.shape == (24, 4, 4)
    # The 18 frames old main registered are what today's code registers ...
    assert np.abs(resumed[:18] - fresh[:18]).max() <= 1e-6 * path_length(fresh)
    # ... and the resumed rest continues from them as the engine's own resume test asks
    # (the reference depth is rebuilt from float16 layer factors: 1e-3).
    np.testing.assert_allclose(resumed, fresh, atol=1e-3)
