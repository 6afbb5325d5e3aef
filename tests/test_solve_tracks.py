"""Footage tracks: the synthetic renderer's world-fixed texture, full-resolution frames, KLT against ground truth."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from core.frames import open_source
from core.run.manifest import InputGeometry
from core.solve.tracks import Tracker, TrackerParams, WindowTracker
from core.synthetic import SyntheticSource
from core.synthetic.scene import GROUND, WALL, Scene, SceneConfig

W, H = 320, 180


def antialiased(scene: Scene, frame: int) -> dict[str, np.ndarray]:
    """The render at the scene's size with colours supersampled 2x (the ray caster point-samples; real footage is
    filtered)."""
    r = scene.render(frame)
    w, h = scene.config.width, scene.config.height
    r["colors"] = cv2.resize(scene.render(frame, 2 * w, 2 * h)["colors"], (w, h), interpolation=cv2.INTER_AREA)
    return r


def seed_points(r: dict[str, np.ndarray], xy: np.ndarray, K: np.ndarray, world_from_cam: np.ndarray) -> np.ndarray:
    """(N, 3) world points under footage pixels ``xy`` (pixel centres at +0.5); NaN off flat static interiors.

    Depth between pixel centres is interpolated in inverse depth, which is exact on the ground and wall planes.
    """
    c = np.floor(xy - 0.5).astype(int)
    h, w = r["depth"].shape
    inside = (c[:, 0] >= 8) & (c[:, 1] >= 8) & (c[:, 0] < w - 9) & (c[:, 1] < h - 9)
    c = np.where(inside[:, None], c, 8)
    offsets = np.arange(-8, 10)
    patch = r["layers"][c[:, 1, None, None] + offsets[:, None], c[:, 0, None, None] + offsets]
    flat = (patch.min((1, 2)) == patch.max((1, 2))) & np.isin(patch[:, 0, 0], (GROUND, WALL)) & inside
    f = xy - 0.5 - c
    inv = 1.0 / r["depth"].astype(np.float64)
    i00, i01 = inv[c[:, 1], c[:, 0]], inv[c[:, 1], c[:, 0] + 1]
    i10, i11 = inv[c[:, 1] + 1, c[:, 0]], inv[c[:, 1] + 1, c[:, 0] + 1]
    z = 1.0 / ((1 - f[:, 1]) * ((1 - f[:, 0]) * i00 + f[:, 0] * i01) + f[:, 1] * ((1 - f[:, 0]) * i10 + f[:, 0] * i11))
    cam = np.stack([(xy[:, 0] - K[0, 2]) / K[0, 0] * z, (xy[:, 1] - K[1, 2]) / K[1, 1] * z, z], -1)
    world = cam @ world_from_cam[:3, :3].T + world_from_cam[:3, 3]
    return np.where(flat[:, None], world, np.nan)


def test_texture_is_opt_in_and_gives_corners_everywhere():
    plain, textured = (Scene(SceneConfig(width=W, height=H, texture=t)) for t in (False, True))
    a, b = plain.render(3), textured.render(3)
    assert np.array_equal(a["depth"], b["depth"]) and np.array_equal(a["layers"], b["layers"])
    assert not np.array_equal(a["colors"], b["colors"])

    def cells_with_corners(rgb: np.ndarray) -> int:
        corners = cv2.goodFeaturesToTrack(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), 2000, 0.01, 3).reshape(-1, 2)
        return len(np.unique((corners[:, 1] * 6 / H).astype(int) * 8 + (corners[:, 0] * 8 / W).astype(int)))

    assert cells_with_corners(b["colors"]) == 48 > cells_with_corners(a["colors"])


def test_frame_pairs_decode_once_and_match_frames(tmp_path):
    scene = Scene(SceneConfig(width=W, height=H, texture=True, num_frames=3))
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"f{i:03d}.png"), cv2.cvtColor(scene.render(i)["colors"], cv2.COLOR_RGB2BGR))
    geometry = InputGeometry(footage=(W, H), resized=(160, 90), offset=(0, 5), size=(160, 80))
    for source in (open_source(tmp_path), SyntheticSource(scene)):
        pairs = list(source.frame_pairs(geometry, skip=1))
        assert [i for i, _, _ in pairs] == [i for i, _ in source.frames(geometry, skip=1)] == [1, 2]
        for (_, net, full), (_, ref_net), (_, ref_full) in zip(pairs, source.frames(geometry, skip=1),
                                                                source.frames(None, skip=1)):
            assert net.shape == (80, 160, 3) and np.array_equal(net, ref_net)
            assert full.shape == (H, W, 3) and np.array_equal(full, ref_full)


@pytest.mark.parametrize("size", [(W, H), (1280, 720)])  # one pyramidal call; half resolution, then full
def test_klt_tracks_follow_static_points_within_a_fraction_of_a_pixel(size):
    """Each track's position in later frames against the exact projection of the world point it started on."""
    scene = Scene(SceneConfig(width=size[0], height=size[1], texture=True))
    K = scene.K()
    tracker = Tracker(size)
    world: dict[int, np.ndarray] = {}
    errors = []
    for f in range(10):
        r = antialiased(scene, f)
        tracks = tracker.step(f, r["colors"])
        assert tracks.xy.dtype == np.float32 and len(np.unique(tracks.ids)) == len(tracks.ids)
        new = np.array([i not in world for i in tracks.ids], bool)
        world.update(zip(tracks.ids[new].tolist(), seed_points(r, tracks.xy[new], K, scene.pose(f))))
        pts = np.array([world[i] for i in tracks.ids[~new]]).reshape(-1, 3)
        cam_from_world = np.linalg.inv(scene.pose(f))
        cam = pts @ cam_from_world[:3, :3].T + cam_from_world[:3, 3]
        uv = cam[:, :2] / cam[:, 2:] * np.diag(K)[:2] + K[:2, 2]
        err = np.linalg.norm(uv - tracks.xy[~new], axis=1)
        errors.append(err[np.isfinite(err)])
        # spread: most seeding cells hold a track
        cols, rows = TrackerParams().grid
        cells = (tracks.xy[:, 1] * rows / size[1]).astype(int) * cols + (tracks.xy[:, 0] * cols / size[0]).astype(int)
        assert len(np.unique(cells)) >= 0.8 * cols * rows
    e = np.concatenate(errors)
    assert len(e) > 2000
    assert np.median(e) < 0.25 and np.percentile(e, 75) < 0.4


