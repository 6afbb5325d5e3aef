"""Layer scales from parallax inside a window: a static layer seen from two cameras must meet itself.

A monocular network gets the relative depth of scene layers wrong, but the cameras of a
window translate, and the image motion of a surface depends on its true distance. A
sample of frame ``t`` is tracked (pyramidal Lucas-Kanade, checked forward and backward)
into frame ``u``, ``parallax_gap`` frames away; with the window's poses, its layer's
log scale ``x`` predicts where it lands::

    r(x) = pi_u(A P + exp(-x) b) - tracked pixel     (pixels, 2-vector)

with ``P`` the sample's camera-space point at the Sim(3) depth and ``A, b`` the rotation
and translation ``cam_u_from_cam_t`` (scaling the point by ``exp(x)`` is scaling the
baseline by ``exp(-x)``). The sensitivity ``J = dr/dx`` is the parallax in pixels: zero
for a far layer or a pure rotation, large for a near layer passed by, so the
measurement's information ``sum(w |J|^2) / noise^2`` says by itself where it can be trusted.
The layers of a track (one surface followed through the window) share one ``x``, solved
by a few Gauss-Newton steps with Cauchy weights on all their samples; a track whose
samples do not fit any scale, or, moved into the other camera, do not meet that frame's depth
(``link_log``), is no measurement (a moving object, a mistracked edge), nor is one tracked on
fewer than ``MIN_SAMPLES`` samples or ``MIN_FRAMES`` frames.

Only samples whose surroundings, as far as the tracker's window reaches, lie on their own
layer are tracked (an edge sample would follow the occluder), and only textured ones;
about ``SAMPLES_PER_LAYER`` per layer of every ``SOURCE_STEP``-th frame. Vectorised over all
samples; the loops run over frames (the tracker) and the Gauss-Newton steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy.ndimage import maximum_filter, minimum_filter

from core.layer_align.segment import Layers
from core.layer_align.solve import group_weighted_median, weighted_median
from core.run.settings import LayerAlignParams


@dataclass
class ParallaxScales:
    """Per-layer parallax measurement of the log scale.

    Attributes:
        log_scale: (L,) log factor that makes each layer consistent with the window's
            camera motion (0 where not measured).
        information: (L,) inverse variance of ``log_scale`` (0: no measurement); the layers of one
            track share it.
        total: the information of all tracks together (each counted once).
    """

    log_scale: np.ndarray
    information: np.ndarray
    total: float


def partner_frames(n: int, gap: int) -> np.ndarray:
    """(N,) the frame each frame of an N-frame window is compared with: ``t + gap``, or
    ``t - gap`` near the end, or the farthest end when the window is shorter than the gap."""
    t = np.arange(n)
    g = max(1, min(gap, n - 1))
    partner = np.where(t + g < n, t + g, t - g)
    short = partner < 0
    partner[short] = np.where(t[short] < n / 2, n - 1, 0)
    return partner


def _spread(group: np.ndarray, n_groups: int, cap: int) -> np.ndarray:
    """(M,) bool: about ``cap`` members of each group, each kept with probability ``cap / size``.

    The draw is a fixed hash of the item's position, so the same input keeps the same items.

    Args:
        group: (M,) int group of each item in [0, n_groups).
    """
    size = np.bincount(group, minlength=n_groups)
    draw = (np.arange(group.size, dtype=np.uint64) * np.uint64(2654435761) % np.uint64(1 << 32)) / float(1 << 32)
    return draw < cap / np.maximum(size[group], 1)


def _interior(labels: np.ndarray, reach: int) -> np.ndarray:
    """(N, h, w) bool samples whose layer also holds every sample within ``reach`` (a square): the
    tracker's window there sees one surface, not the edge of another that moves differently."""
    size = (1, 2 * reach + 1, 2 * reach + 1)
    return (maximum_filter(labels, size=size, mode="nearest") == labels) & (
        minimum_filter(labels, size=size, mode="nearest") == labels)


def _gray(colors: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """(N, H, W) uint8 luma of the listed ``frames`` of (N, H, W, 3) RGB frames (0 elsewhere)."""
    gray = np.zeros(colors.shape[:3], np.uint8)
    for t in frames:
        gray[t] = cv2.cvtColor(np.ascontiguousarray(colors[t]), cv2.COLOR_RGB2GRAY)
    return gray


SOURCE_STEP = 2  # every this-many-th frame of a window is tracked into its partner frame
SAMPLES_PER_LAYER = 32  # samples tracked per layer of such a frame (a fixed pseudo-random draw): a track
#                         gets hundreds over a window, and the cost stays a few hundred points per frame
STATIC_MISFIT = 2.0  # a track whose median residual exceeds this many times the tracking noise is not a static surface
LK_WINDOW = (11, 11)
LK_LEVELS = 3
LK_ROUND_TRIP = 0.5  # pixels a point tracked into the partner frame and back may end from where it started
LK_CRITERIA = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 20, 0.01)
MIN_SAMPLES, MIN_FRAMES = 12, 3  # a track is measured on at least this many tracked samples from this many frames
#                                (fewer let a few mistracked samples rescale a 96x72 window; 24 dropped the
#                                demo's flat-shaded spheres, 13-50 samples each)
EVIDENT = 3.0  # a layer's correction this many times its own error is applied without the other layers' support
GAUSS_NEWTON_STEPS = 5  # of the per-track scale solve (each step moves a scale by at most 0.1)


