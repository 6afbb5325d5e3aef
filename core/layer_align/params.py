"""Result of layer-wise scale alignment (LSA); its settings are ``core.run.settings.LayerAlignParams``."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class LayerAlignResult:
    """Corrected depth plus diagnostics.

    Attributes:
        sim3_depth: (N, H, W) float32 the depth aligned (``LayerAlignInput.depth``).
        depth_factor: (N, H, W) float32 per-pixel factor applied (its layer's scale, 1 where none);
            float16 values, so the stored factor is exactly the one applied.
        labels: (N, h, w) int32 layer id of each sample pixel (pixel ``(i * stride +
            stride // 2, j * stride + stride // 2)``); -1 where no layer.
        layer_frame: (L,) int32 frame of each layer.
        layer_scale: (L,) float32 scale applied to each layer (1 = the window's Sim(3) scale).
        layer_source: (L,) int8 where a layer's scale came from: 0 none, 1 overlap match,
            2 propagated from the previous frame only, 3 keyframe memory.
        parallax_share: (L,) share of each layer's log scale that came from the parallax inside the
            window (0: the earlier windows' alone, see ``parallax.parallax_scales``).
        path_log_scale: log factor for the window's camera translations that makes its camera path
            agree with the corrected depth (0: keep the Sim(3) path).
        path_offset: the parallax measurement behind it (the log scale by which the Sim(3) path
            differs from the layers); path_information: its inverse variance (0: not measured).
        pairs_solved: matched (reference layer, new layer) pairs with a robust scale.
        pairs_rejected: of those, pairs rejected as outliers.
        timings: seconds spent in "segment", "match", "solve", "memory" (keyframe
            memory measurements and the second propagation), "parallax", "apply".
    """

    sim3_depth: np.ndarray
    depth_factor: np.ndarray
    labels: np.ndarray
    layer_frame: np.ndarray
    layer_scale: np.ndarray
    layer_source: np.ndarray
    parallax_share: np.ndarray | None = None
    path_log_scale: float = 0.0
    path_offset: float = 0.0
    path_information: float = 0.0
    pairs_solved: int = 0
    pairs_rejected: int = 0
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def depth(self) -> np.ndarray:
        """(N, H, W) float32 corrected depth, ``sim3_depth * depth_factor``."""
        return self.sim3_depth * self.depth_factor

    def frame_scales(self, frame: int) -> np.ndarray:
        """(L_t,) scales of the layers of one frame, in label order."""
        return self.layer_scale[self.layer_frame == frame]
