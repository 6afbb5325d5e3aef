"""Layer scales: robust per-pair scales on the overlap, then forward propagation in time.

Scales are handled as log scales (0 = keep the window's Sim(3) scale). Every
statistic is a grouped reduction (``bincount`` / sorting) over all pixels or pairs at
once; the only Python loop runs over the frames of the window.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.layer_align.link import Links
from core.layer_align.segment import Layers


def confidence_weights(conf: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Per-sample fitting weights in [0.05, 1] from raw confidence, 0 where not ``valid``.

    Only the ranking of confidence is meaningful, so it is mapped linearly between its
    5th and 95th percentiles over the valid samples and clipped.

    Args:
        conf: (N, h, w) raw confidence.
        valid: (N, h, w) bool samples that take part.
    """
    c = conf[valid].astype(np.float32)
    if c.size == 0:
        return np.zeros(conf.shape, np.float32)
    lo, hi = np.percentile(c, [5.0, 95.0])
    if not hi > lo:
        return valid.astype(np.float32)
    w = np.clip((conf.astype(np.float32) - lo) / (hi - lo), 0.05, 1.0)
    return np.where(valid, w, 0.0).astype(np.float32)


def group_weighted_median(values: np.ndarray, groups: np.ndarray, weights: np.ndarray,
                          n_groups: int) -> np.ndarray:
    """Weighted median of ``values`` within each group; NaN for groups without weight.

    Args:
        values, weights: (M,) float.
        groups: (M,) int in [0, n_groups).
    """
    out = np.full(n_groups, np.nan)
    if values.size == 0:
        return out
    order = _group_order(values, groups)
    v, g, w = values[order], groups[order], weights[order].astype(np.float64)
    cw = np.cumsum(w)
    total = np.bincount(g, weights=w, minlength=n_groups)
    first = np.searchsorted(g, np.arange(n_groups))
    before = np.concatenate([[0.0], cw])[first]
    reached = np.flatnonzero((cw - before[g] >= 0.5 * total[g]) & (total[g] > 0))
    at = g[reached]
    head = np.ones(at.size, bool)  # the first sample of each group past half its weight
    head[1:] = at[1:] != at[:-1]
    out[at[head]] = v[reached[head]]
    return out


