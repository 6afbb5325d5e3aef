"""Links between layers: through time inside a window, and across the window overlap.

All statistics are co-occurrence counts of label pairs over the sample grid, one
``bincount`` (or ``unique`` when the pair table would be large) for all frames at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from core.layer_align.segment import Layers

_DENSE_PAIRS = 1 << 22  # largest pair table counted with a dense bincount


@dataclass
class Links:
    """Weighted edges from layers of one labelling to layers of another.

    Attributes:
        src: (E,) int64 source layer ids.
        dst: (E,) int64 destination layer ids.
        inter: (E,) int64 sample pixels the two layers share.
        weight: (E,) float64 link strength in (0, 1].
    """

    src: np.ndarray
    dst: np.ndarray
    inter: np.ndarray
    weight: np.ndarray

    def select(self, keep: np.ndarray) -> "Links":
        return Links(self.src[keep], self.dst[keep], self.inter[keep], self.weight[keep])


def co_occurrence(a: np.ndarray, b: np.ndarray, n_b: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Count how often label ``a`` meets label ``b`` at the same position.

    Args:
        a, b: equally shaped int label arrays, -1 for none; ``b < n_b``.
        n_b: number of labels of ``b``.
    Returns:
        (src, dst, count): every pair that occurs, with its count.
    """
    ok = (a >= 0) & (b >= 0)
    key = a[ok].astype(np.int64) * n_b + b[ok]
    if key.size == 0:
        empty = np.zeros(0, np.int64)
        return empty, empty, empty
    n_a = int(a.max()) + 1
    if n_a * n_b <= _DENSE_PAIRS:
        counts = np.bincount(key, minlength=n_a * n_b)
        pairs = np.flatnonzero(counts)
        count = counts[pairs]
    else:
        pairs, count = np.unique(key, return_counts=True)
    return pairs // n_b, pairs % n_b, count.astype(np.int64)


def temporal_links(layers: Layers, z: np.ndarray, min_iou: float, min_cover: float,
                   max_change: float) -> Links:
    """Links from the layers of frame t to the layers of frame t + 1.

    Only shared samples whose log depth changes by less than ``max_change`` between the
    two frames count (the same surface seen again), so an object entering over the
    background, or a neighbouring layer that slides over a position, never links. With
    those consistent shared samples, a link exists when their IoU is at least
    ``min_iou``, or when they cover at least ``min_cover`` of the smaller of the two
    layers (one layer split off, or merged into, a larger one). The weight is the IoU.

    Args:
        layers: the window's layers.
        z: (N, h, w) log depth on the sample grid.
    """
    same = np.abs(z[1:] - z[:-1]) < max_change  # NaN compares False
    src, dst, inter = co_occurrence(np.where(same, layers.labels[:-1], -1), layers.labels[1:], layers.count)
    iou = inter / np.maximum(layers.area[src] + layers.area[dst] - inter, 1)
    cover = inter / np.maximum(np.minimum(layers.area[src], layers.area[dst]), 1)
    return Links(src, dst, inter, iou).select((iou >= min_iou) | (cover >= min_cover))


def overlap_matches(ref: Layers, new: Layers, overlap: int, min_cover: float) -> Links:
    """Match the previous window's layers to the new window's layers on the overlap frames.

    Frame i of ``ref`` shows the same image as frame i of ``new`` (i < overlap). A
    reference layer is matched to a new layer when it covers at least ``min_cover`` of
    it; the weight is that coverage, so a new layer's scale comes from what lies under it.
    """
    src, dst, inter = co_occurrence(ref.labels[:overlap], new.labels[:overlap], new.count)
    cover = inter / np.maximum(new.area[dst], 1)
    return Links(src, dst, inter, cover).select(cover >= min_cover)


def layer_tracks(layers: Layers, links: Links, min_iou: float) -> np.ndarray:
    """Group the layers of a window into tracks: one surface followed from frame to frame.

    Layers joined by a temporal link of IoU at least ``min_iou`` are the same surface; the
    weaker links of a split or merge (an object joining the ground it stands on for a
    frame) do not join tracks.

    Returns:
        (L,) int64 track id of each layer (ids 0..T-1).
    """
    keep = links.weight >= min_iou
    graph = coo_matrix((np.ones(int(keep.sum())), (links.src[keep], links.dst[keep])),
                       shape=(layers.count, layers.count))
    _, track = connected_components(graph, directed=False)
    return track.astype(np.int64)
