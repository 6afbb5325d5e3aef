"""The pi3 network (Wang et al., "pi^3: Scalable Permutation-Equivariant Visual Geometry Learning").

Our implementation, module tree and parameter names compatible with the released
checkpoint (``yyfz233/Pi3``, 1,210 state-dict keys). Stages:

1. DINOv2-with-registers encoder on every frame -> patch tokens.
2. Shared register tokens are prepended to each frame; a decoder alternates
   attention within a frame (even blocks) and across all frames of a sample (odd
   blocks), with 2D RoPE. The last two block outputs are concatenated.
3. Three per-frame transformers (points, confidence, camera) feed linear heads:
   pixel-shuffled local points and confidence logits, and a pooled camera pose.

Outputs follow OpenCV camera axes (x right, y down, z forward); ``camera_poses`` are
camera-to-world in an arbitrary world frame with arbitrary scale.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.backbones.nn import IMAGENET_MEAN, IMAGENET_STD, Block, DinoV2Encoder, Rope, patch_positions, rope_tables

ROPE_BASE = 100.0


@dataclass(frozen=True)
class TransformerSize:
    """Width, depth and heads of one transformer stack."""

    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float = 4.0


@dataclass(frozen=True)
class Pi3Config:
    """Hyper-parameters of pi3; the defaults are the released full-size model."""

    patch_size: int = 14
    pos_grid: int = 37
    encoder: TransformerSize = TransformerSize(1024, 24, 16)
    encoder_registers: int = 4
    decoder: TransformerSize = TransformerSize(1024, 36, 16)
    decoder_registers: int = 5
    point_decoder: TransformerSize = TransformerSize(1024, 5, 16)
    point_out_dim: int = 1024
    camera_decoder: TransformerSize = TransformerSize(1024, 5, 16)
    camera_out_dim: int = 512
    camera_res_blocks: int = 2

    @classmethod
    def from_dict(cls, config: dict[str, Any] | None) -> "Pi3Config":
        """Read the schema of ``pi3_tiny_config.json``; missing entries keep full-size values.

        ``conf_decoder`` always mirrors ``point_decoder`` (upstream builds it as a copy).
        """
        if not config:
            return cls()
        base = cls()

        def size(key: str, default: TransformerSize) -> TransformerSize:
            d = config.get(key)
            if not isinstance(d, dict):
                return default
            return TransformerSize(
                int(d.get("embed_dim", default.embed_dim)),
                int(d.get("depth", default.depth)),
                int(d.get("num_heads", default.num_heads)),
                float(d.get("mlp_ratio", default.mlp_ratio)),
            )

        camera_out = config.get("camera_decoder", {}).get("out_dim")
        camera_head = config.get("camera_head", {}).get("dim")
        if camera_out is not None and camera_head is not None and camera_out != camera_head:
            raise ValueError(f"camera_head.dim ({camera_head}) must equal camera_decoder.out_dim ({camera_out})")
        enc = config.get("encoder", {})
        grid = enc.get("pos_embed_grid")
        patch = int(config.get("patch_size", base.patch_size))
        pos_grid = int(grid[0]) if grid else int(enc.get("img_size_for_pos_embed", 518)) // patch
        return cls(
            patch_size=patch,
            pos_grid=pos_grid,
            encoder=size("encoder", base.encoder),
            encoder_registers=int(enc.get("num_register_tokens", base.encoder_registers)),
            decoder=size("decoder", base.decoder),
            decoder_registers=int(config.get("decoder", {}).get("num_register_tokens", base.decoder_registers)),
            point_decoder=size("point_decoder", base.point_decoder),
            point_out_dim=int(config.get("point_decoder", {}).get("out_dim", base.point_out_dim)),
            camera_decoder=size("camera_decoder", base.camera_decoder),
            camera_out_dim=int(config.get("camera_decoder", {}).get("out_dim", base.camera_out_dim)),
            camera_res_blocks=int(config.get("camera_head", {}).get("res_blocks", base.camera_res_blocks)),
        )


class TokenTransformer(nn.Module):
    """Per-frame head transformer: linear in-projection, pre-norm blocks (no LayerScale,
    no q/k norm, RoPE), linear out-projection. (B, T, in_dim) -> (B, T, out_dim)."""

    def __init__(self, in_dim: int, size: TransformerSize, out_dim: int) -> None:
        super().__init__()
        self.projects = nn.Linear(in_dim, size.embed_dim)
        self.blocks = nn.ModuleList(
            Block(size.embed_dim, size.num_heads, size.mlp_ratio, norm_eps=1e-6) for _ in range(size.depth)
        )
        self.linear_out = nn.Linear(size.embed_dim, out_dim)

    @property
    def head_dim(self) -> int:
        return self.blocks[0].attn.head_dim

    def forward(self, x: Tensor, rope: Rope) -> Tensor:
        x = self.projects(x)
        for block in self.blocks:
            x = block(x, rope)
        return self.linear_out(x)


class PixelShuffleHead(nn.Module):
    """Each patch token -> ``channels`` x p x p pixel values, pixel-shuffled into an image.

    Value (c, i, j) of a patch, for sub-row i and sub-column j, is output ``c p^2 + i p + j``.
    """

    def __init__(self, in_dim: int, channels: int, patch_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Linear(in_dim, channels * patch_size**2)

    def forward(self, tokens: Tensor, rows: int, cols: int) -> Tensor:
        """tokens (B, rows*cols, C) row-major -> (B, rows*p, cols*p, channels)."""
        feat = self.proj(tokens).transpose(1, 2).reshape(tokens.shape[0], -1, rows, cols)
        return F.pixel_shuffle(feat, self.patch_size).permute(0, 2, 3, 1)


class ResidualMlp(nn.Module):
    """``x + relu(res_conv3(relu(res_conv2(relu(res_conv1(x))))))``, width preserved."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.res_conv1 = nn.Linear(dim, dim)
        self.res_conv2 = nn.Linear(dim, dim)
        self.res_conv3 = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.res_conv1(x))
        y = F.relu(self.res_conv2(y))
        return x + F.relu(self.res_conv3(y))


