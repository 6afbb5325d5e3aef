"""The run directory: every path, the geometry rule, and the progressive writer.

Layout (documented for other tools in the README)::

    RUN/run.json                     RunManifest: source, settings, backbone, status, counts
    RUN/predictions/meta.json        PredictionsMeta: window, overlap, height, width, ...
    RUN/predictions/w00000.npz       raw backbone output per window (WindowPrediction)
    RUN/aligned/w00000.npz           registered frames each window adds (AlignedWindow)
    RUN/trajectory.tum               camera-to-world, one line per registered frame
    RUN/worker.log                   the worker's log (appended across resumes)
    RUN/metrics.json                 ``laser-blender evaluate``'s result
    RUN/scene.json                   SceneTransform: run world -> scene world (orientation, scale)
    RUN/solve.json                   SolveReport: the camera solve's error in footage pixels (core.run.solve)
    RUN/bundles/w00000.npz           sparse solve per window: track points, colours, observations (Bundles)

Every file is written atomically (:mod:`core.run.files`), so a reader polling a
growing run never sees a half-written window, and a crash or cancel loses nothing
that was finished.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Iterator

import numpy as np

from core.run.arrays import AlignedWindow, WindowPrediction
from core.run.files import (
    WINDOW_FILE,
    RunDirError,
    atomic_write,
    list_windows,
    read_model,
    read_npz,
    read_npz_array,
    window_name,
    write_model,
    write_npz,
)
from core.run.manifest import InputGeometry, PredictionsMeta, RunManifest, RunStatus
from core.run.scene_transform import SceneTransform
from core.run.solve import BUNDLE_DTYPES, Bundles, SolveReport
from core.run.tum import format_tum

PREDICTION_DTYPES = {"frames": np.int64, "points": np.float32, "poses": np.float32, "conf": np.float32,
                     "colors": np.uint8, "intrinsics": np.float32}
ALIGNED_DTYPES = {"frames": np.int64, "poses": np.float32, "K": np.float32, "depth": np.float32,
                  "conf": np.float32, "colors": np.uint8, "mask": bool, "depth_factor": np.float16,
                  "frame_K": np.float32}
"""On-disk dtype of each array; ``intrinsics``, ``mask``, ``depth_factor`` and ``frame_K`` (a zoom) are optional."""
ALIGNED_SCALARS = {"scale": 1.0, "path_offset": 0.0, "path_information": 0.0}
"""Scalars of an aligned window with the value a file without them (an older run) means."""
PREDICTION_KEYS = ("frames", "points", "poses", "conf", "colors")
ALIGNED_KEYS = ("frames", "poses", "K", "depth", "conf", "colors")
LEGACY_DEPTH_FACTOR = "layer_scale"  # the name runs written before 0.2 gave ``depth_factor``


def _to_disk(record: WindowPrediction | AlignedWindow, dtypes: dict[str, type]) -> dict[str, np.ndarray]:
    """The record's arrays in their on-disk dtypes (optional ones left out when absent)."""
    return {k: np.asarray(v, dtype) for k, dtype in dtypes.items() if (v := getattr(record, k)) is not None}


def _in_memory(data: dict[str, np.ndarray], dtypes: dict[str, type]) -> dict[str, np.ndarray | None]:
    """Arrays read from disk in their in-memory dtypes (float16 becomes float32); None where absent."""
    memory = {k: np.float32 if dtype is np.float16 else dtype for k, dtype in dtypes.items()}
    return {k: None if data.get(k) is None else data[k].astype(dtype, copy=False) for k, dtype in memory.items()}


# --------------------------------------------------------------------------- arrays <-> npz

def prediction_to_arrays(pred: WindowPrediction) -> dict[str, np.ndarray]:
    return _to_disk(pred, PREDICTION_DTYPES)


