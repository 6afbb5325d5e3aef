"""One window's layer-wise scale alignment: segment, link, match, solve, propagate, apply."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from core.layer_align.apply import pixel_factors
from core.layer_align.keyframes import KeyframeMemory
from core.layer_align.link import layer_tracks, overlap_matches, temporal_links
from core.layer_align.memory import memory_scales
from core.layer_align.parallax import parallax_scales, path_offset, shrinkage
from core.layer_align.params import LayerAlignResult
from core.layer_align.segment import block_chroma, log_depth, sample_grid, segment_layers
from core.layer_align.solve import combine_pairs, confidence_weights, pair_scales, propagate
from core.run.settings import LayerAlignParams

TRACK_IOU = 0.5  # temporal links at least this strong join two layers into one track (the parallax solve's unit)


@dataclass
class LayerAlignInput:
    """One new window and the previous window's overlap frames, as layer alignment sees them.

    All depths are world-scale (the window's Sim(3) scale already applied) z-depth
    at prediction resolution. Frame ``i < overlap`` of the new window shows the same
    source frame as ``ref_depth[i]``.

    Attributes:
        ref_depth: (O, H, W) float32 final aligned depth of the previous window on the overlap frames.
        ref_mask: (O, H, W) bool valid (confident) pixels of ``ref_depth``.
        depth: (N, H, W) float32 new window's depth after the Sim(3) scale.
        mask: (N, H, W) bool confident pixels of the new window.
        conf: (N, H, W) float32 raw confidence of the new window (for weighting).
        overlap: O, the number of leading frames shared with the previous window.
        poses: (N, 4, 4) world camera-to-world poses of the new window (needed with a keyframe memory).
        K: (3, 3) intrinsics at prediction resolution, or (N, 3, 3) per frame with a zoom
            (needed with a keyframe memory).
        colors: (N, H, W, 3) uint8 RGB frames of the new window (optional: segmentation
            then also separates touching surfaces of different colour).
        ref_colors: (O, H, W, 3) uint8 RGB of the overlap frames (with ``colors``).
        history: share of the way each layer is moved from its own (Sim(3)) depth to the
            reference's, in log depth: 1 aligns every layer to the previous windows
            entirely, ``n / (n + 1)`` makes the result the running mean of ``n`` earlier
            windows and this one (``LayerAligner`` sets it).
        path_offsets, path_information: (K,) the parallax measurements of earlier windows' camera
            path offsets and their inverse variances (0: none); they say how large such offsets are
            in this shot, so a window's own offset is applied only as far as they bear it out.
    """

    ref_depth: np.ndarray
    ref_mask: np.ndarray
    depth: np.ndarray
    mask: np.ndarray
    conf: np.ndarray
    overlap: int
    poses: np.ndarray | None = None
    K: np.ndarray | None = None
    colors: np.ndarray | None = None
    ref_colors: np.ndarray | None = None
    history: float = 1.0
    path_offsets: np.ndarray = field(default_factory=lambda: np.zeros(0))
    path_information: np.ndarray = field(default_factory=lambda: np.zeros(0))


def _check(inp: LayerAlignInput, memory: KeyframeMemory | None) -> None:
    n, h, w = inp.depth.shape
    o = inp.overlap
    if not 0 <= o <= n:
        raise ValueError(f"overlap {o} outside [0, {n}]")
    for name, arr, shape in (("ref_depth", inp.ref_depth, (o, h, w)), ("ref_mask", inp.ref_mask, (o, h, w)),
                             ("mask", inp.mask, (n, h, w)), ("conf", inp.conf, (n, h, w))):
        if arr.shape != shape:
            raise ValueError(f"LayerAlignInput.{name} has shape {arr.shape}, expected {shape}")
    for name, arr, count in (("colors", inp.colors, n), ("ref_colors", inp.ref_colors, o)):
        if arr is not None and arr.shape != (count, h, w, 3):
            raise ValueError(f"LayerAlignInput.{name} has shape {arr.shape}, expected {(count, h, w, 3)}")
    if memory is not None and (inp.poses is None or inp.K is None):
        raise ValueError("layer alignment with a keyframe memory needs the window's poses and K")


def align_layers(inp: LayerAlignInput, params: LayerAlignParams | None = None,
                 memory: KeyframeMemory | None = None) -> LayerAlignResult:
    """Correct the per-layer depth scale of a new window against the previous window.

    Args:
        inp: the new window's Sim(3)-scaled depth, masks and confidence, and the
            previous window's final depth on the ``overlap`` shared frames.
        params: settings; defaults to ``LayerAlignParams()``.
        memory: optional keyframes of earlier registered frames; layers without an
            overlap match are measured against them (needs ``inp.poses`` and ``inp.K``).
    Returns:
        the corrected (N, H, W) float32 depth with layer labels, per-layer scales and
        the time spent in each stage.
    """
    p = params or LayerAlignParams()
    _check(inp, memory)
    o, s = inp.overlap, p.stride

    t0 = time.perf_counter()
    z_new = log_depth(sample_grid(inp.depth, s))
    z_ref = log_depth(sample_grid(inp.ref_depth, s))
    colored = inp.colors is not None and inp.ref_colors is not None and p.color_edge > 0
    new = segment_layers(z_new, p, block_chroma(inp.colors, s) if colored else None)
    ref = segment_layers(z_ref, p, block_chroma(inp.ref_colors, s) if colored else None)

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
    log_scale, source = propagate(new, links, z_new, direct, direct_weight, p.temporal_weight, p.link_log, TRACK_IOU)

    t3 = time.perf_counter()
    weight_all = confidence_weights(sample_grid(inp.conf, s), np.isfinite(z_new))
    weight_all *= np.where(sample_grid(inp.mask, s), np.float32(1), np.float32(p.unconfident_weight))
    if memory is not None and len(memory):
        remembered, remembered_weight = memory_scales(memory, inp.poses, inp.K, inp.depth, new, z_new,
                                                      weight_all, direct_weight == 0, p)
        differs = (remembered_weight > 0) & ((source == 0) | (np.abs(remembered - log_scale) > p.memory_gate_log))
        if differs.any():
            direct = np.where(differs, remembered, direct)
            direct_weight = np.where(differs, remembered_weight, direct_weight)
            log_scale, source = propagate(new, links, z_new, direct, direct_weight, p.temporal_weight, p.link_log,
                                          TRACK_IOU)
            source[differs] = 3
    log_scale = inp.history * log_scale

    t4 = time.perf_counter()
    parallax_share = np.zeros(new.count)
    path_log_scale, offset, path_information = 0.0, 0.0, 0.0
    if p.parallax_gap > 0 and inp.colors is not None and inp.poses is not None and inp.K is not None:
        track = layer_tracks(new, links, TRACK_IOU)
        measured = parallax_scales(z_new, inp.colors, inp.poses, inp.K, new, weight_all, track, log_scale, s, p)
        # the window's camera path: its scale is the Sim(3)'s fit to the raw depth, so it carries
        # the window's mix of layer errors; the parallax measures it against the layers, and the
        # earlier windows' offsets say how large such errors are in this shot (pooled like the layers')
        offset, path_information = path_offset(measured, log_scale, new.area, p.parallax_bias), measured.total
        pooled = np.append(inp.path_offsets, offset), np.append(inp.path_information, path_information)
        share = shrinkage(*pooled, p.parallax_bias, np.ones(pooled[0].size), robust=False)[-1]
        path_log_scale = -offset * float(share)
        discrepancy = measured.log_scale - offset - log_scale
        parallax_share = shrinkage(discrepancy, measured.information, p.parallax_bias, new.area)
        log_scale = log_scale + parallax_share * discrepancy
    layer_scale = np.exp(log_scale).astype(np.float16).astype(np.float32)  # float16 values: stored exactly

    t5 = time.perf_counter()
    factor = pixel_factors(inp.depth, new.labels, z_new, layer_scale, s)
    t6 = time.perf_counter()

    return LayerAlignResult(
        sim3_depth=inp.depth, depth_factor=factor, labels=new.labels, layer_frame=new.frame,
        layer_scale=layer_scale, layer_source=source,
        pairs_solved=int(accepted.size), pairs_rejected=int((~accepted).sum()),
        parallax_share=parallax_share.astype(np.float32), path_log_scale=path_log_scale,
        path_offset=offset, path_information=path_information,
        timings={"segment": t1 - t0, "match": t2 - t1, "solve": t3 - t2, "memory": t4 - t3,
                 "parallax": t5 - t4, "apply": t6 - t5},
    )
