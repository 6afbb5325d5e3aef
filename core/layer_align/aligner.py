"""Layer-wise scale alignment over a stream: the engine's depth refiner, owning its keyframe memory."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from core.layer_align.align import LayerAlignInput, align_layers
from core.layer_align.keyframes import KeyframeMemory
from core.layer_align.params import LayerAlignResult
from core.registration import Reference, Refinement
from core.run.arrays import AlignedWindow
from core.run.settings import LayerAlignParams


class LayerAligner:
    """Layer-wise scale alignment of every window (a ``core.registration.DepthRefiner``).

    Each layer's depth becomes a running mean, in log depth, over the windows that came
    before and this one: window ``n`` (0-based) moves its layers ``m / (m + w)`` of the way
    to the previous windows' depth, ``m = min(n, params.history_windows)``, ``w =
    params.window_weight`` (the weight of the new window relative to each earlier one). A monocular
    network's per-window layer-scale errors are roughly zero-mean over time, so this
    consensus shrinks them as the shot goes on, where aligning every window entirely to
    the previous one would keep the first window's errors forever.

    Keeps a keyframe memory of the registered frames so layers the overlap does not
    show are measured against earlier frames, and the windows' camera-path measurements (how
    far the parallax says each window's Sim(3) path was off, one per window: their count is the window count); both are
    rebuilt from the windows on disk when a run resumes, so a resumed run continues exactly.

    Attributes:
        params: the alignment settings.
        memory: keyframes of the registered stream so far.
        path_offsets, path_information: lists of the registered windows' camera-path measurements
            (one item per window registered so far: ``windows``).
        last: diagnostics of the last ``refine`` (None before the first).
    """

    def __init__(self, params: LayerAlignParams | None = None):
        self.params = params or LayerAlignParams()
        self.memory = KeyframeMemory(stride=self.params.stride)
        self.path_offsets: list[float] = []
        self.path_information: list[float] = []
        self.last: LayerAlignResult | None = None

    @property
    def windows(self) -> int:
        """Windows registered so far."""
        return len(self.path_offsets)

    def history(self) -> float:
        """Share of the way the next window's layers move to the previous windows' depth."""
        m = min(self.windows, self.params.history_windows)
        return m / (m + self.params.window_weight)

    def refine(self, reference: Reference | None, depth: np.ndarray, mask: np.ndarray, conf: np.ndarray,
               poses: np.ndarray, K: np.ndarray, colors: np.ndarray | None = None) -> Refinement:
        """The (N, H, W) per-pixel factor correcting each layer's scale of the Sim(3)-scaled ``depth``, and
        the scale of the window's camera path that agrees with it (from the parallax inside the window).

        Args:
            reference: the previous window's registered tail (its final depth is matched); None for the
                first window, whose layers only the parallax inside it corrects.
            depth: (N, H, W) the new window's depth after the Sim(3).
            mask, conf: (N, H, W) its confident pixels and confidence.
            poses: (N, 4, 4) its world camera-to-world poses; K: (3, 3) intrinsics, (N, 3, 3) with a zoom.
            colors: (N, H, W, 3) uint8 its frames (used with the reference's colours, when both are known).
        """
        if reference is None:
            shape = (0, *depth.shape[1:])
            reference = Reference(frames=np.zeros(0, np.int64), poses=np.zeros((0, 4, 4)),
                                  depth=np.zeros(shape, np.float32), mask=np.zeros(shape, bool),
                                  colors=None if colors is None else np.zeros((*shape, 3), np.uint8))
        inp = LayerAlignInput(ref_depth=reference.depth, ref_mask=reference.mask, depth=depth, mask=mask,
                              conf=conf, overlap=len(reference.frames), poses=poses, K=K, history=self.history(),
                              colors=colors, ref_colors=reference.colors if colors is not None else None,
                              path_offsets=np.array(self.path_offsets),
                              path_information=np.array(self.path_information))
        self.last = align_layers(inp, self.params, self.memory)
        return Refinement(self.last.depth_factor, self.last.path_log_scale, self.last.path_offset,
                          self.last.path_information)

    def observe(self, window: AlignedWindow) -> None:
        """Remember the keyframes among a registered window's frames and its camera-path measurement."""
        self.memory.add_window(window)
        self.path_offsets.append(window.path_offset)
        self.path_information.append(window.path_information)

    def restore(self, windows: Sequence[AlignedWindow]) -> None:
        """Rebuild the memory from the registered windows of a resumed run (oldest first)."""
        self.memory = KeyframeMemory(stride=self.params.stride)
        self.path_offsets, self.path_information = [], []
        for window in windows:
            self.observe(window)
