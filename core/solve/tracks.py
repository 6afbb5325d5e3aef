"""Feature tracks on the footage at its own resolution: pyramidal Lucas-Kanade, forward-backward checked.

A :class:`Tracker` is fed the footage frames in order (:meth:`Tracker.step`) and returns, for each
frame, the tracks alive in it (:class:`FrameTracks`: track ids and pixel positions). A track dies
when Lucas-Kanade loses it, when tracking it back to the previous frame misses its start by more
than ``fb_max_px``, or when it leaves the frame; new corners (``cv2.goodFeaturesToTrack``) are
seeded in the cells of a grid over the image that hold fewer than ``per_cell`` live tracks, so the
tracks stay spread over the whole frame.

The forward pass runs in two calls: the pyramid on the half-resolution frames with half the window
(with the whole window, the coarse levels cost as much as the full resolution each), then the full
resolution with the whole window, starting from that flow (narrower footage, where half the window
would be under 9 pixels: one pyramidal call). The backward check is one call on the half-resolution
frames with half the window (at full resolution where there are none), started from where each track
came from: a consistent track goes back there in a step or two, one that does not match its start is
pulled to what it does match. Measured against the truth on the synthetic 1920x1080 shot (filtered 2x,
30 frames), the half-resolution check with a 17-pixel window (at 1280 px width: 27 at 1920) against the
full-resolution check with a 21-pixel one (33 at 1920) ends more tracks (1622 started against 1300), mostly
those drifting off silhouettes: median error 0.148 against 0.162 px, observations over 1 px 8.8 against
15.9 %, a frame's median time 16.1 against 23.3 ms (mean 23.6 against 27.7: more seeding). The 1280x720
solve's static points came out 0.025 px on seeds 0-2, against 0.035-0.036 px; the smaller window alone
accounts for about a third of that, and at 640x360 (9 pixels against 11) for the focal's systematic 0.1 %
shortfall. Narrower footage keeps the scaled window down to 7 pixels (9 before, which at 512x384 is
22 pixels at 1280 width): on the 512x384 footage-size benchmark the oriented ground came out 4.5 % of
the camera height off, against 7.6 %. Finding new corners on the half-resolution frame would cost a
quarter, but put the static points a quarter further off.

Pixel positions use the project's convention (``core.geometry.camera.pixel_grid``): the centre of
pixel (column c, row r) is (c + 0.5, r + 0.5); OpenCV's are at integers, hence the 0.5 shift.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy.spatial import cKDTree


@dataclass(frozen=True)
class TrackerParams:
    """Tracker settings; distances in footage pixels at 1280 px width (scaled with the footage width)."""

    window: int = 17            # Lucas-Kanade window side (pixels; see the module docstring)
    levels: int = 3             # pyramid levels above the full resolution
    fb_max_px: float = 0.5      # forward-backward disagreement beyond which a track dies
    grid: tuple[int, int] = (16, 9)  # seeding cells (columns, rows)
    per_cell: int = 6           # live tracks wanted per cell
    min_distance: float = 10.0  # between a new corner and any live track
    quality: float = 0.01       # goodFeaturesToTrack quality level
    reseed_fraction: float = 0.9  # reseed when fewer than this fraction of the wanted tracks live
    step_eps: float = 0.001     # Lucas-Kanade stops when its step is below this (pixels) ...
    iterations: int = 100       # ... or after this many steps. At OpenCV's usual 0.01 px each frame's flow
    #                             falls short by up to that much, and chained over a track's frames the shortfall
    #                             adds up along the image motion: the solved focal came out 0.16 % short on the
    #                             synthetic 640x360 shot, 0.10 % at 0.001 px (0.01 % with exact tracks); the
    #                             tracking costs about 12 % more


@dataclass(frozen=True)
class FrameTracks:
    """The tracks alive in one frame: ``ids`` (N,) int64 track ids, ``xy`` (N, 2) float32 footage pixels."""

    frame: int
    ids: np.ndarray
    xy: np.ndarray


class Tracker:
    """KLT tracking of one footage stream; frames must come in order (see the module docstring)."""

    def __init__(self, size: tuple[int, int], params: TrackerParams = TrackerParams()):
        self.size = size  # (W, H)
        self.params = params
        scale = size[0] / 1280.0
        self._window = (max(7, round(params.window * scale) | 1),) * 2
        half = self._window[0] // 2 | 1
        self._coarse_window = (half, half) if half >= 9 else None  # smaller footage: one pyramidal call
        self._min_distance = params.min_distance * scale
        self._criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, params.iterations, params.step_eps)
        self._gray: tuple[np.ndarray, np.ndarray | None] | None = None  # the previous frame, its half resolution
        self._ids = np.zeros(0, np.int64)
        self._xy = np.zeros((0, 2), np.float32)  # OpenCV convention (pixel centres at integers)
        self._next_id = 0

    @property
    def started(self) -> int:
        """Tracks started so far."""
        return self._next_id

    def prepare(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """The grey frame and its half resolution (None where one pyramidal call is used) of an (H, W, 3) uint8
        RGB footage frame: what :meth:`step` tracks (trackers of the same size and settings can share it)."""
        if rgb.shape[1::-1] != tuple(self.size):
            raise ValueError(f"tracker expects {self.size[0]}x{self.size[1]} frames, got {rgb.shape[1]}x{rgb.shape[0]}")
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        return gray, cv2.pyrDown(gray) if self._coarse_window else None

    def step(self, frame: int, rgb: np.ndarray,
             prepared: tuple[np.ndarray, np.ndarray | None] | None = None) -> FrameTracks:
        """Track into the next frame ((H, W, 3) uint8 RGB at footage size, or ``prepared`` from it by
        :meth:`prepare`) and reseed; returns its live tracks."""
        gray = prepared if prepared is not None else self.prepare(rgb)
        if self._gray is not None and len(self._xy):
            self._follow(gray)
        self._gray = gray
        wanted = self.params.grid[0] * self.params.grid[1] * self.params.per_cell
        if len(self._xy) < self.params.reseed_fraction * wanted:
            self._seed(gray[0])
        return FrameTracks(frame, self._ids.copy(), self._xy + np.float32(0.5))

    def _flow(self, src: tuple[np.ndarray, np.ndarray | None], dst: tuple[np.ndarray, np.ndarray | None],
              xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, 2) positions in ``dst`` of ``xy`` (N, 2) in ``src`` (OpenCV convention) and (N,) bool found.

        The flow is found on the half-resolution frames (their pyramid one level higher, half the window:
        about the same reach at a quarter of the cost per level), then refined at full resolution with the
        whole window. Where half the window would be under 9 pixels, one pyramidal call at full resolution.
        """
        if self._coarse_window is None:
            fine, ok, _ = cv2.calcOpticalFlowPyrLK(src[0], dst[0], xy.reshape(-1, 1, 2), None, winSize=self._window,
                                                   maxLevel=self.params.levels, criteria=self._criteria)
            return fine.reshape(-1, 2), ok.ravel() == 1
        coarse, ok_coarse, _ = cv2.calcOpticalFlowPyrLK(src[1], dst[1], xy.reshape(-1, 1, 2) * np.float32(0.5), None,
                                                        winSize=self._coarse_window, maxLevel=self.params.levels,
                                                        criteria=self._criteria)
        fine, ok, _ = cv2.calcOpticalFlowPyrLK(src[0], dst[0], xy.reshape(-1, 1, 2), coarse * np.float32(2),
                                               winSize=self._window, maxLevel=0, criteria=self._criteria,
                                               flags=cv2.OPTFLOW_USE_INITIAL_FLOW)
        return fine.reshape(-1, 2), (ok_coarse.ravel() == 1) & (ok.ravel() == 1)

    def _back(self, gray: tuple[np.ndarray, np.ndarray | None], nxt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, 2) positions in the previous frame of ``nxt`` (N, 2) in ``gray``, tracked back from the tracks' own
        start positions on the half-resolution frames (at full resolution where there are none), and (N,) bool
        found (the forward-backward check)."""
        level, window = (1, self._coarse_window) if self._coarse_window else (0, self._window)
        scale = np.float32(0.5 ** level)
        back, ok, _ = cv2.calcOpticalFlowPyrLK(gray[level], self._gray[level], nxt.reshape(-1, 1, 2) * scale,
                                               self._xy.reshape(-1, 1, 2) * scale, winSize=window, maxLevel=0,
                                               criteria=self._criteria, flags=cv2.OPTFLOW_USE_INITIAL_FLOW)
        return back.reshape(-1, 2) / scale, ok.ravel() == 1

    def _follow(self, gray: tuple[np.ndarray, np.ndarray | None]) -> None:
        nxt, ok = self._flow(self._gray, gray, self._xy)
        back, ok_back = self._back(gray, nxt)
        w, h = self.size
        keep = (ok & ok_back
                & (np.linalg.norm(back - self._xy, axis=1) < self.params.fb_max_px)
                & (nxt[:, 0] >= 0) & (nxt[:, 1] >= 0) & (nxt[:, 0] <= w - 1) & (nxt[:, 1] <= h - 1))
        self._ids, self._xy = self._ids[keep], nxt[keep].astype(np.float32)

    def _seed(self, gray: np.ndarray) -> None:
        """Add corners in grid cells short of ``per_cell`` tracks, strongest first, away from live tracks."""
        p = self.params
        w, h = self.size
        cols, rows = p.grid
        corners = cv2.goodFeaturesToTrack(gray, maxCorners=4 * cols * rows * p.per_cell, qualityLevel=p.quality,
                                          minDistance=self._min_distance, blockSize=7)
        if corners is None:
            return
        corners = corners.reshape(-1, 2).astype(np.float32)  # strongest first
        if len(self._xy):
            dist, _ = cKDTree(self._xy).query(corners, distance_upper_bound=self._min_distance)
            corners = corners[~np.isfinite(dist)]
        def cell_of(xy: np.ndarray) -> np.ndarray:
            return (np.minimum((xy[:, 1] * rows / h).astype(np.int64), rows - 1) * cols
                    + np.minimum((xy[:, 0] * cols / w).astype(np.int64), cols - 1))

        room = p.per_cell - np.bincount(cell_of(self._xy), minlength=cols * rows)
        cell = cell_of(corners)
        order = np.argsort(cell, kind="stable")  # by cell, strongest first within a cell
        sorted_cell = cell[order]
        first = np.searchsorted(sorted_cell, sorted_cell)
        rank = np.empty(len(cell), np.int64)
        rank[order] = np.arange(len(cell)) - first
        new = corners[rank < room[cell]]
        if len(new):
            new = cv2.cornerSubPix(gray, new.reshape(-1, 1, 2), (5, 5), (-1, -1), self._criteria).reshape(-1, 2)
        self._ids = np.concatenate([self._ids, np.arange(self._next_id, self._next_id + len(new))])
        self._xy = np.concatenate([self._xy, new])
        self._next_id += len(new)


@dataclass(frozen=True)
class WindowTracks:
    """The tracks of one window's frames, as observations.

    ``frame`` (M,) int64 source frames, ``track`` (M,) int64 track ids (local to the window),
    ``xy`` (M, 2) float32 footage pixels, ``rgb`` (M, 3) uint8 footage colour under each observation;
    ``count`` tracks in all.
    """

    frame: np.ndarray
    track: np.ndarray
    xy: np.ndarray
    rgb: np.ndarray
    count: int


class WindowTracker:
    """One :class:`Tracker` per window over a stream of footage frames.

    A window's tracks start on its first frame and depend on its frames only, so a resumed run
    or a window predicted elsewhere gets exactly the tracks of an uninterrupted run (frames
    shared by two windows are tracked by both). Feed every frame in stream order with its
    stream position (0 for the first selected frame of the footage); window ``k`` covers
    positions ``[k * step, k * step + window)``.

    With ``lens_frames``, one more tracker follows positions ``[0, lens_frames)`` whole (tracks that
    cross window boundaries, for refining the lens: :meth:`take_lens`).
    """

    def __init__(self, size: tuple[int, int], window: int, overlap: int, params: TrackerParams = TrackerParams(),
                 lens_frames: int = 0):
        self.size, self.window, self.step, self.params = size, window, window - overlap, params
        self._open: dict[int, tuple[Tracker, list[tuple[np.ndarray, ...]]]] = {}
        self._lens = (Tracker(size, params), []) if lens_frames else None
        self._lens_end, self._fed = lens_frames, 0

    def feed(self, position: int, frame: int, rgb: np.ndarray) -> None:
        """Track footage frame ``frame`` ((H, W, 3) uint8 RGB) at stream ``position`` in every window holding it."""
        if position % self.step == 0:
            self._open[position // self.step] = (Tracker(self.size, self.params), [])
        prepared = None  # the grey frames, made once for all the trackers holding this frame
        for index, (tracker, rows) in self._open.items():
            if position < index * self.step + self.window:
                prepared = prepared or tracker.prepare(rgb)
                rows.append(self._step(tracker, frame, rgb, prepared))
        if self._lens is not None and position < self._lens_end:
            prepared = prepared or self._lens[0].prepare(rgb)
            self._lens[1].append(self._step(self._lens[0], frame, rgb, prepared))
        self._fed = position + 1

    def take(self, index: int) -> WindowTracks:
        """The tracks of window ``index`` (all its frames fed); forgets it and any earlier window."""
        tracker, rows = self._open.pop(index, (None, []))
        for earlier in [k for k in self._open if k < index]:
            del self._open[earlier]
        return _collected(tracker, rows)

    def take_lens(self, final: bool = False) -> WindowTracks | None:
        """The tracks over the first ``lens_frames`` positions once all are fed (or with ``final``: the stream
        ended), then forgotten; None before, and when there are none."""
        if self._lens is None or (self._fed < self._lens_end and not final):
            return None
        tracker, rows = self._lens
        self._lens = None
        return _collected(tracker, rows)

    def _step(self, tracker: Tracker, frame: int, rgb: np.ndarray,
              prepared: tuple[np.ndarray, np.ndarray | None]) -> tuple[np.ndarray, ...]:
        """One frame through ``tracker``: its (frame, track, xy, rgb) rows."""
        w, h = self.size
        t = tracker.step(frame, rgb, prepared)
        pix = np.minimum(t.xy.astype(np.int64), [w - 1, h - 1])
        return np.full(len(t.ids), frame, np.int64), t.ids, t.xy, rgb[pix[:, 1], pix[:, 0]]


def _collected(tracker: Tracker | None, rows: list[tuple[np.ndarray, ...]]) -> WindowTracks:
    """The tracks ``tracker`` followed, from its per-frame ``rows``."""
    if not rows:
        return WindowTracks(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 2), np.float32),
                            np.zeros((0, 3), np.uint8), 0)
    frame, track, xy, rgb = (np.concatenate(a) for a in zip(*rows))
    return WindowTracks(frame, track, xy, rgb, tracker.started)
