"""`laser-blender export`: every format read back by its own ecosystem's reader, in the scene world.

The run is written by hand (tests/handmade_run.py: a crop + resize from footage to network
input, fx != fy, an off-centre principal point) with a non-trivial ``scene.json`` (scale,
rotation, translation), so each check also proves the scene transform is applied. Expected
values are computed here from the run's own arrays, independently of the exporters.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import bpy
import cv2
import numpy as np
import pycolmap
import pytest
import trimesh
from scipy.spatial.transform import Rotation

from core.engine import reconstruct
from core.errors import UserError
from core.run.rundir import RunDir
from core.run.scene_transform import SceneTransform
from core.run.settings import EngineSettings
from core.run.tum import read_tum
from core.synthetic import (
    Scene,
    SceneConfig,
    SyntheticBackbone,
    SyntheticNoise,
    SyntheticSource,
)
from laser_blender.commands.build_extension import blender_files
from laser_blender.exporters import FORMATS, ExportOptions, export
from tests.handmade_run import FOOTAGE, GEOMETRY, start_run, windows, write_run
from tests.solved_run import add_solve, footage_K

CLI = str(Path(sys.executable).with_name("laser-blender"))
FRAMES = 18
TRANSFORM = SceneTransform(scale=2.5, rotation=Rotation.from_rotvec([0.3, -1.1, 0.4]).as_matrix().tolist(),
                           translation=[1.0, -2.0, 0.5])


def _cli(*args):
    return subprocess.run([CLI, "export", *map(str, args)], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A complete handmade run whose footage is an image folder, with TRANSFORM as its scene.json."""
    root = tmp_path_factory.mktemp("exporters")
    footage = root / "shot"
    footage.mkdir()
    for f in range(FRAMES):  # names whose natural order differs from their text order
        image = np.full((FOOTAGE[1], FOOTAGE[0], 3), 12 * f, np.uint8)
        cv2.imwrite(str(footage / f"plate.{f + 1}.png"), image)
    write_run(root / "run", frame_count=FRAMES, footage=str(footage))
    RunDir(root / "run").write_scene_transform(TRANSFORM)
    return root / "run"


@pytest.fixture(scope="module")
def truth(run):
    """The run's cameras as the exporters must write them: OpenCV camera-to-scene poses, footage K."""
    rundir = RunDir(run)
    wins = list(rundir.iter_aligned())
    poses = np.concatenate([w.poses for w in wins]).astype(np.float64)
    s, R, t = TRANSFORM.scale, np.asarray(TRANSFORM.rotation), np.asarray(TRANSFORM.translation)
    centres = s * poses[:, :3, 3] @ R.T + t
    axes = R @ poses[:, :3, :3]  # columns: camera x (right), y (down), z (forward) in the scene world
    geometry = rundir.geometry()
    sx, sy = geometry.footage[0] / geometry.resized[0], geometry.footage[1] / geometry.resized[1]
    K = np.array(wins[0].K, np.float64)
    K_footage = np.array([[K[0, 0] * sx, 0, (K[0, 2] + geometry.offset[0]) * sx],
                          [0, K[1, 1] * sy, (K[1, 2] + geometry.offset[1]) * sy], [0, 0, 1]])
    return {"frames": np.concatenate([w.frames for w in wins]), "centres": centres, "axes": axes, "K": K_footage}


# --------------------------------------------------------------------------- COLMAP

