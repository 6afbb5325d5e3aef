"""The run directory: what a reconstruction writes, a window at a time.

Layout (documented for other tools in the README)::

    RUN/run.json                     source, settings, backbone, status, windows done
    RUN/predictions/meta.json        {"window", "overlap", "height", "width", ...}
    RUN/predictions/w00000.npz       raw backbone output per window
    RUN/aligned/w00000.npz           registered frames each window adds
    RUN/trajectory.tum               camera-to-world, one line per registered frame

Every file is written to a temporary name and renamed into place, so a reader
polling a growing run (the Blender add-on) never sees a half-written window, and a
crash or cancel loses nothing that was finished.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from core.types import AlignedWindow, WindowPrediction

STATUSES = ("running", "complete", "cancelled", "failed")
_WINDOW_FILE = re.compile(r"^w(\d{5,})\.npz$")


class RunDirError(RuntimeError):
    """A run or predictions directory is missing, incomplete or malformed."""


def window_name(index: int) -> str:
    return f"w{index:05d}.npz"


def _atomic_write_bytes(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically."""
    payload = (json.dumps(data, indent=2, sort_keys=False) + "\n").encode()
    _atomic_write_bytes(Path(path), lambda f: f.write(payload))


def read_json(path: Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise RunDirError(f"{path} does not exist") from None
    except json.JSONDecodeError as e:
        raise RunDirError(f"{path} is not valid JSON: {e}") from None


def write_npz(path: Path, arrays: dict[str, np.ndarray], compress: bool = False) -> None:
    """Write an .npz atomically (uncompressed by default: writing is on the hot path)."""
    saver = np.savez_compressed if compress else np.savez
    _atomic_write_bytes(Path(path), lambda f: saver(f, **arrays))


def list_windows(directory: Path) -> list[tuple[int, Path]]:
    """Sorted (index, path) of the ``wNNNNN.npz`` files in ``directory``."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = []
    for p in directory.iterdir():
        m = _WINDOW_FILE.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)


def read_npz(path: Path, required: tuple[str, ...]) -> dict[str, np.ndarray]:
    """All arrays of an .npz file (no pickles), with a clear error when keys are missing."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in required if k not in z.files]
            if missing:
                raise RunDirError(f"{path} lacks arrays {missing}; expected {list(required)}")
            return {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise RunDirError(f"{path} is not a readable .npz file: {e}") from None


# --------------------------------------------------------------------------- predictions

PREDICTION_KEYS = ("frames", "points", "poses", "conf", "colors")


def prediction_to_arrays(pred: WindowPrediction) -> dict[str, np.ndarray]:
    arrays = {
        "frames": np.asarray(pred.frames, np.int64),
        "points": np.asarray(pred.points, np.float32),
        "poses": np.asarray(pred.poses, np.float32),
        "conf": np.asarray(pred.conf, np.float32),
        "colors": np.asarray(pred.colors, np.uint8),
    }
    if pred.intrinsics is not None:
        arrays["intrinsics"] = np.asarray(pred.intrinsics, np.float32)
    return arrays


def load_prediction(path: Path) -> WindowPrediction:
    """Read one ``predictions/wNNNNN.npz``, validating keys, dtypes and shapes."""
    data = read_npz(path, PREDICTION_KEYS)
    try:
        return WindowPrediction(
            frames=data["frames"].astype(np.int64),
            points=data["points"].astype(np.float32, copy=False),
            poses=data["poses"].astype(np.float32, copy=False),
            conf=data["conf"].astype(np.float32, copy=False),
            colors=data["colors"].astype(np.uint8, copy=False),
            intrinsics=data.get("intrinsics"),
        )
    except ValueError as e:
        raise RunDirError(f"{path}: {e}") from None


@dataclass
class PredictionsMeta:
    window: int
    overlap: int
    height: int
    width: int
    extra: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"window": self.window, "overlap": self.overlap, "height": self.height,
                "width": self.width, **self.extra}


def read_predictions_meta(pred_dir: Path) -> PredictionsMeta:
    d = read_json(Path(pred_dir) / "meta.json")
    try:
        meta = PredictionsMeta(
            window=int(d["window"]), overlap=int(d["overlap"]),
            height=int(d["height"]), width=int(d["width"]),
            extra={k: v for k, v in d.items() if k not in ("window", "overlap", "height", "width")},
        )
    except (KeyError, TypeError, ValueError) as e:
        raise RunDirError(
            f"{pred_dir}/meta.json must hold integers window, overlap, height, width ({e})"
        ) from None
    if not 0 <= meta.overlap < meta.window:
        raise RunDirError(f"{pred_dir}/meta.json: need 0 <= overlap < window, got "
                          f"window={meta.window} overlap={meta.overlap}")
    return meta


def iter_predictions(pred_dir: Path) -> Iterator[tuple[int, WindowPrediction]]:
    for index, path in list_windows(pred_dir):
        yield index, load_prediction(path)


# --------------------------------------------------------------------------- aligned

ALIGNED_KEYS = ("frames", "poses", "K", "depth", "conf", "colors")


def aligned_to_arrays(win: AlignedWindow) -> dict[str, np.ndarray]:
    return {
        "frames": np.asarray(win.frames, np.int64),
        "poses": np.asarray(win.poses, np.float32),
        "K": np.asarray(win.K, np.float32),
        "depth": np.asarray(win.depth, np.float32),
        "conf": np.asarray(win.conf, np.float32),
        "colors": np.asarray(win.colors, np.uint8),
        "mask": np.asarray(win.mask, bool),
        "scale": np.float64(win.scale),
        **{k: np.asarray(v) for k, v in win.extras.items()},
    }


def load_aligned(path: Path, index: int | None = None) -> AlignedWindow:
    """Read one ``aligned/wNNNNN.npz``."""
    path = Path(path)
    if index is None:
        m = _WINDOW_FILE.match(path.name)
        index = int(m.group(1)) if m else -1
    d = read_npz(path, ALIGNED_KEYS)
    depth = d.pop("depth").astype(np.float32, copy=False)
    mask = d.pop("mask", None)
    if mask is None:
        mask = np.isfinite(depth) & (depth > 0)
    known = {"frames", "poses", "K", "conf", "colors", "scale"}
    return AlignedWindow(
        index=index,
        frames=d["frames"].astype(np.int64),
        poses=d["poses"].astype(np.float32, copy=False),
        K=d["K"].astype(np.float32, copy=False),
        depth=depth,
        conf=d["conf"].astype(np.float32, copy=False),
        colors=d["colors"].astype(np.uint8, copy=False),
        mask=mask.astype(bool, copy=False),
        scale=float(d.get("scale", 1.0)),
        extras={k: v for k, v in d.items() if k not in known},
    )


def iter_aligned(run_dir: Path) -> Iterator[AlignedWindow]:
    for index, path in list_windows(Path(run_dir) / "aligned"):
        yield load_aligned(path, index)


# --------------------------------------------------------------------------- trajectory

def rotation_to_quaternion(R: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotation matrices -> (..., 4) unit quaternions (qx, qy, qz, qw), qw >= 0."""
    R = np.asarray(R, np.float64)
    m00, m11, m22 = R[..., 0, 0], R[..., 1, 1], R[..., 2, 2]
    # Four candidate solutions; pick the numerically largest per matrix.
    q = np.stack([
        np.stack([1 + m00 - m11 - m22, R[..., 0, 1] + R[..., 1, 0], R[..., 0, 2] + R[..., 2, 0], R[..., 2, 1] - R[..., 1, 2]], -1),
        np.stack([R[..., 0, 1] + R[..., 1, 0], 1 - m00 + m11 - m22, R[..., 1, 2] + R[..., 2, 1], R[..., 0, 2] - R[..., 2, 0]], -1),
        np.stack([R[..., 0, 2] + R[..., 2, 0], R[..., 1, 2] + R[..., 2, 1], 1 - m00 - m11 + m22, R[..., 1, 0] - R[..., 0, 1]], -1),
        np.stack([R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0], R[..., 1, 0] - R[..., 0, 1], 1 + m00 + m11 + m22], -1),
    ], -2)  # (..., 4 candidates, 4)
    diag = np.stack([q[..., 0, 0], q[..., 1, 1], q[..., 2, 2], q[..., 3, 3]], -1)
    best = np.argmax(diag, axis=-1)
    out = np.take_along_axis(q, best[..., None, None].repeat(4, -1), axis=-2)[..., 0, :]
    out /= np.linalg.norm(out, axis=-1, keepdims=True)
    return np.where(out[..., 3:4] < 0, -out, out)


def quaternion_to_rotation(q: np.ndarray) -> np.ndarray:
    """(..., 4) quaternions (qx, qy, qz, qw) -> (..., 3, 3) rotation matrices."""
    q = np.asarray(q, np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    x, y, z, w = np.moveaxis(q, -1, 0)
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
        np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
        np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
    ], -2)


def format_tum(timestamps: np.ndarray, poses: np.ndarray) -> str:
    """TUM lines ``timestamp tx ty tz qx qy qz qw`` for (N,) times and (N, 4, 4) camera-to-world."""
    poses = np.asarray(poses, np.float64)
    q = rotation_to_quaternion(poses[:, :3, :3])
    t = poses[:, :3, 3]
    rows = np.concatenate([np.asarray(timestamps, np.float64)[:, None], t, q], axis=1)
    return "".join(" ".join(f"{v:.9g}" for v in row) + "\n" for row in rows)


def read_tum(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a TUM trajectory -> ((N,) timestamps, (N, 4, 4) camera-to-world)."""
    path = Path(path)
    try:
        rows = [line.split() for line in path.read_text().splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    except FileNotFoundError:
        raise RunDirError(f"{path} does not exist") from None
    try:
        data = np.array(rows, dtype=np.float64)
    except ValueError:
        raise RunDirError(f"{path} is not a TUM trajectory (8 numbers per line)") from None
    if data.ndim != 2 or data.shape[1] != 8:
        raise RunDirError(f"{path} is not a TUM trajectory (8 numbers per line)")
    poses = np.tile(np.eye(4), (len(data), 1, 1))
    poses[:, :3, :3] = quaternion_to_rotation(data[:, 4:8])
    poses[:, :3, 3] = data[:, 1:4]
    return data[:, 0], poses


# --------------------------------------------------------------------------- writer

class RunWriter:
    """Writes a run directory progressively; every method leaves it consistent on disk."""

    def __init__(self, run_dir: Path, *, fps: float | None = None):
        self.root = Path(run_dir)
        self.fps = fps
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "predictions").mkdir(exist_ok=True)
        (self.root / "aligned").mkdir(exist_ok=True)
        self._run: dict[str, Any] = {}

    @property
    def predictions_dir(self) -> Path:
        return self.root / "predictions"

    def start(self, info: dict[str, Any], resume: bool = False) -> None:
        """Write run.json with status running; ``info`` holds source, settings, backbone."""
        if resume and (self.root / "run.json").exists():
            self._run = read_json(self.root / "run.json")
            self._run.update(info)
        else:
            self._run = {**info, "windows_done": 0, "frames_done": 0}
            (self.root / "trajectory.tum").write_text("")
        self._run.update(status="running", started_at=time.time())
        self._run.pop("error", None)
        write_json(self.root / "run.json", self._run)

    def write_meta(self, meta: dict[str, Any]) -> None:
        write_json(self.predictions_dir / "meta.json", meta)

    def write_prediction(self, index: int, pred: WindowPrediction) -> Path:
        path = self.predictions_dir / window_name(index)
        write_npz(path, prediction_to_arrays(pred))
        return path

    def write_aligned(self, win: AlignedWindow) -> Path:
        """Write an aligned window, append its trajectory lines, bump run.json."""
        path = self.root / "aligned" / window_name(win.index)
        write_npz(path, aligned_to_arrays(win))
        times = win.frames / self.fps if self.fps else win.frames.astype(np.float64)
        with open(self.root / "trajectory.tum", "a") as f:
            f.write(format_tum(times, win.poses))
            f.flush()
            os.fsync(f.fileno())
        self._run["windows_done"] = win.index + 1
        self._run["frames_done"] = int(self._run.get("frames_done", 0)) + len(win)
        self._run["last_frame"] = int(win.frames[-1]) if len(win) else self._run.get("last_frame")
        write_json(self.root / "run.json", self._run)
        return path

    def update(self, **fields: Any) -> None:
        self._run.update(fields)
        write_json(self.root / "run.json", self._run)

    def finish(self, status: str, error: str | None = None) -> None:
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}")
        self._run.update(status=status, finished_at=time.time())
        if error:
            self._run["error"] = error
        write_json(self.root / "run.json", self._run)


def read_run(run_dir: Path) -> dict[str, Any]:
    """run.json of a run directory, with a clear error when it is not one."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir} is not a directory")
    if not (run_dir / "run.json").exists():
        raise RunDirError(f"{run_dir} is not a laser-blender run directory (no run.json)")
    return read_json(run_dir / "run.json")


def rewrite_trajectory(run_dir: Path, fps: float | None) -> None:
    """Rewrite trajectory.tum from the aligned windows on disk (used when resuming)."""
    run_dir = Path(run_dir)
    lines = []
    for win in iter_aligned(run_dir):
        times = win.frames / fps if fps else win.frames.astype(np.float64)
        lines.append(format_tum(times, win.poses))
    _atomic_write_bytes(run_dir / "trajectory.tum", lambda f: f.write("".join(lines).encode()))
