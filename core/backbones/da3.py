"""Depth Anything 3 (DA3-SMALL, DA3-BASE), our implementation, checkpoint-compatible.

The module tree reproduces the state-dict keys and shapes of the network in the released
``depth-anything/DA3-SMALL`` and ``depth-anything/DA3-BASE`` checkpoints (443 keys, the
camera encoder included), so they load with strict key matching. Sizes come from a
``variant`` ("small" or "base") and/or a configuration dict in the schema of
``shared/fixtures/da3_tiny_config.json``.

Stages:

1. A DINOv2-style ViT over every view (no registers): token 0 (cls) then the patches.
   The first ``alt_start`` blocks attend within each view; from there on even blocks
   attend within each view and odd blocks across all views of a sample. Just before
   block ``alt_start`` token 0 is replaced by a learned camera token: one for the
   reference view, another for every other view (or by encoded known cameras).
2. With 3 or more views and no known cameras, the reference view is chosen from the
   tokens entering block ``alt_start - 1`` (:func:`saddle_balanced_scores`) and views are
   processed as [reference, the others in input order]; outputs are in input order.
3. Four global blocks feed a dual DPT head (depth and confidence); the last one's
   token 0 feeds the camera decoder (pose encoding -> extrinsics, intrinsics).

Conventions: input images (B, N, 3, H, W) are ImageNet-normalised outside the network
(:func:`normalize_images`), H and W multiples of 14. Outputs are OpenCV camera axes;
``extrinsics`` are camera-from-world; the world frame and scale are the network's own
(close to the reference view's camera, not metric).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from core.backbones.da3_heads import CameraDecoder, CameraEncoder, DualDPTHead, cameras_from_pose_encoding
from core.backbones.nn import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Block,
    PatchEmbed,
    Rope,
    patch_positions,
    resample_pos_embed,
    rope_tables,
)

MIN_VIEWS_FOR_REFERENCE = 3
"""With fewer views, view 0 is the reference."""
POS_EMBED_OFFSET = 0.1


@dataclass(frozen=True)
class DA3Config:
    """Hyper-parameters of DA3; the defaults are DA3-BASE (see :data:`VARIANTS`)."""

    patch_size: int = 14
    pos_grid: int = 37
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    alt_start: int = 4
    qknorm_start: int = 4
    rope_start: int = 4
    out_layers: tuple[int, ...] = (5, 7, 9, 11)
    rope_base: float = 100.0
    head_features: int = 128
    head_out_channels: tuple[int, ...] = (96, 192, 384, 768)
    head_hidden: int = 32
    cam_enc_heads: int = 16
    cam_enc_depth: int = 4
    cam_enc_mlp_ratio: float = 4.0
    cam_enc_layerscale_init: float = 0.01

    def __post_init__(self) -> None:
        if len(self.out_layers) != 4 or not all(0 <= i < self.depth for i in self.out_layers):
            raise ValueError(f"out_layers {self.out_layers} must be four of the {self.depth} blocks")
        if not 1 <= self.alt_start < self.depth:
            raise ValueError(f"alt_start {self.alt_start} must lie in [1, {self.depth})")

    @classmethod
    def from_dict(cls, config: Mapping[str, Any] | None) -> "DA3Config":
        """Read the schema of ``da3_tiny_config.json``; ``variant`` ("small" or "base",
        default "base") gives the values of entries that are missing."""
        config = dict(config or {})
        variant = config.get("variant", "base")
        if variant not in VARIANTS:
            raise ValueError(f"unknown DA3 variant {variant!r}; choose one of {', '.join(VARIANTS)}")
        base = VARIANTS[variant]
        vit, head = config.get("backbone", {}), config.get("head_dualdpt", {})
        cam_dec, cam_enc = config.get("camera_decoder", {}), config.get("camera_encoder", {})
        embed_dim = vit.get("embed_dim", base.embed_dim)
        for name, key, got, want in [
            ("head_dualdpt", "dim_in", head.get("dim_in"), 2 * embed_dim),
            ("camera_decoder", "dim_in", cam_dec.get("dim_in"), 2 * embed_dim),
            ("camera_encoder", "dim_out", cam_enc.get("dim_out"), embed_dim),
        ]:
            if got is not None and got != want:
                raise ValueError(f"{name}.{key} must be {want} for embed_dim {embed_dim}, got {got}")
        patch = config.get("patch_size", base.patch_size)
        grid = vit.get("pos_embed_grid")
        values = {
            "patch_size": patch,
            "pos_grid": grid[0] if grid else vit.get("img_size_for_pos_embed", base.pos_grid * patch) // patch,
            "embed_dim": embed_dim,
            "depth": vit.get("depth"),
            "num_heads": vit.get("num_heads"),
            "mlp_ratio": vit.get("mlp_ratio"),
            "alt_start": vit.get("alt_start"),
            "qknorm_start": vit.get("qknorm_start"),
            "rope_start": vit.get("rope_start"),
            "out_layers": tuple(vit["out_layers"]) if "out_layers" in vit else None,
            "rope_base": vit.get("rope", {}).get("base_frequency"),
            "head_features": head.get("features"),
            "head_out_channels": tuple(head["out_channels"]) if "out_channels" in head else None,
            "head_hidden": head.get("head_features_2"),
            "cam_enc_heads": cam_enc.get("num_heads"),
            "cam_enc_depth": cam_enc.get("trunk_depth"),
            "cam_enc_mlp_ratio": cam_enc.get("mlp_ratio"),
            "cam_enc_layerscale_init": cam_enc.get("layerscale_init"),
        }
        return dataclasses.replace(base, **{k: v for k, v in values.items() if v is not None})


VARIANTS: dict[str, DA3Config] = {
    "small": DA3Config(embed_dim=384, num_heads=6, head_features=64, head_out_channels=(48, 96, 192, 384)),
    "base": DA3Config(),
}


def normalize_images(images: Tensor) -> Tensor:
    """RGB in [0, 1] (..., 3, H, W) -> the network input, ``(rgb - mean) / std`` per channel."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=images.dtype, device=images.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=images.dtype, device=images.device).view(3, 1, 1)
    return (images - mean) / std