@pytest.mark.parametrize("text", [False, True], ids=["bin", "txt"])
def test_colmap_model_reads_back_in_pycolmap(run, truth, tmp_path, text):
    summary = export(run, tmp_path / "sparse" / "0", options=ExportOptions(max_points=3000, text=text))
    assert {p.name for p in summary.files} == {f"{n}.{'txt' if text else 'bin'}" for n in ("cameras", "images", "points3D")}
    rec = pycolmap.Reconstruction(tmp_path / "sparse" / "0")
    assert len(rec.cameras) == 1 and len(rec.images) == FRAMES and 2900 <= len(rec.points3D) <= 3000

    camera = rec.cameras[1]
    assert camera.model.name == "PINHOLE" and (camera.width, camera.height) == FOOTAGE
    np.testing.assert_allclose(camera.calibration_matrix(), truth["K"], rtol=1e-5)

    images = sorted(rec.images.values(), key=lambda im: im.image_id)
    assert [im.name for im in images] == [f"plate.{f + 1}.png" for f in truth["frames"]]
    centres = np.array([im.projection_center() for im in images])
    np.testing.assert_allclose(centres, truth["centres"], rtol=1e-5, atol=1e-5 * np.abs(truth["centres"]).max())
    rotations = np.array([im.cam_from_world().rotation.matrix() for im in images])
    np.testing.assert_allclose(rotations, truth["axes"].transpose(0, 2, 1), atol=1e-5)

    # Every point projects onto each of its observations. The observation is the very pixel the
    # point was unprojected from with the same pose and intrinsics, so only floating-point
    # rounding separates them (about 1e-9 px); 1e-3 px still catches any convention slip (a
    # half-pixel centre shift is 0.5 px, a swapped axis hundreds).
    errors = []
    for point in rec.points3D.values():
        assert point.track.length() >= 1
        for element in point.track.elements:
            image = rec.images[element.image_id]
            cam = image.cam_from_world().matrix() @ np.append(point.xyz, 1.0)
            uv = (truth["K"] @ cam)[:2] / cam[2]
            errors.append(np.linalg.norm(uv - image.points2D[element.point2D_idx].xy))
    assert max(errors) < 1e-3


def test_colmap_images_are_the_footage_frames(run, tmp_path):
    r = _cli(run, "-o", tmp_path / "shot" / "sparse" / "0", "--images", "--max-points", 500)
    assert r.returncode == 0, r.stderr
    rec = pycolmap.Reconstruction(tmp_path / "shot" / "sparse" / "0")
    footage = Path(json.loads((run / "run.json").read_text())["source"]["path"])
    for image in rec.images.values():  # copied as they are, beside the model as COLMAP tools expect
        assert (tmp_path / "shot" / "images" / image.name).read_bytes() == (footage / image.name).read_bytes()


def test_video_frames_are_written_as_named(tmp_path):
    video = tmp_path / "plate.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 24, FOOTAGE)
    for f in range(8):
        writer.write(np.full((FOOTAGE[1], FOOTAGE[0], 3), 30 * f, np.uint8))
    writer.release()
    run = write_run(tmp_path / "run", frame_count=8, per_window=4, footage=str(video))
    r = _cli(run, "-o", tmp_path / "ns" / "transforms.json", "--images", "--max-points", 200)
    assert r.returncode == 0, r.stderr
    frames = json.loads((tmp_path / "ns" / "transforms.json").read_text())["frames"]
    assert [f["file_path"] for f in frames] == [f"images/frame_{f:06d}.png" for f in range(8)]
    grey = [cv2.imread(str(tmp_path / "ns" / f["file_path"]))[..., 1].mean() for f in frames]
    np.testing.assert_allclose(grey, 30 * np.arange(8), atol=3)  # each file holds its own frame


@pytest.fixture(scope="module")
def solved(run, tmp_path_factory) -> Path:
    """The module's run with a camera solve (tests/solved_run.py: exact observations, no distortion)."""
    copy = tmp_path_factory.mktemp("solved") / "run"
    shutil.copytree(run, copy)
    add_solve(copy)
    return copy


def _colmap_reprojection(rec) -> np.ndarray:
    """Distance of every observation from its point projected by pycolmap's own camera model (pixels)."""
    errors = []
    for image in rec.images.values():
        seen = [p for p in image.points2D if p.has_point3D()]
        xyz = np.array([rec.points3D[p.point3D_id].xyz for p in seen])
        uv = image.camera.img_from_cam(xyz @ image.cam_from_world().rotation.matrix().T
                                       + image.cam_from_world().translation)
        errors.append(np.linalg.norm(uv - np.array([p.xy for p in seen]), axis=1))
    return np.concatenate(errors)


