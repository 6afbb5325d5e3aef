"""Ground-truth directories: what a synthetic scene (or a dataset converter) writes
and what ``laser-blender evaluate`` scores a run against.

Layout::

    GT/gt.json              {"width", "height", "fps", "num_frames",
                             "K": 3x3 intrinsics at footage resolution,
                             "frame_K": optional, N 3x3 per-frame intrinsics (a zoom),
                             "layers": {"<id>": "<name>"}, ...extra}
    GT/trajectory.tum       camera-to-world, timestamp = frame_index / fps
    GT/depth/d000123.npy    float32 (H, W) z-depth at footage resolution, 0 = invalid
    GT/layers/l000123.png   uint8 (H, W) scene-layer id per pixel (optional per frame)

Conventions are those of ``core.run.arrays``: OpenCV camera axes, camera-to-world poses.
``gt.json`` is written last, by :meth:`GroundTruthWriter.close`, so a directory
without it is an unfinished one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from core.errors import UserError
from core.run.files import RunDirError, write_json
from core.run.tum import format_tum, read_tum

GT_JSON = "gt.json"
TRAJECTORY = "trajectory.tum"
RESERVED_KEYS = ("width", "height", "fps", "num_frames", "K", "layers")
FRAME_K = "frame_K"  # optional per-frame intrinsics (a zooming lens)
_FRAME_TOLERANCE = 0.01  # timestamps * fps must be this close to an integer frame index


class GroundTruthError(UserError):
    """A ground-truth directory, or data handed to its writer, is missing or malformed."""


def depth_path(gt_dir: Path, index: int) -> Path:
    return Path(gt_dir) / "depth" / f"d{index:06d}.npy"


def layers_path(gt_dir: Path, index: int) -> Path:
    return Path(gt_dir) / "layers" / f"l{index:06d}.png"


def _intrinsics(K: Any, where: str) -> np.ndarray:
    try:
        K = np.asarray(K, np.float64)
    except (TypeError, ValueError):
        raise GroundTruthError(f"{where}: K must be a 3x3 matrix of numbers") from None
    if K.shape != (3, 3) or not np.isfinite(K).all() or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise GroundTruthError(f"{where}: K must be a finite 3x3 matrix with positive focal lengths")
    return K


class GroundTruthWriter:
    """Writes a ground-truth directory frame by frame; :meth:`close` writes ``gt.json``.

    Usable as a context manager, which closes it when the block succeeds.
    """

    def __init__(self, gt_dir: str | Path, width: int, height: int, fps: float, K: np.ndarray,
                 layers: dict[int, str], extra: dict[str, Any] | None = None):
        self.root = Path(gt_dir)
        if width <= 0 or height <= 0:
            raise GroundTruthError(f"{self.root}: width and height must be positive, got {width}x{height}")
        if not fps > 0:
            raise GroundTruthError(f"{self.root}: fps must be positive, got {fps}")
        if any(not 0 <= int(i) <= 255 for i in layers):
            raise GroundTruthError(f"{self.root}: layer ids must fit a uint8 PNG (0..255), got {sorted(layers)}")
        clash = sorted(set(extra or {}) & {*RESERVED_KEYS, FRAME_K})
        if clash:
            raise GroundTruthError(f"{self.root}: extra keys {clash} would overwrite gt.json fields")
        self.width, self.height, self.fps = int(width), int(height), float(fps)
        self.K = _intrinsics(K, str(self.root))
        self.layer_names = {int(i): str(name) for i, name in layers.items()}
        self.extra = dict(extra or {})
        self.frames: list[int] = []
        self.frame_K: list[np.ndarray] = []
        (self.root / "depth").mkdir(parents=True, exist_ok=True)
        (self.root / "layers").mkdir(exist_ok=True)
        (self.root / GT_JSON).unlink(missing_ok=True)
        (self.root / TRAJECTORY).write_text("")

    def add_frame(self, index: int, c2w: np.ndarray, depth: np.ndarray, layers: np.ndarray | None = None,
                  K: np.ndarray | None = None) -> None:
        """Write one frame.

        Args:
            index: source frame index, larger than every index added before.
            c2w: (4, 4) camera-to-world pose.
            depth: (H, W) z-depth at footage resolution, 0 where invalid.
            layers: optional (H, W) integer scene-layer ids in 0..255.
            K: optional (3, 3) intrinsics of this frame at footage resolution (a zoom); give it
                for every frame or for none.
        """
        index = int(index)
        if self.frames and index <= self.frames[-1]:
            raise GroundTruthError(f"{self.root}: frame {index} added after frame {self.frames[-1]}; "
                                   "indices must increase")
        c2w = np.asarray(c2w, np.float64)
        if c2w.shape != (4, 4) or not np.isfinite(c2w).all():
            raise GroundTruthError(f"{self.root}: frame {index} pose must be a finite (4, 4) matrix")
        shape = (self.height, self.width)
        depth = np.asarray(depth, np.float32)
        if depth.shape != shape:
            raise GroundTruthError(f"{self.root}: frame {index} depth has shape {depth.shape}, expected {shape}")
        np.save(depth_path(self.root, index), depth)
        if layers is not None:
            layers = np.asarray(layers)
            if layers.shape != shape:
                raise GroundTruthError(f"{self.root}: frame {index} layers have shape {layers.shape}, expected {shape}")
            if layers.size and (layers.min() < 0 or layers.max() > 255):
                raise GroundTruthError(f"{self.root}: frame {index} layer ids must be in 0..255")
            if not cv2.imwrite(str(layers_path(self.root, index)), layers.astype(np.uint8)):
                raise GroundTruthError(f"{self.root}: cannot write {layers_path(self.root, index)}")
        if self.frames and (K is not None) != bool(self.frame_K):
            raise GroundTruthError(f"{self.root}: frame {index}: give per-frame intrinsics for every frame or none")
        if K is not None:
            self.frame_K.append(_intrinsics(K, f"{self.root}: frame {index}"))
        with open(self.root / TRAJECTORY, "a") as f:
            f.write(format_tum(np.array([index / self.fps]), c2w[None]))
        self.frames.append(index)

    def close(self) -> None:
        """Write ``gt.json``; the directory is complete from here on."""
        write_json(self.root / GT_JSON, {
            "width": self.width, "height": self.height, "fps": self.fps,
            "num_frames": len(self.frames), "K": self.K.tolist(),
            "layers": {str(i): name for i, name in sorted(self.layer_names.items())},
            **({FRAME_K: np.stack(self.frame_K).tolist()} if self.frame_K else {}),
            **self.extra,
        })

    def __enter__(self) -> "GroundTruthWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()


@dataclass(frozen=True)
class GroundTruth:
    """A loaded ground-truth directory; per-frame depth and layers are read on demand.

    Attributes:
        root: the directory.
        width, height: footage size in pixels.
        fps: frame rate the trajectory timestamps use.
        K: (3, 3) intrinsics at footage resolution.
        frames: (N,) int64 source frame indices, increasing.
        poses: (N, 4, 4) float64 camera-to-world, row n for ``frames[n]``.
        layer_names: scene-layer id -> name.
        extra: the other fields of gt.json.
        frame_K: (N, 3, 3) float64 per-frame intrinsics at footage resolution (a zoom), row n
            for ``frames[n]``; None: ``K`` for every frame.
    """

    root: Path
    width: int
    height: int
    fps: float
    K: np.ndarray
    frames: np.ndarray
    poses: np.ndarray
    layer_names: dict[int, str]
    extra: dict[str, Any] = field(default_factory=dict)
    frame_K: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.frames)

    def _check_frame(self, index: int) -> None:
        pos = np.searchsorted(self.frames, index)
        if pos == len(self.frames) or self.frames[pos] != index:
            raise GroundTruthError(f"{self.root}: frame {index} is not in the ground truth")

    def depth(self, index: int) -> np.ndarray:
        """(H, W) float32 z-depth of frame ``index``, 0 where invalid."""
        self._check_frame(index)
        path = depth_path(self.root, index)
        try:
            depth = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise GroundTruthError(f"{path}: depth of frame {index} is missing") from None
        except (OSError, ValueError) as e:
            raise GroundTruthError(f"{path}: not a readable .npy depth map ({e})") from None
        if depth.shape != (self.height, self.width) or not np.issubdtype(depth.dtype, np.floating):
            raise GroundTruthError(f"{path}: expected float (H, W) = ({self.height}, {self.width}) depth, "
                                   f"got {depth.dtype} {depth.shape}")
        return depth.astype(np.float32, copy=False)

    def layers(self, index: int) -> np.ndarray | None:
        """(H, W) uint8 scene-layer ids of frame ``index``, or None when that frame has none."""
        self._check_frame(index)
        path = layers_path(self.root, index)
        if not path.exists():
            return None
        ids = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if ids is None or ids.dtype != np.uint8 or ids.shape != (self.height, self.width):
            raise GroundTruthError(f"{path}: expected a single-channel 8-bit {self.width}x{self.height} PNG")
        return ids

    @property
    def has_layers(self) -> bool:
        """Whether any frame has a scene-layer map."""
        folder = self.root / "layers"
        return folder.is_dir() and any(folder.glob("l*.png"))


def load_ground_truth(gt_dir: str | Path) -> GroundTruth:
    """Read ``gt.json`` and the trajectory of a ground-truth directory (depth stays on disk)."""
    root = Path(gt_dir)
    if not root.is_dir():
        raise GroundTruthError(f"{root}: ground-truth directory does not exist")
    meta_path = root / GT_JSON
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError:
        raise GroundTruthError(f"{root}: not a ground-truth directory (no {GT_JSON}; "
                               "an unfinished writer never closed it)") from None
    except json.JSONDecodeError as e:
        raise GroundTruthError(f"{meta_path}: not valid JSON ({e})") from None
    missing = [k for k in RESERVED_KEYS if k not in meta]
    if missing:
        raise GroundTruthError(f"{meta_path}: lacks {missing}")
    try:
        width, height, fps = int(meta["width"]), int(meta["height"]), float(meta["fps"])
        num_frames = int(meta["num_frames"])
        layer_names = {int(i): str(name) for i, name in dict(meta["layers"]).items()}
    except (TypeError, ValueError) as e:
        raise GroundTruthError(f"{meta_path}: width, height, num_frames must be integers, fps a number, "
                               f"layers an object of id -> name ({e})") from None
    if width <= 0 or height <= 0 or not fps > 0:
        raise GroundTruthError(f"{meta_path}: width, height and fps must be positive")
    K = _intrinsics(meta["K"], str(meta_path))
    try:
        times, poses = read_tum(root / TRAJECTORY)
    except RunDirError as e:
        raise GroundTruthError(str(e)) from None
    if len(times) != num_frames:
        raise GroundTruthError(f"{root / TRAJECTORY}: {len(times)} poses but gt.json says num_frames={num_frames}")
    exact = times * fps
    frames = np.round(exact).astype(np.int64)
    if np.abs(exact - frames).max(initial=0.0) > _FRAME_TOLERANCE or np.any(np.diff(frames) <= 0):
        raise GroundTruthError(f"{root / TRAJECTORY}: timestamps must be increasing frame_index / fps "
                               f"(fps={fps})")
    frame_K = None
    if FRAME_K in meta:
        frame_K = np.stack([_intrinsics(k, f"{meta_path}: {FRAME_K}[{n}]") for n, k in enumerate(meta[FRAME_K])]) \
            if isinstance(meta[FRAME_K], list) else None
        if frame_K is None or len(frame_K) != num_frames:
            raise GroundTruthError(f"{meta_path}: {FRAME_K} must list one 3x3 matrix per frame ({num_frames})")
    return GroundTruth(
        root=root, width=width, height=height, fps=fps, K=K, frames=frames, poses=poses,
        layer_names=layer_names, frame_K=frame_K,
        extra={k: v for k, v in meta.items() if k not in (*RESERVED_KEYS, FRAME_K)},
    )
