"""Events the streaming engine reports while it runs (consumed by the CLI and the worker)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Started:
    """Frames are about to stream; ``windows_done``/``frames_done`` are already on disk (a resumed run)."""

    total_frames: int | None
    fps: float | None
    width: int
    height: int
    pred_width: int
    pred_height: int
    windows_done: int = 0
    frames_done: int = 0


@dataclass(frozen=True)
class Predicting:
    """The backbone started on a window (source frames ``first_frame``..``last_frame``)."""

    index: int
    first_frame: int
    last_frame: int


@dataclass(frozen=True)
class WindowDone:
    index: int
    frames: list[int]
    path: Path


@dataclass(frozen=True)
class Progress:
    frames_done: int
    total_frames: int | None
    fps: float
    eta_s: float | None


@dataclass(frozen=True)
class Notice:
    """Something the user should know that does not stop the run (the weights' licence, damaged frames)."""

    message: str


Event = Notice | Started | Predicting | WindowDone | Progress
