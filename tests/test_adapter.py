"""The engine adapter (core.backbones.adapter) on tiny real networks, loaded from
checkpoints written here through the same path as the CLI's ``--weights FILE``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from core.backbones.adapter import (
    NetworkBackbone,
    da3_input_geometry,
    load_backbone,
    pi3_input_geometry,
    resolve_device,
    resolve_precision,
    vggt_input_geometry,
)
from core.backbones.base import Backbone
from core.errors import UserError
from core.run.arrays import WindowPrediction
from tiny_models import write_tiny_checkpoint


@pytest.fixture(scope="module")
def pi3_checkpoint(fixtures_dir: Path, tmp_path_factory) -> Path:
    return write_tiny_checkpoint(fixtures_dir, "pi3", tmp_path_factory.mktemp("pi3") / "pi3_tiny.safetensors")


@pytest.fixture(scope="module")
def vggt_checkpoint(fixtures_dir: Path, tmp_path_factory) -> Path:
    return write_tiny_checkpoint(fixtures_dir, "vggt", tmp_path_factory.mktemp("vggt") / "vggt_tiny.safetensors")


@pytest.fixture(scope="module")
def da3_checkpoint(fixtures_dir: Path, tmp_path_factory) -> Path:
    return write_tiny_checkpoint(fixtures_dir, "da3", tmp_path_factory.mktemp("da3") / "da3_tiny.safetensors")


def random_window(n: int, size: tuple[int, int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    w, h = size
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8), np.arange(10, 10 + n, dtype=np.int64)


def assert_valid_poses(poses: np.ndarray) -> None:
    rot = poses[:, :3, :3].astype(np.float64)
    np.testing.assert_allclose(rot @ rot.transpose(0, 2, 1), np.broadcast_to(np.eye(3), rot.shape), atol=1e-5)
    np.testing.assert_allclose(np.linalg.det(rot), 1.0, atol=1e-5)
    np.testing.assert_array_equal(poses[:, 3], np.broadcast_to([0, 0, 0, 1], (len(poses), 4)))


def assert_depth_camera_prediction(pred: WindowPrediction, images: np.ndarray, world: torch.Tensor) -> None:
    """A window predicted from depth and cameras (VGGT, DA3): confidence >= 1, points in
    front, projecting each point with the reported intrinsics lands on its pixel centre,
    and the poses bring the points to ``world`` (N, H, W, 3), the network's own depth
    unprojected into its world frame."""
    n, h, w = pred.conf.shape
    assert pred.intrinsics is not None and pred.intrinsics.shape == (n, 3, 3)
    assert (pred.conf >= 1).all() and (pred.points[..., 2] > 0).all()
    np.testing.assert_array_equal(pred.colors, images)
    assert_valid_poses(pred.poses)
    uvw = np.einsum("nij,nhwj->nhwi", pred.intrinsics.astype(np.float64), pred.points.astype(np.float64))
    uv = uvw[..., :2] / uvw[..., 2:]
    v, u = np.mgrid[0:h, 0:w]
    np.testing.assert_allclose(uv[..., 0], np.broadcast_to(u + 0.5, uv.shape[:3]), atol=1e-3)
    np.testing.assert_allclose(uv[..., 1], np.broadcast_to(v + 0.5, uv.shape[:3]), atol=1e-3)
    ours = np.einsum("nij,nhwj->nhwi", pred.poses[:, :3, :3], pred.points) + pred.poses[:, None, None, :3, 3]
    np.testing.assert_allclose(ours, world.numpy(), atol=1e-4 * world.abs().max().item())


@pytest.mark.parametrize(
    "footage, size",
    [((1440, 1080), (574, 434)), ((1920, 1080), (672, 378)), ((1000, 1000), (504, 504)), ((1080, 1440), (434, 574))],
)
def test_pi3_geometry_examples(footage, size) -> None:
    g = pi3_input_geometry(footage)
    assert g.size == g.resized == size and g.offset == (0, 0)
    assert size[0] % 14 == 0 and size[1] % 14 == 0 and size[0] * size[1] <= 255_000
    np.testing.assert_allclose(g.to_footage() @ [size[0], size[1], 1.0], [footage[0], footage[1], 1.0])


@pytest.mark.parametrize(
    "footage, resized, size, offset",
    [
        ((1440, 1080), (518, 392), (518, 392), (0, 0)),
        ((1920, 1080), (518, 294), (518, 294), (0, 0)),
        ((1080, 1920), (518, 924), (518, 518), (0, 203)),
    ],
)
def test_vggt_geometry_examples(footage, resized, size, offset) -> None:
    g = vggt_input_geometry(footage)
    assert (g.resized, g.size, g.offset) == (resized, size, offset)
    # The centre of the crop maps to the centre of the footage.
    centre = g.to_footage() @ [size[0] / 2, size[1] / 2, 1.0]
    np.testing.assert_allclose(centre[:2], [footage[0] / 2, footage[1] / 2], atol=0.5 * footage[1] / resized[1])


@pytest.mark.parametrize(
    "footage, size",
    [
        ((1440, 1080), (504, 378)),
        ((1920, 1080), (504, 280)),  # 504 x 283.5 -> 284 -> nearest multiple of 14: 280
        ((1080, 1920), (280, 504)),
        ((1000, 1000), (504, 504)),
        ((160, 120), (504, 378)),  # enlarged
        ((1000, 750), (504, 378)),
        ((1000, 735), (504, 364)),  # 370.4 -> 370: 6 over 364, 8 under 378
        ((1000, 746), (504, 378)),  # 376 -> 378
    ],
)
def test_da3_geometry_examples(footage, size) -> None:
    g = da3_input_geometry(footage)
    assert g.size == g.resized == size and g.offset == (0, 0)
    np.testing.assert_allclose(g.to_footage() @ [size[0], size[1], 1.0], [footage[0], footage[1], 1.0])


def test_precision_resolution() -> None:
    cpu = torch.device("cpu")
    assert resolve_device("cpu") == cpu
    assert resolve_precision("auto", cpu) is None
    assert resolve_precision("float32", cpu) is None
    assert resolve_precision("bfloat16", cpu) == torch.bfloat16
    with pytest.raises(ValueError, match="unknown dtype"):
        resolve_precision("int8", cpu)
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="CUDA is not available"):
            resolve_device("cuda")


def test_pi3_window_prediction(pi3_checkpoint: Path) -> None:
    backbone = load_backbone("pi3", str(pi3_checkpoint), device="cpu")
    assert isinstance(backbone, Backbone) and isinstance(backbone, NetworkBackbone)
    assert backbone.amp_dtype is None and "non-commercial" in backbone.licence
    images, frames = random_window(4, (70, 42))
    pred = backbone.predict(images, frames)
    assert isinstance(pred, WindowPrediction) and pred.shape == (42, 70) and len(pred) == 4
    assert pred.points.dtype == pred.poses.dtype == pred.conf.dtype == np.float32
    assert pred.intrinsics is None
    np.testing.assert_array_equal(pred.frames, frames)
    np.testing.assert_array_equal(pred.colors, images)
    assert ((pred.conf > 0) & (pred.conf < 1)).all()
    assert (pred.points[..., 2] > 0).all()
    assert_valid_poses(pred.poses)
    # The conversion is exactly the network's own output.
    x = torch.from_numpy(images).permute(0, 3, 1, 2)[None].float() / 255
    with torch.no_grad():
        out = backbone.model(x)
    np.testing.assert_array_equal(pred.points, out["local_points"][0].numpy())
    np.testing.assert_array_equal(pred.poses, out["camera_poses"][0].numpy())
    np.testing.assert_allclose(pred.conf, torch.sigmoid(out["conf"][0, ..., 0]).numpy(), rtol=1e-6)


def test_pi3_bfloat16_autocast_on_cpu_follows_float32(pi3_checkpoint: Path) -> None:
    """Half-precision storage + autocast + float32 heads: same predictions to bf16 accuracy."""
    ref = load_backbone("pi3", str(pi3_checkpoint), device="cpu")
    half = load_backbone("pi3", str(pi3_checkpoint), device="cpu", dtype="bfloat16")
    assert half.model.decoder[0].attn.qkv.weight.dtype == torch.bfloat16
    assert half.model.point_head.proj.weight.dtype == torch.float32
    images, frames = random_window(3, (56, 42), seed=1)
    a, b = ref.predict(images, frames), half.predict(images, frames)
    assert b.points.dtype == np.float32
    rel = np.abs(a.points - b.points).max() / np.abs(a.points).max()
    assert rel < 0.1, rel
    assert np.abs(a.conf - b.conf).max() < 0.1


def test_predict_rejects_frames_not_at_network_size(pi3_checkpoint: Path) -> None:
    backbone = load_backbone("pi3", str(pi3_checkpoint), device="cpu")
    with pytest.raises(ValueError, match="not a multiple of 14"):
        backbone.predict(*random_window(2, (64, 48)))
    with pytest.raises(ValueError, match="uint8"):
        backbone.predict(np.zeros((2, 42, 56, 3), np.float32), np.arange(2))


def test_vggt_window_prediction(vggt_checkpoint: Path) -> None:
    backbone = load_backbone("vggt", str(vggt_checkpoint), device="cpu")
    assert "--weights facebook/VGGT-1B-Commercial" in backbone.licence
    images, frames = random_window(3, (70, 42), seed=2)
    pred = backbone.predict(images, frames)
    assert isinstance(pred, WindowPrediction) and pred.shape == (42, 70)
    # VGGT's world frame is frame 0's camera.
    from core.backbones.vggt import decode_pose_encoding, depth_to_world_points

    x = torch.from_numpy(images).permute(0, 3, 1, 2)[None].float() / 255
    with torch.no_grad():
        out = backbone.model(x)
    extrinsics, intrinsics = decode_pose_encoding(out["pose_enc"][0], (42, 70))
    assert_depth_camera_prediction(pred, images, depth_to_world_points(out["depth"][0, ..., 0], extrinsics, intrinsics))


def test_da3_window_prediction(da3_checkpoint: Path) -> None:
    """DA3 through the adapter: ImageNet-normalised input, the reference view chosen
    inside the window as upstream, cameras inverted to poses, depth unprojected."""
    from core.backbones.da3 import normalize_images
    from core.backbones.vggt import depth_to_world_points

    backbone = load_backbone("da3", str(da3_checkpoint), device="cpu")
    assert backbone.name == "da3" and "Apache-2.0" in backbone.licence and "non-commercial" not in backbone.licence
    images, frames = random_window(4, (70, 42), seed=3)
    pred = backbone.predict(images, frames)
    assert isinstance(pred, WindowPrediction) and pred.shape == (42, 70) and len(pred) == 4
    np.testing.assert_array_equal(pred.frames, frames)
    x = normalize_images(torch.from_numpy(images).permute(0, 3, 1, 2)[None].float() / 255)
    with torch.no_grad():
        out = backbone.model(x)
        assert backbone.model.encode(x).view_order is not None  # 4 frames: a reference view is chosen
    np.testing.assert_allclose(pred.conf, out["depth_conf"][0].numpy())
    np.testing.assert_allclose(pred.points[..., 2], out["depth"][0].numpy(), rtol=1e-6)
    world = depth_to_world_points(out["depth"][0], out["extrinsics"][0], out["intrinsics"][0])
    assert_depth_camera_prediction(pred, images, world)


@pytest.mark.parametrize("name, repo", [("da3-small", "DA3-SMALL"), ("da3-base", "DA3-BASE")])
def test_da3_variant_names(da3_checkpoint: Path, name: str, repo: str) -> None:
    backbone = load_backbone(name, str(da3_checkpoint), device="cpu")
    assert backbone.name == name and f"depth-anything/{repo}" in backbone.licence
    assert backbone.input_geometry((1920, 1080)).size == (504, 280)
    pred = backbone.predict(*random_window(2, (56, 42), seed=4))
    assert pred.shape == (42, 56) and np.isfinite(pred.points).all()


def test_unknown_backbone_is_refused() -> None:
    with pytest.raises(ValueError, match="da3-small"):
        load_backbone("da3-giant", "random", device="cpu")
