"""The real networks behind the engine's :class:`~core.backbones.base.Backbone` interface.

:func:`load_backbone` loads pi3, VGGT or DA3 and wraps it so that a window of uint8
frames becomes a :class:`~core.run.arrays.WindowPrediction`: camera-space points in
OpenCV axes (x right, y down, z forward), camera-to-world poses in the window's
frame, a confidence where larger is better, and the input colours.

Input sizes follow each network's own preprocessing, computed once per stream by
``input_geometry`` (the frame source resizes; the adapter receives frames already
at ``geometry.size``):

* pi3: aspect-preserving resize to about 255,000 pixels, sides multiples of 14.
* VGGT: width 518, height aspect-correct to a multiple of 14, centre crop to 518
  rows for portrait footage.
* DA3: longest side 504, each side then rounded to the nearest multiple of 14, no crop;
  the frames are ImageNet-normalised before the network (DA3 does not do it inside).

Reference views: VGGT's is frame 0 of the window; pi3 has none (permutation-equivariant);
DA3 chooses one per window from its tokens, as upstream does, when the window has 3 or
more frames. Either way the window's poses share one arbitrary frame, which registration
aligns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import Tensor, nn

from core.backbones import NETWORK_BACKBONES
from core.backbones.weights import licence_notice, load_network
from core.errors import UserError
from core.run.arrays import WindowPrediction
from core.run.manifest import InputGeometry

PATCH = 14
PI3_PIXEL_LIMIT = 255_000
VGGT_SIZE = 518
DA3_LONG_SIDE = 504
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def pi3_input_geometry(footage: tuple[int, int]) -> InputGeometry:
    """pi3 input size for footage (W, H): about 255,000 pixels, sides multiples of 14, no crop.

    Each side is scaled to the pixel budget and rounded to whole patches; while the
    result is over budget, the side further from the footage aspect ratio loses one
    patch. Examples: 4:3 -> 574x434, 16:9 -> 672x378, 1:1 -> 504x504.
    """
    w, h = footage
    scale = math.sqrt(PI3_PIXEL_LIMIT / (w * h))
    target_w, target_h = w * scale, h * scale
    cols, rows = round(target_w / PATCH), round(target_h / PATCH)
    while cols * rows * PATCH * PATCH > PI3_PIXEL_LIMIT:
        if cols / rows > target_w / target_h:
            cols -= 1
        else:
            rows -= 1
    size = (max(1, cols) * PATCH, max(1, rows) * PATCH)
    return InputGeometry.resize_only(footage, size)


def vggt_input_geometry(footage: tuple[int, int]) -> InputGeometry:
    """VGGT input for footage (W, H): width 518, height scaled and rounded to whole
    patches, then centre-cropped to 518 rows if taller. Examples: 4:3 -> 518x392,
    16:9 -> 518x294, 9:16 -> resized 518x924, cropped to 518x518 at row 203."""
    w, h = footage
    resized_h = round(h * VGGT_SIZE / w / PATCH) * PATCH
    size_h = min(resized_h, VGGT_SIZE)
    return InputGeometry(
        footage=footage,
        resized=(VGGT_SIZE, resized_h),
        size=(VGGT_SIZE, size_h),
        offset=(0, (resized_h - size_h) // 2),
    )


def da3_input_geometry(footage: tuple[int, int]) -> InputGeometry:
    """DA3 input size for footage (W, H), no crop: the longest side is scaled to 504 (sides
    rounded to whole pixels), then each side goes to the nearest multiple of 14 (halfway
    rounds up). Upstream resizes twice to get there; one resize gives the same mapping.
    Examples: 4:3 -> 504x378, 16:9 -> 504x280, 9:16 -> 280x504, 1:1 -> 504x504."""
    scale = DA3_LONG_SIDE / max(footage)

    def nearest_multiple(side: int) -> int:
        down = side // PATCH * PATCH
        return max(PATCH, down + PATCH if side - down >= PATCH / 2 else down)

    w, h = (nearest_multiple(max(1, round(side * scale))) for side in footage)
    return InputGeometry.resize_only(footage, (w, h))


def _numpy(x: Tensor) -> np.ndarray:
    return x.detach().float().cpu().numpy()


def pi3_prediction(out: dict[str, Tensor], images: np.ndarray, frames: np.ndarray) -> WindowPrediction:
    """pi3 outputs for one sample (batch 1) -> WindowPrediction (conf = sigmoid of the logits)."""
    return WindowPrediction(
        frames=frames,
        points=_numpy(out["local_points"][0]),
        poses=_numpy(out["camera_poses"][0]),
        conf=_numpy(torch.sigmoid(out["conf"][0, ..., 0].float())),
        colors=images,
    )


def depth_camera_prediction(
    depth: Tensor,
    cam_from_world: Tensor,
    intrinsics: Tensor,
    conf: Tensor,
    images: np.ndarray,
    frames: np.ndarray,
) -> WindowPrediction:
    """A window predicted as depth plus cameras (VGGT, DA3) -> WindowPrediction.

    Args:
        depth: (N, H, W) z-depth.
        cam_from_world: (N, 3, 4) world-to-camera extrinsics [R | t], OpenCV axes.
        intrinsics: (N, 3, 3) in pixels on the networks' integer pixel grid (pixel
            (row i, column j) at (j, i), principal point (W/2, H/2)).
        conf: (N, H, W) confidence, larger is better.
        images, frames: the window's colours and frame indices.

    Points are the depth map unprojected with the intrinsics exactly as the networks'
    own post-processing does (integer pixel coordinates); the intrinsics reported are
    shifted by half a pixel to this project's convention (pixel centres at +0.5), so
    that projecting a point with them lands on its pixel's centre. Poses are the
    inverse extrinsics, camera-to-world.
    """
    from core.backbones.vggt import cam_to_world_from_extrinsics, depth_to_camera_points

    points = depth_to_camera_points(depth, intrinsics)
    poses = cam_to_world_from_extrinsics(cam_from_world.double())
    intrinsics = intrinsics.clone()
    intrinsics[:, :2, 2] += 0.5
    return WindowPrediction(
        frames=frames,
        points=_numpy(points),
        poses=_numpy(poses),
        conf=_numpy(conf),
        colors=images,
        intrinsics=_numpy(intrinsics),
    )


def vggt_prediction(out: dict[str, Tensor], images: np.ndarray, frames: np.ndarray) -> WindowPrediction:
    """VGGT outputs for one sample (batch 1) -> WindowPrediction (:func:`depth_camera_prediction`;
    cameras decoded from ``pose_enc``, confidence ``depth_conf`` >= 1)."""
    from core.backbones.vggt import decode_pose_encoding

    pose_enc, depth = out["pose_enc"][0].float(), out["depth"][0, ..., 0].float()
    extrinsics, intrinsics = decode_pose_encoding(pose_enc, tuple(depth.shape[-2:]))
    return depth_camera_prediction(depth, extrinsics, intrinsics, out["depth_conf"][0], images, frames)


def da3_prediction(out: dict[str, Tensor], images: np.ndarray, frames: np.ndarray) -> WindowPrediction:
    """DA3 outputs for one sample (batch 1) -> WindowPrediction (:func:`depth_camera_prediction`
    of ``depth``, ``extrinsics``, ``intrinsics``; confidence ``depth_conf`` >= 1)."""
    return depth_camera_prediction(
        out["depth"][0].float(),
        out["extrinsics"][0].float(),
        out["intrinsics"][0].float(),
        out["depth_conf"][0],
        images,
        frames,
    )


def _run_pi3(model: nn.Module, images: Tensor) -> dict[str, Tensor]:
    return model(images)


def _run_vggt(model: nn.Module, images: Tensor) -> dict[str, Tensor]:
    # The point head is not needed: points come from VGGT's depth and cameras.
    return model(images, predict_points=False)


def _run_da3(model: nn.Module, images: Tensor) -> dict[str, Tensor]:
    from core.backbones.da3 import normalize_images

    return model(normalize_images(images))


@dataclass(frozen=True)
class NetworkAdapter:
    """How the engine drives one network.

    Attributes:
        input_geometry: footage (W, H) -> the network's input size and crop.
        run: (model, images (1, N, 3, h, w) RGB in [0, 1]) -> the network's outputs.
        prediction: (outputs, uint8 images, frame indices) -> WindowPrediction.
    """

    input_geometry: Callable[[tuple[int, int]], InputGeometry]
    run: Callable[[nn.Module, Tensor], dict[str, Tensor]]
    prediction: Callable[[dict[str, Tensor], np.ndarray, np.ndarray], WindowPrediction]


NETWORKS: dict[str, NetworkAdapter] = {
    "pi3": NetworkAdapter(pi3_input_geometry, _run_pi3, pi3_prediction),
    "vggt": NetworkAdapter(vggt_input_geometry, _run_vggt, vggt_prediction),
    "da3": NetworkAdapter(da3_input_geometry, _run_da3, da3_prediction),
}


DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"


class OptionError(UserError, ValueError):
    """A ``--device`` or ``--dtype`` value that cannot be used (on this machine)."""


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' -> the first CUDA device when available, else MPS (Apple silicon), else CPU;
    anything else as given, once checked to exist on this machine.

    Raises:
        OptionError: not a device, a kind the engine does not run on, CUDA or MPS not
            available, or a CUDA index beyond this machine's devices; the message names
            ``--device`` and what to use instead.
    """
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if torch.backends.mps.is_available() else "cpu")
    shown = device if str(device).strip() else repr(device)
    try:
        resolved = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise OptionError(f"--device {shown}: not a device; use {DEVICE_CHOICES}") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            why = "this PyTorch is a CPU-only build" if torch.version.cuda is None else "no usable NVIDIA GPU or driver"
            raise OptionError(f"--device {device}: CUDA is not available on this machine ({why}); "
                              "use --device cpu or auto")
        count = torch.cuda.device_count()
        if resolved.index is not None and resolved.index >= count:
            have = "cuda:0" if count == 1 else f"cuda:0 to cuda:{count - 1}"
            raise OptionError(f"--device {device}: this machine has {count} CUDA device{'s' * (count != 1)} "
                              f"({have}); use one of those, or auto")
    elif resolved.type == "mps":
        if not torch.backends.mps.is_available():
            raise OptionError(f"--device {device}: MPS (the Apple-silicon GPU) is not available on this machine; "
                              "use --device cpu or auto")
        if resolved.index not in (None, 0):
            raise OptionError(f"--device {device}: there is one MPS device; use --device mps")
    elif resolved.type != "cpu":
        raise OptionError(f"--device {device}: the engine does not run on {resolved.type} devices; "
                          f"use {DEVICE_CHOICES}")
    return resolved


