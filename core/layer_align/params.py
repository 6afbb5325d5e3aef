"""Settings and result of layer-wise scale alignment (LSA)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class LayerAlignParams:
    """Layer-wise scale alignment settings. Depth differences are relative (log depth).

    Attributes:
        stride: segmentation, linking and scale statistics run on every ``stride``-th
            pixel (block centres); labels are carried back to full resolution by block.
        smooth_log: width (in log depth) of the edge-preserving smoothing applied to the
            samples before segmentation; noise well below it is averaged out, steps well
            above it are kept.
        edge_log: over-segmentation: neighbouring samples connect when their log depths
            differ by less than ``edge_log``, or when their step continues the surface on
            both sides (inverse depth straight to within ``edge_log`` relative), so a
            slanted plane such as the ground at a grazing angle stays connected.
        bridge: over-segmentation links only count where this many (odd) parallel
            links hold side by side, so regions do not leak through narrow contacts.
        merge_log: adjacent regions merge when at least ``merge_share`` of their common
            boundary passes the same test at the looser ``merge_log``.
        merge_share: see ``merge_log``.
        min_layer: layers smaller than this share of the frame are ignored (scale 1).
        link_iou: temporal link between layers of consecutive frames when the IoU of
            their depth-consistent shared samples is at least this ...
        link_cover: ... or when those samples cover at least this share of the smaller layer.
        link_log: shared samples are depth-consistent when their log depth changes by
            less than this from one frame to the next.
        match_cover: on an overlap frame, a previous-window layer is matched to a new
            layer when it covers at least this share of the new layer.
        min_pair_pixels: matched pairs sharing fewer samples with depth in both windows are dropped.
        unconfident_weight: fitting weight of samples outside either window's confidence
            mask relative to confident ones, so layers the mask leaves out (a far
            background) still get a scale, dominated by confident pixels where any exist.
        irls_iters: IRLS iterations of the per-pair robust scale.
        irls_c: Cauchy width of the per-pair IRLS, in log depth.
        pair_outlier_log: pair scales further than this (log) from the weighted median of
            the pairs feeding the same layer are rejected.
        max_scale: layer scales are clamped to [1 / max_scale, max_scale] around the
            window's Sim(3) scale.
        temporal_weight: weight of the scale carried from the previous frame relative
            to a direct overlap measurement (times the share of the layer's samples that
            carry one); larger is smoother.
        memory_gate_log: a layer without an overlap match takes the keyframe memory's
            scale only when it differs from the propagated one by more than this (log),
            or when nothing was propagated to it: the memory corrects scales that came
            the wrong way (an object that re-enters merged with its neighbour inherits
            the neighbour's scale) without adding its own noise to those that agree.
    """

    stride: int = 4
    smooth_log: float = 0.02
    edge_log: float = 0.03
    bridge: int = 5
    merge_log: float = 0.06
    merge_share: float = 0.5
    min_layer: float = 0.002
    link_iou: float = 0.3
    link_cover: float = 0.5
    link_log: float = 0.1
    match_cover: float = 0.2
    min_pair_pixels: int = 12
    unconfident_weight: float = 0.1
    irls_iters: int = 5
    irls_c: float = 0.05
    pair_outlier_log: float = 0.1
    max_scale: float = 2.0
    temporal_weight: float = 1.0
    memory_gate_log: float = 0.05

    def __post_init__(self) -> None:
        if self.stride < 1:
            raise ValueError(f"stride must be >= 1, got {self.stride}")
        if not 0 < self.edge_log <= self.merge_log:
            raise ValueError(f"need 0 < edge_log <= merge_log, got {self.edge_log}, {self.merge_log}")
        if self.bridge < 1 or self.bridge % 2 == 0:
            raise ValueError(f"bridge must be a positive odd number, got {self.bridge}")
        if self.max_scale <= 1:
            raise ValueError(f"max_scale must be > 1, got {self.max_scale}")


@dataclass
class LayerAlignResult:
    """Corrected depth plus diagnostics.

    Attributes:
        depth: (N, H, W) float32 corrected depth.
        labels: (N, h, w) int32 layer id of each sample pixel (pixel ``(i * stride +
            stride // 2, j * stride + stride // 2)``); -1 where no layer.
        layer_frame: (L,) int32 frame of each layer.
        layer_scale: (L,) float32 scale applied to each layer (1 = the window's Sim(3) scale).
        layer_source: (L,) int8 where a layer's scale came from: 0 none, 1 overlap match,
            2 propagated from the previous frame only, 3 keyframe memory.
        pairs_solved: matched (reference layer, new layer) pairs with a robust scale.
        pairs_rejected: of those, pairs rejected as outliers.
        timings: seconds spent in "segment", "match", "solve", "memory" (keyframe
            memory measurements and the second propagation), "apply".
    """

    depth: np.ndarray
    labels: np.ndarray
    layer_frame: np.ndarray
    layer_scale: np.ndarray
    layer_source: np.ndarray
    pairs_solved: int = 0
    pairs_rejected: int = 0
    timings: dict[str, float] = field(default_factory=dict)

    def frame_scales(self, frame: int) -> np.ndarray:
        """(L_t,) scales of the layers of one frame, in label order."""
        return self.layer_scale[self.layer_frame == frame]