@pytest.mark.parametrize("text", [False, True], ids=["bin", "txt"])
def test_colmap_points_are_the_solve_tracks(solved, truth, tmp_path, text):
    bundles = RunDir(solved).read_bundles()
    export(solved, tmp_path / "model", options=ExportOptions(text=text))
    rec = pycolmap.Reconstruction(tmp_path / "model")
    camera = rec.cameras[1]
    assert camera.model.name == "PINHOLE" and (camera.width, camera.height) == FOOTAGE
    np.testing.assert_allclose(camera.calibration_matrix(), truth["K"], rtol=1e-5)  # solve.json's focal = the run's
    # every track point, in the scene world, observed exactly where the solve tracked it
    assert sorted(rec.points3D) == list(range(1, len(bundles.xyz) + 1))
    xyz = np.array([rec.points3D[i + 1].xyz for i in range(len(bundles.xyz))])
    np.testing.assert_allclose(xyz, TRANSFORM.apply_points(bundles.xyz), rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal([rec.points3D[i + 1].color for i in range(len(xyz))], bundles.rgb)
    lengths = np.bincount(bundles.obs_point, minlength=len(bundles.xyz))
    assert [rec.points3D[i + 1].track.length() for i in range(len(xyz))] == lengths.tolist() and lengths.max() > 2
    images = {im.name: im for im in rec.images.values()}
    names = [f"plate.{f + 1}.png" for f in truth["frames"]]
    for frame, name in zip(truth["frames"], names):
        mine = bundles.obs_frame == frame
        points2d = images[name].points2D
        assert len(points2d) == mine.sum() > 0
        got = sorted((p.point3D_id - 1, *p.xy) for p in points2d)
        want = sorted(zip(bundles.obs_point[mine].tolist(), *bundles.obs_xy[mine].astype(np.float64).T))
        np.testing.assert_array_equal(got, want)  # footage pixels unchanged: both put pixel centres at +0.5
    errors = _colmap_reprojection(rec)
    assert len(errors) == len(bundles.obs_point) and errors.max() < 1e-3
    assert max(p.error for p in rec.points3D.values()) < 1e-3


@pytest.mark.parametrize("square", [False, True], ids=["opencv", "radial"])
def test_colmap_camera_carries_the_solve_lens(tmp_path, square):
    """With distortion in solve.json: RADIAL for square pixels, else OPENCV (p1 = p2 = 0); either way
    pycolmap's own projection lands the points on their distorted observations (the polynomial agrees)."""
    wins = windows(FRAMES)
    if square:  # fy such that the footage pixels are square (the crop + resize scales y by 180/96)
        K = wins[0].K.copy()
        K[1, 1] = K[0, 0] * (FOOTAGE[0] / 160) / (FOOTAGE[1] / 96)
        wins = [dataclasses.replace(w, K=K) for w in wins]
    writer = start_run(tmp_path / "run", FRAMES)
    for win in wins:
        writer.write_aligned(win)
    RunDir(tmp_path / "run").write_scene_transform(TRANSFORM)
    fx = GEOMETRY.intrinsics_to_footage(wins[0].K.astype(np.float64))[0, 0]
    report = add_solve(tmp_path / "run", distortion=(-0.12, 0.03), focal=1.02 * fx)
    export(tmp_path / "run", tmp_path / "model", options=ExportOptions())
    rec = pycolmap.Reconstruction(tmp_path / "model")
    (camera,) = rec.cameras.values()
    K = footage_K(wins[0], report.focal)
    if square:
        assert camera.model.name == "RADIAL"
        np.testing.assert_allclose(camera.params, [K[0, 0], K[0, 2], K[1, 2], -0.12, 0.03], rtol=1e-6)
    else:
        assert camera.model.name == "OPENCV"
        np.testing.assert_allclose(camera.params, [K[0, 0], K[1, 1], K[0, 2], K[1, 2], -0.12, 0.03, 0, 0],
                                   rtol=1e-9, atol=1e-12)
    errors = _colmap_reprojection(rec)
    assert len(errors) == report.inliers and errors.max() < 1e-3


def test_colmap_points_leave_out_moving_things(tmp_path):
    scene = Scene(SceneConfig(width=96, height=72, num_frames=40))
    reconstruct(SyntheticSource(scene), SyntheticBackbone(scene, SyntheticNoise.none(seed=4)), tmp_path / "run",
                EngineSettings(window=12, overlap=4, refine=False))  # no solve: the points are the cloud's
    export(tmp_path / "run", tmp_path / "model", options=ExportOptions(max_points=20_000))
    rec = pycolmap.Reconstruction(tmp_path / "model")
    moving = [2 + i for i, o in enumerate(scene.objects) if any(o.motion)]  # layer ids: sphere i is 2 + i
    layers = np.stack([scene.render(f)["layers"] for f in range(40)])
    on_moving = [np.isin(layers[int(im.name[6:12]), xy[:, 1].astype(int), xy[:, 0].astype(int)], moving)
                 for im in rec.images.values() if len(xy := np.array([p.xy for p in im.points2D]).reshape(-1, 2))]
    share_of_points = np.concatenate(on_moving).mean()
    share_of_pixels = np.isin(layers, moving).mean()
    # The moving sphere covers about 1.4% of the footage; its pixels are left out of the points
    # (0.35% of them remain on it: the edges of a small, fast object in a tiny clip).
    assert share_of_pixels > 0.01 and share_of_points < 0.4 * share_of_pixels


# --------------------------------------------------------------------------- nerfstudio

def test_nerfstudio_transforms_follow_the_documented_convention(run, truth, tmp_path):
    summary = export(run, tmp_path / "transforms.json", options=ExportOptions(max_points=2000))
    data = json.loads((tmp_path / "transforms.json").read_text())
    K = truth["K"]
    assert (data["w"], data["h"]) == FOOTAGE
    np.testing.assert_allclose([data["fl_x"], data["fl_y"], data["cx"], data["cy"]],
                               [K[0, 0], K[1, 1], K[0, 2], K[1, 2]], rtol=1e-6)
    assert [f["file_path"] for f in data["frames"]] == [f"images/plate.{f + 1}.png" for f in truth["frames"]]
    # Camera +X right, +Y up, +Z back (away from what it looks at), as columns of camera-to-world.
    matrices = np.array([f["transform_matrix"] for f in data["frames"]])
    right, down, forward = (truth["axes"][:, :, k] for k in range(3))
    np.testing.assert_allclose(matrices[:, :3, 0], right, atol=1e-6)
    np.testing.assert_allclose(matrices[:, :3, 1], -down, atol=1e-6)
    np.testing.assert_allclose(matrices[:, :3, 2], -forward, atol=1e-6)
    np.testing.assert_allclose(matrices[:, :3, 3], truth["centres"], atol=1e-5)
    np.testing.assert_array_equal(matrices[:, 3], np.tile([0, 0, 0, 1], (FRAMES, 1)))

    cloud = trimesh.load(tmp_path / data["ply_file_path"])
    assert summary.files[1] == tmp_path / data["ply_file_path"] and 1900 <= len(cloud.vertices) <= 2000
    # The cloud is in the same world: in front of the cameras, inside some frame's image.
    points = np.asarray(cloud.vertices, np.float64)
    cam = np.einsum("nba,npb->npa", matrices[:, :3, :3], points[None] - matrices[:, None, :3, 3])  # (N, P, 3) GL
    u = K[0, 0] * cam[..., 0] / -cam[..., 2] + K[0, 2]
    v = -K[1, 1] * cam[..., 1] / -cam[..., 2] + K[1, 2]
    seen = (cam[..., 2] < 0) & (u >= 0) & (u <= FOOTAGE[0]) & (v >= 0) & (v <= FOOTAGE[1])
    assert seen.any(axis=0).all()


# --------------------------------------------------------------------------- Nuke

def test_chan_columns_and_zxy_rotation_order(run, truth, tmp_path):
    export(run, tmp_path / "camera.chan")
    table = np.loadtxt(tmp_path / "camera.chan")
    assert table.shape == (FRAMES, 8)
    np.testing.assert_array_equal(table[:, 0], truth["frames"] + 1)  # Blender's frame numbers
    # Nuke's world is +Y up: scene (x, y, z) is Nuke (x, z, -y).
    to_nuke = np.array([[1, 0, 0], [0, 0, 1], [0, -1, 0]])
    np.testing.assert_allclose(table[:, 1:4], truth["centres"] @ to_nuke.T, atol=1e-5)
    # ZXY: rotate about Z first, then X, then Y (scipy's extrinsic "zxy"); the camera looks down -Z, +Y up.
    R = Rotation.from_euler("zxy", table[:, [6, 4, 5]], degrees=True).as_matrix()
    right, down, forward = (truth["axes"][:, :, k] @ to_nuke.T for k in range(3))
    np.testing.assert_allclose(R[:, :, 0], right, atol=1e-6)
    np.testing.assert_allclose(R[:, :, 1], -down, atol=1e-6)
    np.testing.assert_allclose(R[:, :, 2], -forward, atol=1e-6)
    # Continuous: each frame's triple is the one nearest the previous frame's among the two
    # equivalent ones, (rx, ry, rz) and (180 - rx, ry + 180, rz + 180), modulo whole turns.
    rx, ry, rz = table[1:, 4:7].T
    step = np.abs(np.diff(table[:, 4:7], axis=0)).sum(axis=1)
    other = np.stack([180 - rx, ry + 180, rz + 180], axis=1) - table[:-1, 4:7]
    assert (step <= np.abs((other + 180) % 360 - 180).sum(axis=1) + 1e-6).all()
    assert (np.abs(np.diff(table[:, 4:7], axis=0)) <= 180).all()  # never the long way round
    vfov = np.degrees(2 * np.arctan(FOOTAGE[1] / 2 / truth["K"][1, 1]))
    np.testing.assert_allclose(table[:, 7], vfov, rtol=1e-7)


# --------------------------------------------------------------------------- FBX, Alembic, USD

IMPORTERS = {"fbx": lambda p: bpy.ops.import_scene.fbx(filepath=p, anim_offset=0),  # keep frame f at f
             "abc": lambda p: bpy.ops.wm.alembic_import(filepath=p),
             "usdc": lambda p: bpy.ops.wm.usd_import(filepath=p)}


@pytest.mark.parametrize("suffix", list(IMPORTERS))
def test_blender_formats_read_back_through_blenders_importers(run, truth, tmp_path, suffix):
    summary = export(run, tmp_path / f"shot.{suffix}", options=ExportOptions(max_points=2000, sensor_width=24.0))
    # The scene's camera as built (matrix_world = scene transform @ OpenCV pose @ diag(1, -1, -1)).
    blender_cam = np.zeros((FRAMES, 4, 4))
    blender_cam[:, :3, :3] = truth["axes"] * [1, -1, -1]
    blender_cam[:, :3, 3], blender_cam[:, 3, 3] = truth["centres"], 1
    scene = bpy.context.scene
    built = next(o for o in scene.objects if o.type == "CAMERA")
    for k, f in enumerate(truth["frames"]):
        scene.frame_set(int(f) + 1)
        np.testing.assert_allclose(np.array(built.matrix_world) @ np.diag([TRANSFORM.scale ** -1] * 3 + [1]),
                                   blender_cam[k], atol=1e-5)
    vertices = np.concatenate([np.array([o.matrix_world @ v.co for v in o.data.vertices])
                               for o in scene.objects if o.type == "MESH"])

    bpy.ops.wm.read_factory_settings(use_empty=True)
    IMPORTERS[suffix](str(summary.path))
    scene = bpy.context.scene
    cameras = [o for o in scene.objects if o.type == "CAMERA"]
    assert len(cameras) == 1
    cam = cameras[0]
    for k, f in enumerate(truth["frames"]):
        scene.frame_set(int(f) + 1)
        world = np.array(cam.matrix_world)
        world[:3, :3] /= np.linalg.norm(world[:3, :3], axis=0)  # the scene's scale rides on the root
        np.testing.assert_allclose(world, blender_cam[k], atol=1e-4)
    assert cam.data.lens == pytest.approx(truth["K"][0, 0] * 24.0 / FOOTAGE[0], abs=0.01)
    imported = np.concatenate([np.array([o.matrix_world @ v.co for v in o.data.vertices])
                               for o in scene.objects if o.type == "MESH"])
    assert len(imported) == len(vertices) == summary.points
    np.testing.assert_allclose(np.sort(imported, axis=0), np.sort(vertices, axis=0), atol=1e-4)


# --------------------------------------------------------------------------- clouds and trajectory

def test_clouds_and_trajectory_honour_the_scene_transform(run, tmp_path):
    plain = tmp_path / "plain"
    shutil.copytree(run, plain)
    RunDir(plain).write_scene_transform(SceneTransform.identity())
    R, t = np.asarray(TRANSFORM.rotation), np.asarray(TRANSFORM.translation)
    readers = {"ply": lambda p: np.asarray(trimesh.load(p).vertices),
               "glb": lambda p: np.asarray(next(iter(trimesh.load(p).geometry.values())).vertices),
               "xyz": lambda p: np.loadtxt(p)[:, :3]}
    for suffix, read in readers.items():
        for source in (run, plain):
            export(source, tmp_path / f"{source.name}.{suffix}", options=ExportOptions(max_points=3000))
        scene, identity = read(tmp_path / f"run.{suffix}"), read(tmp_path / f"plain.{suffix}")
        assert len(scene) == len(identity) > 2900
        np.testing.assert_allclose(scene, TRANSFORM.scale * identity @ R.T + t, atol=1e-4 * TRANSFORM.scale)
    export(run, tmp_path / "run.tum")
    export(plain, tmp_path / "plain.tum")
    (times, scene), (_, identity) = read_tum(tmp_path / "run.tum"), read_tum(tmp_path / "plain.tum")
    np.testing.assert_allclose(times, np.arange(FRAMES) / 24.0)
    np.testing.assert_allclose(scene[:, :3, 3], TRANSFORM.scale * identity[:, :3, 3] @ R.T + t, atol=1e-6)
    np.testing.assert_allclose(scene[:, :3, :3], R @ identity[:, :3, :3], atol=1e-6)


# --------------------------------------------------------------------------- choosing the format

def test_format_follows_the_suffix_and_bad_requests_are_one_line(run, tmp_path):
    r = _cli(run, "-o", tmp_path / "cloud.obj")
    assert r.returncode == 2 and ".obj" in r.stderr and "--format" in r.stderr and "Traceback" not in r.stderr
    r = _cli(run, "-o", tmp_path / "cam.chan", "--images")
    assert r.returncode == 2 and "--images" in r.stderr
    r = _cli(run, "-o", tmp_path / "model", "--text", "--max-points", 100)  # no suffix: a COLMAP folder
    assert r.returncode == 0 and (tmp_path / "model" / "points3D.txt").exists(), r.stderr
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match="COLMAP model is a folder"):
        export(run, tmp_path / "file", "colmap")
    r = _cli(run, "-o", tmp_path / "cam.txt", "--format", "chan")
    assert r.returncode == 0 and np.loadtxt(tmp_path / "cam.txt").shape == (FRAMES, 8), r.stderr


def test_the_addon_menu_offers_the_formats_blender_lacks_and_ships_their_code():
    from addon.export_menu import OPERATORS

    menu = {f.name for f in FORMATS.values() if f.menu}
    assert {op.format_name for op in OPERATORS} == menu == {"colmap", "nerfstudio", "chan"}
    shipped = set(blender_files())
    assert {f"laser_blender/exporters/{FORMATS[name].module}.py" for name in menu} <= shipped