def rotation_from_9d(m: Tensor) -> Tensor:
    """Nearest proper rotation to a 3x3 matrix whose rows are first L2-normalised.

    Args:
        m: (..., 3, 3) raw matrices (row-major 9-vectors reshaped).

    Returns:
        (..., 3, 3) rotations, det +1 (special orthogonal Procrustes via SVD).
    """
    u, _, vh = torch.linalg.svd(F.normalize(m, dim=-1))
    det = torch.det(u @ vh)
    u = torch.cat([u[..., :2], u[..., 2:] * det[..., None, None]], dim=-1)
    return u @ vh


class CameraHead(nn.Module):
    """Patch tokens of one frame -> camera-to-world pose.

    Residual MLPs per token, mean over the patches, two Linear+ReLU layers, then
    translation (3) and a 9-d rotation projected onto SO(3).
    """

    def __init__(self, dim: int, res_blocks: int = 2) -> None:
        super().__init__()
        self.res_conv = nn.ModuleList(ResidualMlp(dim) for _ in range(res_blocks))
        self.more_mlps = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim), nn.ReLU())
        self.fc_t = nn.Linear(dim, 3)
        self.fc_rot = nn.Linear(dim, 9)

    def forward(self, tokens: Tensor) -> Tensor:
        """tokens (B, P, C) -> poses (B, 4, 4) camera-to-world."""
        for block in self.res_conv:
            tokens = block(tokens)
        feat = self.more_mlps(tokens.mean(dim=1))
        rotation = rotation_from_9d(self.fc_rot(feat).reshape(-1, 3, 3))
        top = torch.cat([rotation, self.fc_t(feat)[..., None]], dim=-1)
        bottom = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=top.dtype, device=top.device).expand(len(top), 1, 4)
        return torch.cat([top, bottom], dim=1)


