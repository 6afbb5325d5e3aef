"""Bundle adjustment of a window's cameras against footage tracks, earlier cameras fixed, network depth as a prior.

Solver: vectorised Levenberg-Marquardt with an analytic Jacobian, the points eliminated by the Schur
complement (a dense 6F x 6F camera system), Huber loss by reweighting; then outlier rejection and a
second solve on the inliers. (``scipy.optimize.least_squares`` with the sparse pattern converged to the
same solution 15-30x slower on the test window.)

Conventions: OpenCV cameras, ``world_from_cam`` (F, 4, 4) camera-to-world poses, footage pixels with
pixel centres at +0.5 (``core.geometry.camera.pixel_grid``), ``K`` (3, 3) footage intrinsics.
A free camera is parameterised by a rotation vector ``w`` (R = R0 @ exp(w)) and its centre C.
Residuals: reprojection in pixels, and ``log(z / network depth) / depth_sigma`` per observation
with a network depth (it holds the scale where parallax is low and keeps points near the surfaces).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.geometry.rotations import rotvec_to_rotation


@dataclass(frozen=True)
class Observations:
    """``frame`` (M,) int camera index, ``point`` (M,) int point index, ``xy`` (M, 2) footage pixels,
    ``depth`` (M,) network z-depth at the observation (NaN: none)."""

    frame: np.ndarray
    point: np.ndarray
    xy: np.ndarray
    depth: np.ndarray

    def subset(self, keep: np.ndarray) -> Observations:
        return Observations(self.frame[keep], self.point[keep], self.xy[keep], self.depth[keep])


@dataclass(frozen=True)
class BundleParams:
    loss_px: float = 0.5        # Huber threshold (pixels)
    outlier_px: float = 1.0     # observations farther than this after the first solve are outliers
    depth_sigma: float = 2.0    # relative (log) depth tolerance of the network-depth prior: loose, it only
    #                             holds the scale where parallax is low (network layers are off by tens of %)
    min_views: int = 6          # a point needs this many inlier observations to enter the solve


@dataclass(frozen=True)
class BundleResult:
    """Refined ``world_from_cam`` (F, 4, 4) and ``points`` (P, 3, NaN: not solved), ``inlier`` (M,) bool,
    ``rms_px`` over inlier observations, ``per_frame_px`` (F,) (NaN: no inlier)."""

    world_from_cam: np.ndarray
    points: np.ndarray
    inlier: np.ndarray
    rms_px: float
    per_frame_px: np.ndarray


def initial_points(world_from_cam: np.ndarray, K: np.ndarray, obs: Observations, num_points: int) -> np.ndarray:
    """(P, 3) per-point median of the observations' network-depth back-projections (NaN: no depth)."""
    ok = np.isfinite(obs.depth)
    ray = np.stack([(obs.xy[:, 0] - K[0, 2]) / K[0, 0], (obs.xy[:, 1] - K[1, 2]) / K[1, 1],
                    np.ones(len(obs.xy))], -1) * obs.depth[:, None]
    T = world_from_cam[obs.frame]
    world = np.einsum("mij,mj->mi", T[:, :3, :3], ray) + T[:, :3, 3]
    out = np.full((num_points, 3), np.nan)
    order = np.lexsort((np.arange(ok.sum()), obs.point[ok]))
    pts, w = obs.point[ok][order], world[ok][order]
    starts = np.flatnonzero(np.r_[True, pts[1:] != pts[:-1]])
    counts = np.diff(np.r_[starts, len(pts)])
    # median per point, vectorised: sort each coordinate within its group and take the middle element
    for axis in range(3):
        key = np.lexsort((w[:, axis], pts))
        mid = starts + (counts - 1) // 2
        mid_hi = starts + counts // 2
        out[pts[starts], axis] = 0.5 * (w[key[mid], axis] + w[key[mid_hi], axis])
    return out


def project(R: np.ndarray, C: np.ndarray, K: np.ndarray, points: np.ndarray,
            obs: Observations) -> tuple[np.ndarray, np.ndarray]:
    """(M, 2) pixels and (M,) z of each observation's point in its camera (R (F, 3, 3), C (F, 3): world_from_cam)."""
    cam = np.einsum("mji,mj->mi", R[obs.frame], points[obs.point] - C[obs.frame])
    z = cam[:, 2]
    uv = cam[:, :2] / z[:, None] * np.array([K[0, 0], K[1, 1]]) + K[:2, 2]
    return uv, z


