"""evaluate_run and ``laser-blender evaluate`` on a run written with RunWriter against an
analytic ground truth: cameras above a ground plane, whose depth is known in closed form."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from core.groundtruth import GroundTruthError, GroundTruthWriter
from core.run.arrays import AlignedWindow
from core.run.files import RunDirError
from core.run.manifest import InputGeometry, RunManifest, RunStatus
from core.run.rundir import RunDir, RunWriter
from laser_blender.evaluate import evaluate_run, format_report

FOOTAGE = (48, 36)  # the prediction grid is 3x coarser: its pixel centres are footage pixel centres
F_FOOTAGE = 40.0
K_GT = np.array([[F_FOOTAGE, 0, 24], [0, F_FOOTAGE, 18], [0, 0, 1]])
N_FRAMES, FPS, PLANE_Z = 12, 10.0, 6.0
LAYERS = {1: "left", 2: "right"}
SIM_S, SIM_R, SIM_T = 0.4, Rotation.from_euler("xyz", [10, -30, 55], degrees=True).as_matrix(), np.array([2.0, 0, -1])


def gt_pose(k: int) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = Rotation.from_euler("xyz", [3 * np.sin(k), 4 * np.cos(0.7 * k), 2 * k], degrees=True).as_matrix()
    T[:3, 3] = [0.15 * k, 0.1 * np.sin(k), 0.05 * k]
    return T


def plane_view(pose: np.ndarray, K: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """z-depth of the world plane z = PLANE_Z on a (h, w) grid, and its layer (world x < 0.5: left)."""
    w, h = size
    u, v = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    rays = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1)  # z = 1
    world_rays = rays @ pose[:3, :3].T
    depth = (PLANE_Z - pose[2, 3]) / world_rays[..., 2]
    hit_x = pose[0, 3] + depth * world_rays[..., 0]
    return depth.astype(np.float32), np.where(hit_x < 0.5, 1, 2).astype(np.uint8)


def write_gt(root: Path) -> Path:
    with GroundTruthWriter(root, *FOOTAGE, FPS, K_GT, LAYERS) as writer:
        for k in range(N_FRAMES):
            depth, layers = plane_view(gt_pose(k), K_GT, FOOTAGE)
            writer.add_frame(k, gt_pose(k), depth, layers)
    return root


def write_run(root: Path, geometry: InputGeometry, frames, layer_gain=None, window: int = 4,
              masked_quarter: bool = False) -> Path:
    """A run that reconstructs the ground truth exactly, up to the similarity SIM_*.

    ``layer_gain[frame]`` multiplies the run's depth of the "right" layer in that frame.
    ``masked_quarter``: the left quarter of every frame is masked out and 3x too deep.
    """
    to_footage = geometry.to_footage()
    K_run = np.linalg.inv(to_footage) @ K_GT
    writer = RunWriter(RunDir(root), fps=FPS)
    writer.start(RunManifest(geometry=geometry))
    frames = list(frames)
    for index, start in enumerate(range(0, len(frames), window)):
        chunk = frames[start:start + window]
        poses, depths = [], []
        for k in chunk:
            P = gt_pose(k)
            Q = np.eye(4)
            Q[:3, :3] = SIM_R @ P[:3, :3]
            Q[:3, 3] = SIM_S * SIM_R @ P[:3, 3] + SIM_T
            depth, layers = plane_view(P, K_run, geometry.size)
            if layer_gain is not None:
                depth = np.where(layers == 2, depth * layer_gain[k], depth)
            poses.append(Q)
            depths.append(SIM_S * depth)
        n, (w, h) = len(chunk), geometry.size
        mask = np.ones((n, h, w), bool)
        depths = np.array(depths)
        if masked_quarter:
            mask[:, :, : w // 4] = False
            depths[~mask] *= 3
        writer.write_aligned(AlignedWindow(
            index=index, frames=np.array(chunk), poses=np.array(poses), K=K_run, depth=depths,
            conf=np.ones((n, h, w), np.float32), colors=np.zeros((n, h, w, 3), np.uint8),
            mask=mask, scale=SIM_S,
        ))
    writer.finish(RunStatus.complete)
    return root


RESIZE = InputGeometry.resize_only(FOOTAGE, (16, 12))
CROP = InputGeometry(footage=FOOTAGE, resized=(16, 12), size=(12, 10), offset=(3, 1))


@pytest.mark.parametrize("geometry", [RESIZE, CROP], ids=["resize", "crop"])
def test_exact_reconstruction_scores_zero(tmp_path, geometry):
    gt = write_gt(tmp_path / "gt")
    run = write_run(tmp_path / "run", geometry, range(N_FRAMES))
    m = evaluate_run(run, gt)
    assert m["frames"] == {"run": N_FRAMES, "matched": N_FRAMES, "ground_truth": N_FRAMES}
    assert m["ate"]["rmse"] < 1e-5 and m["ate"]["scale"] == pytest.approx(1 / SIM_S, rel=1e-5)
    assert m["rpe"]["trans_rmse"] < 1e-5 and m["rpe"]["rot_rmse_deg"] < 1e-3
    assert m["depth"]["abs_rel"] < 1e-6 and m["depth"]["delta_1_25"] == 1.0
    assert m["depth"]["scale"] == pytest.approx(1 / SIM_S, rel=1e-5)
    assert m["depth"]["valid"] == N_FRAMES * geometry.size[0] * geometry.size[1]
    assert m["pointcloud"]["chamfer"] < 1e-4
    assert set(m["layer_log_ratio_std"]) == {"left", "right"}
    assert m["layer_log_ratio_std_mean"] < 1e-6
    json.dumps(m)  # JSON-ready
    assert "ATE" in format_report(m) and "right" in format_report(m)


def test_depth_scores_all_pixels_points_only_the_masked_ones(tmp_path):
    # A quarter of the pixels is 3x too deep and masked out: the median scale is untouched,
    # depth Abs Rel = 0.25 * |3 - 1| = 0.5 with delta 0.75; the point clouds, both taken on
    # the pixels the mask keeps, still coincide.
    gt = write_gt(tmp_path / "gt")
    run = write_run(tmp_path / "run", RESIZE, range(N_FRAMES), masked_quarter=True)
    m = evaluate_run(run, gt)
    assert m["depth"]["scale"] == pytest.approx(1 / SIM_S, rel=1e-5)
    assert m["depth"]["abs_rel"] == pytest.approx(0.5, rel=1e-5)
    assert m["depth"]["delta_1_25"] == pytest.approx(0.75)
    assert m["pointcloud"]["chamfer"] < 1e-4


def test_wrong_geometry_is_noticed(tmp_path):
    # Reading a cropped run as if it were resized misplaces every ground-truth pixel.
    gt = write_gt(tmp_path / "gt")
    run = write_run(tmp_path / "run", CROP, range(N_FRAMES))
    info = json.loads((run / "run.json").read_text())
    info["geometry"] = InputGeometry.resize_only(FOOTAGE, CROP.size).model_dump()
    (run / "run.json").write_text(json.dumps(info))
    m = evaluate_run(run, gt)
    assert m["depth"]["abs_rel"] > 1e-3 and m["pointcloud"]["chamfer"] > 1e-3


def test_layer_drift_and_frame_join(tmp_path):
    # The "right" layer's depth drifts by known gains in the run's frames; "left" stays exact.
    gt = write_gt(tmp_path / "gt")
    frames = [0, 2, 3, 5, 8, 11, 40]  # frame 40 is not in the ground truth
    gain = {k: 1.0 + 0.02 * ((-1) ** k) * (k % 3) for k in frames}
    run = write_run(tmp_path / "run", RESIZE, frames, layer_gain=gain, window=3)
    m = evaluate_run(run, gt)
    assert m["frames"] == {"run": 7, "matched": 6, "ground_truth": N_FRAMES}
    assert m["ate"]["rmse"] < 1e-5
    expected = np.std(np.log([gain[k] for k in frames[:-1]]))
    assert m["layer_log_ratio_std"]["right"] == pytest.approx(expected, rel=1e-4)
    assert m["layer_log_ratio_std"]["left"] < 1e-6
    assert m["layer_log_ratio_std_mean"] == pytest.approx(expected / 2, rel=1e-4)


def test_errors(tmp_path):
    gt = write_gt(tmp_path / "gt")
    with pytest.raises(RunDirError, match="not a laser-blender run directory"):
        evaluate_run(tmp_path, gt)
    run = write_run(tmp_path / "far", RESIZE, [30, 31, 32, 33])
    with pytest.raises(GroundTruthError, match="only 0 of the run's 4 frames are in the ground truth"):
        evaluate_run(run, gt)
    empty = RunWriter(RunDir(tmp_path / "empty"))
    empty.start(RunManifest())
    with pytest.raises(RunDirError, match="no aligned windows"):
        evaluate_run(tmp_path / "empty", gt)


def cli() -> str:
    exe = Path(sys.executable).with_name("laser-blender")
    assert exe.exists(), f"{exe} is missing: install the package into the virtual environment"
    return str(exe)


def test_cli_prints_and_writes_json(tmp_path):
    gt = write_gt(tmp_path / "gt")
    run = write_run(tmp_path / "run", RESIZE, range(N_FRAMES))
    done = subprocess.run([cli(), "evaluate", str(run), "--gt", str(gt)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "ATE" in done.stdout and "Abs Rel" in done.stdout
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["frames"]["matched"] == N_FRAMES and saved["ate"]["rmse"] < 1e-5

    out = tmp_path / "elsewhere" / "m.json"
    done = subprocess.run([cli(), "evaluate", str(run), "--gt", str(gt), "--json", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(out.read_text())["depth"]["abs_rel"] < 1e-6


def test_cli_reports_bad_ground_truth(tmp_path):
    run = write_run(tmp_path / "run", RESIZE, range(4))
    done = subprocess.run([cli(), "evaluate", str(run), "--gt", str(tmp_path / "nope")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "nope: ground-truth directory does not exist" in done.stderr
    assert "Traceback" not in done.stderr


def test_frame_in_two_windows_is_refused(tmp_path):
    gt = write_gt(tmp_path / "gt")
    run = write_run(tmp_path / "run", RESIZE, [0, 1, 2, 3, 3, 4, 5, 6], window=4)
    with pytest.raises(RunDirError, match="frame 3 appears in more than one aligned window"):
        evaluate_run(run, gt)
