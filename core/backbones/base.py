"""The one interface every backbone implements.

A backbone turns a window of frames into a :class:`core.run.arrays.WindowPrediction`:
camera-space points (OpenCV axes), camera-to-world poses in the window's own frame,
per-pixel confidence and colours. Everything else (registration, layer alignment,
run directories) is backbone-agnostic. How footage maps onto a backbone's input is
a :class:`core.run.manifest.InputGeometry`, recorded in the run.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from core.run.arrays import WindowPrediction
from core.run.manifest import InputGeometry


@runtime_checkable
class Backbone(Protocol):
    """A network (or simulator) that predicts geometry for a window of frames.

    Attributes:
        name: the backbone's name as users give it ("pi3", "vggt", ...), recorded in the run.
        licence: the weights' licence notice for the user ("" when there is nothing to say).
    """

    name: str
    licence: str

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
