"""DA3 prediction heads: the dual DPT (depth and rays), the camera decoder and encoder.

Module and parameter names follow the released DA3 checkpoints (``scratch.refinenet1_aux``,
``output_conv2_aux``, ``fc_qvec``, ``pose_branch`` ...), so they load the official state
dicts unchanged.

Camera conventions: OpenCV axes (x right, y down, z forward). A pose encoding (B, N, 9)
is [t (3), quaternion x, y, z, w (4), fov_h, fov_w (radians)] of the **camera-to-world**
transform; intrinsics are in pixels with the principal point at (W/2, H/2) of DA3's
integer-pixel grid (pixel (row i, column j) at (u, v) = (j, i)).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from core.backbones.nn import Block, Mlp
from core.backbones.vggt import cam_to_world_from_extrinsics, decode_pose_encoding
from core.backbones.vggt_heads import DPTHead, FusionBlock, add_uv_embedding, in_frame_chunks

RAY_CHANNELS = 6
"""Channels of the ray map (a ray's origin and direction); a confidence logit follows them."""


class Permute(nn.Module):
    """``x.permute(*dims)`` as a module, so a Sequential keeps the reference's indices
    (and with them the parameter names of the layers around it)."""

    def __init__(self, *dims: int) -> None:
        super().__init__()
        self.dims = dims

    def forward(self, x: Tensor) -> Tensor:
        return x.permute(*self.dims)


class DualDPTHead(DPTHead):
    """DA3's dense head: a DPT depth branch plus an auxiliary ray branch.

    The depth branch is :class:`DPTHead` on the four backbone feature levels (no special
    tokens), with residual units whose skip carries x, and 2 raw output channels
    (depth and confidence logits). The ray branch fuses the same reduced levels through
    its own ``refinenet{1..4}_aux`` chain; on the finest level it runs five plain 3×3
    convolutions, adds the UV embedding and predicts rays and a confidence logit at 8×
    the patch grid (3×3 conv, LayerNorm over channels, ReLU, 1×1 conv).

    The reference builds these ray output stacks for all four levels but uses only the
    last; the four ``output_conv2_aux`` stacks share one LayerNorm module, so the state
    dict lists its weight and bias under four names. The ray branch only serves pose
    estimation from rays, which DA3's default forward does not use: it runs in
    :meth:`ray` alone, never inside :meth:`forward`.

    Args:
        dim_in: feature width (2C).
        patch_size: pixels per patch side.
        features: fusion width.
        out_channels: projection widths of the four levels.
        head_hidden: width of the output convolutions' hidden layer (32 in every release).
    """

    def __init__(
        self,
        dim_in: int,
        patch_size: int = 14,
        features: int = 128,
        out_channels: Sequence[int] = (96, 192, 384, 768),
        head_hidden: int = 32,
    ) -> None:
        super().__init__(
            dim_in,
            patch_size,
            features,
            out_channels,
            layer_indices=(0, 1, 2, 3),
            output_dim=2,
            head_hidden=head_hidden,
            relu_skip=False,
        )
        half = features // 2
        for i in range(1, 5):
            setattr(self.scratch, f"refinenet{i}_aux", FusionBlock(features, has_skip=i != 4, relu_skip=False))
        widths = (features, half, features, half, features, half)
        self.scratch.output_conv1_aux = nn.ModuleList(
            nn.Sequential(*(nn.Conv2d(a, b, 3, padding=1) for a, b in zip(widths, widths[1:]))) for _ in range(4)
        )
        shared_norm = nn.LayerNorm(head_hidden)
        self.scratch.output_conv2_aux = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(half, head_hidden, 3, padding=1),
                Permute(0, 2, 3, 1),
                shared_norm,
                Permute(0, 3, 1, 2),
                nn.ReLU(),
                nn.Conv2d(head_hidden, RAY_CHANNELS + 1, 1),
            )
            for _ in range(4)
        )

    def ray(
        self, feats: Sequence[Tensor], image_hw: tuple[int, int], frames_per_chunk: int = 8
    ) -> tuple[Tensor, Tensor]:
        """Ray branch on features (4 levels, each (B, N, P, 2C)) of images of size (H, W).

        Returns:
            ``ray`` (B, N, 8·H/14, 8·W/14, 6) raw, and ``ray_conf`` (B, N, 8·H/14, 8·W/14) >= 1.
        """
        out = in_frame_chunks(
            lambda frames: self._ray_frames(feats, image_hw, frames), feats[0].shape[1], frames_per_chunk
        ).permute(0, 1, 3, 4, 2)
        return out[..., :RAY_CHANNELS], 1 + out[..., RAY_CHANNELS].exp()

    def _ray_frames(self, feats: Sequence[Tensor], image_hw: tuple[int, int], frames: slice) -> Tensor:
        b, s = feats[0][:, frames].shape[:2]
        x = self._refine(self._levels(feats, image_hw, 0, frames), suffix="_aux")
        x = add_uv_embedding(self.scratch.output_conv1_aux[-1](x), image_hw)
        x = self.scratch.output_conv2_aux[-1](x)
        return x.reshape(b, s, *x.shape[1:])