class Pi3(nn.Module):
    """pi3: (B, N, 3, H, W) RGB in [0, 1], H and W multiples of the patch size ->
    dict(points, local_points, conf, camera_poses), see :meth:`forward`."""

    def __init__(self, config: Pi3Config = Pi3Config()) -> None:
        super().__init__()
        if config.encoder.embed_dim != config.decoder.embed_dim:
            raise ValueError("pi3 needs encoder and decoder of the same width")
        if config.decoder.depth < 2:
            raise ValueError("pi3 concatenates the last two decoder blocks; decoder depth must be >= 2")
        self.config = config
        self.patch_size = config.patch_size
        width = config.decoder.embed_dim
        self.encoder = DinoV2Encoder(
            embed_dim=width,
            depth=config.encoder.depth,
            num_heads=config.encoder.num_heads,
            mlp_ratio=config.encoder.mlp_ratio,
            patch_size=config.patch_size,
            pos_grid=config.pos_grid,
            num_register_tokens=config.encoder_registers,
            layerscale_init=1e-5,
        )
        d = config.decoder
        self.decoder = nn.ModuleList(
            Block(d.embed_dim, d.num_heads, d.mlp_ratio, layerscale_init=1e-2, norm_eps=1e-6, qk_norm=True)
            for _ in range(d.depth)
        )
        self.register_token = nn.Parameter(torch.randn(1, 1, config.decoder_registers, width) * 1e-6)
        self.point_decoder = TokenTransformer(2 * width, config.point_decoder, config.point_out_dim)
        self.point_head = PixelShuffleHead(config.point_out_dim, 3, config.patch_size)
        self.conf_decoder = TokenTransformer(2 * width, config.point_decoder, config.point_out_dim)
        self.conf_head = PixelShuffleHead(config.point_out_dim, 1, config.patch_size)
        self.camera_decoder = TokenTransformer(2 * width, config.camera_decoder, config.camera_out_dim)
        self.camera_head = CameraHead(config.camera_out_dim, config.camera_res_blocks)
        self.register_buffer("image_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("image_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    @property
    def float32_modules(self) -> tuple[nn.Module, ...]:
        """The small output heads, which always run in float32 (autocast disabled)."""
        return self.point_head, self.conf_head, self.camera_head

    def encode(self, images: Tensor) -> Tensor:
        """images (B, N, 3, H, W) in [0, 1] -> patch tokens (B*N, P, C)."""
        b, n, _, h, w = images.shape
        x = (images.reshape(b * n, 3, h, w) - self.image_mean) / self.image_std
        return self.encoder(x)

    def decoder_positions(self, frames: int, rows: int, cols: int, device: torch.device) -> Tensor:
        """RoPE positions (frames, R + rows*cols, 2) int64: (0, 0) for the R registers,
        (row + 1, col + 1) for patches."""
        registers = torch.zeros(frames, self.register_token.shape[2], 2, dtype=torch.int64, device=device)
        return torch.cat([registers, patch_positions(frames, rows, cols, device) + 1], dim=1)

    def rope(self, pos: Tensor, head_dim: int) -> Rope:
        """RoPE tables for positions (B, T, 2); float32, or float64 for a float64 model."""
        dtype = torch.float64 if self.register_token.dtype == torch.float64 else torch.float32
        return rope_tables(pos, head_dim, ROPE_BASE, dtype)

    def decode(self, tokens: Tensor, batch: int, rows: int, cols: int) -> tuple[Tensor, Tensor]:
        """Alternating frame/global attention over all frames of each sample.

        Args:
            tokens: (B*N, P, C) encoder patch tokens, frames of a sample contiguous.
            batch: B.
            rows, cols: patch grid, P = rows * cols.

        Returns:
            hidden (B*N, R + P, 2C): concat of the last two block outputs, registers first.
            pos (B*N, R + P, 2) int64 RoPE positions.
        """
        bn, _, c = tokens.shape
        registers = self.register_token.to(tokens.dtype).expand(bn, -1, -1, -1).reshape(bn, -1, c)
        x = torch.cat([registers, tokens], dim=1)
        t = x.shape[1]
        pos = self.decoder_positions(bn, rows, cols, tokens.device)
        cos, sin = self.rope(pos, self.decoder[0].attn.head_dim)
        frame_rope = (cos, sin)
        global_rope = (cos.reshape(batch, 1, -1, cos.shape[-1]), sin.reshape(batch, 1, -1, sin.shape[-1]))
        outputs = []
        for i, block in enumerate(self.decoder):
            if i % 2 == 0:
                x = block(x.reshape(bn, t, c), frame_rope)
            else:
                x = block(x.reshape(batch, -1, c), global_rope)
            if i >= len(self.decoder) - 2:
                outputs.append(x.reshape(bn, t, c))
        return torch.cat(outputs, dim=-1), pos

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """Run pi3 on a batch of frame sets.

        Args:
            images: (B, N, 3, H, W) RGB in [0, 1]; H and W multiples of the patch size.

        Returns:
            ``local_points`` (B, N, H, W, 3): camera-frame points, OpenCV axes, z = depth.
            ``points`` (B, N, H, W, 3): the same points in the shared world frame.
            ``conf`` (B, N, H, W, 1): confidence logits (apply a sigmoid).
            ``camera_poses`` (B, N, 4, 4): camera-to-world.
            Outputs are float32 whatever the compute dtype.
        """
        b, n, _, h, w = images.shape
        rows, cols = h // self.patch_size, w // self.patch_size
        hidden, pos = self.decode(self.encode(images), b, rows, cols)
        ropes: dict[int, Rope] = {}
        head_out = []
        for transformer in (self.point_decoder, self.conf_decoder, self.camera_decoder):
            if transformer.head_dim not in ropes:
                ropes[transformer.head_dim] = self.rope(pos, transformer.head_dim)
            out = transformer(hidden, ropes[transformer.head_dim])
            head_out.append(_at_least_fp32(out[:, self.register_token.shape[2] :]))
        return self.predict_heads(*head_out, batch=b, rows=rows, cols=cols)

    def predict_heads(
        self, point_tokens: Tensor, conf_tokens: Tensor, camera_tokens: Tensor, batch: int, rows: int, cols: int
    ) -> dict[str, Tensor]:
        """Float32 heads on the head transformers' patch tokens, each (B*N, P, C_head).

        Returns the output dict of :meth:`forward`.
        """
        with torch.autocast(device_type=point_tokens.device.type, enabled=False):
            xy, z = self.point_head(point_tokens, rows, cols).split([2, 1], dim=-1)
            z = z.exp()
            local_points = torch.cat([xy * z, z], dim=-1)
            conf = self.conf_head(conf_tokens, rows, cols)
            poses = self.camera_head(camera_tokens)
            points = local_points @ poses[:, None, :3, :3].transpose(-1, -2) + poses[:, None, None, :3, 3]
        n = local_points.shape[0] // batch
        h, w = local_points.shape[1:3]
        return {
            "points": points.reshape(batch, n, h, w, 3),
            "local_points": local_points.reshape(batch, n, h, w, 3),
            "conf": conf.reshape(batch, n, h, w, 1),
            "camera_poses": poses.reshape(batch, n, 4, 4),
        }


def _at_least_fp32(x: Tensor) -> Tensor:
    """Upcast half-precision tensors to float32; float32 and float64 pass through."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def build_pi3(config: dict[str, Any] | None = None) -> Pi3:
    """Build pi3 from a dict in the schema of ``pi3_tiny_config.json`` (None: full size).

    Parameters are randomly initialised; build under ``torch.device("meta")`` and load
    a state dict with ``assign=True`` to skip the initialisation cost.
    """
    return Pi3(Pi3Config.from_dict(config))
