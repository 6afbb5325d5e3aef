"""VGGT prediction heads: the iterative camera head and the DPT dense heads.

DA3's dual DPT head (``core.backbones.da3_heads``) builds on :class:`DPTHead`.

Module and parameter names follow the released VGGT checkpoints (``trunk``,
``poseLN_modulation``, ``projects``, ``resize_layers``, ``scratch.refinenet1`` ...),
so these modules load the official state dicts unchanged.

Aggregated tokens arrive indexed by aggregator step (a list, or a dict holding only the
steps a head needs), one (B, S, T, 2C) tensor per step:
B samples, S frames, T tokens per frame (camera, registers, then patches in row-major
order), 2C channels (frame-attention output concatenated with global-attention output).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.backbones.nn import Block, Mlp

AggregatedTokens = Sequence[Tensor] | Mapping[int, Tensor]
"""Aggregator output per step: (B, S, T, 2C) tensors indexed by step number."""

POSE_ENCODING_DIM = 9
"""absT_quaR_FoV: translation (3), quaternion xyzw (4), field of view (fov_h, fov_w) in radians."""


def activate_pose(raw: Tensor) -> Tensor:
    """Raw camera-head output (..., 9) -> pose encoding: translation and quaternion
    unchanged, field of view through ReLU (keeps it non-negative)."""
    return torch.cat([raw[..., :7], F.relu(raw[..., 7:])], dim=-1)


class CameraHead(nn.Module):
    """Camera pose from each frame's camera token, refined over a few iterations.

    Every iteration starts from the same normalised camera token. The current raw
    estimate (a learned ``empty_pose_tokens`` on the first iteration) is embedded and
    modulates the token adaLN-style: ``token + gate * (LN(token) * (1 + scale) + shift)``.
    The result runs through the ``trunk`` transformer (attention across the frames of
    a sample), and an MLP predicts an additive update of the raw encoding.

    Args:
        dim_in: token width (2C).
        trunk_depth: transformer blocks in the trunk.
        num_heads: attention heads of the trunk.
        mlp_ratio: trunk MLP width ratio.
        layerscale_init: initial LayerScale value of the trunk blocks.
    """

    def __init__(
        self,
        dim_in: int = 2048,
        trunk_depth: int = 4,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        layerscale_init: float = 0.01,
    ) -> None:
        super().__init__()
        self.trunk = nn.Sequential(
            *(
                Block(dim_in, num_heads, mlp_ratio, layerscale_init=layerscale_init, norm_eps=1e-5)
                for _ in range(trunk_depth)
            )
        )
        self.token_norm = nn.LayerNorm(dim_in)
        self.trunk_norm = nn.LayerNorm(dim_in)
        self.empty_pose_tokens = nn.Parameter(torch.zeros(1, 1, POSE_ENCODING_DIM))
        self.embed_pose = nn.Linear(POSE_ENCODING_DIM, dim_in)
        self.poseLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim_in, 3 * dim_in))
        self.adaln_norm = nn.LayerNorm(dim_in, elementwise_affine=False, eps=1e-6)
        self.pose_branch = Mlp(dim_in, dim_in // 2, POSE_ENCODING_DIM)

    def forward(self, camera_tokens: Tensor, iterations: int = 4) -> list[Tensor]:
        """Camera tokens (B, S, 2C) -> one pose encoding (B, S, 9) per iteration, last is best."""
        tokens = self.token_norm(camera_tokens)
        b, s, _ = tokens.shape
        raw = self.empty_pose_tokens.expand(b, s, -1)
        encodings = []
        for i in range(iterations):
            shift, scale, gate = self.poseLN_modulation(self.embed_pose(raw)).chunk(3, dim=-1)
            x = tokens + gate * (self.adaln_norm(tokens) * (1 + scale) + shift)
            delta = self.pose_branch(self.trunk_norm(self.trunk(x)))
            raw = delta if i == 0 else raw + delta
            encodings.append(activate_pose(raw))
        return encodings


def uv_position_embedding(rows: int, cols: int, channels: int, aspect: float, like: Tensor) -> Tensor:
    """Sin-cos embedding of a normalised image-plane grid: (channels, rows, cols).

    The grid spans x in ±aspect/√(aspect²+1) and y in ±1/√(aspect²+1), each shrunk by
    (n-1)/n so samples sit at cell centres of the full span. The first half of the
    channels encodes x, the second half y, each as [sin, cos] with angular frequencies
    ``100 ** (-k / (channels / 4))``. The grid is built in ``like.dtype``, the
    trigonometry in float64, and the result is cast to ``like.dtype``.
    """
    diag = (aspect**2 + 1.0) ** 0.5

    def axis(span: float, n: int) -> Tensor:  # n cell centres across [-span, span]
        end = span * (n - 1) / n
        return torch.linspace(-end, end, n, dtype=like.dtype, device=like.device)

    x, y = axis(aspect / diag, cols), axis(1.0 / diag, rows)
    quarter = channels // 4
    freq = 1.0 / 100.0 ** (torch.arange(quarter, dtype=torch.float64, device=like.device) / quarter)

    def encode(coord: Tensor) -> Tensor:  # (n,) -> (n, channels / 2)
        angles = coord.to(torch.float64)[:, None] * freq
        return torch.cat([angles.sin(), angles.cos()], dim=-1)

    ex = encode(x)[None].expand(rows, -1, -1)  # (rows, cols, C/2)
    ey = encode(y)[:, None].expand(-1, cols, -1)
    return torch.cat([ex, ey], dim=-1).permute(2, 0, 1).to(like.dtype)


def add_uv_embedding(x: Tensor, image_hw: tuple[int, int], ratio: float = 0.1) -> Tensor:
    """x (N, C, h, w) plus ``ratio`` times the UV embedding for the image's aspect ratio."""
    h, w = image_hw
    return x + ratio * uv_position_embedding(x.shape[-2], x.shape[-1], x.shape[1], w / h, x)