def _track(gray: np.ndarray, partner: np.ndarray, frame: np.ndarray,
           centre: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pyramidal Lucas-Kanade of sample pixels into their partner frames, checked forward-backward.

    Args:
        gray: (N, H, W) uint8 frames; partner: (N,) the frame each frame is tracked into.
        frame: (M,) frame of each point (non-decreasing); centre: (M, 2) its pixel (centres at +0.5).
    Returns:
        (target, ok): (M, 2) tracked pixel in the partner frame, (M,) bool tracked there and back to
        within ``LK_ROUND_TRIP`` pixels.
    """
    target = np.full(centre.shape, np.nan)
    ok = np.zeros(len(centre), bool)
    bounds = np.searchsorted(frame, np.arange(len(gray) + 1))
    for t in np.flatnonzero(np.diff(bounds)):
        lo, hi = bounds[t], bounds[t + 1]
        a, b = gray[t], gray[partner[t]]
        pts = (centre[lo:hi] - 0.5).astype(np.float32).reshape(-1, 1, 2)    # OpenCV: pixel centres at integers
        fwd, st1, _ = cv2.calcOpticalFlowPyrLK(a, b, pts, None, winSize=LK_WINDOW, maxLevel=LK_LEVELS,
                                               criteria=LK_CRITERIA)
        back, st2, _ = cv2.calcOpticalFlowPyrLK(b, a, fwd, None, winSize=LK_WINDOW, maxLevel=LK_LEVELS,
                                                criteria=LK_CRITERIA)
        trip = np.linalg.norm((back - pts).reshape(-1, 2), axis=1)
        target[lo:hi] = fwd.reshape(-1, 2) + 0.5
        ok[lo:hi] = (st1.ravel() == 1) & (st2.ravel() == 1) & (trip < LK_ROUND_TRIP)
    return target, ok


def parallax_scales(z: np.ndarray, colors: np.ndarray, poses: np.ndarray, K: np.ndarray, layers: Layers,
                    weight: np.ndarray, track: np.ndarray, start: np.ndarray, stride: int,
                    p: LayerAlignParams) -> ParallaxScales:
    """Measure every layer's log scale from the image motion between frames ``gap`` apart.

    The layers of one track (the same surface in successive frames, ``link.layer_tracks``)
    share one scale, solved on all their samples; each frame pair's shared error
    (``parallax_floor``) averages out over the track's frames.

    Args:
        z: (N, h, w) log Sim(3) depth on the sample grid (NaN where none).
        colors: (N, H, W, 3) uint8 RGB frames at prediction resolution.
        poses: (N, 4, 4) world_from_cam of the window's frames.
        K: (3, 3) intrinsics at prediction resolution, or (N, 3, 3) per frame.
        layers: the window's layers on the sample grid.
        weight: (N, h, w) fitting weight of each sample (0: does not take part).
        track: (L,) track id of each layer (ids 0..T-1).
        start: (L,) log scale to start from (the consensus over windows).
        stride: sample grid stride; sample (i, j) is pixel (j * stride + stride // 2, i * stride + stride // 2).
        p: ``parallax_gap`` (frames between compared cameras), ``parallax_noise`` (tracking noise, pixels),
            ``parallax_floor`` (image-motion error shared by a layer's samples in one pair of frames, pixels),
            ``parallax_texture`` (least corner strength a sample needs), ``max_scale``.
    Returns:
        the per-layer measurement and its information (the track's).
    """
    n, h, w = z.shape
    n_layers = layers.count
    n_tracks = int(track.max()) + 1 if track.size else 0
    none = ParallaxScales(np.zeros(n_layers), np.zeros(n_layers), 0.0)
    if n < 2 or n_layers == 0:
        return none
    partner = partner_frames(n, p.parallax_gap)
    sources = np.arange(0, n, SOURCE_STEP)
    gray = _gray(colors, np.union1d(sources, partner[sources]))
    half = stride // 2
    texture = np.zeros(z.shape, np.float32)
    texture[sources] = [cv2.cornerMinEigenVal(gray[t], 5)[half::stride, half::stride][:h, :w] for t in sources]
    use = (layers.labels >= 0) & (weight > 0) & np.isfinite(z) & (texture > p.parallax_texture)
    use &= _interior(layers.labels, LK_WINDOW[0] // 2 // stride + 1)
    t_idx, gy, gx = np.nonzero(use)
    keep = _spread(layers.labels[t_idx, gy, gx], n_layers, SAMPLES_PER_LAYER)
    t_idx, gy, gx = t_idx[keep], gy[keep], gx[keep]
    if t_idx.size == 0:
        return none
    centre = np.stack([gx * stride + half, gy * stride + half], axis=-1) + 0.5   # pixel centres at +0.5
    target, tracked = _track(gray, partner, t_idx, centre)
    t_idx, gy, gx, centre, target = t_idx[tracked], gy[tracked], gx[tracked], centre[tracked], target[tracked]
    label = track[layers.labels[t_idx, gy, gx]]
    wt = weight[t_idx, gy, gx].astype(np.float64)
    u_idx = partner[t_idx]
    zs = z[t_idx, gy, gx]

    Ks = np.broadcast_to(K, (n, 3, 3)).astype(np.float64)
    Kt = Ks[t_idx]   # pinhole, no skew: the ray through a pixel is ((u - cx) / fx, (v - cy) / fy, 1)
    ray = np.stack([(centre[:, 0] - Kt[:, 0, 2]) / Kt[:, 0, 0], (centre[:, 1] - Kt[:, 1, 2]) / Kt[:, 1, 1],
                    np.ones(len(centre))], axis=-1)
    point = ray * np.exp(zs.astype(np.float64))[:, None]
    R, c = poses[:, :3, :3].astype(np.float64), poses[:, :3, 3].astype(np.float64)
    A = np.einsum("nji,njk->nik", R[partner], R)                       # cam_u_from_cam_t rotation, per frame t
    b = np.einsum("nji,nj->ni", R[partner], c - c[partner])             # and translation
    rotated = np.einsum("nij,nj->ni", A[t_idx], point)
    moved = b[t_idx]
    Ku = Ks[u_idx]

    def in_partner(x: np.ndarray) -> np.ndarray:
        """(M, 3) each sample's point in its partner camera for log scales ``x``."""
        return rotated + np.exp(-x)[:, None] * moved

    def residual(q: np.ndarray) -> np.ndarray:
        """(M, 2) projected minus tracked pixel in the partner frame of points ``q`` (M, 3)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            u = Ku[:, 0, 0] * q[:, 0] / q[:, 2] + Ku[:, 0, 2]
            v = Ku[:, 1, 1] * q[:, 1] / q[:, 2] + Ku[:, 1, 2]
        r = np.stack([u, v], axis=-1) - target
        r[q[:, 2] <= 0] = np.nan
        return r

    max_log = float(np.log(p.max_scale))
    area = layers.area.astype(np.float64)
    x = np.bincount(track, weights=area * np.nan_to_num(start), minlength=n_tracks) / np.maximum(
        np.bincount(track, weights=area, minlength=n_tracks), 1)
    x = np.clip(x, -max_log, max_log)
    step = 0.02
    hess = np.zeros(n_tracks)
    sum_w = np.zeros(n_tracks)
    for _ in range(GAUSS_NEWTON_STEPS):
        xs = x[label]
        r0, rp, rm = (residual(in_partner(v)) for v in (xs, xs + step, xs - step))
        jac = (rp - rm) / (2 * step)
        ok = np.isfinite(r0).all(axis=1) & np.isfinite(jac).all(axis=1)
        r0, jac, lab, wk = r0[ok], jac[ok], label[ok], wt[ok]
        wk = wk / (1.0 + (r0 * r0).sum(axis=1) / p.parallax_noise ** 2)
        hess = np.bincount(lab, weights=wk * (jac * jac).sum(axis=1), minlength=n_tracks)
        grad = np.bincount(lab, weights=wk * (jac * r0).sum(axis=1), minlength=n_tracks)
        sum_w = np.bincount(lab, weights=wk, minlength=n_tracks)
        delta = np.divide(-grad, hess, out=np.zeros(n_tracks), where=hess > 0)
        x = np.clip(x + np.clip(delta, -0.1, 0.1), -max_log, max_log)
    mean_sq = np.divide(hess, sum_w, out=np.zeros(n_tracks), where=sum_w > 0)
    q = in_partner(x[label])
    final = residual(q)
    fit = np.isfinite(final).all(axis=1)
    misfit = group_weighted_median(np.linalg.norm(final[fit], axis=1), label[fit], wt[fit], n_tracks)
    frames = np.bincount(np.unique(label * n + t_idx) // n, minlength=n_tracks)
    # a static surface moved into the other camera also meets that frame's depth where it was tracked to
    row = np.clip(np.rint((target[:, 1] - 0.5 - half) / stride), 0, h - 1).astype(np.int64)
    col = np.clip(np.rint((target[:, 0] - 0.5 - half) / stride), 0, w - 1).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        depth_gap = np.abs(np.log(q[:, 2]) - z[u_idx, row, col])
    meets = np.isfinite(depth_gap)
    depth_misfit = group_weighted_median(depth_gap[meets], label[meets], wt[meets], n_tracks)
    measured = (hess > 0) & (mean_sq > 0) & (misfit <= STATIC_MISFIT * p.parallax_noise)
    measured &= depth_misfit <= p.link_log
    measured &= (np.bincount(label, minlength=n_tracks) >= MIN_SAMPLES) & (frames >= MIN_FRAMES)
    variance = np.full(n_tracks, np.inf)
    variance[measured] = (p.parallax_noise ** 2 / hess[measured]
                          + p.parallax_floor ** 2 / (mean_sq[measured] * np.maximum(frames[measured], 1)))
    information = 1.0 / variance
    return ParallaxScales(np.where(measured, x, 0.0)[track], information[track], float(information.sum()))


def path_offset(measured: ParallaxScales, log_scale: np.ndarray, area: np.ndarray, bias: float) -> float:
    """Log scale by which the window's camera path differs from its layers' depth.

    The parallax ties each layer to the window's own camera path, whose scale is the
    Sim(3)'s fit to the depth, so it carries the window's mix of layer errors; the
    offset shared by the layers (the weighted median of their difference from
    ``log_scale``) is that path scale, not a layer error. A layer weighs its area over its
    measurement's variance including ``bias ** 2``: every layer measured well counts by its
    size, so a small near object with much parallax does not outweigh the ground.

    Args:
        measured: the parallax measurement; log_scale: (L,) the consensus log scales;
        area: (L,) samples per layer; bias: the measurement's least error (log).
    """
    with np.errstate(divide="ignore"):
        w = np.where(measured.information > 0, area / (1.0 / measured.information + bias ** 2), 0.0)
    if not (w > 0).any():
        return 0.0
    return weighted_median(measured.log_scale - log_scale, w)


def shrinkage(discrepancy: np.ndarray, information: np.ndarray, bias: float, area: np.ndarray,
              robust: bool = True) -> np.ndarray:
    """Share of each measured correction to apply (empirical Bayes, pooled over the window's layers).

    A measurement's variance ``v`` is ``1 / information`` plus ``bias ** 2`` (errors no number of
    samples averages out: the tracker's and the poses' biases). The variance of the true
    corrections is estimated from all measured layers together: the area-weighted median of
    their excess ``discrepancy ** 2 - v`` (at least 0), so when the layers' depth is consistent
    (most excesses negative) nothing is applied, however one layer's measurement strays,
    and when they are inconsistent each takes ``tau2 / (tau2 + v)`` of its correction. A
    layer whose own discrepancy exceeds ``EVIDENT`` times its error uses its own excess
    (one object wrong among correct ones). A single measured item is its own pool: its positive-part
    share ``max(d^2 - v, 0) / (max(d^2 - v, 0) + v)``. Not ``robust``, the pool is the weighted mean of
    the excesses (the method-of-moments estimate): the camera path's offsets over the windows of a
    shot, where a few clearly large offsets say the path errors are large, not that one item is wrong.

    Args:
        discrepancy: (L,) measured minus current log scale; information: (L,) the measurement's
            inverse variance (0: none); bias: the measurement's least error (log); area: (L,) weight of
            each layer in the pooled estimate.
    Returns:
        (L,) share in [0, 1).
    """
    with np.errstate(divide="ignore"):
        variance = np.where(information > 0, 1.0 / information, np.inf) + bias ** 2
    measured = np.isfinite(variance)
    if not measured.any():
        return np.zeros(discrepancy.shape)
    excess = discrepancy ** 2 - variance
    weight = area[measured].astype(np.float64) + 1e-12
    if robust:
        pooled = weighted_median(excess[measured], weight)
    else:  # the mean, less its standard error (2 v^2 / k for k items: few items do not make a pool)
        k = int(measured.sum())
        pooled = (np.average(excess[measured], weights=weight)
                  - np.sqrt(2.0 / k) * np.average(variance[measured], weights=weight))
    evident = discrepancy ** 2 > EVIDENT ** 2 * variance
    tau2 = np.maximum(np.where(evident, excess, 0.0), max(pooled, 0.0))
    return np.where(measured, tau2 / (tau2 + variance), 0.0)
