"""`laser-blender export`: a run's point cloud as a file, checked against ground truth (every format's
reader and conventions: tests/test_exporters.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import trimesh
from scipy.spatial import cKDTree

from core.engine import reconstruct
from core.geometry.camera import unproject
from core.geometry.transforms import umeyama_sim3
from core.run.manifest import RunManifest, SourceInfo
from core.run.rundir import RunDir, RunWriter
from core.run.settings import EngineSettings
from core.run.tum import read_tum
from core.synthetic import Scene, SceneConfig, SyntheticBackbone, SyntheticNoise, SyntheticSource

CLI = str(Path(sys.executable).with_name("laser-blender"))
SCENE = SceneConfig(width=96, height=72, num_frames=40)


def _export(*args):
    return subprocess.run([CLI, "export", *map(str, args)], capture_output=True, text=True, timeout=300)


def test_exported_points_lie_on_the_true_surfaces(tmp_path):
    scene = Scene(SCENE)
    reconstruct(SyntheticSource(scene), SyntheticBackbone(scene, SyntheticNoise.none(seed=4)), tmp_path / "run",
                EngineSettings(window=12, overlap=4))
    r = _export(tmp_path / "run", "-o", tmp_path / "cloud.ply", "--max-points", 20_000)
    assert r.returncode == 0, r.stderr
    cloud = trimesh.load(tmp_path / "cloud.ply")
    points = np.asarray(cloud.vertices)
    colors = np.asarray(cloud.colors)[:, :3]
    assert 19_000 <= len(points) <= 20_000
    assert colors.std(axis=0).min() > 10  # footage colours, not a constant

    # The export's world (the run's scene world) -> the truth's by the Sim(3) between the camera
    # paths, the exported path in the same world as the cloud.
    r = _export(tmp_path / "run", "-o", tmp_path / "cameras.tum")
    assert r.returncode == 0, r.stderr
    _, run_poses = read_tum(tmp_path / "cameras.tum")
    s, R, t = umeyama_sim3(run_poses[:, :3, 3], scene.pose(np.arange(SCENE.num_frames))[:, :3, 3])
    mapped = s * points @ R.T + t
    truth = []
    for f in range(SCENE.num_frames):
        pose = scene.pose(f)
        cam = unproject(scene.render(f)["depth"], scene.K()).reshape(-1, 3)
        truth.append(cam @ pose[:3, :3].T + pose[:3, 3])
    dist, _ = cKDTree(np.concatenate(truth)).query(mapped)
    assert np.percentile(dist, 99) < 1e-3 and dist.max() < 1e-2


def test_export_rejects_unknown_formats_and_empty_runs(tmp_path):
    r = _export(tmp_path, "-o", tmp_path / "cloud.obj")
    assert r.returncode == 2 and ".obj" in r.stderr and ".ply" in r.stderr
    writer = RunWriter(RunDir(tmp_path / "empty"))
    writer.start(RunManifest(source=SourceInfo(path="x.mp4")))
    r = _export(tmp_path / "empty", "-o", tmp_path / "cloud.ply")
    assert r.returncode == 2 and "no registered window" in r.stderr and "Traceback" not in r.stderr
    r = _export(tmp_path / "missing", "-o", tmp_path / "cloud.ply")
    assert r.returncode == 2 and "missing" in r.stderr