def in_frame_chunks(run: Callable[[slice], Tensor], num_frames: int, frames_per_chunk: int) -> Tensor:
    """``run`` on consecutive slices of at most ``frames_per_chunk`` frames, each result
    (B, S', ...) concatenated on the frame axis (dim 1); bounds a dense head's memory."""
    chunks = [run(slice(start, start + frames_per_chunk)) for start in range(0, num_frames, frames_per_chunk)]
    return torch.cat(chunks, dim=1)


class ResidualConvUnit(nn.Module):
    """``skip + conv2(relu(conv1(relu(x))))``, 3×3 convolutions.

    With ``relu_skip`` (VGGT) the skip carries relu(x): that reference network applies an
    in-place ReLU to its input before the residual add, and its released weights were
    trained that way. Without it (DA3) the skip carries x itself.
    """

    def __init__(self, features: int, relu_skip: bool = True) -> None:
        super().__init__()
        self.relu_skip = relu_skip
        self.conv1 = nn.Conv2d(features, features, 3, padding=1)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        activated = F.relu(x)
        skip = activated if self.relu_skip else x
        return skip + self.conv2(F.relu(self.conv1(activated)))


class FusionBlock(nn.Module):
    """RefineNet-style fusion: add a refined skip, refine, resize bilinearly (align_corners),
    then a 1×1 convolution. Without ``has_skip`` it only refines and resizes (the coarsest level).
    ``relu_skip`` as for :class:`ResidualConvUnit`."""

    def __init__(self, features: int, has_skip: bool = True, relu_skip: bool = True) -> None:
        super().__init__()
        self.out_conv = nn.Conv2d(features, features, 1)
        if has_skip:
            self.resConfUnit1 = ResidualConvUnit(features, relu_skip)
        self.resConfUnit2 = ResidualConvUnit(features, relu_skip)

    def forward(self, x: Tensor, skip: Tensor | None = None, size: Sequence[int] | None = None) -> Tensor:
        """x (N, F, h, w), skip of the same shape -> (N, F, *size), or twice the size when None."""
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        size = tuple(size) if size is not None else (2 * x.shape[-2], 2 * x.shape[-1])
        return self.out_conv(F.interpolate(x, size=size, mode="bilinear", align_corners=True))