def saddle_balanced_scores(tokens: Tensor) -> Tensor:
    """Reference-view score of each view from its token 0; the argmin is the reference.

    Three per-view statistics of the tokens c_v (B, N, C): the mean cosine similarity to
    the other views, the norm |c_v|, and the (unbiased) variance of c_v / |c_v| over
    channels. Each is min-max normalised over the views of a sample, and the score is the
    summed distance of the three from 0.5: the reference is the most "middle" view.

    Returns:
        (B, N) scores.
    """
    n = tokens.shape[1]
    norm = tokens.norm(dim=-1)
    unit = tokens / norm[..., None]
    eye = torch.eye(n, dtype=tokens.dtype, device=tokens.device)
    similarity = (unit @ unit.transpose(1, 2) - eye).sum(dim=-1) / (n - 1)

    def spread(metric: Tensor) -> Tensor:
        low, high = metric.min(dim=1, keepdim=True).values, metric.max(dim=1, keepdim=True).values
        return (metric - low) / (high - low + 1e-8)

    return sum((spread(m) - 0.5).abs() for m in (similarity, norm, unit.var(dim=-1)))


def reference_first_order(reference: Tensor, num_views: int) -> Tensor:
    """Reference view per sample (B,) -> processing order (B, N): [reference, the other
    views in input order]; ``order[b, p]`` is the input index processed at position p."""
    positions = torch.arange(num_views, device=reference.device).expand(len(reference), -1)
    ref = reference[:, None]
    return torch.where(positions == 0, ref, torch.where(positions <= ref, positions - 1, positions))


def gather_views(x: Tensor, order: Tensor) -> Tensor:
    """x (B, N, ...) -> x[b, order[b]] for every sample."""
    return x[torch.arange(len(x), device=x.device)[:, None], order]


@dataclass
class EncoderOutput:
    """What the DA3 backbone hands the heads, every view in input order.

    Attributes:
        features: four (B, N, P, 2C) levels: [last within-view block output | final-normed
            global block output] of the patches.
        camera_tokens: (B, N, 2C) the same concatenation for token 0, not normed.
        view_order: (B, N) int64 processing order (reference first), None when no
            reference was selected (fewer than 3 views, or known cameras).
        reference_scores: (B, N) the selection scores, None likewise.
    """

    features: list[Tensor]
    camera_tokens: Tensor
    view_order: Tensor | None = None
    reference_scores: Tensor | None = None


