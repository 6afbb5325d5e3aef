"""Transformer building blocks shared by the pi3, VGGT and DA3 networks.

Everything here is size-generic and keeps the parameter names of the released
checkpoints (``qkv``, ``proj``, ``q_norm``, ``fc1``, ``ls1.gamma``, ...), so a
module tree assembled from these parts loads the official state dicts unchanged.

Token tensors are (B, T, C): batch, tokens, channels. Attention internals are
(B, heads, T, head_dim). 2D positions are int64 (B, T, 2) holding (row, col).

Rotary embedding (RoPE 2D) is applied through precomputed tables, see
:func:`rope_tables`; a caller computes them once per forward pass and hands them
to every block, reshaping them when the token layout changes (for instance from
per-frame to all-frames attention), exactly as it reshapes the tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
"""Per-channel RGB statistics that all three networks normalise their [0, 1] input with."""

Rope = tuple[Tensor, Tensor]
"""RoPE tables ``(cos, sin)``, each (B, 1, T, head_dim), from :func:`rope_tables`."""


def patch_positions(batch: int, rows: int, cols: int, device: torch.device | str | None = None) -> Tensor:
    """Grid position of every patch token in row-major order.

    Returns:
        (batch, rows * cols, 2) int64 positions (row, col), starting at (0, 0).
    """
    r = torch.arange(rows, device=device)
    c = torch.arange(cols, device=device)
    grid = torch.stack(torch.meshgrid(r, c, indexing="ij"), dim=-1).reshape(1, rows * cols, 2)
    return grid.expand(batch, -1, -1)


def rope_tables(
    pos: Tensor, head_dim: int, base: float = 100.0, dtype: torch.dtype = torch.float32, angles_in_dtype: bool = False
) -> Rope:
    """Cos/sin tables for 2D rotary embedding at integer positions.

    The first half of a head's channels is rotated by the row position, the second
    half by the column position. Within each half, channel ``i`` pairs with channel
    ``i + half / 2`` (split-halves pairing, not interleaved), with angular frequency
    ``base ** (-2 i / half)``.

    Args:
        pos: (B, T, 2) integer (row, col) positions.
        head_dim: channels per head; must be a multiple of 4.
        base: frequency base (100 for pi3, VGGT and DA3).
        dtype: precision of the tables; float32, or float64 for a float64 model. The
            angles themselves are formed in float32, as the released models were, unless
            ``angles_in_dtype`` (DA3's float64 reference forms them in float64 too; for
            float32 tables both are the same).

    Returns:
        ``(cos, sin)``, each (B, 1, T, head_dim) of ``dtype``, for :func:`apply_rope`.
    """
    if head_dim % 4:
        raise ValueError(f"2D RoPE needs head_dim divisible by 4, got {head_dim}")
    half = head_dim // 2
    angle_dtype = dtype if angles_in_dtype else torch.float32
    inv_freq = 1.0 / base ** (torch.arange(0, half, 2, device=pos.device, dtype=angle_dtype) / half)
    angles = (pos.to(angle_dtype)[..., None] * inv_freq).to(dtype)  # (B, T, 2, half / 2)
    angles = torch.cat([angles, angles], dim=-1).flatten(-2)  # (B, T, head_dim): [row, row, col, col]
    return angles.cos()[:, None], angles.sin()[:, None]


def apply_rope(x: Tensor, rope: Rope) -> Tensor:
    """Rotate queries or keys x (B, heads, T, head_dim) with tables from :func:`rope_tables`.

    The arithmetic runs in ``x.dtype``; the result has the shape and dtype of ``x``.
    """
    cos, sin = (t.to(x.dtype) for t in rope)
    q0, q1, q2, q3 = x.chunk(4, dim=-1)
    rotated = torch.cat([-q1, q0, -q3, q2], dim=-1)
    return x * cos + rotated * sin


class Attention(nn.Module):
    """Multi-head self-attention with optional per-head q/k LayerNorm and 2D RoPE.

    Order of operations: fused qkv projection, q/k LayerNorm over each head's
    channels (``qk_norm``), RoPE (when tables are given), scaled-dot-product
    attention (PyTorch SDPA, no attention matrix is materialised), output projection.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        proj_bias: bool = True,
        qk_norm: bool = False,
        qk_norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.q_norm = nn.LayerNorm(self.head_dim, eps=qk_norm_eps) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(self.head_dim, eps=qk_norm_eps) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim, bias=proj_bias)

    def forward(self, x: Tensor, rope: Rope | None = None) -> Tensor:
        """x (B, T, C), rope tables broadcastable to (B, heads, T, head_dim) -> (B, T, C)."""
        b, t, c = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = self.q_norm(q).to(v.dtype), self.k_norm(k).to(v.dtype)
        if rope is not None:
            rope = (rope[0].to(v.dtype), rope[1].to(v.dtype))
            q, k = apply_rope(q, rope), apply_rope(k, rope)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, t, c))