def test_window_tracker_follows_the_lens_frames_whole_across_windows():
    """Windows' tracks start on their own first frame; the lens tracks run over the first frames
    unbroken, are handed over once those are all fed (or the stream ends), and only once."""
    scene = Scene(SceneConfig(width=W, height=H, texture=True))
    frames = [antialiased(scene, f)["colors"] for f in range(9)]
    tracker = WindowTracker((W, H), window=4, overlap=1, lens_frames=7)
    for position, rgb in enumerate(frames):
        tracker.feed(position, position, rgb)
        lens = tracker.take_lens()
        if position == 3:
            window = tracker.take(0)
            assert np.array_equal(np.unique(window.frame), np.arange(4))
        if position < 6:
            assert lens is None
        elif position == 6:
            assert np.array_equal(np.unique(lens.frame), np.arange(7))
            span = np.bincount(lens.track)[lens.track[lens.frame == 0]]
            assert (span == 7).mean() > 0.8  # most tracks from the first frame cross the windows' boundaries
            window = tracker.take(1)  # window 1 (frames 3-6) started its own tracks on frame 3
            assert window.frame.min() == 3 and np.bincount(window.track).max() == 4
        else:
            assert lens is None  # handed over once
    assert tracker.take_lens(final=True) is None
    short = WindowTracker((W, H), window=4, overlap=1, lens_frames=20)
    for position, rgb in enumerate(frames[:5]):
        short.feed(position, position, rgb)
    assert short.take_lens() is None
    assert np.array_equal(np.unique(short.take_lens(final=True).frame), np.arange(5))
