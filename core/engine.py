"""The streaming engine: frames -> overlapping windows -> backbone -> registration -> run directory.

Inference and registration run in two threads joined by a bounded queue: when
registration (or the disk) is slower than the network, the producer blocks instead
of piling predictions up in memory. Each finished window is on disk before the next
is started, so a crash or cancel loses nothing that was finished, and ``resume``
continues from the last finished window.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Protocol

import numpy as np

from core import events
from core.backbones.base import Backbone
from core.lens import ZoomLens
from core.registration import DepthRefiner, Reference, register_window
from core.run.arrays import WindowPrediction
from core.run.files import RunDirError, RunDirRefused
from core.run.manifest import InputGeometry, PredictionsMeta, RunManifest, RunStatus, SourceInfo, resume_differences
from core.run.rundir import PredictionsDir, RunDir, RunWriter, load_aligned, load_prediction
from core.run.settings import EngineSettings
from core.solve.stage import CameraSolve, SolveParams
from core.solve.tracks import WindowTracker, WindowTracks

log = logging.getLogger(__name__)

EventSink = Callable[[events.Event], None]
WindowInput = tuple[int, np.ndarray, np.ndarray]
"""One window to predict: (index, (N,) int64 source frame indices, (N, h, w, 3) uint8 RGB images)."""
Predictor = Callable[[Iterator[WindowInput]], Iterator[tuple[int, WindowPrediction]]]
"""Turns the stream of windows into their predictions, in window order. The default,
:func:`predict_in_order`, runs the backbone on one window at a time; the farm's spreads
windows over several workers (``laser_blender.farm.split``)."""


class FrameSourceLike(Protocol):
    """What the engine needs of a frame source (see ``core.frames``)."""

    info: SourceInfo  # path, width, height, fps, num_frames

    def frames(self, geometry: InputGeometry | None = None, skip: int = 0,
               warn: Callable[[str], None] | None = None) -> Iterator[tuple[int, np.ndarray]]: ...

    def frame_pairs(self, geometry: InputGeometry | None = None, skip: int = 0,
                    warn: Callable[[str], None] | None = None) -> Iterator[tuple[int, np.ndarray, np.ndarray]]: ...


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


def depth_refiner(settings: EngineSettings) -> DepthRefiner | None:
    """The depth refiner ``settings`` ask for: layer-wise scale alignment, or None when it is off."""
    if not settings.layer_align:
        return None
    from core.layer_align import LayerAligner

    return LayerAligner(settings.layer)


def camera_solve(settings: EngineSettings, geometry: InputGeometry, footage: bool = True) -> CameraSolve | None:
    """The camera solve stage for ``settings`` on ``geometry``'s footage (:meth:`StreamSettings.solves`), or None
    (when ``refine`` is unset and the footage too small, the log says why: ``why_no_solve``). The stage refines
    the focal length unless it was given or the lens zooms, and the distortion with ``refine_distortion``."""
    if not settings.solves(geometry.footage[0] if footage else None):
        why = settings.why_no_solve(geometry.footage if footage else None)
        if why:
            log.info(why)
        return None
    return CameraSolve(geometry, SolveParams(segment=settings.layer),
                       refine_focal=settings.focal_px is None and not settings.zoom,
                       refine_distortion=settings.refine_distortion)


def zoom_lens(settings: EngineSettings) -> ZoomLens | None:
    """The per-frame intrinsics state of a zooming lens (``--zoom``), or None for a fixed lens."""
    return ZoomLens() if settings.zoom else None


# --------------------------------------------------------------------------- consumer

class _State:
    """Registration state carried from window to window.

    With a camera solve, ``tracks`` holds each window's footage tracks from when its frames are
    read (inference thread) until it is registered (registration thread), and under ``LENS`` the
    lens pass's until it has refined the lens.
    """

    def __init__(self, refiner: DepthRefiner | None, solve: CameraSolve | None = None,
                 zoom: ZoomLens | None = None):
        self.K: np.ndarray | None = None
        self.zoom = zoom
        self.reference: Reference | None = None
        self.windows_done = 0
        self.frames_done = 0
        self.refiner = refiner
        self.solve = solve
        self.tracks: dict[int, WindowTracks] = {}


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


_END = object()


def _register_stream(next_item: Callable[[], Any], writer: RunWriter, settings: EngineSettings, state: _State,
                     focal_pred: float | None, emit: EventSink, cancel: threading.Event,
                     total_frames: int | None) -> RunStatus:
    """Register windows as ``next_item()`` hands them over and write them.

    ``next_item`` returns ``(index, prediction)``, ``_END``, a ``_Failure``, or None
    when cancelled while waiting. Returns complete or cancelled.
    """
    t0, done_here = time.perf_counter(), 0
    if _lens_frames(state):
        next_item = _calibrated_lens(next_item, settings, state, focal_pred, emit)
    while not cancel.is_set():
        item = next_item()
        if item is None:
            break
        if item is _END:
            return RunStatus.complete
        if isinstance(item, _Failure):
            raise item.error
        index, pred = item
        result, state.K = register_window(
            index, pred, overlap=settings.overlap, K=state.K, reference=state.reference,
            conf_keep=settings.conf_keep, focal_px=focal_pred, refiner=state.refiner, zoom=state.zoom)
        if state.solve is not None:
            solved = state.solve.refine(result, state.reference, state.K, state.tracks.pop(index))
            if solved.warning:
                emit(events.Notice(solved.warning))
            result = solved.result
            if state.zoom is not None:  # the solved focal lengths carry over to the next window
                state.zoom.solved(result.window.frames, result.window.frame_K[:, 0, 0])
            writer.write_solve(index, solved.bundles, state.solve.report(None if state.zoom else state.K))
        path = writer.write_aligned(result.window)
        state.reference = result.reference
        if state.refiner is not None:
            state.refiner.observe(result.window)
        state.windows_done = index + 1
        state.frames_done += len(result.window)
        done_here += len(result.window)
        emit(events.WindowDone(index=index, frames=result.window.frames.tolist(), path=path))
        fps = done_here / max(time.perf_counter() - t0, 1e-9)
        eta = (max(total_frames - state.frames_done, 0) / fps) if total_frames and fps > 0 else None
        emit(events.Progress(frames_done=state.frames_done, total_frames=total_frames, fps=fps, eta_s=eta))
    return RunStatus.cancelled


def _lens_frames(state: _State) -> int:
    """Frames the lens pass tracks: the solve's ``focal_frames`` when it refines the lens and the run starts
    from its first window, else 0."""
    refine = state.solve is not None and state.solve.refines_lens and state.windows_done == 0
    return state.solve.params.focal_frames if refine else 0


def _calibrated_lens(next_item: Callable[[], Any], settings: EngineSettings, state: _State, focal_pred: float | None,
                     emit: EventSink) -> Callable[[], Any]:
    """Refine the lens before the first window is solved: take the windows covering the solve's
    ``focal_frames`` (fewer at the end of the stream), register them on their own (Sim(3) only, nothing
    written), set ``state.K`` to :meth:`CameraSolve.calibrate`'s, and return a ``next_item`` that hands
    the same windows over again, then the rest."""
    emit(events.Notice(f"refining the lens over the first {state.solve.params.focal_frames} frames"))
    held, windows, tracks, K, reference = [], [], [], None, None
    while sum(len(w) for w in windows) < state.solve.params.focal_frames:
        item = next_item()
        held.append(item)
        if item is None or item is _END or isinstance(item, _Failure):
            break
        index, pred = item
        result, K = register_window(index, pred, overlap=settings.overlap, K=K, reference=reference,
                                    conf_keep=settings.conf_keep, focal_px=focal_pred)
        reference = result.reference
        windows.append(result.window)
        tracks.append(state.tracks[index])
    if windows and (held[-1] is _END or isinstance(held[-1], tuple)):  # not cancelled, nor failed
        lens = state.tracks.pop(LENS, None)  # continuous over the frames: the windows' own as a fallback
        state.K, message = state.solve.calibrate(windows, tracks if lens is None else [lens], K)
        emit(events.Notice(message))
    return lambda: held.pop(0) if held else next_item()


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


def predict_in_order(backbone: Backbone) -> Predictor:
    """The default :data:`Predictor`: ``backbone.predict`` on each window in turn."""
    def predict(windows: Iterator[WindowInput]) -> Iterator[tuple[int, WindowPrediction]]:
        for index, frames, images in windows:
            yield index, backbone.predict(images, frames)

    return predict


def _tracked(pairs: Iterator[tuple[int, np.ndarray, np.ndarray]], tracker: WindowTracker,
             position: int) -> Iterator[tuple[int, np.ndarray]]:
    """``(index, network input)`` of ``pairs``, each footage frame fed to ``tracker`` (from stream ``position``)."""
    for index, image, footage in pairs:
        tracker.feed(position, index, footage)
        position += 1
        yield index, image


def _window_inputs(source: FrameSourceLike, geometry: InputGeometry, settings: EngineSettings, first_window: int,
                   stop: threading.Event, emit: EventSink, tracks: dict[int, WindowTracks] | None = None,
                   lens_frames: int = 0) -> Iterator[WindowInput]:
    """The windows of ``source`` from ``first_window`` on, each announced by a Predicting event.

    With ``tracks``, the footage is tracked as it is read and each window's tracks are put there
    (under its index) before the window is handed on, the lens pass's (over the first ``lens_frames``
    frames) under ``LENS`` once complete.
    """
    skip, warn = first_window * settings.step, lambda message: emit(events.Notice(message))
    if tracks is None:
        stream = source.frames(geometry, skip=skip, warn=warn)
    else:
        tracker = WindowTracker(tuple(geometry.footage), settings.window, settings.overlap, lens_frames=lens_frames)
        stream = _tracked(source.frame_pairs(geometry, skip=skip, warn=warn), tracker, skip)
    for index, items in iter_windows(stream, settings.window, settings.overlap, first_window):
        if stop.is_set():
            return
        if tracks is not None:
            _hand_over(tracker, index, tracks)
        frames = np.array([i for i, _ in items], dtype=np.int64)
        emit(events.Predicting(index=index, first_frame=int(frames[0]), last_frame=int(frames[-1])))
        yield index, frames, np.stack([img for _, img in items])
    if tracks is not None:
        _hand_over(tracker, None, tracks)


LENS = -1
"""Key of the lens pass's tracks (one tracker over the first ``SolveParams.focal_frames`` frames) in
``_State.tracks``."""


def _hand_over(tracker: WindowTracker, index: int | None, tracks: dict[int, WindowTracks]) -> None:
    """Put window ``index``'s tracks in ``tracks`` (None: the stream ended), and the lens pass's once complete."""
    if index is not None:
        tracks[index] = tracker.take(index)
    lens = tracker.take_lens(final=index is None)
    if lens is not None:
        tracks[LENS] = lens


def _producer(source: FrameSourceLike, geometry: InputGeometry, predictor: Predictor, settings: EngineSettings,
              out: "queue.Queue", stop: threading.Event, first_window: int, emit: EventSink,
              tracks: dict[int, WindowTracks] | None, lens_frames: int = 0) -> None:
    def put(item) -> bool:
        while not stop.is_set():
            try:
                out.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    try:
        for item in predictor(_window_inputs(source, geometry, settings, first_window, stop, emit, tracks,
                                             lens_frames)):
            if stop.is_set() or not put(item):
                return
        put(_END)
    except BaseException as e:  # handed to the consumer, which re-raises it
        put(_Failure(e))


# --------------------------------------------------------------------------- resume

def _resume_state(run: RunDir, state: _State, overlap: int) -> int:
    """Restore ``state`` after the last finished window on disk; returns the next window index."""
    windows = []
    for index, path in run.aligned_windows():
        if index != len(windows):
            raise RunDirError(f"{run.aligned_dir} is missing window {len(windows)}; cannot resume past it: delete "
                              f"the window files from {path.name} on and --resume redoes them")
        try:
            windows.append(load_aligned(path, index))
        except RunDirError as e:
            raise RunDirError(f"{e}; to redo from window {index}, delete {path.name} and the later window files "
                              f"in {run.aligned_dir} and --resume again") from None
    if not windows:
        return 0
    tail, count = [], 0
    for win in reversed(windows):
        tail.insert(0, win)
        count += len(win)
        if count >= overlap:
            break
    state.reference = Reference.from_windows(tail, overlap)
    state.K = windows[-1].K.astype(np.float64)
    state.windows_done = len(windows)
    state.frames_done = sum(len(w) for w in windows)
    if state.refiner is not None:
        state.refiner.restore(windows)
    if state.zoom is not None:
        state.zoom.restore(windows)
    if state.solve is not None:
        state.solve.restore([bundles for index, bundles in run.window_bundles() if index < len(windows)],
                            run.read_solve())
    return len(windows)


def _prepare_run_dir(run: RunDir, manifest: RunManifest, resume: bool, overwrite: bool,
                     keep_predictions: bool = False) -> None:
    """Apply the rules for writing into ``run``: refuse what would mix two runs.

    A directory that already holds a run is continued only with ``resume`` (and only
    when footage, backbone and settings are the same), replaced only with ``overwrite``
    (which deletes the run's own files first), and otherwise left untouched.
    """
    if run.root.exists() and not run.root.is_dir():
        raise RunDirRefused(f"{run.root} exists and is not a directory; choose another output directory (-o)")
    if resume and overwrite:
        raise RunDirRefused("--resume continues the run in the output directory and --overwrite replaces it: "
                          "give one of them")
    if not run.holds_run():
        return
    if resume:
        if run.is_run():
            differences = resume_differences(run.read_manifest(), manifest)
            if differences:
                raise RunDirRefused(f"cannot resume {run.root}: it was made with " + "; ".join(differences)
                                  + ". Pass the same values, or --overwrite to start again")
        return
    if not overwrite:
        raise RunDirRefused(f"{run.root} already holds {run.describe()}; --resume continues it, "
                          "--overwrite replaces it, or choose another output directory (-o)")
    log.info("overwriting %s (%s)", run.root, run.describe())
    run.clear(keep_predictions)


# --------------------------------------------------------------------------- entry points

def _focal_in_prediction_pixels(settings: EngineSettings, geometry: InputGeometry) -> float | None:
    if settings.focal_px is None:
        return None
    return settings.focal_px * geometry.resized[0] / geometry.footage[0]


def _run_stream(writer: RunWriter, settings: EngineSettings, state: _State, geometry: InputGeometry,
                next_item: Callable[[], Any], emit: EventSink, cancel: threading.Event,
                total_frames: int | None) -> RunStatus:
    """Register the stream; on an error mark the run failed (keeping every finished window) and re-raise."""
    try:
        status = _register_stream(next_item, writer, settings, state, _focal_in_prediction_pixels(settings, geometry),
                                  emit, cancel, total_frames)
    except BaseException as e:
        writer.finish(RunStatus.failed, error=f"{type(e).__name__}: {e}")
        raise
    writer.finish(status)
    return status


def reconstruct(source: FrameSourceLike, backbone: Backbone, run_dir: Path, settings: EngineSettings, *,
                on_event: EventSink | None = None, cancel: threading.Event | None = None,
                resume: bool = False, overwrite: bool = False, job: dict[str, Any] | None = None,
                predictor: Predictor | None = None) -> RunStatus:
    """Stream ``source`` through ``backbone`` and write a run directory.

    Args:
        resume: continue the run in ``run_dir`` from its last finished window (refused
            when its footage, backbone or settings differ).
        overwrite: replace the run in ``run_dir``; without it (or ``resume``) a directory
            that already holds a run is refused.
        job: the job as given (recorded in run.json so a resume or re-run can repeat it).
        predictor: how windows are predicted (default :func:`predict_in_order` with
            ``backbone``; ``backbone`` still names the run and sets its input geometry).
    Returns:
        complete or cancelled (run.json says the same). On an error run.json is
        marked failed (keeping every finished window) and the error is re-raised.
    """
    run = RunDir(run_dir)
    emit = _serialised(on_event)
    cancel = cancel or threading.Event()
    info = source.info
    geometry = backbone.input_geometry((info.width, info.height))
    manifest = RunManifest(source=info, settings=settings, backbone=backbone.name, geometry=geometry, job=job)
    _prepare_run_dir(run, manifest, resume, overwrite)
    if backbone.licence:
        emit(events.Notice(backbone.licence))

    solve = camera_solve(settings, geometry)
    state, first_window = _State(depth_refiner(settings), solve, zoom_lens(settings)), 0
    if resume:
        first_window = _resume_state(run, state, settings.overlap)
    writer = RunWriter(run, fps=info.fps)
    if first_window:
        run.rewrite_trajectory(info.fps)
    w, h = geometry.size
    writer.write_meta(PredictionsMeta(window=settings.window, overlap=settings.overlap, height=h, width=w,
                                      fps=info.fps, backbone=backbone.name, geometry=geometry))
    writer.start(manifest.model_copy(update={
        "windows_done": state.windows_done, "frames_done": state.frames_done,
        "last_frame": int(state.reference.frames[-1]) if state.reference is not None else None,
    }), resume=first_window > 0)
    emit(events.Started(total_frames=info.num_frames, fps=info.fps, width=info.width, height=info.height,
                        pred_width=w, pred_height=h, windows_done=state.windows_done,
                        frames_done=state.frames_done))

    q: queue.Queue = queue.Queue(maxsize=max(1, settings.queue_size))
    stop = threading.Event()
    producer = threading.Thread(target=_producer, name="laser-inference", daemon=True,
                                args=(source, geometry, predictor or predict_in_order(backbone), settings, q, stop,
                                      first_window, emit, state.tracks if state.solve is not None else None,
                                      _lens_frames(state)))
    producer.start()
    try:
        return _run_stream(writer, settings, state, geometry,
                           _queue_reader(q, cancel, writer, settings.save_predictions), emit, cancel,
                           info.num_frames)
    finally:
        stop.set()
        producer.join(timeout=0.5 if cancel.is_set() else 5.0)


def _checked_predictions(predictions: PredictionsDir, meta: PredictionsMeta) -> Iterator[tuple[int, WindowPrediction]]:
    """The windows of ``predictions`` in order, each checked against ``meta.json``'s layout."""
    windows = predictions.windows()
    if not windows:
        raise RunDirError(f"{predictions.path} holds no prediction windows (w00000.npz, ...); nothing to align")
    for expected, (index, path) in enumerate(windows):
        if index != expected:
            raise RunDirError(f"{predictions.path} is missing window {expected} (found {path.name} next)")
        pred = load_prediction(path)
        if pred.shape != meta.shape:
            raise RunDirError(f"{path}: predictions are {pred.shape[1]}x{pred.shape[0]} but "
                              f"{predictions.meta_path} says {meta.width}x{meta.height}")
        yield index, pred


def _footage_geometry(meta: PredictionsMeta, footage: SourceInfo, pred_dir: Path) -> InputGeometry:
    """How ``footage`` maps to the predictions in ``pred_dir``: ``meta.json``'s geometry, else a plain resize.

    Raises:
        RunDirError: the footage is not the one the predictions were made from (size or aspect).
    """
    name = f"footage {footage.path} ({footage.width}x{footage.height})"
    if meta.geometry is not None:
        if tuple(meta.geometry.footage) != (footage.width, footage.height):
            raise RunDirError(f"{name} does not match {pred_dir / 'meta.json'}, made from "
                              f"{meta.geometry.footage[0]}x{meta.geometry.footage[1]} footage")
        return meta.geometry
    if abs(np.log((footage.width / footage.height) / (meta.width / meta.height))) > 0.01:
        raise RunDirError(f"{name} has another aspect ratio than the {meta.width}x{meta.height} predictions in "
                          f"{pred_dir} and their meta.json has no geometry saying how they were cropped")
    return InputGeometry.resize_only((footage.width, footage.height), (meta.width, meta.height))


def _check_footage_length(predictions: PredictionsDir, footage: SourceInfo) -> None:
    """Refuse ``footage`` shorter than the frames the last prediction window indexes (when its length is known)."""
    windows = predictions.windows()
    if footage.num_frames is None or not windows:
        return
    index, path = windows[-1]
    last = int(load_prediction(path).frames.max())
    if last >= footage.num_frames:
        raise _missing_frame(index, last, footage)


def _missing_frame(index: int, frame: int, footage: SourceInfo) -> RunDirError:
    return RunDirError(f"prediction window {index} holds frame {frame}, which footage {footage.path} "
                       f"({footage.num_frames} frames) does not have")


def _tracked_windows(windows: Iterator[tuple[int, WindowPrediction]], footage: FrameSourceLike,
                     geometry: InputGeometry, settings: EngineSettings,
                     tracks: dict[int, WindowTracks], lens_frames: int = 0) -> Iterator[tuple[int, WindowPrediction]]:
    """``windows`` passed on, each one's footage tracks put in ``tracks`` first (under its index; the lens
    pass's, over the first ``lens_frames`` frames, under ``LENS``).

    The predictions' ``frames`` index the footage's frames. Window ``k``'s frames sit at stream
    positions ``k * step ...`` (the layout of ``meta.json``), so a frame two windows share is read
    and tracked once, as in :func:`reconstruct`.

    Raises:
        RunDirError: a window's frames are not in the footage, or do not overlap the previous window's.
    """
    tracker = WindowTracker(tuple(geometry.footage), settings.window, settings.overlap, lens_frames=lens_frames)
    frames_read, fed, previous = footage.frames(), 0, None
    for index, pred in windows:
        frames = pred.frames.astype(np.int64)
        if previous is not None and not np.array_equal(frames[:settings.overlap], previous[-settings.overlap:]):
            raise RunDirError(f"prediction window {index} does not start on the last {settings.overlap} frames of "
                              f"window {index - 1} (meta.json's overlap); it cannot be tracked on the footage")
        first = index * settings.step
        for position in range(max(fed, first), first + len(frames)):
            wanted = int(frames[position - first])
            source_index, rgb = next(((i, image) for i, image in frames_read if i >= wanted), (None, None))
            if source_index != wanted:
                raise _missing_frame(index, wanted, footage.info)
            tracker.feed(position, wanted, rgb)
        fed, previous = first + len(frames), frames
        _hand_over(tracker, index, tracks)
        yield index, pred
    _hand_over(tracker, None, tracks)


def align(pred_dir: Path, run_dir: Path, settings: EngineSettings, *, footage: FrameSourceLike | None = None,
          on_event: EventSink | None = None, cancel: threading.Event | None = None,
          overwrite: bool = False) -> RunStatus:
    """Re-register a ``predictions/`` directory (ours or another tool's) into ``run_dir``.

    Window and overlap come from ``pred_dir/meta.json``; ``settings`` supplies the rest.
    With ``footage`` (the frames the predictions' ``frames`` index), the cameras are refined
    against it (``settings.refine``) and the run's geometry maps predictions to it
    (``meta.json``'s, or a plain resize). A ``run_dir`` that already holds a run is replaced
    only with ``overwrite`` (in place, ``run_dir/predictions`` being ``pred_dir``, its
    predictions are kept: they are the input).

    Raises:
        RunDirError: bad predictions, or footage that does not match them (size, aspect, frames).
    """
    predictions, run = PredictionsDir(pred_dir), RunDir(run_dir)
    meta = predictions.read_meta()
    settings = settings.model_copy(update={"window": meta.window, "overlap": meta.overlap,
                                           "save_predictions": False})
    if footage is None:
        geometry = meta.geometry or InputGeometry.resize_only((meta.width, meta.height), (meta.width, meta.height))
        source = SourceInfo(predictions=str(predictions.path), fps=meta.fps)
    else:
        geometry = _footage_geometry(meta, footage.info, predictions.path)
        _check_footage_length(predictions, footage.info)
        source = footage.info.model_copy(update={"predictions": str(predictions.path),
                                                 "fps": footage.info.fps or meta.fps})
    in_place = predictions.path.resolve() == run.predictions.path.resolve()
    manifest = RunManifest(source=source, settings=settings, backbone=meta.backbone or "external",
                           geometry=geometry)
    _prepare_run_dir(run, manifest, resume=False, overwrite=overwrite, keep_predictions=in_place)
    writer = RunWriter(run, fps=meta.fps)
    if not in_place:
        writer.write_meta(meta)
    writer.start(manifest)
    emit = on_event or (lambda e: None)
    emit(events.Started(total_frames=None, fps=meta.fps, width=geometry.footage[0], height=geometry.footage[1],
                        pred_width=meta.width, pred_height=meta.height, windows_done=0, frames_done=0))
    if footage is None and (settings.refine or settings.refine_distortion):
        emit(events.Notice("camera solve skipped: align was given no footage to track (--footage PATH)"))
    solve = camera_solve(settings, geometry, footage=footage is not None)
    state = _State(depth_refiner(settings), solve, zoom_lens(settings))
    windows = _checked_predictions(predictions, meta)
    if solve is not None:
        windows = _tracked_windows(windows, footage, geometry, settings, state.tracks, _lens_frames(state))
    return _run_stream(writer, settings, state, geometry, lambda: next(windows, _END),
                       emit, cancel or threading.Event(), None)