def adjust(world_from_cam: np.ndarray, fixed: np.ndarray, K: np.ndarray, obs: Observations,
           points: np.ndarray, params: BundleParams = BundleParams()) -> BundleResult:
    """Refine the cameras not ``fixed`` ((F,) bool) and the points; see the module docstring.

    With no fixed camera the first is held (the gauge); the depth prior holds the scale.
    """
    fixed = np.asarray(fixed, bool).copy()
    if not fixed.any():
        fixed[0] = True
    inlier = np.isfinite(points[obs.point]).all(1)
    T = world_from_cam
    for stage in range(2):
        used = _enough_views(obs, inlier, len(points), params.min_views)
        sub = obs.subset(used)
        T, points_new = _solve(T, fixed, K, sub, points, params)
        points = np.where(np.isin(np.arange(len(points)), sub.point)[:, None], points_new, points)
        uv, z = project(T[:, :3, :3], T[:, :3, 3], K, points, obs)
        err = np.linalg.norm(uv - obs.xy, axis=1)
        inlier = used & (err < params.outlier_px) & (z > 0) if stage == 0 else used
    solved = np.zeros(len(points), bool)
    solved[obs.point[inlier]] = True
    points = np.where(solved[:, None], points, np.nan)
    sq = np.where(inlier, err ** 2, 0.0)
    n_frame = np.bincount(obs.frame, inlier, len(T))
    with np.errstate(invalid="ignore", divide="ignore"):
        per_frame = np.sqrt(np.bincount(obs.frame, sq, len(T)) / n_frame)
    rms = float(np.sqrt(sq.sum() / max(inlier.sum(), 1))) if inlier.any() else float("nan")
    return BundleResult(T, points, inlier, rms, per_frame)


def _enough_views(obs: Observations, inlier: np.ndarray, num_points: int, min_views: int) -> np.ndarray:
    views = np.bincount(obs.point[inlier], minlength=num_points)
    return inlier & (views[obs.point] >= min_views)


