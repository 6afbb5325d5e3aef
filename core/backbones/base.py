"""The one interface every backbone implements, and how footage maps onto its input.

A backbone turns a window of frames into a :class:`core.types.WindowPrediction`:
camera-space points (OpenCV axes), camera-to-world poses in the window's own frame,
per-pixel confidence and colours. Everything else (registration, layer alignment,
run directories) is backbone-agnostic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from core.types import WindowPrediction


@dataclass(frozen=True)
class InputGeometry:
    """How a footage frame becomes a network input, computed once per stream.

    The frame (``footage`` = (W, H)) is resized to ``resized`` = (W', H') and then
    cropped to ``size`` = (w, h) starting at pixel ``offset`` = (x0, y0) of the
    resized image. A prediction pixel coordinate (u, v) (pixel centres at +0.5)
    maps to footage coordinates as ``((u + x0) * W / W', (v + y0) * H / H')``.
    """

    footage: tuple[int, int]
    resized: tuple[int, int]
    size: tuple[int, int]
    offset: tuple[int, int] = (0, 0)

    @classmethod
    def resize_only(cls, footage: tuple[int, int], size: tuple[int, int]) -> "InputGeometry":
        return cls(footage=footage, resized=size, size=size, offset=(0, 0))

    def to_footage(self) -> np.ndarray:
        """(3, 3) matrix mapping homogeneous prediction pixels to footage pixels."""
        sx = self.footage[0] / self.resized[0]
        sy = self.footage[1] / self.resized[1]
        return np.array(
            [[sx, 0.0, self.offset[0] * sx], [0.0, sy, self.offset[1] * sy], [0.0, 0.0, 1.0]]
        )

    def intrinsics_to_footage(self, K: np.ndarray) -> np.ndarray:
        """Express (3, 3) intrinsics at prediction resolution at footage resolution."""
        return self.to_footage() @ K

    def as_dict(self) -> dict:
        return {
            "footage": list(self.footage),
            "resized": list(self.resized),
            "size": list(self.size),
            "offset": list(self.offset),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "InputGeometry":
        return cls(
            footage=tuple(d["footage"]),
            resized=tuple(d["resized"]),
            size=tuple(d["size"]),
            offset=tuple(d.get("offset", (0, 0))),
        )


@runtime_checkable
class Backbone(Protocol):
    """A network (or simulator) that predicts geometry for a window of frames."""

    name: str

    def input_geometry(self, footage: tuple[int, int]) -> InputGeometry:
        """Input size and crop for footage of size (W, H); called once per stream."""
        ...

    def predict(self, images: np.ndarray, frames: np.ndarray) -> WindowPrediction:
        """Predict one window.

        Args:
            images: (N, h, w, 3) uint8 RGB frames already brought to ``input_geometry().size``.
            frames: (N,) int64 source frame indices of those images.
        """
        ...
