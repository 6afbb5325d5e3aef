"""Scene orientation and scale (RUN/scene.json) and the static/dynamic split, on a synthetic shot with known ground."""

from __future__ import annotations

import numpy as np
import pytest

from core.geometry.plane import fit_plane, ransac_ground
from core.run.rundir import RunDir
from core.run.scene_transform import SceneTransform, Units
from core.synthetic import Scene
from laser_blender.cli import main
from laser_blender.driver import orient_completed_run
from laser_blender.orient import StaticCloud, find_ground
from laser_blender.points import window_dynamic
from oriented_run import CONFIG, PREDICTION, make_run, moving_layer, run_from_truth

GROUND = np.array([[x, CONFIG.ground_height, z] for x in (-6.0, -2.0, 2.0, 6.0) for z in (2.0, 6.0, 12.0, 25.0)])
"""Points of the true ground (the synthetic world has y down and its ground at y = ground_height)."""


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run_dir = make_run(tmp_path_factory.mktemp("oriented") / "run")
    orient_completed_run(RunDir(run_dir))  # what reconstruct does when a run completes
    return run_dir


def scene_from_truth(run_dir) -> np.ndarray:
    return RunDir(run_dir).scene_transform().matrix() @ run_from_truth(run_dir)


def camera_heights(run_dir) -> np.ndarray:
    from laser_blender.orient import run_cameras

    run = RunDir(run_dir)
    return run.scene_transform().apply_poses(run_cameras(run))[:, 2, 3]


def fmt(p) -> str:
    return ",".join(f"{v:.9g}" for v in p)


# --------------------------------------------------------------------------- the plane fit

def test_ransac_finds_the_weighted_ground_among_walls_and_clutter():
    rng = np.random.default_rng(0)
    up = np.array([0.0, 0.0, 1.0])
    floor = np.c_[rng.uniform(-5, 5, (3000, 2)), rng.normal(0, 0.01, 3000)]
    wall = np.c_[rng.uniform(-5, 5, 5000), np.full(5000, 4.0), rng.uniform(0, 3, 5000)]  # more points, vertical
    clutter = rng.uniform(-5, 5, (1500, 3))
    points = np.concatenate([floor, wall, clutter])
    weights = rng.uniform(0.5, 1.0, len(points))
    tilted_up = np.array([0.2, 0.1, 1.0])  # the cameras' mean up is only roughly vertical
    fit = ransac_ground(points, weights, np.full(len(points), 0.05), tilted_up)
    assert np.degrees(np.arccos(fit.plane.normal @ up)) < 0.5
    assert abs(fit.plane.offset) < 0.01
    assert 0.25 < fit.support < 0.4 and fit.inliers[:3000].mean() > 0.99
    assert np.allclose(fit_plane(floor).facing(up).normal, fit.plane.normal, atol=0.01)
    # only walls within reach of the up direction: nothing to find
    assert ransac_ground(wall, weights[:5000], np.full(5000, 0.05), up, max_tilt_deg=30) is None


def test_no_credible_ground_keeps_the_first_camera_and_says_why():
    rng = np.random.default_rng(1)
    cameras = np.tile(np.eye(4), (10, 1, 1))
    cameras[:, :3, :3] = np.diag([1.0, 1.0, 1.0])  # OpenCV cameras looking along +z, up is -y
    cameras[:, 0, 3] = np.linspace(0, 1, 10)
    base = SceneTransform.first_camera(cameras[0])
    blob = StaticCloud(rng.normal(0, 1, (4000, 3)) + [0, 0, 5], np.ones(4000), np.full(4000, 0.05))
    search = find_ground(blob, cameras, base)
    assert search.plane is None and "holds only" in search.reason
    ceiling = np.c_[rng.uniform(-5, 5, 4000), np.full(4000, -2.5), rng.uniform(1, 10, 4000)]  # above (y is down)
    search = find_ground(StaticCloud(ceiling, np.ones(4000), np.full(4000, 0.05)), cameras, base)
    assert search.plane is None and "below it (a ceiling?)" in search.reason


# --------------------------------------------------------------------------- automatic orientation

def test_auto_orientation_puts_the_true_ground_at_zero_with_z_up(run_dir):
    transform = RunDir(run_dir).scene_transform()
    assert transform.method.startswith("ground plane (auto") and transform.units == Units.network
    m = scene_from_truth(run_dir)
    ground_z = (GROUND @ m[:3, :3].T + m[:3, 3])[:, 2]
    height = float(np.median(camera_heights(run_dir)))
    assert height > 0
    assert np.abs(ground_z).max() < 0.05 * height, f"ground off Z = 0 by {np.abs(ground_z).max() / height:.1%}"
    true_up = m[:3, :3] @ np.array([0.0, -1.0, 0.0])
    tilt = np.degrees(np.arccos(true_up[2] / np.linalg.norm(true_up)))
    assert tilt < 2.0, f"true up is {tilt:.2f} degrees from +Z"
    # origin under the first camera, +Y along its view
    first = RunDir(run_dir).scene_transform().apply_poses(RunDir(run_dir).iter_aligned().__next__().poses[:1])[0]
    assert np.allclose(first[:2, 3], 0, atol=1e-6)
    assert abs(first[0, 2]) < 1e-6 and first[1, 2] > 0