def _solve(world_from_cam: np.ndarray, fixed: np.ndarray, K: np.ndarray, obs: Observations,
           points: np.ndarray, params: BundleParams, iterations: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Levenberg-Marquardt on cameras and points with the points eliminated (Schur complement), Huber by IRLS.

    Returns the refined (F, 4, 4) poses and (P, 3) points (points without observations unchanged).
    """
    R, C, P = world_from_cam[:, :3, :3].copy(), world_from_cam[:, :3, 3].copy(), points.copy()
    free = np.flatnonzero(~fixed)
    cam_slot = np.full(len(fixed), -1)
    cam_slot[free] = np.arange(len(free))
    point_ids, point_slot = np.unique(obs.point, return_inverse=True)
    m, n_pts, n_cam = len(obs.frame), len(point_ids), len(free)
    on_free = cam_slot[obs.frame] >= 0
    free_cam = cam_slot[obs.frame[on_free]]
    cam_order = np.argsort(free_cam, kind="stable")
    cam_starts = np.flatnonzero(np.r_[True, np.diff(free_cam[cam_order]) != 0]) if len(free_cam) else np.zeros(0, int)
    cam_present = free_cam[cam_order][cam_starts]
    has_depth = np.isfinite(obs.depth)
    log_depth = np.log(np.where(has_depth, obs.depth, 1.0))
    order = np.argsort(point_slot, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(point_slot[order]) != 0])

    def evaluate(R, C, P):
        """Weighted residuals (M, 3) and robust cost."""
        Rm = R[obs.frame]
        cam = np.einsum("mji,mj->mi", Rm, P[obs.point] - C[obs.frame])
        z = np.maximum(cam[:, 2], 1e-6)
        r = np.empty((m, 3))
        r[:, :2] = cam[:, :2] / z[:, None] * np.array([K[0, 0], K[1, 1]]) + K[:2, 2] - obs.xy
        r[:, 2] = np.where(has_depth, (np.log(z) - log_depth) / params.depth_sigma, 0.0)
        e = np.linalg.norm(r[:, :2], axis=1)
        k = params.loss_px
        cost = np.where(e < k, e ** 2, 2 * k * e - k * k).sum() + (r[:, 2] ** 2).sum()
        return Rm, cam, z, r, e, cost

    Rm, cam, z, r, e, cost = evaluate(R, C, P)
    lam = 1e-4
    for _ in range(iterations):
        w = np.ones((m, 3))
        w[:, :2] = np.where(e < params.loss_px, 1.0, params.loss_px / np.maximum(e, 1e-12))[:, None]
        sw = np.sqrt(w)
        d_cam = np.zeros((m, 3, 3))
        d_cam[:, 0, 0], d_cam[:, 0, 2] = K[0, 0] / z, -K[0, 0] * cam[:, 0] / z ** 2
        d_cam[:, 1, 1], d_cam[:, 1, 2] = K[1, 1] / z, -K[1, 1] * cam[:, 1] / z ** 2
        d_cam[:, 2, 2] = np.where(has_depth, 1.0 / (z * params.depth_sigma), 0.0)
        d_cam *= sw[:, :, None]
        rw = r * sw
        Jp = d_cam @ np.swapaxes(Rm, 1, 2)  # d residual / d point
        skew = np.zeros((m, 3, 3))  # d camera-space point / d rotation increment (R <- R exp(d))
        skew[:, 0, 1], skew[:, 0, 2], skew[:, 1, 2] = -cam[:, 2], cam[:, 1], -cam[:, 0]
        skew -= np.swapaxes(skew, 1, 2)
        Jc = np.concatenate([d_cam[on_free] @ skew[on_free], -Jp[on_free]], -1)
        Jpt = np.swapaxes(Jp, 1, 2)
        Hpp = np.add.reduceat((Jpt @ Jp)[order], starts, axis=0)  # (P, 3, 3)
        gp = np.add.reduceat((Jpt @ rw[:, :, None])[order, :, 0], starts, axis=0)  # (P, 3)
        Jct = np.swapaxes(Jc, 1, 2)
        Hcc = np.zeros((n_cam, 6, 6))
        gc = np.zeros((n_cam, 6))
        if n_cam:
            Hcc[cam_present] = np.add.reduceat((Jct @ Jc)[cam_order], cam_starts, axis=0)
            gc[cam_present] = np.add.reduceat((Jct @ rw[on_free, :, None])[cam_order, :, 0], cam_starts, axis=0)
        Hcp = np.zeros((n_cam, n_pts, 6, 3))  # one observation per (camera, point)
        Hcp[cam_slot[obs.frame[on_free]], point_slot[on_free]] = Jct @ Jp[on_free]
        Hcc_full = np.zeros((n_cam, 6, n_cam, 6))
        Hcc_full[np.arange(n_cam), :, np.arange(n_cam), :] = Hcc
        Hcc_full = Hcc_full.reshape(6 * n_cam, 6 * n_cam)
        Hcp_flat = Hcp.transpose(0, 2, 1, 3).reshape(6 * n_cam, 3 * n_pts)
        while True:
            diag = np.einsum("pii->pi", Hpp)
            Hpp_inv = np.linalg.inv(Hpp + lam * (diag[:, :, None] * np.eye(3) + 1e-9 * np.eye(3)))
            if n_cam:
                Y = np.einsum("cpij,pjk->cpik", Hcp, Hpp_inv).transpose(0, 2, 1, 3).reshape(6 * n_cam, 3 * n_pts)
                S = Hcc_full + lam * np.diag(np.diag(Hcc_full) + 1e-9) - Y @ Hcp_flat.T
                dc = np.linalg.solve(S, -gc.ravel() + Y @ gp.ravel())
            else:
                dc = np.zeros(0)
            rhs = (-gp.ravel() - Hcp_flat.T @ dc).reshape(-1, 3)
            dp = np.einsum("pij,pj->pi", Hpp_inv, rhs)
            dc6 = dc.reshape(-1, 6)
            R_new, C_new, P_new = R.copy(), C.copy(), P.copy()
            R_new[free] = R[free] @ rotvec_to_rotation(dc6[:, :3])
            C_new[free] = C[free] + dc6[:, 3:]
            P_new[point_ids] = P[point_ids] + dp.reshape(-1, 3)
            trial = evaluate(R_new, C_new, P_new)
            if trial[-1] < cost:
                lam = max(lam / 3, 1e-8)
                break
            lam *= 8
            if lam > 1e6:
                break
        if trial[-1] >= cost:
            break
        improvement = (cost - trial[-1]) / cost
        R, C, P = R_new, C_new, P_new
        Rm, cam, z, r, e, cost = trial
        if improvement < 1e-5:
            break
    T = world_from_cam.copy()
    T[:, :3, :3], T[:, :3, 3] = R, C
    return T, P
