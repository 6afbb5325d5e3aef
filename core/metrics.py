"""Accuracy metrics against ground truth: trajectory (ATE, RPE), depth, point clouds.

Pure functions on numpy arrays. Poses are (N, 4, 4) camera-to-world; a monocular
reconstruction is only defined up to a similarity, so trajectories are compared
after the Sim(3) that best maps the estimate onto the ground truth (Umeyama), and
depth after one global scale.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from core.geometry.rotations import rotation_angle_deg
from core.geometry.transforms import apply_sim3_to_points, apply_sim3_to_poses, umeyama_sim3


def _check_trajectories(est: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    est = np.asarray(est, np.float64)
    gt = np.asarray(gt, np.float64)
    if est.shape != gt.shape or est.ndim != 3 or est.shape[1:] != (4, 4):
        raise ValueError(f"need two (N, 4, 4) pose arrays, got {est.shape} and {gt.shape}")
    return est, gt


def path_length(poses: np.ndarray) -> float:
    """Total distance travelled by the camera centres of (N, 4, 4) poses."""
    centres = np.asarray(poses, np.float64)[:, :3, 3]
    return float(np.linalg.norm(np.diff(centres, axis=0), axis=1).sum())


def ate(est_poses: np.ndarray, gt_poses: np.ndarray) -> dict[str, float]:
    """Absolute trajectory error of camera centres after Sim(3) Umeyama alignment.

    Args:
        est_poses: (N, 4, 4) estimated camera-to-world poses.
        gt_poses: (N, 4, 4) ground-truth camera-to-world poses of the same frames.

    Returns:
        rmse, mean, median, max of the centre errors (ground-truth units); ``scale``
        of the similarity mapping the estimate onto the ground truth (see
        :func:`core.geometry.transforms.umeyama_sim3` on the centres for all of it);
        ``length``, the ground-truth path length; ``rmse_over_length``.
    """
    est, gt = _check_trajectories(est_poses, gt_poses)
    s, R, t = umeyama_sim3(est[:, :3, 3], gt[:, :3, 3])
    err = np.linalg.norm(apply_sim3_to_points(s, R, t, est[:, :3, 3]) - gt[:, :3, 3], axis=1)
    rmse = float(np.sqrt(np.mean(err**2)))
    length = path_length(gt)
    return {
        "rmse": rmse,
        "mean": float(err.mean()),
        "median": float(np.median(err)),
        "max": float(err.max()),
        "scale": s,
        "length": length,
        "rmse_over_length": rmse / length,
    }


def rpe(est_poses: np.ndarray, gt_poses: np.ndarray, delta: int = 1) -> dict[str, float]:
    """Relative pose error over ``delta`` frames after the ATE Sim(3) alignment.

    For each i, the estimated motion ``E = inv(P_i) P_{i+delta}`` is compared with the
    true one ``G = inv(Q_i) Q_{i+delta}`` through ``inv(G) E``.

    Args:
        est_poses: (N, 4, 4) estimated camera-to-world poses.
        gt_poses: (N, 4, 4) ground-truth poses of the same frames, N > delta.
        delta: frame step (in rows of the arrays).

    Returns:
        trans_rmse (ground-truth units) and rot_rmse_deg over the N - delta pairs.
    """
    est, gt = _check_trajectories(est_poses, gt_poses)
    if delta < 1 or len(est) <= delta:
        raise ValueError(f"rpe needs delta >= 1 and more than delta={delta} poses, got {len(est)}")
    s, R, t = umeyama_sim3(est[:, :3, 3], gt[:, :3, 3])
    est = apply_sim3_to_poses(s, R, t, est)
    motion_est = np.linalg.inv(est[:-delta]) @ est[delta:]
    motion_gt = np.linalg.inv(gt[:-delta]) @ gt[delta:]
    err = np.linalg.inv(motion_gt) @ motion_est
    trans = np.linalg.norm(err[:, :3, 3], axis=1)
    rot = rotation_angle_deg(err[:, :3, :3])
    return {"trans_rmse": float(np.sqrt(np.mean(trans**2))), "rot_rmse_deg": float(np.sqrt(np.mean(rot**2)))}


def _as_frames(maps, name: str) -> list[np.ndarray]:
    maps = [np.asarray(m) for m in maps]
    if any(m.ndim != 2 for m in maps):
        raise ValueError(f"{name} must be a sequence of (H, W) maps")
    return maps


def valid_depth(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """(H, W) bool pixels where both depths can be compared: gt > 0 and finite pred > 0 (and ``mask``)."""
    valid = (gt > 0) & np.isfinite(gt) & np.isfinite(pred) & (pred > 0)
    return valid if mask is None else valid & mask


def median_scale(pred, gt, masks=None) -> float:
    """One scale ``median(gt / pred)`` over the valid pixels of all frames.

    Args:
        pred, gt: sequences (or (N, H, W) arrays) of (H, W) depth maps.
        masks: optional sequence of (H, W) bool, pixels to consider.
    """
    pred, gt = _as_frames(pred, "pred"), _as_frames(gt, "gt")
    masks = [None] * len(pred) if masks is None else list(masks)
    ratios = [np.empty(0)]
    for p, g, m in zip(pred, gt, masks, strict=True):
        v = valid_depth(p, g, m)
        ratios.append(g[v].astype(np.float64) / p[v])
    ratios = np.concatenate(ratios)
    if ratios.size == 0:
        raise ValueError("no valid pixels (gt > 0 and finite pred > 0) to compare depth on")
    return float(np.median(ratios))


def depth_errors(pred, gt, scale: float, masks=None) -> tuple[float, int, int]:
    """Sums behind :func:`depth_metrics`, so frames can be scored in batches and added up.

    Returns:
        (sum of |s pred - gt| / gt, count of pixels with max(s pred / gt, gt / (s pred)) < 1.25,
        count of valid pixels), over the valid pixels of all frames.
    """
    pred, gt = _as_frames(pred, "pred"), _as_frames(gt, "gt")
    masks = [None] * len(pred) if masks is None else list(masks)
    abs_rel_sum, inliers, count = 0.0, 0, 0
    for p, g, m in zip(pred, gt, masks, strict=True):
        v = valid_depth(p, g, m)
        ps, gv = scale * p[v].astype(np.float64), g[v].astype(np.float64)
        abs_rel_sum += float((np.abs(ps - gv) / gv).sum())
        inliers += int((np.maximum(ps / gv, gv / ps) < 1.25).sum())
        count += int(v.sum())
    return abs_rel_sum, inliers, count


def depth_metrics(pred, gt, masks=None, scale: float | None = None) -> dict[str, float]:
    """Depth Abs Rel and delta < 1.25 after one global scale.

    Args:
        pred: sequence (or (N, H, W) array) of (H, W) predicted depth maps.
        gt: the matching (H, W) true depth maps, 0 where invalid.
        masks: optional matching (H, W) bool maps of pixels to score.
        scale: the scale applied to ``pred``; default :func:`median_scale` over all frames.

    Returns:
        abs_rel = mean |s pred - gt| / gt, delta_1_25 = share of pixels with
        max(s pred / gt, gt / (s pred)) < 1.25, the ``scale`` s, and ``valid``, the pixel count.
    """
    if scale is None:
        scale = median_scale(pred, gt, masks)
    abs_rel_sum, inliers, count = depth_errors(pred, gt, scale, masks)
    if count == 0:
        raise ValueError("no valid pixels (gt > 0 and finite pred > 0) to compare depth on")
    return {"abs_rel": abs_rel_sum / count, "delta_1_25": inliers / count, "scale": float(scale), "valid": count}


def subsample(points: np.ndarray, cap: int) -> np.ndarray:
    """At most ``cap`` rows of (N, D) ``points``, evenly spaced, deterministic."""
    if len(points) <= cap:
        return points
    return points[np.linspace(0, len(points) - 1, cap).round().astype(np.int64)]


def pointcloud_metrics(pred: np.ndarray, gt: np.ndarray, max_points: int = 200_000) -> dict[str, float]:
    """Accuracy, completeness and Chamfer distance between two point clouds.

    Args:
        pred: (N, 3) reconstructed points, in the ground truth's frame and units.
        gt: (M, 3) true points.
        max_points: each cloud is subsampled (evenly, deterministically) to at most this many.

    Returns:
        accuracy = mean distance from each predicted point to the nearest true point,
        completeness = mean distance from each true point to the nearest predicted point,
        chamfer = their mean.
    """
    pred = subsample(np.asarray(pred, np.float64).reshape(-1, 3), max_points)
    gt = subsample(np.asarray(gt, np.float64).reshape(-1, 3), max_points)
    if len(pred) == 0 or len(gt) == 0:
        raise ValueError(f"point cloud metrics need points in both clouds, got {len(pred)} and {len(gt)}")
    accuracy = float(cKDTree(gt).query(pred, workers=-1)[0].mean())
    completeness = float(cKDTree(pred).query(gt, workers=-1)[0].mean())
    return {"accuracy": accuracy, "completeness": completeness, "chamfer": (accuracy + completeness) / 2}


def triangulated_reprojection_errors(world_from_cam: np.ndarray, K: np.ndarray, uv: np.ndarray,
                                     seen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """How well cameras explain exact observations: pixel errors after triangulating and reprojecting.

    Each point's exact observations are triangulated (linear DLT) with the given cameras and
    reprojected with them; the error does not depend on the cameras' world frame or scale, so an
    estimate can be scored against the truth's pixels without aligning it first.

    Args:
        world_from_cam: (F, 4, 4) estimated camera-to-world poses.
        K: (3, 3) estimated intrinsics (pixels of ``uv``), or (F, 3, 3) per frame (a zoom).
        uv: (F, P, 2) true pixel positions of P static points in the F frames.
        seen: (F, P) bool where the point is visible; points seen fewer than twice are ignored.
    Returns:
        (F, P) pixel error of each observation, and (F, P) bool the observations it holds for.
    """
    seen = seen & (seen.sum(0) >= 2)[None]
    P = K @ np.linalg.inv(world_from_cam)[:, :3, :]  # (F, 3, 4) world -> pixel
    A = np.concatenate([uv[..., :1, None] * P[:, None, 2:] - P[:, None, :1],
                        uv[..., 1:, None] * P[:, None, 2:] - P[:, None, 1:2]], -2)  # (F, P, 2, 4)
    A = (A * seen[..., None, None]).transpose(1, 0, 2, 3).reshape(uv.shape[1], -1, 4)
    X = np.linalg.svd(A)[2][:, -1]
    proj = np.einsum("fij,pj->fpi", P, X)
    return np.linalg.norm(proj[..., :2] / proj[..., 2:] - uv, axis=-1), seen


def triangulated_reprojection_rms(world_from_cam: np.ndarray, K: np.ndarray, uv: np.ndarray,
                                  seen: np.ndarray) -> float:
    """RMS over all observations of :func:`triangulated_reprojection_errors` (same arguments)."""
    err, seen = triangulated_reprojection_errors(world_from_cam, K, uv, seen)
    return float(np.sqrt((err[seen] ** 2).mean()))
