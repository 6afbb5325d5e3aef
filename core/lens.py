"""A zooming lens (``--zoom``): each frame's focal length, from the network, smoothed over time.

Without a zoom the intrinsics are fixed from the first window (``core.registration``). With
one, every frame gets its own focal length:

1. a raw estimate per frame: the network's predicted focal (VGGT, DA3 predict per-frame
   intrinsics), else the focal fitted to that frame's camera-space points (pi3; the same
   robust fit that gives the first window's fixed focal, :func:`estimate_frame_focals`);
2. the raw estimates of this window and of the last :data:`HISTORY` frames before it are
   smoothed robustly over time in log focal (:func:`robust_smooth`: a Whittaker curve with
   Tukey IRLS, so a few wrong frames are ignored and a zoom's ramp is followed);
3. a frame keeps the focal it was first registered with: the next window's overlap frames
   reuse it, so the shared frames' intrinsics never change once written.

The principal point stays at the centre and the pixel aspect (fy / fx) is the first
window's. The camera solve (``--refine``) then refines each new frame's focal length
(``core.solve.stage``) and hands it back (:meth:`ZoomLens.solved`): it replaces the frame's raw
estimate in the smoothing and is what the next window's overlap frames reuse.
All intrinsics are at prediction resolution; OpenCV conventions (``core.run.arrays``).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from core.errors import UserError
from core.geometry.fitting import estimate_frame_focals, robust_smooth
from core.run.arrays import AlignedWindow, WindowPrediction

HISTORY = 24
"""Frames before a window whose raw focal estimates still take part in its smoothing."""
STIFFNESS = 1000.0
"""Third-difference penalty of the smoothing (its sixth root, ~3 frames, is roughly the smoothing half-width;
tuned on synthetic zooms of 0.5-1% per-frame focal noise: stiffer curves lag a fast zoom at a window's end)."""


class ZoomError(UserError):
    """No frame of a window gives a usable focal length."""


class ZoomLens:
    """Per-frame intrinsics of a zooming camera, window after window (the registration's state)."""

    def __init__(self, stiffness: float = STIFFNESS, history: int = HISTORY):
        self.stiffness = stiffness
        self.history = history
        self.aspect: float | None = None  # fy / fx, fixed by the first window
        self._t = np.zeros(0, np.int64)  # estimates: frame, log fx, from the network (raw) or the solve
        self._y = np.zeros(0)
        self._raw = np.zeros(0, bool)
        self._emitted: dict[int, float] = {}  # recent registered frames -> their fx

    def intrinsics(self, index: int, pred: WindowPrediction, mask: np.ndarray) -> np.ndarray:
        """(N, 3, 3) float64 intrinsics of each frame of window ``index`` at prediction resolution.

        Args:
            pred: the window's prediction (its points, or its predicted intrinsics when given).
            mask: (N, H, W) bool its confident pixels (the points' focal fit uses them).
        """
        h, w = pred.shape
        frames = pred.frames.astype(np.int64)
        if pred.intrinsics is not None:
            K = pred.intrinsics.astype(np.float64)
            raw = K[:, 0, 0]
            aspect = float(np.median(K[:, 1, 1] / K[:, 0, 0]))
        else:
            raw, aspect = estimate_frame_focals(pred.points, mask), 1.0
        if self.aspect is None:
            self.aspect = aspect
        good = np.isfinite(raw) & (raw > 0)
        recent = self._t >= frames[0] - self.history
        self._t = np.concatenate([self._t[recent], frames[good]])
        self._y = np.concatenate([self._y[recent], np.log(raw[good])])
        self._raw = np.concatenate([self._raw[recent], np.ones(int(good.sum()), bool)])
        new = np.array([int(f) not in self._emitted for f in frames])
        if new.any():
            if self._t.size == 0:
                raise ZoomError(f"window {index}: no frame has enough confident pixels to estimate its focal "
                                f"length for --zoom (frames {frames[0]}..{frames[-1]})")
            fx_new = np.exp(robust_smooth(self._t, self._y, frames[new], self.stiffness))
            self._emitted.update(zip(frames[new].tolist(), fx_new.tolist()))
        fx = np.array([self._emitted[int(f)] for f in frames])
        self._emitted = {f: v for f, v in self._emitted.items() if f >= frames[0]}
        return zoom_intrinsics(fx, self.aspect, (w, h))

    def solved(self, frames: np.ndarray, fx: np.ndarray) -> None:
        """The camera solve's focal lengths ``fx`` (N,) of a window's new ``frames`` (N,), prediction pixels:
        every frame up to the last is now solved, and only its solved focal takes part in the smoothing
        (the state a resume rebuilds from disk, :meth:`restore`)."""
        frames = np.asarray(frames, np.int64)
        keep = ~(self._raw & (self._t <= frames.max())) & ~np.isin(self._t, frames)
        self._t = np.concatenate([self._t[keep], frames])
        self._y = np.concatenate([self._y[keep], np.log(np.asarray(fx, np.float64))])
        self._raw = np.concatenate([self._raw[keep], np.zeros(len(frames), bool)])
        self._emitted.update(zip(frames.tolist(), np.asarray(fx, np.float64).tolist()))

    def restore(self, windows: Sequence[AlignedWindow]) -> None:
        """Rebuild the state from the registered windows of a resumed run (oldest first): their
        registered focal lengths stand in for the frames' estimates (the next window keeps its history)."""
        if not windows:
            return
        frames = np.concatenate([w.frames for w in windows]).astype(np.int64)
        K = np.concatenate([w.frame_intrinsics for w in windows]).astype(np.float64)
        self.aspect = float(K[-1, 1, 1] / K[-1, 0, 0])
        self._t, self._y, self._raw = frames, np.log(K[:, 0, 0]), np.zeros(len(frames), bool)
        self._emitted = dict(zip(frames.tolist(), K[:, 0, 0].tolist()))  # the next window keeps what it needs


def zoom_intrinsics(fx: np.ndarray, aspect: float, size: tuple[int, int]) -> np.ndarray:
    """(N, 3, 3) float64 intrinsics with focal lengths ``fx`` (N,), ``fy = aspect * fx`` and the
    principal point at the centre of an image of ``size`` (W, H)."""
    w, h = size
    K = np.zeros((len(fx), 3, 3))
    K[:, 0, 0], K[:, 1, 1] = fx, aspect * np.asarray(fx)
    K[:, 0, 2], K[:, 1, 2], K[:, 2, 2] = w / 2, h / 2, 1.0
    return K
