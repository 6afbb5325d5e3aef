"""The streaming engine: frames -> overlapping windows -> backbone -> registration -> run directory.

Inference and registration run in two threads joined by a bounded queue: when
registration (or the disk) is slower than the network, the producer blocks instead
of piling predictions up in memory. Each finished window is on disk before the next
is started, so a crash or cancel loses nothing that was finished, and ``resume``
continues from the last finished window.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Protocol

import numpy as np

from core import events
from core.backbones.base import Backbone, InputGeometry
from core.keyframes import KeyframeMemory
from core.registration import DepthRefiner, Reference, register_window
from core.rundir import (
    RunDirError, RunWriter, iter_aligned, iter_predictions, read_predictions_meta, rewrite_trajectory,
)
from core.types import AlignedWindow, LayerAlignInput

log = logging.getLogger(__name__)

EventSink = Callable[[events.Event], None]


@dataclass
class EngineConfig:
    """Streaming settings.

    Attributes:
        window: frames per window.
        overlap: frames shared by consecutive windows (0 <= overlap < window; >= 1 to register).
        conf_keep: share of most confident pixels kept per frame.
        layer_align: run layer-wise scale alignment after the Sim(3).
        focal_px: known focal length in footage pixels (overrides the estimate).
        queue_size: predicted windows allowed to wait for registration.
        save_predictions: keep the raw backbone output in ``predictions/``.
    """

    window: int = 30
    overlap: int = 10
    conf_keep: float = 0.5
    layer_align: bool = True
    focal_px: float | None = None
    queue_size: int = 2
    save_predictions: bool = True

    def __post_init__(self) -> None:
        if self.window < 2:
            raise ValueError(f"window must be at least 2 frames, got {self.window}")
        if not 1 <= self.overlap < self.window:
            raise ValueError(f"overlap must be between 1 and window-1 ({self.window - 1}), got {self.overlap}")
        if not 0 < self.conf_keep <= 1:
            raise ValueError(f"conf_keep must be in (0, 1], got {self.conf_keep}")
        if self.focal_px is not None and self.focal_px <= 0:
            raise ValueError(f"focal length must be positive, got {self.focal_px}")

    @property
    def step(self) -> int:
        return self.window - self.overlap


class FrameSourceLike(Protocol):
    """What the engine needs of a frame source (see ``core.frames``)."""

    info: Any  # .width, .height, .fps, .num_frames, .path

    def frames(self, geometry: InputGeometry | None = None, skip: int = 0) -> Iterator[tuple[int, np.ndarray]]: ...


def count_windows(num_frames: int, window: int, overlap: int) -> int:
    """Number of windows a stream of ``num_frames`` frames produces."""
    if num_frames <= 0:
        return 0
    if num_frames <= window:
        return 1
    step = window - overlap
    return 1 + -(-(num_frames - window) // step)


def iter_windows(items: Iterable[tuple[int, np.ndarray]], window: int, overlap: int,
                 first_window: int = 0) -> Iterator[tuple[int, list[tuple[int, np.ndarray]]]]:
    """Group a frame stream into overlapping windows.

    Window k holds stream positions ``[k * step, k * step + window)`` with
    ``step = window - overlap``; the last window holds the overlap plus whatever is
    left. When resuming at ``first_window``, ``items`` starts at that window's first
    frame (position ``first_window * step``; see ``FrameSource.frames(skip=...)``).
    """
    step = window - overlap
    buf: list[tuple[int, np.ndarray]] = []
    index = first_window
    emitted = False
    for item in items:
        buf.append(item)
        if len(buf) == window:
            yield index, buf
            index, emitted = index + 1, True
            buf = buf[step:]
    if len(buf) > (overlap if emitted or first_window > 0 else 0):
        yield index, buf


def layer_refiner(config: EngineConfig) -> DepthRefiner | None:
    """The layer-wise scale alignment hook for ``config`` (None when switched off)."""
    if not config.layer_align:
        return None
    from core.layer_align import align_layers

    def refine(inp: LayerAlignInput) -> np.ndarray:
        return align_layers(inp).depth

    return refine


# --------------------------------------------------------------------------- consumer

@dataclass
class _State:
    """Registration state carried from window to window.

    ``memory`` holds keyframes of the registered frames for layer alignment (None
    when it is off).
    """

    K: np.ndarray | None = None
    reference: Reference | None = None
    frames_done: int = 0
    memory: KeyframeMemory | None = None


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


_END = object()


def _register_stream(next_item: Callable[[], Any], writer: RunWriter, config: EngineConfig, state: _State,
                     focal_pred: float | None, emit: EventSink, cancel: threading.Event,
                     total_frames: int | None) -> str:
    """Register windows as ``next_item()`` hands them over and write them.

    ``next_item`` returns ``(index, prediction)``, ``_END``, a ``_Failure``, or None
    when cancelled while waiting. Returns "complete" or "cancelled".
    """
    refine = layer_refiner(config)
    if refine is None:
        state.memory = None
    elif state.memory is None:
        state.memory = KeyframeMemory()
    t0, done_here = time.perf_counter(), 0
    while not cancel.is_set():
        item = next_item()
        if item is None:
            break
        if item is _END:
            return "complete"
        if isinstance(item, _Failure):
            raise item.error
        index, pred = item
        result, state.K = register_window(
            index, pred, overlap=config.overlap, K=state.K, reference=state.reference,
            conf_keep=config.conf_keep, focal_px=focal_pred, refine=refine, memory=state.memory)
        path = writer.write_aligned(result.window)
        state.reference = result.reference
        if state.memory is not None:
            state.memory.add_window(result.window)
        state.frames_done += len(result.window)
        done_here += len(result.window)
        emit(events.WindowDone(index=index, frames=result.window.frames.tolist(), path=path))
        fps = done_here / max(time.perf_counter() - t0, 1e-9)
        eta = (max(total_frames - state.frames_done, 0) / fps) if total_frames and fps > 0 else None
        emit(events.Progress(frames_done=state.frames_done, total_frames=total_frames, fps=fps, eta_s=eta))
    return "cancelled"


def _queue_reader(q: "queue.Queue", cancel: threading.Event, writer: RunWriter,
                  save_predictions: bool) -> Callable[[], Any]:
    """``next_item`` for the inference queue: waits, but gives up (None) on cancel."""
    def next_item():
        while not cancel.is_set():
            try:
                item = q.get(timeout=0.05)
            except queue.Empty:
                continue
            if save_predictions and isinstance(item, tuple):
                writer.write_prediction(*item)
            return item
        return None

    return next_item


def _serialised(sink: EventSink | None) -> EventSink:
    """``sink`` behind a lock: the inference and registration threads both report events."""
    if sink is None:
        return lambda event: None
    lock = threading.Lock()

    def emit(event: events.Event) -> None:
        with lock:
            sink(event)

    return emit


def _producer(source: FrameSourceLike, geometry: InputGeometry, backbone: Backbone, config: EngineConfig,
              out: "queue.Queue", stop: threading.Event, first_window: int, emit: EventSink) -> None:
    def put(item) -> bool:
        while not stop.is_set():
            try:
                out.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    try:
        stream = source.frames(geometry, skip=first_window * config.step)
        for index, items in iter_windows(stream, config.window, config.overlap, first_window):
            if stop.is_set():
                return
            frames = np.array([i for i, _ in items], dtype=np.int64)
            images = np.stack([img for _, img in items])
            emit(events.Predicting(index=index, first_frame=int(frames[0]), last_frame=int(frames[-1])))
            if not put((index, backbone.predict(images, frames))):
                return
        put(_END)
    except BaseException as e:  # handed to the consumer, which re-raises it
        put(_Failure(e))


# --------------------------------------------------------------------------- resume

def _load_resume_state(run_dir: Path, overlap: int) -> tuple[_State, int]:
    """State after the last finished window on disk, and the next window index."""
    windows: list[AlignedWindow] = list(iter_aligned(run_dir))
    if not windows:
        return _State(), 0
    for expected, win in enumerate(windows):
        if win.index != expected:
            raise RunDirError(f"{run_dir}/aligned is missing window {expected}; cannot resume")
    tail: list[AlignedWindow] = []
    count = 0
    for win in reversed(windows):
        tail.insert(0, win)
        count += len(win)
        if count >= overlap:
            break
    cat = lambda name: np.concatenate([getattr(w, name) for w in tail])[-overlap:]  # noqa: E731
    depth = cat("depth")
    sim3_depth = None
    if all("layer_scale" in w.extras for w in tail):
        factor = np.concatenate([w.extras["layer_scale"] for w in tail])[-overlap:].astype(np.float32)
        sim3_depth = depth / np.where(factor > 0, factor, 1.0)
    ref = Reference(frames=cat("frames"), poses=cat("poses").astype(np.float64),
                    depth=depth, mask=cat("mask"), sim3_depth=sim3_depth)
    memory = KeyframeMemory()
    for win in windows:
        memory.add_window(win)
    state = _State(K=windows[-1].K.astype(np.float64), reference=ref,
                   frames_done=sum(len(w) for w in windows), memory=memory)
    return state, windows[-1].index + 1


# --------------------------------------------------------------------------- entry points

def _focal_in_prediction_pixels(config: EngineConfig, geometry: InputGeometry) -> float | None:
    if config.focal_px is None:
        return None
    return config.focal_px * geometry.resized[0] / geometry.footage[0]


def reconstruct(source: FrameSourceLike, backbone: Backbone, run_dir: Path, config: EngineConfig, *,
                on_event: EventSink | None = None, cancel: threading.Event | None = None,
                resume: bool = False, run_info: dict[str, Any] | None = None) -> str:
    """Stream ``source`` through ``backbone`` and write a run directory.

    Returns "complete" or "cancelled" (run.json says the same). On an error run.json
    is marked failed (keeping every finished window) and the error is re-raised.
    """
    run_dir = Path(run_dir)
    emit = _serialised(on_event)
    cancel = cancel or threading.Event()
    info = source.info
    geometry = backbone.input_geometry((info.width, info.height))
    writer = RunWriter(run_dir, fps=info.fps)

    state, first_window = _State(), 0
    if resume:
        if (run_dir / "predictions" / "meta.json").exists():
            meta = read_predictions_meta(run_dir / "predictions")
            if (meta.window, meta.overlap) != (config.window, config.overlap):
                raise RunDirError(f"cannot resume {run_dir}: it was made with window {meta.window}, "
                                  f"overlap {meta.overlap}; pass the same values")
        state, first_window = _load_resume_state(run_dir, config.overlap)
        rewrite_trajectory(run_dir, info.fps)

    w, h = geometry.size
    meta = {"window": config.window, "overlap": config.overlap, "height": h, "width": w,
            "fps": info.fps, "geometry": geometry.as_dict(), "backbone": getattr(backbone, "name", "?")}
    writer.write_meta(meta)
    writer.start({
        "source": {"path": str(info.path), "width": info.width, "height": info.height,
                   "fps": info.fps, "num_frames": info.num_frames},
        "settings": dataclasses.asdict(config),
        "backbone": getattr(backbone, "name", type(backbone).__name__),
        "geometry": geometry.as_dict(),
        **(run_info or {}),
    }, resume=resume and first_window > 0)
    if resume and first_window > 0:
        writer.update(windows_done=first_window, frames_done=state.frames_done)
    emit(events.Started(total_frames=info.num_frames, fps=info.fps, width=info.width,
                        height=info.height, pred_width=w, pred_height=h))

    q: queue.Queue = queue.Queue(maxsize=max(1, config.queue_size))
    stop = threading.Event()
    producer = threading.Thread(target=_producer, name="laser-inference", daemon=True,
                                args=(source, geometry, backbone, config, q, stop, first_window, emit))
    producer.start()
    try:
        status = _register_stream(_queue_reader(q, cancel, writer, config.save_predictions), writer, config,
                                  state, _focal_in_prediction_pixels(config, geometry), emit, cancel,
                                  info.num_frames)
    except BaseException as e:
        stop.set()
        writer.finish("failed", error=f"{type(e).__name__}: {e}")
        raise
    finally:
        stop.set()
        producer.join(timeout=0.5 if cancel.is_set() else 5.0)
    writer.finish(status)
    return status


def align(pred_dir: Path, run_dir: Path, config: EngineConfig, *, on_event: EventSink | None = None,
          cancel: threading.Event | None = None) -> str:
    """Re-register a ``predictions/`` directory (ours or another tool's) into ``run_dir``.

    Window and overlap come from ``pred_dir/meta.json``; ``config`` supplies the rest.
    """
    pred_dir, run_dir = Path(pred_dir), Path(run_dir)
    meta = read_predictions_meta(pred_dir)
    config = dataclasses.replace(config, window=meta.window, overlap=meta.overlap, save_predictions=False)
    fps = meta.extra.get("fps")
    writer = RunWriter(run_dir, fps=fps)
    if pred_dir.resolve() != writer.predictions_dir.resolve():
        writer.write_meta(meta.as_dict())
    geometry = InputGeometry.from_dict(meta.extra["geometry"]) if "geometry" in meta.extra else \
        InputGeometry.resize_only((meta.width, meta.height), (meta.width, meta.height))
    writer.start({"source": {"predictions": str(pred_dir)}, "settings": dataclasses.asdict(config),
                  "backbone": meta.extra.get("backbone", "external"), "geometry": geometry.as_dict()})
    emit = on_event or (lambda e: None)
    emit(events.Started(total_frames=None, fps=fps, width=geometry.footage[0], height=geometry.footage[1],
                        pred_width=meta.width, pred_height=meta.height))
    try:
        windows = iter_predictions(pred_dir)
        status = _register_stream(lambda: next(windows, _END), writer, config, _State(),
                                  _focal_in_prediction_pixels(config, geometry), emit,
                                  cancel or threading.Event(), None)
    except BaseException as e:
        writer.finish("failed", error=f"{type(e).__name__}: {e}")
        raise
    writer.finish(status)
    return status