def resolve_precision(dtype: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for ``dtype`` on ``device``; None means plain float32.

    'auto' is bfloat16 on CUDA devices that support it, float16 on older CUDA
    devices, float32 on CPU.

    Raises:
        OptionError: an unknown dtype, or bfloat16 on a CUDA device without it.
    """
    if dtype == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if dtype not in DTYPES:
        raise OptionError(f"--dtype {dtype}: unknown dtype; choose auto, {', '.join(DTYPES)}")
    if dtype == "bfloat16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise OptionError(f"--dtype bfloat16: {torch.cuda.get_device_name(device)} does not support bfloat16; "
                          "use --dtype float16 or auto")
    return None if dtype == "float32" else DTYPES[dtype]


@dataclass
class NetworkBackbone:
    """A loaded network as an engine :class:`~core.backbones.base.Backbone`.

    Attributes:
        name: the backbone name (a :data:`~core.backbones.NETWORK_BACKBONES` key: "pi3", "vggt",
            "da3", "da3-small", "da3-base").
        model: the network in eval mode on ``device``.
        device: where it runs.
        amp_dtype: autocast dtype of the trunk, None for float32 (heads always float32).
        licence: the weights' licence notice, for the caller to show the user.
    """

    name: str
    model: nn.Module
    device: torch.device
    amp_dtype: torch.dtype | None = None
    licence: str = ""

    @property
    def adapter(self) -> NetworkAdapter:
        """How this backbone's network is driven (its :data:`NETWORKS` entry)."""
        return NETWORKS[NETWORK_BACKBONES[self.name].network]

    def input_geometry(self, footage: tuple[int, int]) -> InputGeometry:
        """Network input size and crop for footage of size (W, H)."""
        return self.adapter.input_geometry(footage)

    def predict(self, images: np.ndarray, frames: np.ndarray) -> WindowPrediction:
        """Predict one window.

        Args:
            images: (N, h, w, 3) uint8 RGB at ``input_geometry(...).size``.
            frames: (N,) int64 source frame indices.
        """
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"expected (N, h, w, 3) uint8 frames, got {images.dtype} {images.shape}")
        h, w = images.shape[1:3]
        if h % PATCH or w % PATCH:
            raise ValueError(f"frame size {w}x{h} is not a multiple of {PATCH}; resize with input_geometry()")
        frames = np.asarray(frames, dtype=np.int64)
        x = torch.from_numpy(np.ascontiguousarray(images)).to(self.device, non_blocking=True)
        x = x.permute(0, 3, 1, 2)[None].float().div_(255.0)  # (1, N, 3, h, w) in [0, 1]
        with torch.inference_mode(), torch.autocast(
            self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None
        ):
            out = self.adapter.run(self.model, x)
        return self.adapter.prediction(out, images, frames)


