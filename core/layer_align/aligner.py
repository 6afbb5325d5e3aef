"""Layer-wise scale alignment over a stream: the engine's depth refiner, owning its keyframe memory."""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

from core.layer_align.align import LayerAlignInput, align_layers
from core.layer_align.keyframes import KeyframeMemory
from core.layer_align.params import LayerAlignResult
from core.run.arrays import AlignedWindow
from core.run.settings import LayerAlignParams

if TYPE_CHECKING:
    from core.registration import Reference


class LayerAligner:
    """Layer-wise scale alignment of every window after the first (a ``core.registration.DepthRefiner``).

    Keeps a keyframe memory of the registered frames so layers the overlap does not
    show are measured against earlier frames; the memory is rebuilt from the windows
    on disk when a run resumes, so a resumed run continues exactly.

    Attributes:
        params: the alignment settings.
        memory: keyframes of the registered stream so far.
        last: diagnostics of the last ``refine`` (None before the first).
    """

    def __init__(self, params: LayerAlignParams | None = None):
        self.params = params or LayerAlignParams()
        self.memory = KeyframeMemory(stride=self.params.stride)
        self.last: LayerAlignResult | None = None

    def refine(self, reference: Reference, depth: np.ndarray, mask: np.ndarray, conf: np.ndarray,
               poses: np.ndarray, K: np.ndarray) -> np.ndarray:
        """(N, H, W) float32 per-pixel factor correcting each layer's scale of the Sim(3)-scaled ``depth``.

        Args:
            reference: the previous window's registered tail (its final depth is matched).
            depth: (N, H, W) the new window's depth after the Sim(3).
            mask, conf: (N, H, W) its confident pixels and confidence.
            poses: (N, 4, 4) its world camera-to-world poses; K: (3, 3) intrinsics.
        """
        inp = LayerAlignInput(ref_depth=reference.depth, ref_mask=reference.mask, depth=depth, mask=mask,
                              conf=conf, overlap=len(reference.frames), poses=poses, K=K)
        self.last = align_layers(inp, self.params, self.memory)
        return self.last.depth_factor

    def observe(self, window: AlignedWindow) -> None:
        """Remember the keyframes among a registered window's frames."""
        self.memory.add_window(window)

    def restore(self, windows: Sequence[AlignedWindow]) -> None:
        """Rebuild the memory from the registered windows of a resumed run (oldest first)."""
        self.memory = KeyframeMemory(stride=self.params.stride)
        for window in windows:
            self.memory.add_window(window)
