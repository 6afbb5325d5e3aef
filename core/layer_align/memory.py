"""Direct layer scales from the keyframe memory, for layers the overlap gives no scale.

The keyframes' world points are projected into the frames holding such layers and
z-buffered on the sample grid. Where the visible memory surface lands on a layer,
log(memory depth / layer depth) measures the layer's scale error. Points of other
surfaces land there too (an occluder in front of the layer in a keyframe, the
background a keyframe saw where the layer is now); far ones fall outside the clamp
band, a robust (Cauchy IRLS) mean keeps the dominant surface, and a layer whose
occluding edges the memory does not show (a moving object: the keyframes saw what
is behind it now) gets nothing. Every statistic is a grouped reduction over all
points of all frames at once.
"""

from __future__ import annotations

import numpy as np

from core.geometry.camera import project, zbuffer
from core.layer_align.keyframes import KeyframeMemory
from core.layer_align.segment import Layers
from core.layer_align.solve import robust_group_mean
from core.run.settings import LayerAlignParams


def _edge_votes(labels: np.ndarray, z: np.ndarray, m: np.ndarray, n_layers: int, step_log: float,
                reach: int) -> tuple[np.ndarray, np.ndarray]:
    """Per layer, how many of its occluding edges the warped memory also shows.

    An occluding edge is a pair of samples ``reach`` apart along a row or column, one
    in the layer and one not, where the layer's sample is nearer than the other by
    more than ``step_log`` (log depth). The memory confirms it when its own step there
    is at least half as deep. ``reach`` beyond one sample keeps the test working when
    small pose errors shift the warped silhouette by a sample or two.

    Args:
        labels: (F, h, w) layer ids (-1: none); z: (F, h, w) log depth; m: (F, h, w)
            log warped memory depth (inf where none).
    Returns:
        (edges, confirmed): (n_layers,) counts of occluding edges with memory on both
        sides, and of those the memory confirms.
    """
    edges, confirmed = np.zeros(n_layers, np.int64), np.zeros(n_layers, np.int64)
    for axis in (1, 2):
        n = labels.shape[axis]
        a, b = slice(0, n - reach), slice(reach, n)
        for near, far in ((a, b), (b, a)):
            at_p, at_q = [slice(None)] * 3, [slice(None)] * 3
            at_p[axis], at_q[axis] = near, far
            lp, zp, mp = labels[tuple(at_p)], z[tuple(at_p)], m[tuple(at_p)]
            lq, zq, mq = labels[tuple(at_q)], z[tuple(at_q)], m[tuple(at_q)]
            d = zp - zq
            use = (lp >= 0) & (lq != lp) & (d < -step_log) & np.isfinite(mp) & np.isfinite(mq)
            edges += np.bincount(lp[use], minlength=n_layers)
            ok = mp[use] - mq[use] < 0.5 * d[use]
            confirmed += np.bincount(lp[use][ok], minlength=n_layers)
    return edges, confirmed


def memory_scales(memory: KeyframeMemory, poses: np.ndarray, K: np.ndarray, depth: np.ndarray, layers: Layers,
                  z: np.ndarray, weight: np.ndarray, wanted: np.ndarray,
                  p: LayerAlignParams) -> tuple[np.ndarray, np.ndarray]:
    """One direct log scale per wanted layer from the keyframe memory.

    The keyframes' points are projected into the frames that hold wanted layers. Per
    sample block the nearest point marks the visible surface; the points within
    ``p.link_log`` of it are that surface, and each is compared with the window's
    depth at the pixel it falls in (so neither the depth slope across a block nor
    the choice of the nearest of several noisy points biases the ratio); their log
    ratios are averaged per block, and the blocks are the samples of the robust fit.

    Args:
        memory: keyframes (world points of earlier frames, final depth).
        poses: (N, 4, 4) camera-to-world of the window's frames (world frame).
        K: (3, 3) intrinsics at full resolution, or (N, 3, 3) one per frame (a zoom).
        depth: (N, H, W) the window's depth (Sim(3) scale).
        layers: the window's layers; z: (N, h, w) their log depth on the sample grid.
        weight: (N, h, w) fitting weight of each sample (0: does not take part).
        wanted: (L,) bool layers to measure.
        p: settings: ratios outside the clamp band (``max_scale``) are other surfaces;
            IRLS as for overlap pairs (``irls_c``, ``irls_iters``); a layer takes the
            measurement when at least ``memory_min_blocks`` samples covering
            ``match_cover`` of it agree (within ``irls_c``), and when the memory shows
            at least half of its occluding edges (steps deeper than ``merge_log``):
            otherwise it saw what is behind the layer now (a moving object).
    Returns:
        (log_scale, weight): (L,) log scale (0 where none) and (L,) weight of the
        measurement (its agreeing share of the layer times their mean fitting weight; 0: none).
    """
    n_layers = layers.count
    log_scale, out_weight = np.zeros(n_layers), np.zeros(n_layers)
    frames = np.unique(layers.frame[wanted])
    if frames.size == 0 or len(memory) == 0:
        return log_scale, out_weight
    lab = layers.labels[frames]
    shape = lab.shape[1:]
    target = lab >= 0
    target[target] = wanted[lab[target]]
    target &= weight[frames] > 0

    proj = project(memory.points(), poses[frames], K if K.ndim == 2 else K[frames], depth.shape[1:])
    nearest, block = zbuffer(proj, frames.size, shape, memory.stride)
    nearest = nearest.reshape(-1)
    own = depth[frames[proj.frame], proj.row, proj.col]
    use = (block >= 0) & target.reshape(-1)[block] & (own > 0)
    log_z = np.log(proj.z)
    use &= log_z - np.log(nearest[block]) < p.link_log
    r = log_z[use] - np.log(own[use])
    band = np.abs(r) < np.log(p.max_scale)
    count = np.bincount(block[use][band], minlength=lab.size)
    cells = np.flatnonzero(count)
    v = np.bincount(block[use][band], weights=r[band], minlength=lab.size)[cells] / count[cells]
    g = lab.reshape(-1)[cells]
    wt = weight[frames].reshape(-1)[cells].astype(np.float64)
    mu = robust_group_mean(v, g, wt, n_layers, p.irls_c, p.irls_iters)
    agree = np.abs(v - mu[g]) < p.irls_c
    support = np.bincount(g[agree], minlength=n_layers)
    conf = np.bincount(g[agree], weights=wt[agree], minlength=n_layers) / np.maximum(support, 1)
    share = support / np.maximum(layers.area, 1)
    with np.errstate(divide="ignore"):
        m = np.log(nearest.reshape(lab.shape))
    edges, confirmed = _edge_votes(np.where(target, lab, -1), z[frames], m, n_layers, p.merge_log, 3)
    seen = confirmed >= 0.5 * edges
    ok = wanted & np.isfinite(mu) & (support >= p.memory_min_blocks) & (share >= p.match_cover) & seen
    log_scale[ok] = mu[ok]
    out_weight[ok] = np.minimum(share[ok], 1.0) * conf[ok]
    return log_scale, out_weight