def load_prediction(path: Path) -> WindowPrediction:
    """Read one ``predictions/wNNNNN.npz``, validating keys, dtypes and shapes."""
    try:
        return WindowPrediction(**_in_memory(read_npz(path, PREDICTION_KEYS), PREDICTION_DTYPES))
    except ValueError as e:
        raise RunDirError(f"{path}: {e}") from None


def aligned_to_arrays(win: AlignedWindow) -> dict[str, np.ndarray]:
    return {**_to_disk(win, ALIGNED_DTYPES), **{k: np.float64(getattr(win, k)) for k in ALIGNED_SCALARS}}


def load_aligned(path: Path, index: int | None = None) -> AlignedWindow:
    """Read one ``aligned/wNNNNN.npz`` (also as written before ``depth_factor`` had its name).

    ``index`` defaults to the number in the file name.
    """
    path = Path(path)
    if index is None:
        match = WINDOW_FILE.match(path.name)
        if match is None:
            raise RunDirError(f"{path}: not a window file (expected a name like w00000.npz)")
        index = int(match.group(1))
    data = read_npz(path, ALIGNED_KEYS)
    data.setdefault("depth_factor", data.get(LEGACY_DEPTH_FACTOR))
    arrays = _in_memory(data, ALIGNED_DTYPES)
    if arrays["mask"] is None:
        arrays["mask"] = np.isfinite(arrays["depth"]) & (arrays["depth"] > 0)
    try:
        return AlignedWindow(index=index, **{k: float(data.get(k, default)) for k, default in ALIGNED_SCALARS.items()},
                             **arrays)
    except ValueError as e:
        raise RunDirError(f"{path}: {e}") from None


# --------------------------------------------------------------------------- directories

