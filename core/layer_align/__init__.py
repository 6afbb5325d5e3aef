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

Usage::

    result = align_layers(LayerAlignInput(ref_depth, ref_mask, depth, mask, conf, overlap))
    corrected = result.depth
"""

from __future__ import annotations

import time

import numpy as np

from core.layer_align.apply import rescale_depth
from core.layer_align.link import overlap_matches, temporal_links
from core.layer_align.memory import memory_scales
from core.layer_align.params import LayerAlignParams, LayerAlignResult
from core.layer_align.segment import log_depth, sample_grid, segment_layers
from core.layer_align.solve import combine_pairs, confidence_weights, pair_scales, propagate
from core.types import LayerAlignInput

__all__ = ["LayerAlignInput", "LayerAlignParams", "LayerAlignResult", "align_layers"]


def _check(inp: LayerAlignInput) -> None:
    n, h, w = inp.depth.shape
    o = inp.overlap
    if not 0 <= o <= n:
        raise ValueError(f"overlap {o} outside [0, {n}]")
    for name, arr, shape in (("ref_depth", inp.ref_depth, (o, h, w)), ("ref_mask", inp.ref_mask, (o, h, w)),
                             ("mask", inp.mask, (n, h, w)), ("conf", inp.conf, (n, h, w))):
        if arr.shape != shape:
            raise ValueError(f"LayerAlignInput.{name} has shape {arr.shape}, expected {shape}")


def align_layers(inp: LayerAlignInput, params: LayerAlignParams | None = None) -> LayerAlignResult:
    """Correct the per-layer depth scale of a new window against the previous window.

    Args:
        inp: the new window's Sim(3)-scaled depth, masks and confidence, the
            previous window's final depth on the ``overlap`` shared frames, and
            optionally the keyframe memory with the window's poses and intrinsics.
        params: settings; defaults to ``LayerAlignParams()``.
    Returns:
        the corrected (N, H, W) float32 depth with layer labels, per-layer scales and
        the time spent in each stage.
    """
    p = params or LayerAlignParams()
    _check(inp)
    o, s = inp.overlap, p.stride

    t0 = time.perf_counter()
    z_new = log_depth(sample_grid(inp.depth, s))
    z_ref = log_depth(sample_grid(inp.ref_depth, s))
    new = segment_layers(z_new, p)
    ref = segment_layers(z_ref, p)

    t1 = time.perf_counter()
    links = temporal_links(new, z_new, p.link_iou, p.link_cover, p.link_log)
    matches = overlap_matches(ref, new, o, p.match_cover)

    t2 = time.perf_counter()
    log_ratio = z_ref - z_new[:o]
    confident = sample_grid(inp.ref_mask, s) & sample_grid(inp.mask[:o], s)
    weight = confidence_weights(sample_grid(inp.conf[:o], s), np.isfinite(log_ratio))
    weight *= np.where(confident, np.float32(1), np.float32(p.unconfident_weight))
    pairs = pair_scales(matches, ref.labels, new.labels[:o], log_ratio, weight, new.count,
                        p.irls_c, p.irls_iters, p.min_pair_pixels)
    max_log = float(np.log(p.max_scale))
    direct, direct_weight, accepted = combine_pairs(pairs, new.count, p.pair_outlier_log, max_log)
    log_scale, source = propagate(new, links, z_new, direct, direct_weight, p.temporal_weight, p.link_log)

    t3 = time.perf_counter()
    if inp.memory is not None and len(inp.memory):
        weight_all = confidence_weights(sample_grid(inp.conf, s), np.isfinite(z_new))
        weight_all *= np.where(sample_grid(inp.mask, s), np.float32(1), np.float32(p.unconfident_weight))
        remembered, remembered_weight = memory_scales(inp.memory, inp.poses, inp.K, inp.depth, new, z_new,
                                                      weight_all, direct_weight == 0, p)
        differs = (remembered_weight > 0) & ((source == 0) | (np.abs(remembered - log_scale) > p.memory_gate_log))
        if differs.any():
            direct = np.where(differs, remembered, direct)
            direct_weight = np.where(differs, remembered_weight, direct_weight)
            log_scale, source = propagate(new, links, z_new, direct, direct_weight, p.temporal_weight, p.link_log)
            source[differs] = 3
    layer_scale = np.exp(log_scale).astype(np.float32)

    t4 = time.perf_counter()
    depth = rescale_depth(inp.depth, new.labels, z_new, layer_scale, s)
    t5 = time.perf_counter()

    return LayerAlignResult(
        depth=depth, labels=new.labels, layer_frame=new.frame, layer_scale=layer_scale, layer_source=source,
        pairs_solved=int(accepted.size), pairs_rejected=int((~accepted).sum()),
        timings={"segment": t1 - t0, "match": t2 - t1, "solve": t3 - t2, "memory": t4 - t3, "apply": t5 - t4},
    )