def load_backbone(
    name: str,
    weights: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    config: dict | None = None,
) -> NetworkBackbone:
    """Load a network as an engine backbone.

    Args:
        name: a :data:`~core.backbones.NETWORK_BACKBONES` name: "pi3", "vggt", "da3" (DA3-BASE),
            "da3-small" or "da3-base".
        weights: checkpoint file, Hugging Face repo id (``owner/name[/file]``), None for
            the backbone's released weights, or "random" for random weights (benchmarks).
        device: "auto", "cpu", "cuda", "cuda:1", ...
        dtype: "auto" (bfloat16/float16 autocast on CUDA, float32 on CPU), "float32",
            "bfloat16" or "float16". With half precision the trunk's Linear/Conv weights
            are stored in that dtype as they are loaded; heads, norms and tokens stay float32.
        config: network configuration when the checkpoint embeds none (None: the
            backbone's released size).

    Raises:
        core.backbones.weights.WeightsNotFound: no checkpoint and no way to download it.
        core.backbones.weights.StateDictMismatch: the checkpoint does not fit the network.
    """
    if name not in NETWORK_BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(NETWORK_BACKBONES)}")
    resolved = resolve_device(device)
    amp_dtype = resolve_precision(dtype, resolved)
    model = load_network(name, weights, resolved, half=amp_dtype, config=config)
    return NetworkBackbone(name, model, resolved, amp_dtype, licence_notice(name, weights))