class Mlp(nn.Module):
    """Two-layer perceptron ``fc2(GELU(fc1(x)))`` with exact (erf) GELU; (..., C) -> (..., C_out)."""

    def __init__(self, dim: int, hidden: int, out_dim: int | None = None, bias: bool = True) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden, bias=bias)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, out_dim or dim, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class LayerScale(nn.Module):
    """Per-channel residual scaling ``x * gamma``; gamma (C,) starts at ``init``."""

    def __init__(self, dim: int, init: float = 1e-2) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class Block(nn.Module):
    """Pre-norm transformer block: ``x + ls1(attn(norm1(x)))`` then ``x + ls2(mlp(norm2(x)))``.

    Args:
        dim: token width C.
        num_heads: attention heads.
        mlp_ratio: MLP hidden width is ``int(dim * mlp_ratio)``.
        qkv_bias, proj_bias, ffn_bias: whether those linear layers have biases.
        layerscale_init: initial LayerScale value; None means no LayerScale (identity).
        norm_eps: epsilon of the two block LayerNorms.
        qk_norm: per-head LayerNorm of queries and keys.
        qk_norm_eps: epsilon of the q/k LayerNorms.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        proj_bias: bool = True,
        ffn_bias: bool = True,
        layerscale_init: float | None = None,
        norm_eps: float = 1e-6,
        qk_norm: bool = False,
        qk_norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias, proj_bias, qk_norm, qk_norm_eps)
        self.ls1 = LayerScale(dim, layerscale_init) if layerscale_init is not None else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), bias=ffn_bias)
        self.ls2 = LayerScale(dim, layerscale_init) if layerscale_init is not None else nn.Identity()

    def forward(self, x: Tensor, rope: Rope | None = None) -> Tensor:
        """x (B, T, C) -> (B, T, C); ``rope`` as for :meth:`Attention.forward`."""
        x = x + self.ls1(self.attn(self.norm1(x), rope))
        return x + self.ls2(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    """Non-overlapping patch projection: images (B, 3, H, W) -> tokens (B, H/p * W/p, C), row-major."""

    def __init__(self, patch_size: int, embed_dim: int, in_chans: int = 3) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, images: Tensor) -> Tensor:
        h, w = images.shape[-2:]
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(f"image size {h}x{w} is not a multiple of the patch size {self.patch_size}")
        return self.proj(images).flatten(2).transpose(1, 2)


def resample_pos_embed(table: Tensor, rows: int, cols: int, offset: float | None = None) -> Tensor:
    """A learned position embedding brought to a ``rows`` x ``cols`` patch grid.

    Args:
        table: (1, 1 + g * g, C) stored embedding, cls entry first, then a g x g grid.
        rows, cols: the input's patch grid.
        offset: None resamples bicubically with antialiasing to the explicit output size
            (DINOv2 in pi3 and VGGT). A number resamples bicubically without
            antialiasing at the scale factor ``((rows + offset) / g, (cols + offset) / g)``
            (DA3 uses 0.1): source coordinates then step by ``g / (n + offset)``, not ``g / n``.

    Returns:
        (1, 1 + rows * cols, C). The cls entry is never resampled; the grid is returned
        unchanged when it already is g x g. Computed in float32 (float64 for a float64 table).
    """
    g = round((table.shape[1] - 1) ** 0.5)
    if rows == cols == g:
        return table
    table = table.float() if table.dtype in (torch.float16, torch.bfloat16) else table
    c = table.shape[-1]
    grid = table[:, 1:].reshape(1, g, g, c).permute(0, 3, 1, 2)
    if offset is None:
        grid = F.interpolate(grid, size=(rows, cols), mode="bicubic", antialias=True, align_corners=False)
    else:
        scale = ((rows + offset) / g, (cols + offset) / g)
        grid = F.interpolate(grid, scale_factor=scale, mode="bicubic", antialias=False, align_corners=False)
    if grid.shape[-2:] != (rows, cols):
        raise ValueError(f"position embedding resampled to {tuple(grid.shape[-2:])}, expected {(rows, cols)}")
    return torch.cat([table[:, :1], grid.permute(0, 2, 3, 1).reshape(1, rows * cols, c)], dim=1)


class DinoV2Encoder(nn.Module):
    """DINOv2 vision transformer with register tokens (the ``dinov2_vit*14_reg`` layout).

    Token sequence: [cls, registers, patches]. The cls and patch tokens get the learned
    position embedding, which is stored for a ``pos_grid`` x ``pos_grid`` patch grid and
    resampled to the input grid (see :meth:`pos_embed_for`); registers get none.
    Blocks use LayerNorm eps 1e-6, no q/k norm, no RoPE.

    Args:
        embed_dim, depth, num_heads, mlp_ratio: transformer size.
        patch_size: pixels per patch side.
        pos_grid: side of the stored position-embedding grid (518 / 14 = 37).
        num_register_tokens: register tokens after the cls token.
        layerscale_init: LayerScale initial value, None for no LayerScale.
        mask_token: keep the (unused at inference) ``mask_token`` parameter of (1, C),
            for checkpoints that carry it.
    """

    def __init__(
        self,
        embed_dim: int = 1024,
        depth: int = 24,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        patch_size: int = 14,
        pos_grid: int = 37,
        num_register_tokens: int = 4,
        layerscale_init: float | None = 1e-5,
        mask_token: bool = False,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.pos_grid = pos_grid
        self.num_register_tokens = num_register_tokens
        self.patch_embed = PatchEmbed(patch_size, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + pos_grid * pos_grid, embed_dim))
        self.register_tokens = nn.Parameter(torch.zeros(1, num_register_tokens, embed_dim))
        if mask_token:
            self.mask_token = nn.Parameter(torch.zeros(1, embed_dim))
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, layerscale_init=layerscale_init, norm_eps=1e-6)
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)

    def pos_embed_for(self, rows: int, cols: int) -> Tensor:
        """Position embedding for a ``rows`` x ``cols`` patch grid: (1, 1 + rows * cols, C),
        resampled by :func:`resample_pos_embed` (antialiased, explicit output size)."""
        return resample_pos_embed(self.pos_embed, rows, cols)

    def forward(self, images: Tensor) -> Tensor:
        """Normalised images (B, 3, H, W) -> final-norm patch tokens (B, H/p * W/p, C), row-major."""
        rows, cols = images.shape[-2] // self.patch_size, images.shape[-1] // self.patch_size
        x = self.patch_embed(images)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)
        x = x + self.pos_embed_for(rows, cols).to(x.dtype)
        registers = self.register_tokens.expand(x.shape[0], -1, -1).to(x.dtype)
        x = torch.cat([x[:, :1], registers, x[:, 1:]], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)[:, 1 + self.num_register_tokens :]