class PredictionsDir:
    """A ``predictions/`` directory: ``meta.json`` plus one ``wNNNNN.npz`` per window (ours or another tool's)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.meta_path = self.path / "meta.json"

    def read_meta(self) -> PredictionsMeta:
        return read_model(self.meta_path, PredictionsMeta)

    def write_meta(self, meta: PredictionsMeta) -> None:
        write_model(self.meta_path, meta)

    def window_path(self, index: int) -> Path:
        return self.path / window_name(index)

    def windows(self) -> list[tuple[int, Path]]:
        return list_windows(self.path)

    def __iter__(self) -> Iterator[tuple[int, WindowPrediction]]:
        for index, path in self.windows():
            yield index, load_prediction(path)


class RunDir:
    """A run directory: owns every path in it and the rules for reading it."""

    def __init__(self, path: Path):
        self.root = Path(path)
        self.manifest_path = self.root / "run.json"
        self.predictions = PredictionsDir(self.root / "predictions")
        self.aligned_dir = self.root / "aligned"
        self.trajectory_path = self.root / "trajectory.tum"
        self.log_path = self.root / "worker.log"
        self.metrics_path = self.root / "metrics.json"
        self.scene_path = self.root / "scene.json"
        self.solve_path = self.root / "solve.json"
        self.bundles_dir = self.root / "bundles"

    @property
    def name(self) -> str:
        return self.root.resolve().name

    def is_run(self) -> bool:
        """True when ``run.json`` exists."""
        return self.manifest_path.is_file()

    def holds_run(self) -> bool:
        """True when any file of a run is here (run.json, windows, meta.json, trajectory)."""
        return (self.is_run() or self.trajectory_path.exists() or self.predictions.meta_path.exists()
                or bool(self.aligned_windows()) or bool(self.predictions.windows()))

    def describe(self) -> str:
        """A few words on what the run directory holds: 'a complete run of 4 windows'."""
        windows = len(self.aligned_windows())
        try:
            status = self.read_manifest().status.value
        except RunDirError:
            status = "unreadable"
        return f"a {status} run of {windows} registered window{'s' * (windows != 1)}"

    def clear(self, keep_predictions: bool = False) -> None:
        """Delete this run's own files (never anything else in the folder; ``worker.log`` is kept).

        With ``keep_predictions`` the raw predictions stay (they are the input of an in-place ``align``).
        """
        files = [path for _, path in self.aligned_windows()] + [path for _, path in list_windows(self.bundles_dir)]
        if not keep_predictions:
            files += [path for _, path in self.predictions.windows()] + [self.predictions.meta_path]
        for path in [*files, *self.temporaries(), self.manifest_path, self.trajectory_path, self.metrics_path,
                     self.scene_path, self.solve_path]:
            path.unlink(missing_ok=True)

    def scene_transform(self) -> SceneTransform:
        """``scene.json`` (run world -> scene world). When absent: the first-camera anchoring
        (:meth:`SceneTransform.first_camera` of the first registered frame), or the identity
        while no window is registered."""
        if self.scene_path.exists():
            return read_model(self.scene_path, SceneTransform)
        first = self.first_pose()
        return SceneTransform.identity() if first is None else SceneTransform.first_camera(first)

    def first_pose(self) -> np.ndarray | None:
        """(4, 4) camera-to-world pose of the run's first registered frame; None before any window."""
        windows = self.aligned_windows()
        return None if not windows else read_npz_array(windows[0][1], "poses")[0].astype(np.float64)

    def write_scene_transform(self, transform: SceneTransform) -> None:
        write_model(self.scene_path, transform)

    def temporaries(self) -> list[Path]:
        """Temporary files of writes a killed process left behind (``.w00003.npz.x1y2.tmp``)."""
        folders = (self.root, self.predictions.path, self.aligned_dir, self.bundles_dir)
        return [p for folder in folders if folder.is_dir() for p in folder.glob(".*.tmp") if p.is_file()]

    def read_manifest(self) -> RunManifest:
        """``run.json``, with a clear error when this is not a run directory."""
        if not self.root.is_dir():
            raise RunDirError(f"{self.root} is not a directory")
        if not self.is_run():
            raise RunDirError(f"{self.root} is not a laser-blender run directory (no run.json)")
        return read_model(self.manifest_path, RunManifest)

    def geometry(self, footage: tuple[int, int] | None = None) -> InputGeometry:
        """How prediction pixels map to footage pixels.

        The geometry recorded in run.json, else in predictions/meta.json; a run that
        recorded none (written by another tool) is a plain resize of ``footage``
        (W, H) when given, else prediction pixels are footage pixels.
        """
        manifest = self.read_manifest()
        if manifest.geometry is not None:
            return manifest.geometry
        meta = self.predictions.read_meta()
        if meta.geometry is not None:
            return meta.geometry
        size = (meta.width, meta.height)
        return InputGeometry.resize_only(footage or size, size)

    def fps(self) -> float | None:
        """Frame rate of the source: run.json's, else meta.json's, else None."""
        manifest = self.read_manifest()
        if manifest.source.fps:
            return manifest.source.fps
        return self.predictions.read_meta().fps if self.predictions.meta_path.exists() else None

    def aligned_path(self, index: int) -> Path:
        return self.aligned_dir / window_name(index)

    def aligned_windows(self) -> list[tuple[int, Path]]:
        return list_windows(self.aligned_dir)

    def load_aligned(self, index: int) -> AlignedWindow:
        return load_aligned(self.aligned_path(index), index)

    def iter_aligned(self) -> Iterator[AlignedWindow]:
        for index, path in self.aligned_windows():
            yield load_aligned(path, index)

    def read_solve(self) -> SolveReport | None:
        """solve.json, or None when the run has no camera solve."""
        return read_model(self.solve_path, SolveReport) if self.solve_path.exists() else None

    def bundle_windows(self) -> list[tuple[int, Path]]:
        """(index, path) of each window's bundles file on disk, in window order."""
        return list_windows(self.bundles_dir)

    def load_bundles(self, index: int) -> Bundles:
        """Window ``index``'s sparse solve."""
        return Bundles(**read_npz(self.bundles_dir / window_name(index), tuple(BUNDLE_DTYPES)))

    def window_bundles(self) -> Iterator[tuple[int, Bundles]]:
        """Each window's sparse solve on disk, in window order."""
        for index, path in list_windows(self.bundles_dir):
            yield index, Bundles(**read_npz(path, tuple(BUNDLE_DTYPES)))

    def read_bundles(self) -> Bundles | None:
        """The sparse solve of every window written so far (one set of points), or None when absent."""
        parts = [bundles for _, bundles in self.window_bundles()]
        return Bundles.concatenate(parts) if parts else None

    def rewrite_trajectory(self, fps: float | None) -> None:
        """Rewrite trajectory.tum from the aligned windows on disk (used when resuming)."""
        lines = "".join(_tum_lines(win, fps) for win in self.iter_aligned())
        atomic_write(self.trajectory_path, lambda f: f.write(lines.encode()))


