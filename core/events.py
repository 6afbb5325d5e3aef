"""Events the streaming engine reports while it runs (consumed by the CLI and the worker)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Started:
    total_frames: int | None
    fps: float | None
    width: int
    height: int
    pred_width: int
    pred_height: int


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
class Warning:  # noqa: A001 - mirrors the protocol's event name
    message: str


Event = Started | Predicting | WindowDone | Progress | Warning
