"""Depth layers of each frame, found in relative terms on a reduced sample grid.

A layer is a connected region of coherent depth. Depth is compared as log depth
(after edge-preserving smoothing of the samples), so a 5 % step separates two layers
at 1 m exactly as at 50 m: near and far layers come apart whatever the scene's depth
range.

Two passes of 4-connected components (OpenCV) over a lattice image whose node pixels
are the samples and whose in-between pixels say whether two neighbours connect:

1. over-segmentation: neighbours connect when their log-depth step is below
   ``edge_log``, or when the step continues the surface on both sides in a straight
   line of inverse depth to within ``edge_log`` (relative), as along any plane
   however slanted; links must come ``bridge`` abreast, so a region never leaks into
   another through a narrow spot where the two happen to meet in depth;
2. merging: two adjacent regions also connect when most (``merge_share``) of their
   common boundary passes the same test at the looser ``merge_log``; a vote over the
   whole boundary, so a few bridging pixels neither merge nor split layers. Fragments
   smaller than a layer join at most one neighbour, so they cannot bridge an edge.

With the frames' colours, every link (in both passes) also needs the two samples'
chromaticity (colour with the brightness divided out) to agree within ``color_edge``:
an object standing on the ground touches it at equal depth along its base, and an
object whose predicted depth happens to meet the surface behind it looks like one
continuous surface, but both differ from it in colour. Shading, checkerboards and other
brightness patterns do not cut a surface.

Layers smaller than ``min_layer`` of the frame are dropped (label -1). Label ids are
global over the window and ordered by frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from core.run.settings import LayerAlignParams


@dataclass
class Layers:
    """Layer labels of a stack of frames on the sample grid.

    Attributes:
        labels: (N, h, w) int32 global layer id of each sample, -1 for none.
        frame: (L,) int32 frame of each layer (non-decreasing).
        offsets: (N + 1,) int64; the layers of frame t are ids ``offsets[t]:offsets[t + 1]``.
        area: (L,) int64 samples per layer.
    """

    labels: np.ndarray
    frame: np.ndarray
    offsets: np.ndarray
    area: np.ndarray

    @property
    def count(self) -> int:
        return int(self.frame.size)


def sample_grid(a: np.ndarray, stride: int) -> np.ndarray:
    """(N, h, w) view of the block-centre samples ``a[:, s//2::s, s//2::s]`` of (N, H, W) ``a``."""
    return a[:, stride // 2::stride, stride // 2::stride]


def log_depth(depth: np.ndarray) -> np.ndarray:
    """float32 log depth, NaN where the depth is not a positive finite number."""
    d = np.asarray(depth, np.float32)
    ok = np.isfinite(d) & (d > 0)
    out = np.full(d.shape, np.nan, np.float32)
    np.log(d, out=out, where=ok)
    return out


CREASE_BASE = 3  # samples on either side of a link over which the crease test measures the slope


class _Steps:
    """Neighbour-to-neighbour depth changes along one image axis, for connection tests.

    For the link between samples k and k + 1 along the axis:

    * ``jump``: |log depth step|, how different the two depths are;
    * ``bend``: how far the step departs from a straight continuation of the surface on
      either side, the larger of ``|Δu_k - Δu_{k-1}| / u_k`` and ``|Δu_{k+1} - Δu_k| / u_{k+1}``
      with u = 1 / depth. Inverse depth is linear in the image along a plane, so a
      slanted plane (the ground at a grazing angle) has a bend near 0 however fast its
      depth changes, while an occlusion edge bends on both sides. A side that does not
      exist (image border, missing depth) takes the other side's value.

    * ``crease``: how much the surface turns across the link, ``|s_after - s_before| / u``
      with ``s`` the inverse-depth slope per sample over ``CREASE_BASE`` samples on either
      side (the link itself not included) and ``u`` the mean inverse depth of the two
      samples. Where two walls, or a wall and the ceiling, meet in a corner, depth is
      continuous (a small ``jump``) but the surface orientation changes; along a plane,
      however slanted, the crease is 0. It counts only where each side is itself straight
      (no occlusion edge, no missing depth next to the link).

    NaN (missing depth) in the jump and bend tests never connects.
    """

    def __init__(self, z: np.ndarray, axis: int):
        self.axis = axis
        self.jump = np.abs(np.diff(z, axis=axis))
        u = np.exp(-z)
        du = np.diff(u, axis=axis)
        n = du.shape[axis]
        pad = [(0, 0)] * z.ndim
        pad[axis] = (1, 1)
        # |second difference| / u at every sample, NaN at the two ends
        self.curv = np.pad(np.abs(np.diff(du, axis=axis)), pad, constant_values=np.nan) / u
        before = np.take(self.curv, np.arange(0, n), axis=axis)
        after = np.take(self.curv, np.arange(1, n + 1), axis=axis)
        before = np.where(np.isnan(before), after, before)
        after = np.where(np.isnan(after), before, after)
        self.bend = np.maximum(before, after)
        b = CREASE_BASE
        pad[axis] = (b, b)
        up = np.pad(u, pad, constant_values=np.nan)
        at = lambda i: np.take(up, np.arange(i, i + n), axis=axis)  # noqa: E731  (sample k + i - b)
        slope_before = (at(b) - at(0)) / b
        slope_after = (at(2 * b + 1) - at(b + 1)) / b
        self.turn = (slope_after - slope_before) / (0.5 * (at(b) + at(b + 1)))
        self.crease = np.abs(self.turn)
        self._planar: dict[float, np.ndarray] = {}  # _planar_sides by tolerance (the merge pass asks twice)

    def _planar_sides(self, tol: float) -> np.ndarray:
        """bool per link: the ``CREASE_BASE`` samples on each side lie on one straight surface
        (relative second differences below ``tol`` at samples k - b + 1 .. k - 1 and k + 2 .. k + b)."""
        if tol in self._planar:
            return self._planar[tol]
        b, axis = CREASE_BASE, self.axis
        n = self.jump.shape[axis]
        pad = [(0, 0)] * self.curv.ndim
        pad[axis] = (b, b)
        flat = np.pad(self.curv < tol, pad, constant_values=False)  # NaN (border, missing) is not flat
        at = lambda i: np.take(flat, np.arange(i, i + n), axis=axis)  # noqa: E731  (sample k + i - b)
        inner = [at(b + j) for j in range(1 - b, 0)] + [at(b + j) for j in range(2, b + 1)]
        self._planar[tol] = np.logical_and.reduce(inner) if inner else np.ones(self.jump.shape, bool)
        return self._planar[tol]

    def turns(self, tol: float) -> np.ndarray:
        """Signed turn of the surface across each link (``crease`` with its sign), NaN where a side is not straight."""
        return np.where(self._planar_sides(tol), self.turn, np.nan)

    def connects(self, tol: float, same_color: np.ndarray | None = None, crease: float = 0.0) -> np.ndarray:
        """bool: the two samples belong together at tolerance ``tol`` (and have ``same_color``, where
        given, and the surface turns by less than ``crease`` across the link, where positive)."""
        out = (self.jump < tol) | (self.bend < tol)
        if crease > 0:
            out &= ~((self.crease >= crease) & self._planar_sides(tol))
        if same_color is not None:
            out &= same_color
        return out


def block_chroma(colors: np.ndarray, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Chromaticity (red and green shares, brightness divided out) of each sample's pixel.

    Args:
        colors: (N, H, W, 3) uint8 RGB frames.
        stride: sample-grid step (the samples are ``sample_grid``'s pixels).
    Returns:
        (red, green): two (N, h, w) float32 arrays, ``r / (r + g + b + 30)`` and
        ``g / (r + g + b + 30)`` (damped where dark).
    """
    rgb = sample_grid(colors, stride).astype(np.float32)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    total = r + g + b + np.float32(30)
    return r / total, g / total


def _same_color(chroma: tuple[np.ndarray, np.ndarray] | None, axis: int, tol: float) -> np.ndarray | None:
    """bool links along ``axis`` (1 rows, 2 columns) whose samples' chromaticities agree within ``tol``."""
    if chroma is None or tol <= 0:
        return None
    red, green = chroma
    return (np.abs(np.diff(red, axis=axis)) < tol) & (np.abs(np.diff(green, axis=axis)) < tol)


def _thick(link: np.ndarray, along: int, radius: int) -> np.ndarray:
    """Keep a link only if the ``radius`` parallel links on either side (along axis
    ``along``) also hold, so regions cannot connect through a bridge narrower than
    ``2 * radius + 1`` samples. Links beyond the image border count as holding."""
    out = link.copy()
    n = link.shape[along]
    for k in range(1, radius + 1):
        if k >= n:
            break
        lead = [slice(None)] * link.ndim
        trail = [slice(None)] * link.ndim
        lead[along], trail[along] = slice(k, None), slice(None, -k)
        out[tuple(trail)] &= link[tuple(lead)]
        out[tuple(lead)] &= link[tuple(trail)]
    return out


def _smooth(z: np.ndarray, valid: np.ndarray, sigma_log: float) -> np.ndarray:
    """Edge-preserving (bilateral, 5x5) smoothing of log depth, frame by frame.

    Averages only over neighbours within a few ``sigma_log`` in log depth, so noise on
    surfaces drops while depth edges stay exactly where they are. Missing samples stay NaN
    and do not contribute.
    """
    far = np.float32(1e4)  # stand-in for missing samples: never similar to a real log depth
    filled = np.where(valid, z, far).astype(np.float32)
    out = np.empty_like(filled)
    for t in range(z.shape[0]):
        out[t] = cv2.bilateralFilter(filled[t], 5, sigma_log, 1.5)
    out[~valid] = np.nan
    return out


def _components(valid: np.ndarray, link_h: np.ndarray, link_v: np.ndarray) -> np.ndarray:
    """4-connected components of the sample graph, one OpenCV call for all frames.

    Args:
        valid: (N, h, w) bool samples that take part.
        link_h: (N, h, w - 1) bool, sample (i, j) connects to (i, j + 1).
        link_v: (N, h - 1, w) bool, sample (i, j) connects to (i + 1, j).
    Returns:
        (N, h, w) int32 component id, 0 for invalid samples; ids are unique over frames.
    """
    n, h, w = valid.shape
    lattice = np.zeros((n, 2 * h, 2 * w - 1), np.uint8)  # last row of each frame separates frames
    lattice[:, 0::2, 0::2] = valid
    lattice[:, 0::2, 1::2] = link_h & valid[:, :, :-1] & valid[:, :, 1:]
    lattice[:, 1:2 * h - 2:2, 0::2] = link_v & valid[:, :-1, :] & valid[:, 1:, :]
    _, comp = cv2.connectedComponents(lattice.reshape(n * 2 * h, 2 * w - 1), connectivity=4, ltype=cv2.CV_32S)
    return comp.reshape(n, 2 * h, 2 * w - 1)[:, 0::2, 0::2]


def _merge_links(comp: np.ndarray, soft_h: np.ndarray, soft_v: np.ndarray, flat_h: np.ndarray,
                 flat_v: np.ndarray, turn_h: np.ndarray, turn_v: np.ndarray, share: float, min_area: int,
                 crease_area: int, crease: float) -> tuple[np.ndarray, np.ndarray]:
    """Links to add so that regions whose common boundary mostly votes 'soft' merge.

    Two regions of at least ``crease_area`` samples merge when at least ``share`` of the
    links along their common boundary are soft, unless the surface turns along that
    boundary: the mean signed turn of its links along either axis is at least ``crease / 2``
    and three of its standard errors (a corner far from the image centre turns by less than
    ``crease`` per link, within the links' noise, but the same way on every link). A smaller
    region joins one neighbour at most, so small fragments along an edge or a corner can never bridge the two sides (a
    4-sample fragment on a room's corner made its ceiling and far wall one layer): below
    ``min_area`` the neighbour with the most ``flat`` links to it (if any); below
    ``crease_area`` the one it shares most flat links with among those whose boundary
    passes the ``flat`` test (the loose test without the crease test) by ``share``: the
    faces of a small box, and slivers along a corner, stay with a neighbour instead of
    becoming layers too small to measure on their own.

    Args:
        comp: (N, h, w) component ids, 0 for invalid samples.
        soft_h, soft_v: (N, h, w - 1) / (N, h - 1, w) bool, the link passes the loose test.
        flat_h, flat_v: the same shapes, the loose test without the crease test.
        turn_h, turn_v: the same shapes, float: how much the surface turns across each link
            (``_Steps.turn``), NaN where not measured.
        share: minimum share of soft links along a boundary.
        min_area: regions below this size join the neighbour they share most flat links with.
        crease_area: regions below this size join one neighbour at most, also across a crease.
        crease: the per-link crease threshold (0: no crease test).
    Returns:
        (join_h, join_v): links on the boundaries of merging region pairs.
    """
    pairs = []
    for a, b, soft, weak, turn in ((comp[:, :, :-1], comp[:, :, 1:], soft_h, flat_h, turn_h),
                                   (comp[:, :-1, :], comp[:, 1:, :], soft_v, flat_v, turn_v)):
        boundary = (a != b) & (a > 0) & (b > 0)
        pairs.append((boundary, np.minimum(a, b)[boundary], np.maximum(a, b)[boundary], soft[boundary],
                      weak[boundary], turn[boundary]))
    lo = np.concatenate([q[1] for q in pairs]).astype(np.int64)
    hi = np.concatenate([q[2] for q in pairs]).astype(np.int64)
    soft = np.concatenate([q[3] for q in pairs])
    weak = np.concatenate([q[4] for q in pairs])
    turn = np.concatenate([q[5] for q in pairs])
    along_v = np.repeat([False, True], [pairs[0][1].size, pairs[1][1].size])  # the link is a column link
    joins = [np.zeros_like(soft_h), np.zeros_like(soft_v)]
    if lo.size == 0:
        return joins[0], joins[1]
    area = np.bincount(comp.ravel())
    uniq, inv = np.unique(lo * area.size + hi, return_inverse=True)
    u_lo, u_hi = uniq // area.size, uniq % area.size
    votes = np.bincount(inv, weights=soft, minlength=uniq.size)
    total = np.bincount(inv, minlength=uniq.size)
    big_lo, big_hi = area[u_lo] >= crease_area, area[u_hi] >= crease_area
    merge = big_lo & big_hi & (votes >= share * total)
    if crease > 0:
        merge &= ~_turning(inv, turn, along_v, uniq.size, crease)
    flat = np.bincount(inv, weights=weak, minlength=uniq.size)
    # Each small region joins one neighbour (so fragments cannot bridge two layers): those under
    # min_area the neighbour with the most flat links, those under crease_area the one with the
    # most among those they would merge with but for the crease test.
    tiny = area < min_area
    small = area < crease_area
    ends = np.concatenate([u_lo, u_hi])
    pair = np.concatenate([np.arange(uniq.size)] * 2)
    ok = np.where(tiny[ends], flat[pair] > 0, small[ends] & (flat[pair] >= share * total[pair]))
    ends, pair = ends[ok], pair[ok]
    order = np.lexsort((-flat[pair], ends))
    first = np.unique(ends[order], return_index=True)[1]
    merge[pair[order[first]]] = True
    join = merge[inv]
    n_h = int(pairs[0][0].sum())
    joins[0][pairs[0][0]] = join[:n_h]
    joins[1][pairs[1][0]] = join[n_h:]
    return joins[0], joins[1]


def _turning(inv: np.ndarray, turn: np.ndarray, along_v: np.ndarray, n_pairs: int, crease: float) -> np.ndarray:
    """(n_pairs,) bool: the boundary turns, by its mean signed turn along either axis (see ``_merge_links``).

    Args:
        inv: (B,) boundary link -> pair index.
        turn: (B,) each link's signed turn (NaN: not measured); along_v: (B,) bool, a column (vertical) link.
    """
    out = np.zeros(n_pairs, bool)
    for axis in (False, True):
        ok = np.isfinite(turn) & (along_v == axis)
        g = inv[ok]
        n = np.bincount(g, minlength=n_pairs)
        mean = np.bincount(g, weights=turn[ok], minlength=n_pairs) / np.maximum(n, 1)
        sq = np.bincount(g, weights=turn[ok] ** 2, minlength=n_pairs) / np.maximum(n, 1)
        sd = np.sqrt(np.maximum(sq - mean ** 2, 0.0))
        out |= (n >= 3) & (np.abs(mean) >= 0.5 * crease) & (np.abs(mean) * np.sqrt(np.maximum(n - 1, 1)) >= 3 * sd)
    return out


def segment_layers(z: np.ndarray, params: LayerAlignParams,
                   chroma: tuple[np.ndarray, np.ndarray] | None = None) -> Layers:
    """Segment each frame of a log-depth stack into depth layers.

    Args:
        z: (N, h, w) float32 log depth on the sample grid, NaN where missing.
        params: ``smooth_log``, ``edge_log``, ``bridge``, ``merge_log``, ``merge_share``, ``min_layer``,
            ``color_edge``.
        chroma: optional chromaticity of the samples (``block_chroma``).
    Returns:
        the layers, ids global over the stack and ordered by frame.
    """
    n, h, w = z.shape
    if n == 0:
        return Layers(labels=np.full(z.shape, -1, np.int32), frame=np.zeros(0, np.int32),
                      offsets=np.zeros(1, np.int64), area=np.zeros(0, np.int64))
    valid = np.isfinite(z)
    zs = _smooth(z, valid, params.smooth_log)
    steps_h, steps_v = _Steps(zs, 2), _Steps(zs, 1)
    color_h, color_v = _same_color(chroma, 2, params.color_edge), _same_color(chroma, 1, params.color_edge)
    r = params.bridge // 2
    comp = _components(valid, _thick(steps_h.connects(params.edge_log, color_h, params.crease), 1, r),
                       _thick(steps_v.connects(params.edge_log, color_v, params.crease), 2, r))

    min_area = max(1, int(round(params.min_layer * h * w)))
    join_h, join_v = _merge_links(comp, steps_h.connects(params.merge_log, color_h, params.crease),
                                  steps_v.connects(params.merge_log, color_v, params.crease),
                                  steps_h.connects(params.merge_log, color_h),
                                  steps_v.connects(params.merge_log, color_v),
                                  steps_h.turns(params.merge_log), steps_v.turns(params.merge_log),
                                  params.merge_share, min_area,
                                  max(min_area, int(round(params.crease_min_layer * h * w))), params.crease)
    same_h = comp[:, :, :-1] == comp[:, :, 1:]
    same_v = comp[:, :-1, :] == comp[:, 1:, :]
    comp = _components(valid, same_h | join_h, same_v | join_v)
    return _compact(comp, min_area)


def _compact(comp: np.ndarray, min_area: int) -> Layers:
    """Drop components below ``min_area`` samples and renumber the rest by frame."""
    n = comp.shape[0]
    flat = comp.reshape(n, -1)
    area = np.bincount(flat.ravel())
    frame_of = np.zeros(area.size, np.int64)
    frame_of[flat] = np.arange(n)[:, None]
    keep = area >= min_area
    keep[0] = False
    old = np.flatnonzero(keep)
    old = old[np.argsort(frame_of[old], kind="stable")]
    new_id = np.full(area.size, -1, np.int32)
    new_id[old] = np.arange(old.size, dtype=np.int32)
    frame = frame_of[old].astype(np.int32)
    offsets = np.searchsorted(frame, np.arange(n + 1)).astype(np.int64)
    return Layers(labels=new_id[comp], frame=frame, offsets=offsets, area=area[old].astype(np.int64))
