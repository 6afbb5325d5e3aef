"""Ground-truth directories: writer/reader round trip and malformed directories."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.groundtruth import GroundTruthError, GroundTruthWriter, load_ground_truth

W, H, FPS = 8, 6, 29.97
K = np.array([[10.0, 0, 4], [0, 10.0, 3], [0, 0, 1]])
LAYERS = {0: "ground", 1: "far wall", 7: "box"}


def pose(k: int) -> np.ndarray:
    c, s = np.cos(0.1 * k), np.sin(0.1 * k)
    T = np.eye(4)
    T[:3, :3] = [[c, 0, s], [0, 1, 0], [-s, 0, c]]
    T[:3, 3] = [0.5 * k, -0.2, 0.01 * k * k]
    return T


def write_gt(root, frames=(0, 1, 2, 5, 1000)):
    with GroundTruthWriter(root, W, H, FPS, K, LAYERS, extra={"scene": "unit"}) as writer:
        for k in frames:
            layers = np.full((H, W), 7 if k % 2 else 1, np.uint8) if k != 2 else None
            writer.add_frame(k, pose(k), np.full((H, W), 1.0 + k, np.float32), layers)
    return root


def test_round_trip(tmp_path):
    gt = load_ground_truth(write_gt(tmp_path / "gt"))
    assert (gt.width, gt.height, gt.fps) == (W, H, FPS)
    np.testing.assert_array_equal(gt.K, K)
    np.testing.assert_array_equal(gt.frames, [0, 1, 2, 5, 1000])
    np.testing.assert_allclose(gt.poses, np.stack([pose(k) for k in gt.frames]), atol=1e-6)
    assert gt.layer_names == LAYERS and gt.extra == {"scene": "unit"} and gt.has_layers
    depth = gt.depth(1000)
    assert depth.dtype == np.float32 and depth.shape == (H, W) and (depth == 1001).all()
    assert (gt.layers(5) == 7).all() and (gt.layers(0) == 1).all()
    assert gt.layers(2) is None
    with pytest.raises(GroundTruthError, match="frame 3 is not in the ground truth"):
        gt.depth(3)


def test_writer_validates_frames(tmp_path):
    writer = GroundTruthWriter(tmp_path / "gt", W, H, FPS, K, LAYERS, extra={})
    writer.add_frame(3, pose(3), np.ones((H, W)))
    with pytest.raises(GroundTruthError, match="frame 3 added after frame 3"):
        writer.add_frame(3, pose(3), np.ones((H, W)))
    with pytest.raises(GroundTruthError, match=r"frame 4 depth has shape \(5, 8\), expected \(6, 8\)"):
        writer.add_frame(4, pose(4), np.ones((H - 1, W)))
    with pytest.raises(GroundTruthError, match="frame 4 layer ids must be in 0..255"):
        writer.add_frame(4, pose(4), np.ones((H, W)), np.full((H, W), 300))
    with pytest.raises(GroundTruthError, match="extra keys \\['fps'\\] would overwrite"):
        GroundTruthWriter(tmp_path / "gt2", W, H, FPS, K, LAYERS, extra={"fps": 3})


def test_unclosed_writer_is_not_a_ground_truth(tmp_path):
    with pytest.raises(RuntimeError):
        with GroundTruthWriter(tmp_path / "gt", W, H, FPS, K, LAYERS) as writer:
            writer.add_frame(0, pose(0), np.ones((H, W)))
            raise RuntimeError("renderer crashed")
    with pytest.raises(GroundTruthError, match="no gt.json"):
        load_ground_truth(tmp_path / "gt")


def test_malformed_directories(tmp_path):
    with pytest.raises(GroundTruthError, match="does not exist"):
        load_ground_truth(tmp_path / "missing")
    root = write_gt(tmp_path / "gt")
    meta = json.loads((root / "gt.json").read_text())

    (root / "gt.json").write_text(json.dumps({**meta, "num_frames": 4}))
    with pytest.raises(GroundTruthError, match="5 poses but gt.json says num_frames=4"):
        load_ground_truth(root)

    (root / "gt.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "K"}))
    with pytest.raises(GroundTruthError, match=r"lacks \['K'\]"):
        load_ground_truth(root)

    (root / "gt.json").write_text(json.dumps({**meta, "K": [[1, 2], [3, 4]]}))
    with pytest.raises(GroundTruthError, match="K must be a finite 3x3 matrix"):
        load_ground_truth(root)

    (root / "gt.json").write_text(json.dumps({**meta, "fps": 10.0}))  # timestamps no longer whole frames
    with pytest.raises(GroundTruthError, match="timestamps must be increasing frame_index / fps"):
        load_ground_truth(root)

    (root / "gt.json").write_text("{not json")
    with pytest.raises(GroundTruthError, match="gt.json: not valid JSON"):
        load_ground_truth(root)

    (root / "gt.json").write_text(json.dumps(meta))
    (root / "trajectory.tum").write_text("0 1 2\n")
    with pytest.raises(GroundTruthError, match="not a TUM trajectory"):
        load_ground_truth(root)


def test_bad_depth_and_layer_files(tmp_path):
    root = write_gt(tmp_path / "gt")
    gt = load_ground_truth(root)
    (root / "depth" / "d000005.npy").unlink()
    with pytest.raises(GroundTruthError, match="depth of frame 5 is missing"):
        gt.depth(5)
    np.save(root / "depth" / "d000001.npy", np.ones((H, W + 1), np.float32))
    with pytest.raises(GroundTruthError, match=r"expected float \(H, W\) = \(6, 8\) depth"):
        gt.depth(1)
    (root / "layers" / "l000001.png").write_bytes(b"junk")
    with pytest.raises(GroundTruthError, match="expected a single-channel 8-bit 8x6 PNG"):
        gt.layers(1)
