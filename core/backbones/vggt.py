"""VGGT (Visual Geometry Grounded Transformer), our implementation, checkpoint-compatible.

The module tree reproduces the state-dict keys and shapes of the released
``facebook/VGGT-1B`` checkpoints exactly (aggregator, camera, depth, point and track
heads), so they load with strict key matching. Sizes come from a configuration dict in
the schema of ``shared/fixtures/vggt_tiny_config.json``; omitted values are full size.

Conventions:

* Input images are (B, S, 3, H, W) or (S, 3, H, W) RGB in [0, 1], H and W multiples
  of the patch size. Frame 0 of each sample is the reference frame.
* Camera axes are OpenCV (x right, y down, z forward). VGGT's extrinsics are
  **camera-from-world** (world-to-camera) and are named so; the world frame is frame 0's
  camera frame, at the network's normalised (non-metric) scale.
* Pixel coordinates for unprojection are integer pixel indices (u = column, v = row)
  with the principal point at (W/2, H/2), as in the reference post-processing.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from core.backbones.nn import IMAGENET_MEAN, IMAGENET_STD, Block, DinoV2Encoder, patch_positions, rope_tables
from core.backbones.vggt_heads import CameraHead, DPTHead
from core.backbones.vggt_track import TrackHead


@dataclass(frozen=True)
class VGGTConfig:
    """Hyper-parameters of VGGT; the defaults are the released full-size model."""

    img_size: int = 518
    patch_size: int = 14
    embed_dim: int = 1024
    dino_depth: int = 24
    dino_heads: int = 16
    dino_mlp_ratio: float = 4.0
    depth: int = 24
    num_heads: int = 16
    mlp_ratio: float = 4.0
    num_register_tokens: int = 4
    layerscale_init: float = 0.01
    rope_base: float = 100.0
    camera_trunk_depth: int = 4
    camera_heads: int = 16
    camera_mlp_ratio: float = 4.0
    camera_iterations: int = 4
    camera_layerscale_init: float = 0.01
    dpt_features: int = 256
    dpt_head_hidden: int = 32
    dpt_out_channels: tuple[int, ...] = (256, 512, 1024, 1024)
    dpt_layers: tuple[int, ...] = (4, 11, 17, 23)
    track_features: int = 128
    track_hidden: int = 384
    track_corr_levels: int = 7
    track_corr_radius: int = 4
    track_depth: int = 6
    track_heads: int = 8
    track_virtual: int = 64
    track_stride: int = 2
    track_iters: int = 4

    def __post_init__(self) -> None:
        if any(not 0 <= i < self.depth for i in self.dpt_layers):
            raise ValueError(f"dpt_layers {self.dpt_layers} must index the {self.depth} aggregator steps")

    @classmethod
    def from_dict(cls, config: Mapping[str, Any] | None) -> "VGGTConfig":
        """Read the nested fixture schema (``vggt_tiny_config.json``); ``full_size``
        sub-entries and descriptive fields are ignored, missing values keep defaults."""
        if not config:
            return cls()
        c = dict(config)
        dino, agg = c.get("dino_patch_embed", {}), c.get("aggregator", {})
        cam, dpt, track = c.get("camera_head", {}), c.get("dpt_heads", {}), c.get("track_head", {})
        embed_dim = c.get("embed_dim", dino.get("embed_dim", cls.embed_dim))
        if dino.get("embed_dim", embed_dim) != embed_dim:
            raise ValueError("the DINO patch embedder and the aggregator must have the same width")
        if cam.get("dim_in", 2 * embed_dim) != 2 * embed_dim:
            raise ValueError(f"camera_head.dim_in must be 2 * embed_dim = {2 * embed_dim}")
        values = {
            "img_size": c.get("img_size_for_pos_embed"),
            "patch_size": c.get("patch_size"),
            "embed_dim": embed_dim,
            "dino_depth": dino.get("depth"),
            "dino_heads": dino.get("num_heads"),
            "dino_mlp_ratio": dino.get("mlp_ratio"),
            "depth": agg.get("depth"),
            "num_heads": agg.get("num_heads"),
            "mlp_ratio": agg.get("mlp_ratio"),
            "num_register_tokens": agg.get("num_register_tokens"),
            "layerscale_init": agg.get("layerscale_init"),
            "camera_trunk_depth": cam.get("trunk_depth"),
            "camera_heads": cam.get("num_heads"),
            "camera_mlp_ratio": cam.get("mlp_ratio"),
            "camera_iterations": cam.get("iterations"),
            "camera_layerscale_init": cam.get("layerscale_init"),
            "dpt_features": dpt.get("features"),
            "dpt_head_hidden": dpt.get("head_features_2"),
            "dpt_out_channels": tuple(dpt["out_channels"]) if "out_channels" in dpt else None,
            "dpt_layers": tuple(dpt["intermediate_layer_idx"]) if "intermediate_layer_idx" in dpt else None,
            "track_features": track.get("features"),
            "track_hidden": track.get("hidden_size"),
            "track_corr_levels": track.get("corr_levels"),
            "track_corr_radius": track.get("corr_radius"),
            "track_depth": track.get("updateformer_depth"),
            "track_heads": track.get("num_heads"),
            "track_virtual": track.get("num_virtual_tracks"),
            "track_stride": track.get("stride"),
            "track_iters": track.get("iters"),
        }
        return cls(**{k: v for k, v in values.items() if v is not None})


class Aggregator(nn.Module):
    """Alternating-attention trunk: DINOv2 patch tokens -> per-step (B, S, T, 2C) tokens.

    Each frame's tokens are [camera, registers, patches]; frame 0 uses the first set of
    camera/register tokens, every other frame the second. Every step runs one block
    attending within each frame and one attending across all frames of a sample, and
    emits their outputs concatenated on channels. RoPE positions are (row+1, col+1)
    for patches and (0, 0) for the special tokens.
    """

    def __init__(self, cfg: VGGTConfig) -> None:
        super().__init__()
        c = cfg.embed_dim
        self.patch_size = cfg.patch_size
        self.head_dim = c // cfg.num_heads
        self.rope_base = cfg.rope_base
        self.patch_start = 1 + cfg.num_register_tokens
        self.patch_embed = DinoV2Encoder(
            embed_dim=c,
            depth=cfg.dino_depth,
            num_heads=cfg.dino_heads,
            mlp_ratio=cfg.dino_mlp_ratio,
            patch_size=cfg.patch_size,
            pos_grid=cfg.img_size // cfg.patch_size,
            num_register_tokens=cfg.num_register_tokens,
            layerscale_init=1.0,
            mask_token=True,
        )

        def block() -> Block:
            return Block(
                c, cfg.num_heads, cfg.mlp_ratio, layerscale_init=cfg.layerscale_init, norm_eps=1e-5, qk_norm=True
            )

        self.frame_blocks = nn.ModuleList(block() for _ in range(cfg.depth))
        self.global_blocks = nn.ModuleList(block() for _ in range(cfg.depth))
        self.camera_token = nn.Parameter(torch.zeros(1, 2, 1, c))
        self.register_token = nn.Parameter(torch.zeros(1, 2, cfg.num_register_tokens, c))
        self.register_buffer("_mean", torch.tensor(IMAGENET_MEAN).view(3, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(IMAGENET_STD).view(3, 1, 1), persistent=False)

    def embed_patches(self, images: Tensor) -> Tensor:
        """Images (B, S, 3, H, W) in [0, 1] -> DINO patch tokens (B*S, P, C), row-major patches."""
        x = (images.flatten(0, 1) - self._mean) / self._std
        return self.patch_embed(x)

    def forward(self, images: Tensor, keep: Collection[int] | None = None) -> dict[int, Tensor]:
        """Images (B, S, 3, H, W) in [0, 1] -> {step: (B, S, T, 2C)} for the steps in
        ``keep`` (all steps when None). T = 1 + registers + P; patches start at ``patch_start``."""
        b, s, _, h, w = images.shape
        rows, cols = h // self.patch_size, w // self.patch_size
        patches = self.embed_patches(images)
        special = torch.cat(
            [
                _first_and_rest(self.camera_token, b, s),
                _first_and_rest(self.register_token, b, s),
            ],
            dim=1,
        ).to(patches.dtype)
        x = torch.cat([special, patches], dim=1)  # (B*S, T, C)
        t, c = x.shape[1:]

        pos = patch_positions(1, rows, cols, device=images.device) + 1
        pos = torch.cat([pos.new_zeros(1, self.patch_start, 2), pos], dim=1)  # (1, T, 2)
        rope_dtype = torch.promote_types(x.dtype, torch.float32)  # float64 only for a float64 model
        frame_rope = rope_tables(pos, self.head_dim, self.rope_base, rope_dtype)  # (1, 1, T, hd)
        global_rope = tuple(r.repeat(1, 1, s, 1) for r in frame_rope)  # (1, 1, S*T, hd)

        out = {}
        for i, (frame_block, global_block) in enumerate(zip(self.frame_blocks, self.global_blocks)):
            frame_out = frame_block(x.reshape(b * s, t, c), frame_rope)
            x = global_block(frame_out.reshape(b, s * t, c), global_rope)
            if keep is None or i in keep:
                out[i] = torch.cat([frame_out.reshape(b, s, t, c), x.reshape(b, s, t, c)], dim=-1)
        return out


def _first_and_rest(token: Tensor, b: int, s: int) -> Tensor:
    """(1, 2, X, C) learned tokens -> (B*S, X, C): set 0 for frame 0, set 1 for the rest."""
    per_frame = torch.cat([token[:, :1], token[:, 1:].expand(1, s - 1, -1, -1)], dim=1)
    return per_frame.expand(b, -1, -1, -1).reshape(b * s, *token.shape[2:])


class VGGT(nn.Module):
    """The full network: aggregator, camera head, depth and point DPT heads, track head.

    ``forward`` returns the reference output names:

    * ``pose_enc`` (B, S, 9): [t (3), quaternion xyzw (4), fov_h, fov_w], decoded by
      :func:`decode_pose_encoding` into camera-from-world extrinsics and intrinsics;
      ``pose_enc_list``: the encoding after every refinement iteration.
    * ``depth`` (B, S, H, W, 1) > 0 and ``depth_conf`` (B, S, H, W) >= 1.
    * ``world_points`` (B, S, H, W, 3) in frame 0's camera frame and ``world_points_conf``.
    * with ``query_points`` (B, N, 2) pixel (x, y) in frame 0: ``track`` (B, S, N, 2)
      pixels, ``vis`` and ``conf`` (B, S, N) in [0, 1].

    The heads run with autocast disabled in at least float32, whatever precision the
    aggregator ran in (float64 stays float64).
    """

    def __init__(self, cfg: VGGTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        dim = 2 * cfg.embed_dim
        dpt = dict(
            dim_in=dim,
            patch_size=cfg.patch_size,
            features=cfg.dpt_features,
            out_channels=cfg.dpt_out_channels,
            layer_indices=cfg.dpt_layers,
        )
        self.aggregator = Aggregator(cfg)
        self.camera_head = CameraHead(
            dim, cfg.camera_trunk_depth, cfg.camera_heads, cfg.camera_mlp_ratio, cfg.camera_layerscale_init
        )
        self.point_head = DPTHead(**dpt, output_dim=4, head_hidden=cfg.dpt_head_hidden)
        self.depth_head = DPTHead(**dpt, output_dim=2, head_hidden=cfg.dpt_head_hidden)
        self.track_head = TrackHead(
            **{**dpt, "features": cfg.track_features},
            hidden=cfg.track_hidden,
            corr_levels=cfg.track_corr_levels,
            corr_radius=cfg.track_corr_radius,
            depth=cfg.track_depth,
            num_heads=cfg.track_heads,
            num_virtual=cfg.track_virtual,
            stride=cfg.track_stride,
            iters=cfg.track_iters,
        )

    def forward(
        self, images: Tensor, query_points: Tensor | None = None, predict_points: bool = True
    ) -> dict[str, Tensor | list[Tensor]]:
        """Images (B, S, 3, H, W) or (S, 3, H, W) in [0, 1]; optional query pixels
        (B, N, 2) or (N, 2) -> dict of predictions (see the class docstring).

        ``predict_points=False`` skips the point head (no ``world_points*`` outputs), for
        callers that unproject depth with the predicted cameras instead.
        """
        if images.ndim == 4:
            images = images[None]
        if query_points is not None and query_points.ndim == 2:
            query_points = query_points[None]
        last = self.cfg.depth - 1
        tokens = self.aggregator(images, keep={*self.cfg.dpt_layers, last})
        patch_start = self.aggregator.patch_start
        hw = (images.shape[-2], images.shape[-1])

        with torch.autocast(device_type=images.device.type, enabled=False):
            dtype = torch.promote_types(tokens[last].dtype, torch.float32)
            tokens = {i: t.to(dtype) for i, t in tokens.items()}
            pose_enc_list = self.camera_head(tokens[last][:, :, 0], self.cfg.camera_iterations)
            depth = self.depth_head(tokens, hw, patch_start).permute(0, 1, 3, 4, 2)
            out: dict[str, Tensor | list[Tensor]] = {
                "pose_enc": pose_enc_list[-1],
                "pose_enc_list": pose_enc_list,
                "depth": depth[..., :-1].exp(),
                "depth_conf": 1 + depth[..., -1].exp(),
            }
            if predict_points:
                points = self.point_head(tokens, hw, patch_start).permute(0, 1, 3, 4, 2)
                out["world_points"] = torch.sign(points[..., :-1]) * torch.expm1(points[..., :-1].abs())
                out["world_points_conf"] = 1 + points[..., -1].exp()
            if query_points is not None:
                tracks, vis, conf = self.track_head(tokens, hw, patch_start, query_points.to(dtype))
                out.update(track=tracks[-1], vis=vis, conf=conf)
        return out


def build_vggt(config: Mapping[str, Any] | None = None) -> VGGT:
    """VGGT from a config dict in the ``vggt_tiny_config.json`` schema (None: full size).

    Parameters are allocated on the current default device (use ``torch.device("meta")``
    as a context manager to build the full-size tree without memory).
    """
    return VGGT(VGGTConfig.from_dict(config))


def quaternion_to_rotation(quat: Tensor) -> Tensor:
    """Quaternions (..., 4), scalar last (x, y, z, w), any norm -> rotations (..., 3, 3).

    Uses the scale-invariant form (2 / |q|² factors), so unnormalised quaternions give
    proper rotations.
    """
    x, y, z, w = quat.unbind(-1)
    two_s = 2.0 / (quat * quat).sum(-1)
    rot = torch.stack(
        [
            1 - two_s * (y * y + z * z),
            two_s * (x * y - z * w),
            two_s * (x * z + y * w),
            two_s * (x * y + z * w),
            1 - two_s * (x * x + z * z),
            two_s * (y * z - x * w),
            two_s * (x * z - y * w),
            two_s * (y * z + x * w),
            1 - two_s * (x * x + y * y),
        ],
        dim=-1,
    )
    return rot.unflatten(-1, (3, 3))


def decode_pose_encoding(
    pose_enc: Tensor, image_hw: tuple[int, int], min_tan: float | None = None
) -> tuple[Tensor, Tensor]:
    """VGGT pose encoding (..., 9) -> (extrinsics cam_from_world (..., 3, 4), intrinsics (..., 3, 3)).

    The encoding is [t (3), quaternion xyzw (4), fov_h, fov_w (radians)]. Extrinsics
    [R | t] map world points to OpenCV camera coordinates: X_cam = R X_world + t.
    Intrinsics are in pixels of an image of size ``image_hw`` = (H, W):
    fx = (W/2) / tan(fov_w/2), fy = (H/2) / tan(fov_h/2), principal point (W/2, H/2).
    ``min_tan`` clamps tan(fov/2) from below (DA3 uses 1e-6; VGGT does not clamp).
    DA3 uses the same encoding but reads the resulting [R | t] as camera-to-world.
    """
    h, w = image_hw
    t, quat, fov_h, fov_w = pose_enc[..., :3], pose_enc[..., 3:7], pose_enc[..., 7], pose_enc[..., 8]
    extrinsics = torch.cat([quaternion_to_rotation(quat), t[..., None]], dim=-1)
    tan_h, tan_w = torch.tan(fov_h / 2.0), torch.tan(fov_w / 2.0)
    if min_tan is not None:
        tan_h, tan_w = tan_h.clamp(min=min_tan), tan_w.clamp(min=min_tan)
    intrinsics = torch.zeros(*pose_enc.shape[:-1], 3, 3, dtype=pose_enc.dtype, device=pose_enc.device)
    intrinsics[..., 0, 0] = (w / 2.0) / tan_w
    intrinsics[..., 1, 1] = (h / 2.0) / tan_h
    intrinsics[..., 0, 2] = w / 2.0
    intrinsics[..., 1, 2] = h / 2.0
    intrinsics[..., 2, 2] = 1.0
    return extrinsics, intrinsics


def cam_to_world_from_extrinsics(extrinsics: Tensor) -> Tensor:
    """Camera-from-world [R | t] (..., 3, 4) -> camera-to-world pose (..., 4, 4) = [Rᵀ | -Rᵀ t].

    This is the inverse of any rigid [R | t]; DA3 also uses it the other way round,
    camera-to-world to camera-from-world.
    """
    rot_t = extrinsics[..., :3].transpose(-1, -2)
    pose = torch.zeros(*extrinsics.shape[:-2], 4, 4, dtype=extrinsics.dtype, device=extrinsics.device)
    pose[..., :3, :3] = rot_t
    pose[..., :3, 3] = -(rot_t @ extrinsics[..., 3:]).squeeze(-1)
    pose[..., 3, 3] = 1.0
    return pose


def depth_to_camera_points(depth: Tensor, intrinsics: Tensor) -> Tensor:
    """Depth (..., H, W) and intrinsics (..., 3, 3) -> camera points (..., H, W, 3), OpenCV axes.

    Pixel (row v, column u) unprojects at integer (u, v), no half-pixel offset:
    X = ((u - cx) z / fx, (v - cy) z / fy, z).
    """
    h, w = depth.shape[-2:]
    v, u = torch.meshgrid(
        torch.arange(h, dtype=depth.dtype, device=depth.device),
        torch.arange(w, dtype=depth.dtype, device=depth.device),
        indexing="ij",
    )
    k = intrinsics[..., None, None, :, :]
    x = (u - k[..., 0, 2]) * depth / k[..., 0, 0]
    y = (v - k[..., 1, 2]) * depth / k[..., 1, 1]
    return torch.stack([x, y, depth], dim=-1)


def depth_to_world_points(depth: Tensor, extrinsics: Tensor, intrinsics: Tensor) -> Tensor:
    """Depth (..., H, W), camera-from-world extrinsics (..., 3, 4), intrinsics (..., 3, 3)
    -> world points (..., H, W, 3) = Rᵀ (X_cam - t)."""
    cam = depth_to_camera_points(depth, intrinsics)
    rot, t = extrinsics[..., None, None, :, :3], extrinsics[..., None, None, :, 3]
    return ((cam - t)[..., None, :] @ rot).squeeze(-2)