class DPTHead(nn.Module):
    """Dense prediction from four aggregator levels (Vision Transformers for Dense Prediction).

    Each selected level's patch tokens are LayerNormed, laid out on the patch grid,
    projected by a 1×1 convolution to ``out_channels[i]``, given the UV embedding
    (``pos_embed``) and resampled to 4×, 2×, 1× and ½× the patch grid. The levels are
    reduced to ``features`` channels, fused coarse to fine, brought to the image size
    divided by ``down_ratio`` (bilinear, align_corners) and, when ``output_dim`` is set,
    turned into ``output_dim`` raw channels by a small convolutional head.

    Args:
        dim_in: token width (2C).
        patch_size: pixels per patch side.
        features: fusion width.
        out_channels: projection widths of the four levels.
        layer_indices: which aggregator steps feed the four levels, fine to coarse.
        output_dim: raw output channels; None returns ``features``-channel feature maps.
        head_hidden: width of the output head's hidden convolution.
        pos_embed: add the UV embedding after projection and after the final resize.
        down_ratio: output resolution divisor.
        relu_skip: residual units' skip carries relu(x) (VGGT) rather than x (DA3).
    """

    def __init__(
        self,
        dim_in: int = 2048,
        patch_size: int = 14,
        features: int = 256,
        out_channels: Sequence[int] = (256, 512, 1024, 1024),
        layer_indices: Sequence[int] = (4, 11, 17, 23),
        output_dim: int | None = 4,
        head_hidden: int = 32,
        pos_embed: bool = True,
        down_ratio: int = 1,
        relu_skip: bool = True,
    ) -> None:
        super().__init__()
        if len(out_channels) != 4 or len(layer_indices) != 4:
            raise ValueError("DPT head needs exactly four levels")
        self.patch_size = patch_size
        self.layer_indices = tuple(layer_indices)
        self.use_pos_embed = pos_embed
        self.down_ratio = down_ratio
        self.feature_only = output_dim is None

        self.norm = nn.LayerNorm(dim_in)
        self.projects = nn.ModuleList(nn.Conv2d(dim_in, oc, 1) for oc in out_channels)
        c0, c1, _, c3 = out_channels
        self.resize_layers = nn.ModuleList(
            [
                nn.ConvTranspose2d(c0, c0, kernel_size=4, stride=4),
                nn.ConvTranspose2d(c1, c1, kernel_size=2, stride=2),
                nn.Identity(),
                nn.Conv2d(c3, c3, kernel_size=3, stride=2, padding=1),
            ]
        )
        self.scratch = nn.Module()
        for i, oc in enumerate(out_channels, start=1):
            setattr(self.scratch, f"layer{i}_rn", nn.Conv2d(oc, features, 3, padding=1, bias=False))
        for i in range(1, 5):
            setattr(self.scratch, f"refinenet{i}", FusionBlock(features, has_skip=i != 4, relu_skip=relu_skip))
        if self.feature_only:
            self.scratch.output_conv1 = nn.Conv2d(features, features, 3, padding=1)
        else:
            self.scratch.output_conv1 = nn.Conv2d(features, features // 2, 3, padding=1)
            self.scratch.output_conv2 = nn.Sequential(
                nn.Conv2d(features // 2, head_hidden, 3, padding=1),
                nn.ReLU(),
                nn.Conv2d(head_hidden, output_dim, 1),
            )

    def forward(
        self,
        tokens: AggregatedTokens,
        image_hw: tuple[int, int],
        patch_start: int,
        frames_per_chunk: int = 8,
    ) -> Tensor:
        """Aggregated tokens (by step, each (B, S, T, 2C)) -> (B, S, out, H', W'), H' = H / down_ratio.

        ``out`` is ``output_dim`` raw channels (no activation), or ``features`` in
        feature mode. Frames go through in chunks of ``frames_per_chunk`` to bound memory.
        """
        num_frames = tokens[self.layer_indices[0]].shape[1]
        return in_frame_chunks(
            lambda frames: self._forward_frames(tokens, image_hw, patch_start, frames), num_frames, frames_per_chunk
        )

    def _forward_frames(
        self, tokens: AggregatedTokens, image_hw: tuple[int, int], patch_start: int, frames: slice
    ) -> Tensor:
        b, s = tokens[self.layer_indices[0]][:, frames].shape[:2]
        rows, cols = (side // self.patch_size for side in image_hw)
        x = self.scratch.output_conv1(self._refine(self._levels(tokens, image_hw, patch_start, frames)))
        size = (rows * self.patch_size // self.down_ratio, cols * self.patch_size // self.down_ratio)
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=True)
        if self.use_pos_embed:
            x = add_uv_embedding(x, image_hw)
        if not self.feature_only:
            x = self.scratch.output_conv2(x)
        return x.reshape(b, s, *x.shape[1:])

    def _levels(
        self, tokens: AggregatedTokens, image_hw: tuple[int, int], patch_start: int, frames: slice
    ) -> list[Tensor]:
        """The four levels of ``frames``, fine to coarse, each (B*S', features, h_i, w_i) at
        4×, 2×, 1× and ½× the patch grid: normed, projected, UV-embedded, resampled, reduced."""
        h, w = image_hw
        rows, cols = h // self.patch_size, w // self.patch_size
        levels = []
        for i, (project, resize, index) in enumerate(zip(self.projects, self.resize_layers, self.layer_indices)):
            x = tokens[index][:, frames, patch_start:]
            x = self.norm(x.reshape(-1, rows * cols, x.shape[-1]))
            x = project(x.transpose(1, 2).reshape(x.shape[0], -1, rows, cols))
            if self.use_pos_embed:
                x = add_uv_embedding(x, image_hw)
            levels.append(getattr(self.scratch, f"layer{i + 1}_rn")(resize(x)))
        return levels

    def _refine(self, levels: list[Tensor], suffix: str = "") -> Tensor:
        """Fuse the four reduced levels coarse to fine through ``refinenet{4..1}{suffix}``
        -> (N, features, 8·rows, 8·cols)."""
        l1, l2, l3, l4 = levels
        refine = [getattr(self.scratch, f"refinenet{i}{suffix}") for i in range(1, 5)]
        x = refine[3](l4, size=l3.shape[-2:])
        x = refine[2](x, l3, size=l2.shape[-2:])
        x = refine[1](x, l2, size=l1.shape[-2:])
        return refine[0](x, l1)