def _tum_lines(win: AlignedWindow, fps: float | None) -> str:
    times = win.frames / fps if fps else win.frames.astype(np.float64)
    return format_tum(times, win.poses)


# --------------------------------------------------------------------------- writer

class RunWriter:
    """Writes a run directory progressively; every method leaves it consistent on disk."""

    def __init__(self, run: RunDir, fps: float | None = None):
        self.run = run
        self.fps = fps
        self.manifest = RunManifest()
        run.root.mkdir(parents=True, exist_ok=True)

    def start(self, manifest: RunManifest, resume: bool = False) -> None:
        """Write run.json with status running; on resume keep the counts on disk, else start an empty trajectory."""
        for leftover in self.run.temporaries():  # only one writer owns a run: these are a killed one's
            leftover.unlink(missing_ok=True)
        if not resume:
            atomic_write(self.run.trajectory_path, lambda f: None)
        self.manifest = manifest.model_copy(update={"status": RunStatus.running, "started_at": time.time(),
                                                    "finished_at": None, "error": None})
        self._save()

    def write_meta(self, meta: PredictionsMeta) -> None:
        self.run.predictions.write_meta(meta)

    def write_prediction(self, index: int, pred: WindowPrediction) -> Path:
        path = self.run.predictions.window_path(index)
        write_npz(path, prediction_to_arrays(pred))
        return path

    def write_aligned(self, win: AlignedWindow) -> Path:
        """Write an aligned window, append its trajectory lines, bump run.json's counts."""
        path = self.run.aligned_path(win.index)
        write_npz(path, aligned_to_arrays(win))
        with open(self.run.trajectory_path, "a") as f:
            f.write(_tum_lines(win, self.fps))
            f.flush()
            os.fsync(f.fileno())
        self.manifest = self.manifest.model_copy(update={
            "windows_done": win.index + 1,
            "frames_done": self.manifest.frames_done + len(win),
            "last_frame": int(win.frames[-1]) if len(win) else self.manifest.last_frame,
        })
        self._save()
        return path

    def write_solve(self, index: int, bundles: Bundles, report: SolveReport) -> None:
        """Write window ``index``'s sparse solve, then solve.json (the whole run's figures so far)."""
        write_npz(self.run.bundles_dir / window_name(index), bundles.to_arrays())
        write_model(self.run.solve_path, report)

    def finish(self, status: RunStatus, error: str | None = None) -> None:
        self.manifest = self.manifest.model_copy(update={"status": status, "finished_at": time.time(),
                                                         "error": error})
        self._save()

    def _save(self) -> None:
        write_model(self.run.manifest_path, self.manifest)


def mark_failed(run: RunDir, message: str) -> None:
    """Record a failure in run.json, creating it if the engine never started."""
    manifest = run.read_manifest() if run.is_run() else RunManifest()
    write_model(run.manifest_path, manifest.model_copy(update={
        "status": RunStatus.failed, "error": message, "finished_at": time.time()}))