class CameraDecoder(nn.Module):
    """Camera token (B, N, 2C) -> pose encoding (B, N, 9): an MLP trunk, then linear
    translation and quaternion and a ReLU field of view."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim), nn.ReLU())
        self.fc_t = nn.Linear(dim, 3)
        self.fc_qvec = nn.Linear(dim, 4)
        self.fc_fov = nn.Sequential(nn.Linear(dim, 2), nn.ReLU())

    def forward(self, tokens: Tensor) -> Tensor:
        feat = self.backbone(tokens)
        return torch.cat([self.fc_t(feat), self.fc_qvec(feat), self.fc_fov(feat)], dim=-1)


def cameras_from_pose_encoding(pose_enc: Tensor, image_hw: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """Pose encoding (..., 9) -> (cam_from_world (..., 3, 4), intrinsics (..., 3, 3)) for
    images of size (H, W).

    The encoding's quaternion (any norm) and translation form the camera-to-world
    [R | t]; its inverse [Rᵀ | -Rᵀ t] is DA3's ``extrinsics``. fx = (W/2) / tan(fov_w/2),
    fy = (H/2) / tan(fov_h/2) (tan clamped at 1e-6), principal point (W/2, H/2).
    """
    world_from_cam, intrinsics = decode_pose_encoding(pose_enc, image_hw, min_tan=1e-6)
    return cam_to_world_from_extrinsics(world_from_cam)[..., :3, :], intrinsics


def rotation_to_quaternion(rot: Tensor) -> Tensor:
    """Rotations (..., 3, 3) -> unit quaternions (..., 4), scalar last (x, y, z, w), w >= 0.

    Each row k of the symmetric matrix 4 q qᵀ is 4 q_k q; it is formed from the
    rotation's entries, and the row with the largest diagonal entry 4 q_k² (the best
    conditioned one) is divided by 2 sqrt(4 q_k²) = 4 |q_k|, which gives ±q. For a
    matrix that is only nearly orthonormal this is what the reference computes (it does
    not renormalise the result).
    """
    m = rot.flatten(-2)
    m00, m01, m02, m10, m11, m12, m20, m21, m22 = m.unbind(-1)
    rows = torch.stack(  # 4 q qᵀ in (x, y, z, w) order
        [
            torch.stack([1 + m00 - m11 - m22, m01 + m10, m02 + m20, m21 - m12], dim=-1),
            torch.stack([m01 + m10, 1 - m00 + m11 - m22, m12 + m21, m02 - m20], dim=-1),
            torch.stack([m02 + m20, m12 + m21, 1 - m00 - m11 + m22, m10 - m01], dim=-1),
            torch.stack([m21 - m12, m02 - m20, m10 - m01, 1 + m00 + m11 + m22], dim=-1),
        ],
        dim=-2,
    )
    diagonal = rows.diagonal(dim1=-2, dim2=-1)
    best = diagonal.argmax(dim=-1, keepdim=True)
    quat = torch.take_along_dim(rows, best[..., None], dim=-2).squeeze(-2)
    quat = quat / (2 * torch.take_along_dim(diagonal, best, dim=-1).sqrt())
    return torch.where(quat[..., 3:] < 0, -quat, quat)


def pose_encoding_from_cameras(cam_from_world: Tensor, intrinsics: Tensor, image_hw: tuple[int, int]) -> Tensor:
    """Cameras -> pose encoding (..., 9), the inverse of :func:`cameras_from_pose_encoding`.

    Args:
        cam_from_world: (..., 3, 4) or (..., 4, 4) world-to-camera extrinsics.
        intrinsics: (..., 3, 3) in pixels of images of size ``image_hw`` = (H, W).
    """
    h, w = image_hw
    world_from_cam = cam_to_world_from_extrinsics(cam_from_world[..., :3, :])
    fov_h = 2 * torch.atan((h / 2) / intrinsics[..., 1, 1])
    fov_w = 2 * torch.atan((w / 2) / intrinsics[..., 0, 0])
    quat = rotation_to_quaternion(world_from_cam[..., :3, :3])
    return torch.cat([world_from_cam[..., :3, 3], quat, fov_h[..., None], fov_w[..., None]], dim=-1)


class CameraEncoder(nn.Module):
    """Known cameras -> one token per view (B, N, C), for pose-conditioned prediction.

    The pose encoding is embedded by an MLP, normalised, mixed across the views of a
    sample by a small transformer (no RoPE, LayerScale) and normalised again; the result
    replaces every view's token 0 in the backbone.

    Args:
        dim: token width C (the backbone width).
        num_heads, depth, mlp_ratio: trunk size.
        layerscale_init: initial LayerScale value of the trunk blocks.
    """

    def __init__(
        self, dim: int, num_heads: int = 16, depth: int = 4, mlp_ratio: float = 4.0, layerscale_init: float = 0.01
    ) -> None:
        super().__init__()
        self.trunk = nn.Sequential(
            *(Block(dim, num_heads, mlp_ratio, layerscale_init=layerscale_init, norm_eps=1e-5) for _ in range(depth))
        )
        self.token_norm = nn.LayerNorm(dim)
        self.trunk_norm = nn.LayerNorm(dim)
        self.pose_branch = Mlp(9, dim // 2, dim)

    def forward(self, cam_from_world: Tensor, intrinsics: Tensor, image_hw: tuple[int, int]) -> Tensor:
        """World-to-camera extrinsics (B, N, 4, 4) or (B, N, 3, 4), intrinsics (B, N, 3, 3)
        in pixels of images of size (H, W) -> camera tokens (B, N, C)."""
        tokens = self.token_norm(self.pose_branch(pose_encoding_from_cameras(cam_from_world, intrinsics, image_hw)))
        return self.trunk_norm(self.trunk(tokens))
