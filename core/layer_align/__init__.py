"""Layer-wise scale alignment (LSA): per-depth-layer scale correction after the Sim(3).

A window's Sim(3) fixes one global scale, but a monocular network also gets the
relative scale of scene layers (a foreground object, the ground, a far wall) slightly
different in every window. For each new window:

1. segment every frame (and the reference frames) into depth layers in relative
   terms, on a sample grid (``segment``);
2. link layers of consecutive frames by IoU (or coverage) of the samples where
   depth stays the same surface, and match reference layers to new layers
   on the overlap frames by coverage (``link``);
3. solve a robust, confidence-weighted scale per matched pair, reject outlier pairs,
   clamp to a plausible band, and carry scales forward along the links weighted by
   link strength (``solve``); when a keyframe memory of earlier frames is given,
   layers without an overlap match are also measured against it (``memory``) and,
   where nothing was propagated to them or the memory disagrees with what was,
   take that scale and carry it forward the same way; layers that receive no scale
   keep the window scale;
4. multiply each pixel's depth by its layer's scale (``apply``).

Usage, one window::

    result = align_layers(LayerAlignInput(ref_depth, ref_mask, depth, mask, conf, overlap))
    corrected = result.depth

and over a stream, as the engine's depth refiner (owning its keyframe memory)::

    aligner = LayerAligner(params)
    refinement = aligner.refine(reference, depth, mask, conf, poses, K, colors)  # depth factor, path scale
    aligner.observe(registered_window)
"""
from core.layer_align.align import LayerAlignInput, align_layers
from core.layer_align.aligner import LayerAligner
from core.layer_align.params import LayerAlignResult
from core.run.settings import LayerAlignParams

__all__ = ["LayerAligner", "LayerAlignInput", "LayerAlignParams", "LayerAlignResult", "align_layers"]