class DA3Encoder(nn.Module):
    """The DA3 ViT: views (B, N, 3, H, W) -> :class:`EncoderOutput` (see the module docstring).

    Blocks are pre-norm (LayerNorm eps 1e-6) with LayerScale; from ``qknorm_start`` on
    they normalise queries and keys per head, from ``rope_start`` on they apply 2D RoPE:
    within a view at (row + 1, col + 1) for patches, across views at (1, 1) for every
    patch; token 0 always sits at (0, 0). The final norm has eps 1e-5.
    """

    def __init__(self, cfg: DA3Config) -> None:
        super().__init__()
        c = cfg.embed_dim
        self.cfg = cfg
        self.patch_embed = PatchEmbed(cfg.patch_size, c)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c))
        self.camera_token = nn.Parameter(torch.zeros(1, 2, c))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + cfg.pos_grid**2, c))
        self.blocks = nn.ModuleList(
            Block(c, cfg.num_heads, cfg.mlp_ratio, layerscale_init=1.0, norm_eps=1e-6, qk_norm=i >= cfg.qknorm_start)
            for i in range(cfg.depth)
        )
        self.norm = nn.LayerNorm(c)

    def pos_embed_for(self, rows: int, cols: int) -> Tensor:
        """Position embedding for a ``rows`` x ``cols`` patch grid: (1, 1 + rows * cols, C)."""
        return resample_pos_embed(self.pos_embed, rows, cols, offset=POS_EMBED_OFFSET)

    def embed(self, images: Tensor) -> Tensor:
        """Normalised views (B, N, 3, H, W) -> tokens entering block 0 (B, N, 1 + P, C):
        cls + its position, then patches + theirs. The token stream keeps the tokens'
        precision (float32) when the patch projection runs in half precision."""
        b, n, _, h, w = images.shape
        patches = self.patch_embed(images.flatten(0, 1))
        dtype = torch.promote_types(patches.dtype, self.cls_token.dtype)
        x = torch.cat([self.cls_token.expand(b * n, -1, -1).to(dtype), patches.to(dtype)], dim=1)
        x = x + self.pos_embed_for(h // self.cfg.patch_size, w // self.cfg.patch_size).to(dtype)
        return x.reshape(b, n, *x.shape[1:])

    def ropes(self, rows: int, cols: int, views: int, dtype: torch.dtype, device: torch.device) -> tuple[Rope, Rope]:
        """RoPE tables within a view (1, 1, T, hd) and across ``views`` views (1, 1, N*T, hd)."""
        cfg = self.cfg
        token0 = torch.zeros(1, 1, 2, dtype=torch.int64, device=device)
        local = torch.cat([token0, patch_positions(1, rows, cols, device) + 1], dim=1)
        across = torch.cat([token0, torch.ones_like(local[:, 1:])], dim=1)
        head_dim = cfg.embed_dim // cfg.num_heads
        local_rope = rope_tables(local, head_dim, cfg.rope_base, dtype, angles_in_dtype=True)
        across_rope = rope_tables(across, head_dim, cfg.rope_base, dtype, angles_in_dtype=True)
        global_rope = tuple(r.repeat(1, 1, views, 1) for r in across_rope)
        return local_rope, global_rope

    def forward(self, images: Tensor, camera_tokens: Tensor | None = None) -> EncoderOutput:
        """Normalised views (B, N, 3, H, W) and optional known-camera tokens (B, N, C) ->
        :class:`EncoderOutput`."""
        cfg = self.cfg
        b, n, _, h, w = images.shape
        rows, cols = h // cfg.patch_size, w // cfg.patch_size
        x = self.embed(images)
        t, c = x.shape[2:]
        local_rope, global_rope = self.ropes(rows, cols, n, torch.promote_types(x.dtype, torch.float32), x.device)
        order = scores = None
        levels: list[Tensor] = []
        local_x = x
        for i, block in enumerate(self.blocks):
            if i == cfg.alt_start - 1 and camera_tokens is None and n >= MIN_VIEWS_FOR_REFERENCE:
                scores = saddle_balanced_scores(x[:, :, 0])
                order = reference_first_order(scores.argmin(dim=1), n)
                x = gather_views(x, order)
            if i == cfg.alt_start:
                x = torch.cat([self._first_tokens(camera_tokens, b, n).to(x.dtype)[:, :, None], x[:, :, 1:]], dim=2)
            with_rope = i >= cfg.rope_start
            if i >= cfg.alt_start and i % 2 == 1:
                x = block(x.reshape(b, n * t, c), global_rope if with_rope else None).reshape(b, n, t, c)
            else:
                x = block(x.reshape(b * n, t, c), local_rope if with_rope else None).reshape(b, n, t, c)
                local_x = x
            if i in cfg.out_layers:
                levels.append(torch.cat([local_x, x], dim=-1))
        if order is not None:
            restore = torch.argsort(order, dim=1)
            levels = [gather_views(level, restore) for level in levels]
        features = [torch.cat([level[..., 1:, :c], self.norm(level[..., 1:, c:])], dim=-1) for level in levels]
        return EncoderOutput(features, levels[-1][:, :, 0], order, scores)

    def _first_tokens(self, camera_tokens: Tensor | None, b: int, n: int) -> Tensor:
        """Token 0 from block ``alt_start`` on, (B, N, C) in processing order: the known
        cameras' tokens, else the reference camera token then the other-view token."""
        if camera_tokens is not None:
            return camera_tokens
        tokens = torch.cat([self.camera_token[:, :1], self.camera_token[:, 1:].expand(-1, n - 1, -1)], dim=1)
        return tokens.expand(b, -1, -1)


class DepthAnything3(nn.Module):
    """DA3: normalised views (B, N, 3, H, W) -> depth, confidence and cameras.

    Top-level modules and state-dict prefixes: ``backbone.pretrained`` (the ViT), ``head``
    (dual DPT), ``cam_dec`` (camera decoder), ``cam_enc`` (camera encoder, only run with
    known cameras). The heads and the camera modules run with autocast disabled in at
    least float32.
    """

    def __init__(self, cfg: DA3Config = DA3Config()) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = nn.Module()
        self.backbone.pretrained = DA3Encoder(cfg)
        self.head = DualDPTHead(
            2 * cfg.embed_dim, cfg.patch_size, cfg.head_features, cfg.head_out_channels, cfg.head_hidden
        )
        self.cam_dec = CameraDecoder(2 * cfg.embed_dim)
        self.cam_enc = CameraEncoder(
            cfg.embed_dim, cfg.cam_enc_heads, cfg.cam_enc_depth, cfg.cam_enc_mlp_ratio, cfg.cam_enc_layerscale_init
        )

    @property
    def encoder(self) -> DA3Encoder:
        return self.backbone.pretrained

    @property
    def float32_modules(self) -> tuple[nn.Module, ...]:
        """The modules that always run in float32 (autocast disabled)."""
        return self.head, self.cam_dec, self.cam_enc

    def encode(
        self, images: Tensor, extrinsics: Tensor | None = None, intrinsics: Tensor | None = None
    ) -> EncoderOutput:
        """Backbone pass; with ``extrinsics`` (B, N, 4, 4) camera-from-world and ``intrinsics``
        (B, N, 3, 3) in pixels, token 0 carries those cameras and no reference is selected."""
        camera_tokens = None
        if extrinsics is not None:
            if intrinsics is None:
                raise ValueError("pose conditioning needs intrinsics together with extrinsics")
            with torch.autocast(device_type=images.device.type, enabled=False):
                dtype = torch.promote_types(images.dtype, torch.float32)
                camera_tokens = self.cam_enc(extrinsics.to(dtype), intrinsics.to(dtype), tuple(images.shape[-2:]))
        return self.encoder(images, camera_tokens)

    def predict(self, encoded: EncoderOutput, image_hw: tuple[int, int]) -> dict[str, Tensor]:
        """Heads on the backbone output -> the output dict of :meth:`forward`."""
        with torch.autocast(device_type=encoded.camera_tokens.device.type, enabled=False):
            dtype = torch.promote_types(encoded.camera_tokens.dtype, torch.float32)
            raw = self.head([f.to(dtype) for f in encoded.features], image_hw, patch_start=0)
            pose_enc = self.cam_dec(encoded.camera_tokens.to(dtype))
            extrinsics, intrinsics = cameras_from_pose_encoding(pose_enc, image_hw)
        return {
            "depth": raw[:, :, 0].exp(),
            "depth_conf": 1 + raw[:, :, 1].exp(),
            "extrinsics": extrinsics,
            "intrinsics": intrinsics,
        }

    def forward(
        self, images: Tensor, extrinsics: Tensor | None = None, intrinsics: Tensor | None = None
    ) -> dict[str, Tensor]:
        """Run DA3 on a batch of view sets.

        Args:
            images: (B, N, 3, H, W) ImageNet-normalised RGB (:func:`normalize_images`),
                H and W multiples of 14.
            extrinsics, intrinsics: optional known cameras, see :meth:`encode`.

        Returns:
            ``depth`` (B, N, H, W) > 0 and ``depth_conf`` (B, N, H, W) >= 1;
            ``extrinsics`` (B, N, 3, 4) camera-from-world [R | t], OpenCV axes;
            ``intrinsics`` (B, N, 3, 3) in pixels, principal point (W/2, H/2) on the
            integer pixel grid. All in input view order, at least float32.
        """
        return self.predict(self.encode(images, extrinsics, intrinsics), tuple(images.shape[-2:]))


def build_da3(config: Mapping[str, Any] | None = None) -> DepthAnything3:
    """DA3 from a config dict (``variant`` and/or the ``da3_tiny_config.json`` schema);
    None is DA3-BASE. Parameters go to the current default device."""
    return DepthAnything3(DA3Config.from_dict(config))