def test_scale_distance_and_camera_height_make_metres(run_dir, capsys):
    a, b = np.array([-2.0, CONFIG.ground_height, 4.0]), np.array([3.0, CONFIG.ground_height, 12.0])
    m = scene_from_truth(run_dir)
    sa, sb = (np.stack([a, b]) @ m[:3, :3].T + m[:3, 3])
    true = float(np.linalg.norm(a - b))
    assert main(["orient", str(run_dir), f"--scale-distance={fmt(sa)}:{fmt(sb)}={true:.9g}"]) == 0
    transform = RunDir(run_dir).scene_transform()
    assert transform.units == Units.metres and "scale" in transform.method
    m = scene_from_truth(run_dir)  # now in metres: any true distance reads the same
    truth = Scene(CONFIG)
    pairs = [(GROUND[0], GROUND[-1]), (truth.pose(0)[:3, 3], truth.pose(60)[:3, 3]),
             (truth.object_centers(0)[0], truth.object_centers(0)[2])]
    for p, q in pairs:
        scene_distance = np.linalg.norm((p - q) @ m[:3, :3].T)
        assert scene_distance == pytest.approx(np.linalg.norm(p - q), rel=0.01)
    # independent of the fit above: the floor stayed at Z = 0, and the cameras' height above the
    # reconstructed floor is now their true height (ground_height, the path bobs around it) in metres
    assert np.median(camera_heights(run_dir)) == pytest.approx(CONFIG.ground_height, rel=0.01)

    assert main(["orient", str(run_dir), "--camera-height", "3.2"]) == 0
    assert np.median(camera_heights(run_dir)) == pytest.approx(3.2, rel=1e-6)
    assert main(["orient", str(run_dir), "--reset"]) == 0
    assert RunDir(run_dir).scene_transform().method == "first camera"
    assert main(["orient", str(run_dir), "--camera-height", "1.6"]) == 2  # no floor to measure from
    assert "needs a floor" in capsys.readouterr().err
    assert main(["orient", str(run_dir), "--floor", "auto"]) == 0
    assert RunDir(run_dir).scene_transform().method.startswith("ground plane (auto")


def test_manual_floor_origin_and_x_axis_take_points_as_shown(run_dir, capsys):
    """Points given to one command are read in the scene as it was before it (what Blender showed)."""
    run = RunDir(run_dir)
    main(["orient", str(run_dir), "--reset"])
    m = scene_from_truth(run_dir)
    p, q = (np.stack([GROUND[5], GROUND[10]]) @ m[:3, :3].T + m[:3, 3])
    up = m[:3, :3] @ np.array([0.0, -1.0, 0.0])
    # "=" keeps argparse from reading a leading minus as an option
    assert main(["orient", str(run_dir), f"--floor={fmt(p)}:{fmt(up)}", f"--origin={fmt(p)}",
                 f"--x-axis={fmt(q)}"]) == 0
    m = scene_from_truth(run_dir)
    sp, sq = np.stack([GROUND[5], GROUND[10]]) @ m[:3, :3].T + m[:3, 3]
    scale = run.scene_transform().scale
    assert np.abs(sp).max() < 1e-6 * scale
    assert abs(sq[1]) < 1e-6 * scale and abs(sq[2]) < 1e-6 * scale and sq[0] > 0
    assert run.scene_transform().method == "floor, origin, X axis"
    assert main(["orient", str(run_dir)]) == 0 and "floor, origin, X axis" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        main(["orient", str(run_dir), "--floor", "1,2,3:0,0,0"])
    assert exit_.value.code == 2 and "normal must not be zero" in capsys.readouterr().err


def test_align_orients_the_run_it_writes(run_dir, tmp_path, capsys):
    out = tmp_path / "aligned_run"
    assert main(["align", str(run_dir / "predictions"), "-o", str(out), "--no-layer-align"]) == 0
    assert RunDir(out).scene_transform().method.startswith("ground plane (auto")
    assert "scene: ground plane (auto" in capsys.readouterr().err


# --------------------------------------------------------------------------- dynamic points

def test_moving_object_points_are_dynamic_and_static_ones_are_not(run_dir):
    run, scene, moving = RunDir(run_dir), Scene(CONFIG), moving_layer()
    dynamic_on_moving, moving_points, dynamic_on_static, static_points = 0, 0, 0, 0
    for win in run.iter_aligned():
        dynamic = window_dynamic(run, win)
        layers = np.stack([scene.render(int(f), *PREDICTION)["layers"] for f in win.frames])
        on_moving, on_static = win.mask & (layers == moving), win.mask & (layers != moving)
        dynamic_on_moving += dynamic[on_moving].sum()
        moving_points += on_moving.sum()
        dynamic_on_static += dynamic[on_static].sum()
        static_points += on_static.sum()
    assert moving_points > 5000
    assert dynamic_on_moving / moving_points >= 0.90, f"{dynamic_on_moving / moving_points:.1%} of moving points"
    assert dynamic_on_static / static_points <= 0.02, f"{dynamic_on_static / static_points:.1%} of static points"
