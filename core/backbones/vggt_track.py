"""VGGT point-tracking head: a DPT feature extractor plus an iterative CoTracker-style tracker.

Given query pixels in the first frame, the tracker follows them through every frame.
Each iteration samples correlations between the tracks' features and a feature-map
pyramid around the current positions, and a space-time transformer predicts updates
of the positions and of the track features. Parameter names follow the released
checkpoints (``tracker.updateformer.virual_tracks`` keeps its upstream spelling).

Pixel coordinates are (x, y) = (column, row) with integer values at pixel centres
(align_corners convention): pixel (0, 0) is the centre of the top-left pixel.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.backbones.nn import Mlp
from core.backbones.vggt_heads import AggregatedTokens, DPTHead

FLOW_SCALE = 518.0
"""Displacements are also fed to the tracker divided by this fixed constant (518 px)."""


def sample_bilinear(maps: Tensor, xy: Tensor, padding_mode: str = "border") -> Tensor:
    """Sample maps (N, C, H, W) at pixel coordinates xy (N, ..., 2) -> (N, C, ...).

    Coordinates are in pixels of ``maps`` with integer values at pixel centres.
    """
    h, w = maps.shape[-2:]
    scale = xy.new_tensor([2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)])
    grid = (xy * scale - 1).reshape(xy.shape[0], -1, 1, 2)
    out = F.grid_sample(maps, grid, mode="bilinear", padding_mode=padding_mode, align_corners=True)
    return out.reshape(*out.shape[:2], *xy.shape[1:-1])


def grid_sincos_embedding(dim: int, rows: int, cols: int, like: Tensor) -> Tensor:
    """Fixed 2D sin-cos embedding of integer grid positions: (dim, rows, cols).

    The first half of the channels encodes the column (x), the second half the row (y),
    each as [sin, cos] with frequencies ``10000 ** (-k / (dim / 4))``. Computed in
    float64, returned in ``like``'s dtype and device.
    """
    quarter = dim // 4
    freq = 1.0 / 10000.0 ** (torch.arange(quarter, dtype=torch.float64, device=like.device) / quarter)

    def encode(n: int) -> Tensor:  # (n, dim / 2)
        angles = torch.arange(n, dtype=torch.float64, device=like.device)[:, None] * freq
        return torch.cat([angles.sin(), angles.cos()], dim=-1)

    ex = encode(cols)[None].expand(rows, -1, -1)
    ey = encode(rows)[:, None].expand(-1, cols, -1)
    return torch.cat([ex, ey], dim=-1).permute(2, 0, 1).to(like.dtype)


def displacement_embedding(flow: Tensor, dim: int) -> Tensor:
    """Sin-cos embedding of displacements (..., 2) -> (..., 2 * dim).

    Each coordinate gets ``dim`` channels, interleaved [sin, cos] pairs at angular
    frequencies ``k * 2000 / dim`` for k = 0 .. dim/2 - 1 (a linear, not geometric,
    frequency ladder, as in the released model).
    """
    freq = torch.arange(0, dim, 2, device=flow.device, dtype=flow.dtype) * (1000.0 / dim)

    def encode(v: Tensor) -> Tensor:  # (..., 1) -> (..., dim)
        angles = v * freq
        return torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(-2)

    return torch.cat([encode(flow[..., :1]), encode(flow[..., 1:])], dim=-1)


class MultiheadAttention(nn.Module):
    """Multi-head attention with the parameter layout of ``torch.nn.MultiheadAttention``
    (``in_proj_weight``, ``in_proj_bias``, ``out_proj``), computed with SDPA.

    Query (B, Tq, C) attends to context (B, Tk, C) -> (B, Tq, C).
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        wq, wkv = self.in_proj_weight.split([x.shape[-1], 2 * x.shape[-1]])
        bq, bkv = self.in_proj_bias.split([x.shape[-1], 2 * x.shape[-1]])
        q = F.linear(x, wq, bq)
        k, v = F.linear(context, wkv, bkv).chunk(2, dim=-1)
        heads = (t.unflatten(-1, (self.num_heads, -1)).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(*heads)
        return self.out_proj(out.transpose(1, 2).flatten(2))


class AttnBlock(nn.Module):
    """Self-attention block whose residual stream is the *normalised* input:
    ``y = LN(x); y = y + attn(y); y + mlp(LN2(y))`` (as in the released tracker)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.attn = MultiheadAttention(dim, num_heads)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm1(x)
        x = x + self.attn(x, x)
        return x + self.mlp(self.norm2(x))


class CrossAttnBlock(nn.Module):
    """Cross-attention block with the same normalised-residual layout as :class:`AttnBlock`."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.norm_context = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.cross_attn = MultiheadAttention(dim, num_heads)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        x = self.norm1(x)
        x = x + self.cross_attn(x, self.norm_context(context))
        return x + self.mlp(self.norm2(x))


class UpdateFormer(nn.Module):
    """Space-time transformer over track tokens (B, N, S, D_in) -> updates (B, N, S, D_out).

    Each layer attends along time within every track, then across tracks within every
    frame through ``num_virtual`` learned virtual tracks (virtual <- points, virtual
    self-attention, points <- virtual), which keeps the cost linear in N.
    """

    def __init__(
        self,
        input_dim: int,
        hidden: int,
        output_dim: int,
        depth: int,
        num_heads: int = 8,
        num_virtual: int = 64,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        self.num_virtual = num_virtual
        self.input_norm = nn.LayerNorm(input_dim)
        self.input_transform = nn.Linear(input_dim, hidden)
        self.output_norm = nn.LayerNorm(hidden)
        self.flow_head = nn.Linear(hidden, output_dim)
        self.virual_tracks = nn.Parameter(torch.randn(1, num_virtual, 1, hidden))
        self.time_blocks = nn.ModuleList(AttnBlock(hidden, num_heads, mlp_ratio) for _ in range(depth))
        self.space_virtual_blocks = nn.ModuleList(AttnBlock(hidden, num_heads, mlp_ratio) for _ in range(depth))
        self.space_point2virtual_blocks = nn.ModuleList(
            CrossAttnBlock(hidden, num_heads, mlp_ratio) for _ in range(depth)
        )
        self.space_virtual2point_blocks = nn.ModuleList(
            CrossAttnBlock(hidden, num_heads, mlp_ratio) for _ in range(depth)
        )

    def forward(self, x: Tensor) -> Tensor:
        init = self.input_transform(self.input_norm(x))
        b, n, s, c = init.shape
        tokens = torch.cat([init, self.virual_tracks.expand(b, -1, s, -1)], dim=1)
        layers = zip(
            self.time_blocks,
            self.space_virtual2point_blocks,
            self.space_virtual_blocks,
            self.space_point2virtual_blocks,
        )
        for time_block, gather, mix, scatter in layers:
            tokens = time_block(tokens.reshape(b * (n + self.num_virtual), s, c))
            space = tokens.reshape(b, n + self.num_virtual, s, c).transpose(1, 2).reshape(b * s, -1, c)
            points, virtual = space[:, :n], space[:, n:]
            virtual = mix(gather(virtual, points))
            points = scatter(points, virtual)
            tokens = torch.cat([points, virtual], dim=1).reshape(b, s, -1, c).transpose(1, 2)
        return self.flow_head(self.output_norm(tokens[:, :n] + init))


class CorrelationPyramid:
    """Feature maps (B, S, C, H, W) average-pooled ``levels - 1`` times by 2, for sampling
    feature correlations in a (2r+1)² window around track positions at every level."""

    def __init__(self, fmaps: Tensor, levels: int, radius: int) -> None:
        b, s, c = fmaps.shape[:3]
        self.radius = radius
        self.levels = [fmaps]
        for _ in range(levels - 1):
            pooled = F.avg_pool2d(self.levels[-1].flatten(0, 1), kernel_size=2, stride=2)
            self.levels.append(pooled.reshape(b, s, c, *pooled.shape[-2:]))
        d = torch.arange(-radius, radius + 1, device=fmaps.device, dtype=fmaps.dtype)
        # Window offsets (dx, dy) with dx varying slowest, the window layout the
        # released correlation MLP was trained on.
        self.offsets = torch.stack(torch.meshgrid(d, d, indexing="ij"), dim=-1).reshape(-1, 2)

    def sample(self, feats: Tensor, xy: Tensor) -> Tensor:
        """Track features (B, S, N, C) at positions xy (B, S, N, 2), level-0 pixels
        -> correlations (B, S, N, levels * (2r+1)²), zero outside the maps."""
        b, s, n, c = feats.shape
        out = []
        for i, fmaps in enumerate(self.levels):
            h, w = fmaps.shape[-2:]
            corr = feats @ fmaps.reshape(b, s, c, h * w) / math.sqrt(c)  # (B, S, N, h*w)
            window = xy.reshape(b * s * n, 1, 2) / 2**i + self.offsets
            sampled = sample_bilinear(corr.reshape(b * s * n, 1, h, w), window, padding_mode="zeros")
            out.append(sampled.reshape(b, s, n, -1))
        return torch.cat(out, dim=-1)


class TrackPredictor(nn.Module):
    """Iterative tracker on feature maps of stride ``stride`` (the ``tracker`` module).

    Args:
        latent_dim: feature-map channels.
        hidden: transformer width.
        corr_levels, corr_radius: correlation pyramid depth and window radius.
        depth: space-time transformer layers.
        num_heads, num_virtual: transformer heads and virtual tracks.
        stride: input pixels per feature-map pixel.
    """

    def __init__(
        self,
        latent_dim: int = 128,
        hidden: int = 384,
        corr_levels: int = 7,
        corr_radius: int = 4,
        depth: int = 6,
        num_heads: int = 8,
        num_virtual: int = 64,
        stride: int = 2,
    ) -> None:
        super().__init__()
        self.corr_levels = corr_levels
        self.corr_radius = corr_radius
        self.stride = stride
        token_dim = 3 * latent_dim + 4  # displacement embedding (+4 raw), correlations, track features
        self.corr_mlp = Mlp(corr_levels * (2 * corr_radius + 1) ** 2, hidden, latent_dim)
        self.query_ref_token = nn.Parameter(torch.randn(1, 2, token_dim))
        self.updateformer = UpdateFormer(token_dim, hidden, latent_dim + 2, depth, num_heads, num_virtual)
        self.fmap_norm = nn.LayerNorm(latent_dim)
        self.ffeat_norm = nn.GroupNorm(1, latent_dim)
        self.ffeat_updater = nn.Sequential(nn.Linear(latent_dim, latent_dim), nn.GELU())
        self.vis_predictor = nn.Sequential(nn.Linear(latent_dim, 1))
        self.conf_predictor = nn.Sequential(nn.Linear(latent_dim, 1))

    def forward(self, query_xy: Tensor, fmaps: Tensor, iters: int) -> tuple[list[Tensor], Tensor, Tensor]:
        """Track query pixels through all frames.

        Args:
            query_xy: (B, N, 2) pixel (x, y) in frame 0 of the input images.
            fmaps: (B, S, C, H', W') feature maps, H' = H / stride.
            iters: refinement iterations.

        Returns:
            ``(tracks, vis, conf)``: one (B, S, N, 2) pixel track per iteration (last is
            best; frame 0 stays at the query), visibility and confidence (B, S, N) in [0, 1].
        """
        b, s, c, h, w = fmaps.shape
        n = query_xy.shape[1]
        fmaps = self.fmap_norm(fmaps.permute(0, 1, 3, 4, 2)).permute(0, 1, 4, 2, 3)
        query = query_xy / self.stride
        xy = query[:, None].expand(b, s, n, 2)

        query_feats = sample_bilinear(fmaps[:, 0], query).transpose(1, 2)  # (B, N, C)
        feats = query_feats[:, None].expand(b, s, n, c)  # (B, S, N, C)
        pyramid = CorrelationPyramid(fmaps, self.corr_levels, self.corr_radius)

        token_dim = self.query_ref_token.shape[-1]
        grid_embed = grid_sincos_embedding(token_dim, h, w, fmaps)
        query_embed = sample_bilinear(grid_embed[None].expand(b, -1, -1, -1), query)  # (B, D, N)
        query_embed = query_embed.transpose(1, 2).reshape(b * n, 1, token_dim)
        frame_tokens = torch.cat(
            [self.query_ref_token[:, :1], self.query_ref_token[:, 1:].expand(-1, s - 1, -1)], dim=1
        )

        tracks = []
        for _ in range(iters):
            corr = self.corr_mlp(pyramid.sample(feats, xy).transpose(1, 2).reshape(b * n, s, -1))
            flow = (xy - xy[:, :1]).transpose(1, 2).reshape(b * n, s, 2)
            flow_embed = torch.cat([displacement_embedding(flow, c // 2), flow / FLOW_SCALE, flow / FLOW_SCALE], -1)
            feats_bn = feats.transpose(1, 2).reshape(b * n, s, c)
            x = torch.cat([flow_embed, corr, feats_bn], dim=-1) + query_embed + frame_tokens
            delta = self.updateformer(x.reshape(b, n, s, token_dim)).reshape(b * n, s, c + 2)

            feats_bn = self.ffeat_updater(self.ffeat_norm(delta[..., 2:].reshape(-1, c))) + feats_bn.reshape(-1, c)
            feats = feats_bn.reshape(b, n, s, c).transpose(1, 2)
            xy = xy + delta[..., :2].reshape(b, n, s, 2).transpose(1, 2)
            xy = torch.cat([query[:, None], xy[:, 1:]], dim=1)
            tracks.append(xy * self.stride)

        vis = torch.sigmoid(self.vis_predictor(feats).squeeze(-1))
        conf = torch.sigmoid(self.conf_predictor(feats).squeeze(-1))
        return tracks, vis, conf


class TrackHead(nn.Module):
    """Feature extractor (DPT at half resolution, no UV embedding) plus :class:`TrackPredictor`."""

    def __init__(
        self,
        dim_in: int = 2048,
        patch_size: int = 14,
        features: int = 128,
        out_channels: Sequence[int] = (256, 512, 1024, 1024),
        layer_indices: Sequence[int] = (4, 11, 17, 23),
        hidden: int = 384,
        corr_levels: int = 7,
        corr_radius: int = 4,
        depth: int = 6,
        num_heads: int = 8,
        num_virtual: int = 64,
        stride: int = 2,
        iters: int = 4,
    ) -> None:
        super().__init__()
        self.iters = iters
        self.feature_extractor = DPTHead(
            dim_in, patch_size, features, out_channels, layer_indices, output_dim=None, pos_embed=False, down_ratio=2
        )
        self.tracker = TrackPredictor(features, hidden, corr_levels, corr_radius, depth, num_heads, num_virtual, stride)

    def forward(
        self, tokens: AggregatedTokens, image_hw: tuple[int, int], patch_start: int, query_xy: Tensor
    ) -> tuple[list[Tensor], Tensor, Tensor]:
        """Aggregated tokens and query pixels (B, N, 2) -> see :meth:`TrackPredictor.forward`."""
        fmaps = self.feature_extractor(tokens, image_hw, patch_start)
        return self.tracker(query_xy, fmaps, self.iters)
