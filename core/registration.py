"""Streaming window registration: confidence masks, fixed intrinsics, Sim(3) to the previous window.

A window's prediction lives in its own arbitrary Sim(3) frame. Registration maps it
into the world of the first window:

1. confidence mask: per frame, keep the top ``conf_keep`` share of valid pixels; on
   the overlap the mask used for fitting is mutual (both windows confident);
2. intrinsics: estimated once from the first window (or given), then kept fixed;
   depth is each point's z, re-projected through the fixed K (with a zoom, one K per
   frame instead: ``core.lens``);
3. Sim(3): a robust (IRLS) scale from the overlap depths, then rotation and
   translation by weighted Kabsch on the overlap cameras' centres plus points along
   their view and up directions;
4. optional depth refinement hook (layer-wise scale alignment) on the scaled depth, which
   may also rescale the window's camera path to agree with the refined depth (the overlap
   rotation and translation are then fitted again at that scale).

Conventions: OpenCV camera axes, camera-to-world poses, depth is z.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np

from core.errors import UserError
from core.geometry.camera import finite_points, intrinsics
from core.geometry.fitting import estimate_focal, robust_log_scale
from core.geometry.transforms import apply_sim3_to_poses, rigid_align
from core.lens import ZoomLens
from core.run.arrays import AlignedWindow, WindowPrediction


class RegistrationError(UserError):
    """The predictions cannot be registered (too little overlap, no usable focal length, frames out of order)."""


@dataclass
class Reference:
    """The registered tail of the previous window, which the next window overlaps.

    Attributes:
        frames: (O,) source frame indices.
        poses: (O, 4, 4) world camera-to-world poses.
        depth: (O, H, W) final world-scale depth (after any refiner).
        mask: (O, H, W) bool confident pixels.
        sim3_depth: (O, H, W) the same frames' depth after the Sim(3) but before the
            refiner (``depth`` when not given: no refiner ran). The next Sim(3) scale is fitted
            to it: consecutive raw windows differ per layer by small steps, so the
            robust scale is a consensus of the layers, while the layer-aligned depth
            differs from a raw window by the whole accumulated per-layer correction and
            the robust scale would follow whichever layer dominates (worse
            trajectories). Layer alignment itself matches against ``depth``.
        colors: (O, H, W, 3) uint8 RGB of the same frames, or None when unknown.
        frame_K: (O, 3, 3) their intrinsics at prediction resolution with a zoom (``--zoom``), else None.
    """

    frames: np.ndarray
    poses: np.ndarray
    depth: np.ndarray
    mask: np.ndarray
    sim3_depth: np.ndarray | None = None
    colors: np.ndarray | None = None
    frame_K: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.sim3_depth is None:
            self.sim3_depth = self.depth

    @classmethod
    def from_windows(cls, windows: Sequence[AlignedWindow], overlap: int) -> "Reference":
        """The last ``overlap`` frames of registered windows (oldest first), as read back from disk."""
        cat = lambda name: np.concatenate([getattr(w, name) for w in windows])[-overlap:]  # noqa: E731
        zoom = all(w.frame_K is not None for w in windows)
        return cls(frames=cat("frames"), poses=cat("poses").astype(np.float64), depth=cat("depth"),
                   mask=cat("mask"), sim3_depth=cat("sim3_depth"), colors=cat("colors"),
                   frame_K=cat("frame_K") if zoom else None)


@dataclass
class Refinement:
    """What a depth refiner changes in a registered window.

    Attributes:
        depth_factor: (N, H, W) float32 factor for the window's Sim(3)-scaled depth; it is stored as
            float16, so its values are ones float16 holds exactly (a resumed run then continues exactly).
        path_log_scale: log factor for the window's camera translations relative to its Sim(3)
            scale: the camera path re-scaled to agree with the refined depth (0 keeps the Sim(3) path).
        path_offset, path_information: the refiner's measurement behind it and its inverse variance
            (0: none), stored with the window (``AlignedWindow.path_offset``).
    """

    depth_factor: np.ndarray
    path_log_scale: float = 0.0
    path_offset: float = 0.0
    path_information: float = 0.0


class DepthRefiner(Protocol):
    """A stateful correction of the Sim(3)-registered depth (layer-wise scale alignment is one).

    The engine calls ``refine`` for every window (with no reference for the first, whose
    camera path is the world's and is not rescaled), ``observe`` for every registered
    window, and ``restore`` once with the windows on disk when a run resumes.
    """

    def refine(self, reference: Reference | None, depth: np.ndarray, mask: np.ndarray, conf: np.ndarray,
               poses: np.ndarray, K: np.ndarray, colors: np.ndarray | None = None) -> Refinement:
        """The depth factor for the window's Sim(3)-scaled ``depth`` (N, H, W), and its camera path's scale.

        ``mask`` and ``conf`` are the window's confident pixels and confidence, ``poses``
        its (N, 4, 4) world camera-to-world poses, ``K`` the fixed (3, 3) intrinsics (with a zoom,
        (N, 3, 3) per frame), ``colors`` its
        (N, H, W, 3) uint8 frames; its first ``len(reference.frames)`` frames show the
        reference's frames.
        """
        ...

    def observe(self, window: AlignedWindow) -> None:
        """A window was registered (final depth)."""
        ...

    def restore(self, windows: Sequence[AlignedWindow]) -> None:
        """Rebuild the state from the registered windows of a run being resumed (oldest first)."""
        ...


@dataclass
class RegistrationResult:
    window: AlignedWindow
    reference: Reference


def confidence_mask(conf: np.ndarray, depth: np.ndarray, keep: float) -> np.ndarray:
    """Per frame, keep the ``keep`` share of most confident pixels with valid depth.

    Args:
        conf: (N, H, W) confidence (higher is better).
        depth: (N, H, W) depth; pixels with non-finite or non-positive depth are dropped.
        keep: share in (0, 1].
    Returns:
        (N, H, W) bool mask.
    """
    valid = np.isfinite(depth) & (depth > 0) & np.isfinite(conf)
    if keep >= 1.0:
        return valid
    n = conf.shape[0]
    step = max(1, int(np.sqrt(conf[0].size / 20000)))  # quantile from ~20k samples per frame
    sample = np.where(valid[:, ::step, ::step], conf[:, ::step, ::step], np.nan).reshape(n, -1)
    with np.errstate(all="ignore"):
        thresh = np.nanquantile(sample, 1.0 - keep, axis=1)
    thresh = np.where(np.isfinite(thresh), thresh, np.inf)
    return valid & (conf >= thresh[:, None, None])


def initial_intrinsics(pred: WindowPrediction, mask: np.ndarray, focal_px: float | None) -> np.ndarray:
    """Fixed (3, 3) intrinsics at prediction resolution, principal point at the centre.

    ``focal_px`` (prediction pixels) overrides everything; otherwise the backbone's
    predicted intrinsics (median over the window) or a robust estimate from the points.
    """
    h, w = pred.shape
    if focal_px is not None:
        return intrinsics(focal_px, focal_px, w / 2, h / 2)
    if pred.intrinsics is not None:
        fx = float(np.median(pred.intrinsics[:, 0, 0]))
        fy = float(np.median(pred.intrinsics[:, 1, 1]))
        return intrinsics(fx, fy, w / 2, h / 2)
    f = estimate_focal(pred.points, mask)
    if not np.isfinite(f) or f <= 0:
        raise RegistrationError(f"focal length estimate {f} is not positive; pass a known focal length "
                                "(--focal-px, or --focal-mm with --sensor-width-mm)")
    return intrinsics(f, f, w / 2, h / 2)


def overlap_scale(ref: Reference, depth: np.ndarray, mask: np.ndarray, conf: np.ndarray,
                  max_samples: int = 200_000) -> float:
    """Robust scale mapping the new window's overlap depth onto the reference depth.

    Args:
        ref: previous window's tail, O frames.
        depth, mask, conf: (N, H, W) of the new window; its first O frames overlap ``ref``.
    """
    o = len(ref.frames)
    both = ref.mask & mask[:o]
    idx = np.flatnonzero(both)
    if idx.size < 16:
        raise RegistrationError("a window shares too few confident pixels with the previous one to register "
                                "it; try a larger --overlap or --conf-keep")
    if idx.size > max_samples:
        idx = idx[:: idx.size // max_samples + 1]
    return robust_log_scale(ref.sim3_depth.reshape(-1)[idx], depth[:o].reshape(-1)[idx],
                            conf[:o].reshape(-1)[idx].clip(min=1e-6))


def overlap_rigid(ref_poses: np.ndarray, new_poses: np.ndarray, scale: float,
                  arm: float) -> tuple[np.ndarray, np.ndarray]:
    """Rotation and translation taking the scaled new window frame onto the world.

    Each overlap camera contributes its centre and the points ``arm`` ahead along its
    view direction (+z) and above it along its up direction (-y), so the rotation is
    well defined even when the cameras barely move.

    Args:
        ref_poses, new_poses: (O, 4, 4) camera-to-world of the same frames, world and window frame.
        scale: the window's Sim(3) scale.
        arm: length (world units) of the view/up offsets.
    """
    def anchors(poses: np.ndarray, s: float) -> np.ndarray:
        c = s * poses[:, :3, 3]
        z = poses[:, :3, 2]
        up = -poses[:, :3, 1]
        return np.concatenate([c, c + arm * z, c + arm * up])

    return rigid_align(anchors(new_poses.astype(np.float64), scale), anchors(ref_poses.astype(np.float64), 1.0))


RIGID_TOLERANCE = 1e-3  # |R^T R - I| and |det R - 1| a camera-to-world rotation may be off by


def check_prediction(index: int, pred: WindowPrediction) -> None:
    """Refuse a window whose frame indices or cameras cannot be registered.

    Bad pixels (non-finite or non-positive depth, non-finite confidence) are not an
    error: the confidence mask drops them. Frame indices must increase; every pose must
    be a finite rigid camera-to-world transform (a proper rotation: no scale, shear or
    reflection); predicted intrinsics, when given, finite with positive focal lengths.
    """
    if np.any(np.diff(pred.frames) <= 0):
        raise RegistrationError(f"window {index}: frame indices must increase, got {pred.frames.tolist()}")
    poses = pred.poses.astype(np.float64)
    finite = np.isfinite(poses).all(axis=(1, 2))
    R = np.where(finite[:, None, None], poses, np.eye(4))[:, :3, :3]
    off_rotation = np.abs(R.transpose(0, 2, 1) @ R - np.eye(3)).max(axis=(1, 2))
    det = np.linalg.det(R)
    bottom = np.abs(np.where(finite[:, None], poses[:, 3], 0) - [0, 0, 0, 1]).max(axis=1)
    bad = ~finite | (off_rotation > RIGID_TOLERANCE) | (np.abs(det - 1) > RIGID_TOLERANCE) | (bottom > RIGID_TOLERANCE)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        why = "has non-finite values" if not finite[k] else f"is not a rigid transform (det R = {det[k]:.4g})"
        raise RegistrationError(f"window {index}: the camera pose of frame {pred.frames[k]} {why}; "
                                f"{int(bad.sum())} of its {len(bad)} poses are unusable")
    if pred.intrinsics is not None:
        K = pred.intrinsics.astype(np.float64)
        good = np.isfinite(K).all(axis=(1, 2)) & (K[:, 0, 0] > 0) & (K[:, 1, 1] > 0)
        if not good.all():
            k = int(np.flatnonzero(~good)[0])
            raise RegistrationError(f"window {index}: the predicted intrinsics of frame {pred.frames[k]} are not "
                                    f"finite with positive focal lengths ({K[k, 0, 0]:.4g}, {K[k, 1, 1]:.4g})")


def register_window(index: int, pred: WindowPrediction, *, overlap: int, K: np.ndarray | None,
                    reference: Reference | None, conf_keep: float, focal_px: float | None = None,
                    refiner: DepthRefiner | None = None,
                    zoom: ZoomLens | None = None) -> tuple[RegistrationResult, np.ndarray]:
    """Register one window to the previous one.

    Args:
        index: window index.
        pred: the window's prediction; its first ``overlap`` frames repeat ``reference``.
        overlap: frames shared with the previous window (ignored for the first).
        K: fixed intrinsics, or None for the first window (then estimated).
        reference: previous window's tail, None for the first window.
        conf_keep: share of confident pixels kept.
        focal_px: known focal length at prediction resolution (first window only).
        refiner: optional depth refiner (layer-wise scale alignment) run after the
            Sim(3), on every window; after the first, the camera path takes the scale it
            returns. The caller lets it ``observe`` the result.
        zoom: a zooming lens's state (``--zoom``): each frame gets its own intrinsics
            (the window's ``frame_K``; ``K`` is then their median and the refiner gets
            them per frame); None for a fixed lens.
    Returns:
        (result, K): the aligned frames this window adds plus the next reference, and
        the fixed intrinsics.
    """
    check_prediction(index, pred)
    raw_depth = np.where(finite_points(pred.points), pred.points[..., 2], np.float32(np.nan))
    mask = confidence_mask(pred.conf, raw_depth, conf_keep)
    frame_K = None
    if zoom is not None:
        frame_K = zoom.intrinsics(index, pred, mask)
        K = np.median(frame_K, axis=0)
    elif K is None:
        K = initial_intrinsics(pred, mask, focal_px)
    depth = np.where(np.isfinite(raw_depth) & (raw_depth > 0), raw_depth, np.float32(0)).astype(np.float32, copy=False)

    factor, refined = None, None
    if reference is None:
        scale, poses, first_new = 1.0, pred.poses.astype(np.float64), 0
    else:
        o = len(reference.frames)
        if o != overlap or not np.array_equal(reference.frames, pred.frames[:o]):
            raise RegistrationError(f"window {index} does not start with the previous window's last "
                             f"{overlap} frames ({reference.frames.tolist()} vs {pred.frames[:o].tolist()})")
        scale = overlap_scale(reference, depth, mask, pred.conf)
        if not (np.isfinite(scale) and scale > 0):
            raise RegistrationError(f"window {index}: the scale to the previous window is {scale}; "
                                    "its depth on the shared frames is unusable")
        arm = float(np.median(reference.depth[reference.mask])) if reference.mask.any() else 1.0
        R, t = overlap_rigid(reference.poses, pred.poses[:o], scale, arm)
        poses = apply_sim3_to_poses(scale, R, t, pred.poses)
        depth = depth * np.float32(scale)
        first_new = o
    if refiner is not None:
        refined = refiner.refine(reference, depth, mask, pred.conf, poses, K if frame_K is None else frame_K,
                                 pred.colors)
        factor = np.asarray(refined.depth_factor, np.float32)
        if reference is not None and refined.path_log_scale:
            path_scale = scale * float(np.exp(refined.path_log_scale))
            R, t = overlap_rigid(reference.poses, pred.poses[:first_new], path_scale, arm)
            poses = apply_sim3_to_poses(path_scale, R, t, pred.poses)
    sim3_depth = depth
    if factor is not None:
        depth = sim3_depth * factor

    keep = slice(first_new, None)
    window = AlignedWindow(
        index=index, frames=pred.frames[keep].astype(np.int64), poses=poses[keep].astype(np.float32),
        K=K.astype(np.float32), depth=depth[keep], conf=pred.conf[keep].astype(np.float32, copy=False),
        colors=pred.colors[keep], mask=mask[keep], scale=float(scale),
        depth_factor=None if factor is None else factor[keep],
        frame_K=None if frame_K is None else frame_K[keep].astype(np.float32),
        path_offset=0.0 if refined is None else float(refined.path_offset),
        path_information=0.0 if refined is None else float(refined.path_information),
    )
    tail = slice(max(len(pred) - overlap, 0), None) if overlap > 0 else slice(len(pred), None)
    ref = Reference(frames=pred.frames[tail].astype(np.int64),
                    poses=poses[tail].astype(np.float32).astype(np.float64),  # as stored, as above
                    depth=depth[tail], mask=mask[tail], sim3_depth=sim3_depth[tail], colors=pred.colors[tail],
                    frame_K=None if frame_K is None else frame_K[tail].astype(np.float32))
    return RegistrationResult(window=window, reference=ref), K