def _group_order(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """(M,) the order sorting by group, then value (stable): ``np.lexsort((values, groups))``.

    Sorted as one float64 key ``group * span + (value - min)`` with ``span`` beyond the values'
    range, a third faster than ``lexsort``; float64 keeps float32 values apart except ones closer
    than 1e-16 times the key (which then keep their input order). Non-finite values: ``lexsort``.
    """
    v = values.astype(np.float64)
    lo, hi = (v.min(), v.max()) if v.size else (0.0, 0.0)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return np.lexsort((values, groups))
    return np.argsort(groups * (2.0 * (hi - lo) + 1.0) + (v - lo), kind="stable")


def weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    """Weighted median of (M,) ``values``; NaN without weight."""
    return float(group_weighted_median(values, np.zeros(values.size, np.int64), weights, 1)[0])


def robust_group_mean(values: np.ndarray, groups: np.ndarray, weights: np.ndarray, n_groups: int,
                      c: float, iterations: int) -> np.ndarray:
    """Robust (Cauchy IRLS, started at the weighted median) mean of ``values`` per group.

    Args:
        values, weights: (M,) float; weights are non-negative prior weights.
        groups: (M,) int in [0, n_groups).
        c: Cauchy width in the units of ``values``.
        iterations: IRLS iterations.
    Returns:
        (n_groups,) float64, NaN for groups without weight.
    """
    mu = group_weighted_median(values, groups, weights, n_groups)
    for _ in range(iterations):
        r = (values - mu[groups]) / c
        w = weights / (1.0 + r * r)
        den = np.bincount(groups, weights=w, minlength=n_groups)
        num = np.bincount(groups, weights=w * values, minlength=n_groups)
        with np.errstate(invalid="ignore", divide="ignore"):
            mu = np.where(den > 0, num / den, np.nan)
    return mu


@dataclass
class PairScales:
    """Robust log scale of every matched (reference layer, new layer) pair.

    Attributes:
        links: the matched pairs (``src`` reference layer, ``dst`` new layer, ``weight`` coverage).
        log_scale: (E,) log of the factor taking the new layer's depth onto the reference.
        support: (E,) samples the pair shares (with depth in both windows).
        confidence: (E,) mean fitting weight of those samples, in [0, 1].
    """

    links: Links
    log_scale: np.ndarray
    support: np.ndarray
    confidence: np.ndarray


def pair_scales(matches: Links, ref_labels: np.ndarray, new_labels: np.ndarray, log_ratio: np.ndarray,
                weight: np.ndarray, n_new: int, c: float, iterations: int, min_pixels: int) -> PairScales:
    """Solve one robust scale per matched pair on the confident pixels the pair shares.

    Args:
        matches: overlap matches (reference layer -> new layer).
        ref_labels, new_labels: (O, h, w) layer ids on the overlap frames.
        log_ratio: (O, h, w) log(reference depth) - log(new depth).
        weight: (O, h, w) fitting weight, 0 where a sample does not take part.
        n_new: number of new layers.
        c, iterations: IRLS settings.
        min_pixels: pairs sharing fewer samples of positive weight are dropped.
    """
    n = matches.src.size
    if n == 0:
        return PairScales(matches, np.zeros(0), np.zeros(0, np.int64), np.zeros(0))
    use = (ref_labels >= 0) & (new_labels >= 0) & (weight > 0) & np.isfinite(log_ratio)
    key = ref_labels[use].astype(np.int64) * n_new + new_labels[use]
    pair_key = matches.src * n_new + matches.dst
    order = np.argsort(pair_key)
    pos = np.minimum(np.searchsorted(pair_key[order], key), n - 1)
    hit = pair_key[order][pos] == key
    group = order[pos[hit]]
    values = log_ratio[use][hit].astype(np.float64)
    w = weight[use][hit].astype(np.float64)
    support = np.bincount(group, minlength=n)
    confidence = np.bincount(group, weights=w, minlength=n) / np.maximum(support, 1)
    log_scale = robust_group_mean(values, group, w, n, c, iterations)
    keep = (support >= min_pixels) & np.isfinite(log_scale)
    return PairScales(matches.select(keep), log_scale[keep], support[keep], confidence[keep])


def combine_pairs(pairs: PairScales, n_new: int, outlier_log: float,
                  max_log: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One direct log scale per new layer from the pairs feeding it.

    A pair's weight is its coverage of the layer times the mean confidence weight of the
    samples it was solved on. Pairs further than ``outlier_log`` from the weighted median
    of their layer are rejected; the rest are averaged with their weights; the result
    is clamped to ``[-max_log, max_log]``.

    Returns:
        (log_scale, weight, accepted): (n_new,) direct log scale (0 where none), (n_new,)
        total weight of the accepted pairs (0 where none), (E,) bool accepted pairs.
    """
    dst, s = pairs.links.dst, pairs.log_scale
    cover = pairs.links.weight * pairs.confidence
    med = group_weighted_median(s, dst, cover, n_new)
    accepted = np.abs(s - med[dst]) <= outlier_log
    w = np.where(accepted, cover, 0.0)
    den = np.bincount(dst, weights=w, minlength=n_new)
    num = np.bincount(dst, weights=w * s, minlength=n_new)
    log_scale = np.clip(np.divide(num, den, out=np.zeros(n_new), where=den > 0), -max_log, max_log)
    return log_scale, den, accepted


def propagate(layers: Layers, links: Links, z: np.ndarray, direct: np.ndarray, direct_weight: np.ndarray,
              temporal_weight: float, max_change: float, track_iou: float) -> tuple[np.ndarray, np.ndarray]:
    """Carry layer scales forward through the window along the temporal links.

    Every sample remembers the log scale it was given. Frame by frame, a sample
    inherits the previous frame's memory at its position when the depth there is the
    same surface (log depth changes by less than ``max_change``) and its previous and
    current layers are linked. A layer's propagated log scale is the median of what
    its samples inherited (so each linked layer counts by the samples it hands over,
    its link strength); on the overlap frames it is blended with the direct
    measurement: ``(w_d * direct + temporal_weight * s * propagated) / (w_d + temporal_weight * s)``
    with ``w_d`` the direct weight and ``s`` the share of the layer's samples that
    inherited. Layers with neither keep log scale 0 (the window's Sim(3) scale).

    Samples keep their own inherited value in memory (not the layer's) where their layer
    has no direct measurement, and wherever they came through a link weaker than
    ``track_iou`` (a merge: a surface that joins another for a few frames, its depth
    meeting the other's), so a surface gets its own scale back when the two part, even
    when the merged layer was measured on the overlap.

    Args:
        layers: the window's layers; links: its temporal links (gate the inheritance).
        z: (N, h, w) log depth on the sample grid.
        direct, direct_weight: (L,) direct log scale and its weight (0: none).
        temporal_weight: weight of the propagated scale against the direct one.
        max_change: largest log-depth change of a sample that still inherits (the same surface).
        track_iou: links at least this strong continue one surface; weaker ones merge or split surfaces.
    Returns:
        (log_scale, source): (L,) float64 and (L,) int8 (0 none, 1 direct measurement,
        2 propagated only).
    """
    n_layers = layers.count
    log_scale = np.zeros(n_layers)
    source = np.where(direct_weight > 0, 1, 0).astype(np.int8)
    keys = links.src * n_layers + links.dst
    link_order = np.argsort(keys)
    link_keys = keys[link_order]
    link_strong = links.weight[link_order] >= track_iou
    memory = np.full(layers.labels.shape[1:], np.nan)
    for t in range(len(layers.offsets) - 1):
        lo, hi = int(layers.offsets[t]), int(layers.offsets[t + 1])
        lab = layers.labels[t]
        prop = np.full(hi - lo, np.nan)
        share = np.zeros(hi - lo)
        inherited = np.zeros(lab.shape, bool)
        merged = np.zeros(lab.shape, bool)
        if t > 0 and link_keys.size:
            prev = layers.labels[t - 1]
            cand = (lab >= 0) & (prev >= 0) & np.isfinite(memory) & (np.abs(z[t] - z[t - 1]) < max_change)
            key = prev[cand].astype(np.int64) * n_layers + lab[cand]
            pos = np.minimum(np.searchsorted(link_keys, key), link_keys.size - 1)
            inherited[cand] = link_keys[pos] == key
            merged[cand] = inherited[cand] & ~link_strong[pos]
            groups = lab[inherited] - lo
            prop = group_weighted_median(memory[inherited], groups, np.ones(groups.size), hi - lo)
            share = np.bincount(groups, minlength=hi - lo) / np.maximum(layers.area[lo:hi], 1)
        w_prop = np.where(np.isfinite(prop), temporal_weight * share, 0.0)
        den = direct_weight[lo:hi] + w_prop
        num = direct_weight[lo:hi] * direct[lo:hi] + w_prop * np.nan_to_num(prop)
        known = den > 0
        log_scale[lo:hi] = np.divide(num, den, out=np.zeros(hi - lo), where=known)
        source[lo:hi][(source[lo:hi] == 0) & known] = 2

        keep_own = inherited.copy()
        keep_own[inherited] = (direct_weight[lab[inherited]] == 0) | merged[inherited]
        next_memory = np.full(lab.shape, np.nan)
        has = lab >= 0
        has[has] = known[lab[has] - lo]
        next_memory[has] = log_scale[lab[has]]
        next_memory[keep_own] = memory[keep_own]
        memory = next_memory
    return log_scale, source
