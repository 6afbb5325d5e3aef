"""Bundle adjustment of a window's cameras against footage tracks, earlier cameras fixed, network depth as a prior.

Solver: vectorised Levenberg-Marquardt with an analytic Jacobian, the points eliminated by the Schur
complement (a dense 6F x 6F camera system; each point's 3x3 block by a closed-form Cholesky factor),
Huber loss by reweighting; then outlier rejection and a second solve on the inliers. The observations
are laid on a dense cameras x points grid, so the per-observation Jacobian blocks are element-wise
array expressions and their sums are axis sums (no gathers, scatters or batched tiny matrix products).
(``scipy.optimize.least_squares`` with the sparse pattern converged to the same solution 15-30x slower
than a first, slower version of this solver.)

Conventions: OpenCV cameras, ``world_from_cam`` (F, 4, 4) camera-to-world poses, footage pixels with
pixel centres at +0.5 (``core.geometry.camera.pixel_grid``), ``K`` footage intrinsics: (3, 3) for every
camera, or (F, 3, 3) one per camera (a zoom), and a radial ``distortion`` (k1, k2) shared by all
(``core.geometry.distortion``, Blender's polynomial model). They are held, or with ``refine_focal`` every
camera's focal length is scaled by one shared factor ``exp(phi)`` (a fixed lens whose focal the network got
wrong; the principal point stays), or with ``refine_frame_focal`` each camera's not given fixed by its own
``exp(phi_f)`` (a zoom: a smooth curve near the given focal lengths, see ``BundleParams.zoom_*``; the gauge
camera's too: its pose is held, its focal is not), and with ``refine_distortion`` k1 and k2 are refined.
A free camera is parameterised by a rotation vector ``w`` (R = R0 @ exp(w)) and its centre C.
Residuals: reprojection in pixels (pinhole through the distortion), and ``log(z / network depth) /
depth_sigma`` per observation with a network depth (it holds the scale where parallax is low and keeps
points near the surfaces); with ``refine_frame_focal``, ``phi_f / zoom_prior`` per refined focal and the
second difference of consecutive cameras' log focal lengths over ``zoom_smooth``; for each point with an
anchor (:class:`Anchors`: where an earlier window solved it), its offset from there over the anchor's sigma.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.geometry.distortion import distort, undistort
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
class Anchors:
    """Where earlier solves put some of the points: ``xyz`` (P, 3) (NaN: no anchor) and ``sigma`` (P,) the
    tolerance of each, in scene units (isotropic)."""

    xyz: np.ndarray
    sigma: np.ndarray

    @staticmethod
    def none(num_points: int) -> Anchors:
        return Anchors(np.full((num_points, 3), np.nan), np.ones(num_points))


@dataclass(frozen=True)
class BundleParams:
    loss_px: float = 0.5        # Huber threshold (pixels)
    outlier_px: float = 1.0     # observations farther than this after the first solve are outliers
    depth_sigma: float = 2.0    # relative (log) depth tolerance of the network-depth prior: loose, it only
    #                             holds the scale where parallax is low (network layers are off by tens of %)
    min_views: int = 6          # a point needs this many inlier observations to enter the solve
    screen_tolerance: float = 1e-3  # the first solve, which only finds the outliers, stops at a step lowering the
    #                                 cost by less than this fraction; the second, on the inliers, at ...
    tolerance: float = 1e-5         # ... this (the adjustment's time at 1920x1080 -44 %: the first solve took
    #                                 most of the steps)
    zoom_prior: float = 0.0025  # a zoom's per-frame focal (log) stays about this close to the given one (the
    #                             network's, smoothed over time: on the synthetic zoom its slow error is about
    #                             this). Window after window the tracks alone let the focal wander (0.9 % over 90
    #                             frames with 0.02); they fix its frame-to-frame shape, the network its level
    zoom_smooth: float = 0.002  # ... and bends by about this much per frame: the second difference of consecutive
    #                             frames' log focal (a zoom is a smooth curve; frame-to-frame jitter is noise)


@dataclass(frozen=True)
class BundleResult:
    """Refined ``world_from_cam`` (F, 4, 4) and ``points`` (P, 3, NaN: not solved), ``inlier`` (M,) bool,
    ``rms_px`` over inlier observations, ``per_frame_px`` (F,) (NaN: no inlier); with ``refine_focal`` the
    ``focal_scale`` found (refined focal / given focal, 1 when held) and ``focal_std``, its standard error
    as a fraction (from the solve's covariance scaled by the residual; inf when held); the ``distortion``
    (k1, k2), refined or as given; ``frame_focal_scale`` (F,) each camera's refined / given focal length
    (1 for cameras given fixed, and for all without ``refine_frame_focal``)."""

    world_from_cam: np.ndarray
    points: np.ndarray
    inlier: np.ndarray
    rms_px: float
    per_frame_px: np.ndarray
    focal_scale: float
    focal_std: float
    distortion: tuple[float, float]
    frame_focal_scale: np.ndarray


def per_camera(K: np.ndarray, cameras: int) -> np.ndarray:
    """(F, 3, 3) intrinsics of ``cameras`` cameras from (3, 3) shared or (F, 3, 3) per-camera ``K``."""
    return np.broadcast_to(np.asarray(K, np.float64), (cameras, 3, 3))


def initial_points(world_from_cam: np.ndarray, K: np.ndarray, obs: Observations, num_points: int,
                   distortion: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """(P, 3) per-point median of the observations' network-depth back-projections (NaN: no depth)."""
    ok = np.isfinite(obs.depth)
    Km = per_camera(K, len(world_from_cam))[obs.frame]
    x, y = undistort((obs.xy[:, 0] - Km[:, 0, 2]) / Km[:, 0, 0], (obs.xy[:, 1] - Km[:, 1, 2]) / Km[:, 1, 1],
                     distortion)
    ray = np.stack([x, y, np.ones(len(obs.xy))], -1) * obs.depth[:, None]
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


def project(R: np.ndarray, C: np.ndarray, K: np.ndarray, points: np.ndarray, obs: Observations,
            distortion: tuple[float, float] = (0.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
    """(M, 2) pixels and (M,) z of each observation's point in its camera (R (F, 3, 3), C (F, 3): world_from_cam)."""
    cam = np.einsum("mji,mj->mi", R[obs.frame], points[obs.point] - C[obs.frame])
    z = cam[:, 2]
    Km = per_camera(K, len(R))[obs.frame]
    x, y = distort(cam[:, 0] / z, cam[:, 1] / z, distortion)
    uv = np.stack([x, y], -1) * np.stack([Km[:, 0, 0], Km[:, 1, 1]], -1) + Km[:, :2, 2]
    return uv, z


def adjust(world_from_cam: np.ndarray, fixed: np.ndarray, K: np.ndarray, obs: Observations,
           points: np.ndarray, params: BundleParams = BundleParams(), refine_focal: bool = False,
           distortion: tuple[float, float] = (0.0, 0.0), refine_distortion: bool = False,
           refine_frame_focal: bool = False, anchors: Anchors | None = None) -> BundleResult:
    """Refine the cameras not ``fixed`` ((F,) bool), the points, with ``refine_focal`` the focal length (or
    with ``refine_frame_focal`` each one's not ``fixed``, ``K`` then (F, 3, 3)) and with ``refine_distortion`` the
    ``distortion``; the points with ``anchors`` are held near them; see the module docstring.

    With no fixed camera the first is held (the gauge); the depth prior holds the scale.
    """
    if refine_frame_focal and (refine_focal or refine_distortion):
        raise ValueError("a per-frame focal length is refined alone (not with a shared focal or the distortion)")
    fixed = np.asarray(fixed, bool).copy()
    focal_free = ~fixed if refine_frame_focal else np.zeros(len(fixed), bool)  # the gauge camera's included
    if not fixed.any():
        fixed[0] = True
    inlier = np.isfinite(points[obs.point]).all(1)
    T, K, focal_scale, focal_std = world_from_cam, np.asarray(K, np.float64), 1.0, float("inf")
    frame_scale = np.ones(len(T))
    distortion = tuple(float(k) for k in distortion)
    for stage in range(2):
        used = _enough_views(obs, inlier, len(points), params.min_views)
        sub = obs.subset(used)
        T, points_new, scale, focal_std, distortion, frame = _solve(
            T, fixed, K, sub, points, params, refine_focal, distortion, refine_distortion, focal_free,
            anchors=anchors, tolerance=params.screen_tolerance if stage == 0 else params.tolerance)
        K, focal_scale = scaled_focal(K, scale * frame), focal_scale * scale
        frame_scale = frame_scale * frame
        points = np.where(np.isin(np.arange(len(points)), sub.point)[:, None], points_new, points)
        uv, z = project(T[:, :3, :3], T[:, :3, 3], K, points, obs, distortion)
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
    return BundleResult(T, points, inlier, rms, per_frame, focal_scale=focal_scale, focal_std=focal_std * rms,
                        distortion=distortion, frame_focal_scale=frame_scale)


def scaled_focal(K: np.ndarray, scale: float) -> np.ndarray:
    """``K`` ((3, 3) or (F, 3, 3)) with fx and fy multiplied by ``scale`` (a float, or (F,) one per camera: then
    (F, 3, 3)), the principal point kept."""
    K = np.asarray(K, np.float64)
    out = np.array(np.broadcast_to(K, np.broadcast_shapes(K.shape[:-2], np.shape(scale)) + (3, 3)))
    out[..., 0, 0] *= scale
    out[..., 1, 1] *= scale
    return out


def _enough_views(obs: Observations, inlier: np.ndarray, num_points: int, min_views: int) -> np.ndarray:
    views = np.bincount(obs.point[inlier], minlength=num_points)
    return inlier & (views[obs.point] >= min_views)


def _solve(world_from_cam: np.ndarray, fixed: np.ndarray, K: np.ndarray, obs: Observations,
           points: np.ndarray, params: BundleParams, refine_focal: bool = False,
           distortion: tuple[float, float] = (0.0, 0.0), refine_distortion: bool = False,
           focal_free: np.ndarray | None = None, anchors: Anchors | None = None, iterations: int = 100,
           tolerance: float = 1e-5) -> tuple[np.ndarray, np.ndarray, float, float, tuple[float, float], np.ndarray]:
    """Levenberg-Marquardt on cameras and points with the points eliminated (Schur complement), Huber by IRLS.

    Returns the refined (F, 4, 4) poses and (P, 3) points (points without observations unchanged), the focal
    scale (1 unless ``refine_focal``), the standard deviation of its log per pixel of residual noise (inf
    when held), the distortion (refined with ``refine_distortion``) and the (F,) per-camera focal scales (1
    but where ``focal_free`` (F,) bool); stops after ``iterations`` steps, or
    at a step that lowers the cost by less than the fraction ``tolerance``. A point with an anchor adds
    ``I / sigma^2`` to its 3x3 block.
    The observations lie on a dense (F, P') grid of cameras by observed points (at most one observation per
    camera and point; an empty cell weighs nothing), so per-point and per-camera sums are axis sums and the
    camera-point blocks W of the Hessian come out dense. Each point's damped 3x3 block is factored in closed
    form (L, ``_cholesky3``); with ``Z = W L^-T`` the reduced camera system is ``Hcc - Z Z^T`` and the point
    step takes triangular solves only. Camera unknowns are ordered parameter-major: (6, F'), then the log
    focal scales ``phi_f`` of the ``focal_free`` cameras (their own priors couple neighbours: dense terms),
    then the lens's refined ones (of the shared log focal scale ``phi``, k1, k2: one more row and column of
    the reduced system each).
    """
    free = np.flatnonzero(~fixed)
    n_cam = len(free)
    focal_free = np.zeros(len(fixed), bool) if focal_free is None else focal_free
    ffree, refine_frame_focal = np.flatnonzero(focal_free), bool(focal_free.any())
    n_phi, n_pose = len(ffree), 6 * n_cam
    both = np.flatnonzero(focal_free[free])  # slots in ``free`` of cameras whose focal is free too
    point_ids, point_slot = np.unique(obs.point, return_inverse=True)
    R, C, P = world_from_cam[:, :3, :3].copy(), world_from_cam[:, :3, 3].copy(), points[point_ids]
    anchors = anchors or Anchors.none(len(points))
    anchored = np.isfinite(anchors.xyz[point_ids]).all(1)
    anchor_xyz = np.where(anchored[:, None], anchors.xyz[point_ids], 0.0).T  # (3, P')
    anchor_weight = np.where(anchored, 1.0 / anchors.sigma[point_ids], 0.0)  # (P',)
    grid = (len(fixed), len(point_ids))
    cell = (obs.frame, point_slot)
    seen, xy, log_depth, depth_weight = np.zeros(grid), np.zeros((2,) + grid), np.zeros(grid), np.zeros(grid)
    seen[cell] = 1.0
    xy[(slice(None),) + cell] = obs.xy.T
    has_depth = np.isfinite(obs.depth)
    log_depth[cell] = np.log(np.where(has_depth, obs.depth, 1.0))
    depth_weight[cell] = np.where(has_depth, 1.0 / params.depth_sigma, 0.0)
    Ks, k = per_camera(K, len(fixed)), params.loss_px
    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]  # (F, 1)
    focal, centre = np.stack([fx, fy]), Ks[:, :2, 2].T[:, :, None]  # (2, F, 1)

    lens_free = np.flatnonzero([refine_focal, refine_distortion, refine_distortion])  # of (phi, k1, k2)
    # per-frame focal priors (a zoom): phi_f / zoom_prior where refined, second differences of log focal
    diff2 = np.diff(np.eye(len(fixed)), 2, axis=0) / params.zoom_smooth  # (F - 2, F)
    log_fx = np.log(fx[:, 0])

    def prior(phi):
        """Residuals of the per-frame focal priors: (F',) on each free camera's phi, (F - 2,) smoothness."""
        if not refine_frame_focal:
            return np.zeros(0), np.zeros(0)
        return phi[ffree] / params.zoom_prior, diff2 @ (log_fx + phi)

    def evaluate(R, C, P, lens, phi):
        """Camera-space points (3, F, P'), clamped z (F, P'), residuals (3, F, P') (pixels; weighted log
        depth; zero in empty cells), pixel errors (F, P') and the robust cost (with the anchors'); ``lens``
        (phi, k1, k2), ``phi`` (F,) each camera's log focal scale."""
        Rt = R.transpose(2, 0, 1)  # Rt[c, f] = column c of camera f's R
        pc = (Rt.reshape(-1, 3) @ P.T).reshape(3, *grid) - np.einsum("cfj,fj->cf", Rt, C)[:, :, None]
        z = np.maximum(pc[2], 1e-6)
        r = np.empty((3,) + grid)
        gain = np.exp(lens[0] + phi)[:, None]
        r[:2] = (np.stack(distort(pc[0] / z, pc[1] / z, lens[1:])) * focal * gain + centre - xy) * seen
        r[2] = (np.log(z) - log_depth) * depth_weight
        e = np.hypot(r[0], r[1])
        cost = np.where(e < k, e ** 2, 2 * k * e - k * k).sum() + (r[2] ** 2).sum()
        cost += (((P.T - anchor_xyz) * anchor_weight) ** 2).sum()
        return pc, z, r, e, cost + sum((p ** 2).sum() for p in prior(phi))

    def normal_equations(R, P, lens, phi, pc, z, r, e):
        """Huber-weighted Gauss-Newton blocks: per point Hpp (3, 3, P') and gp (3, P') (with the anchors'); the
        reduced unknowns' (free cameras, then the lens's) H (n, n) (block diagonal in the cameras) and g (n,);
        their blocks with the points W (n, 3, P')."""
        s = np.sqrt(np.where(e < k, 1.0, k / np.maximum(e, 1e-12))) * seen
        iz = 1.0 / z
        fxs, fys = fx * np.exp(lens[0] + phi)[:, None] * s, fy * np.exp(lens[0] + phi)[:, None] * s
        xn, yn = pc[0] * iz, pc[1] * iz
        r2 = xn * xn + yn * yn
        gain, slope = 1 + lens[1] * r2 + lens[2] * r2 * r2, 2 * (lens[1] + 2 * lens[2] * r2)
        # d (weighted pixel residual) / d camera-space point: [[a0 a1 a2] [b0 b1 b2]] (a1 = b0 = 0 undistorted)
        a0, a1 = fxs * (gain + slope * xn * xn) * iz, fxs * slope * xn * yn * iz
        b0, b1 = fys * slope * xn * yn * iz, fys * (gain + slope * yn * yn) * iz
        a2, b2 = -(a0 * xn + a1 * yn), -(b0 * xn + b1 * yn)
        g = depth_weight * iz  # d (depth residual) / d z
        Rk = R.transpose(2, 1, 0)[..., None]  # Rk[c, j] (F, 1) = R[:, j, c]: d camera-space point / d world point
        Jp = np.stack([a0 * Rk[0] + a1 * Rk[1] + a2 * Rk[2], b0 * Rk[0] + b1 * Rk[1] + b2 * Rk[2],
                       g * Rk[2]])  # (3 residuals, 3 coords, F, P')
        x, y, zc = pc[:, free]  # rotation increment R <- R exp(w): d camera-space point / d w = [p]x
        rows = [(a0[free], a1[free], a2[free]), (b0[free], b1[free], b2[free]), (0.0, 0.0, g[free])]
        Jr = np.stack([np.broadcast_arrays(j1 * zc - j2 * y, j2 * x - j0 * zc, j0 * y - j1 * x)
                       for j0, j1, j2 in rows])  # (3 residuals, 3 rotation, F', P')
        rw = r * np.stack([s, s, np.ones(grid)])  # weighted residuals; d residual / d centre = -Jp
        N, gp = _gram(Jp, Jp, symmetric=True), _gram(Jp, rw[:, None])[:, 0]
        N_free, gp_free, Mx = N[:, :, free], gp[:, free], _gram(Jr, Jp[:, :, free])
        Mx_sum = Mx.sum(-1)
        blocks = np.concatenate([np.concatenate([_gram(Jr, Jr, symmetric=True).sum(-1), -Mx_sum], 1),
                                 np.concatenate([-Mx_sum.transpose(1, 0, 2), N_free.sum(-1)], 1)])  # (6, 6, F')
        H = np.zeros((6, n_cam, 6, n_cam))
        H[:, np.arange(n_cam), :, np.arange(n_cam)] = blocks.transpose(2, 0, 1)
        H = H.reshape(n_pose, n_pose)
        gc = np.concatenate([_gram(Jr, rw[:, None, free])[:, 0].sum(-1), -gp_free.sum(-1)]).ravel()
        W = np.concatenate([Mx, -N_free]).transpose(0, 2, 1, 3).reshape(n_pose, 3, grid[1])
        if refine_frame_focal:  # d (weighted pixel residual) / d phi_f (2, F'', P'), each on its own camera
            Jf = np.stack([fxs * xn * gain, fys * yn * gain])[:, ffree]
            Wf = (Jf[:, None] * Jp[:2, :, ffree]).sum(0)  # (3, F'', P')
            at = np.searchsorted(ffree, free[both])  # those cameras' slots in ``ffree``
            cross = np.concatenate([(Jf[:, None, at] * Jr[:2, :, both]).sum(0).sum(-1), -Wf[:, at].sum(-1)])
            Hpf = np.zeros((6, n_cam, n_phi))
            Hpf[:, both, at] = cross  # (6 pose parameters, F' cameras, F'' focal lengths): each camera's own
            r_prior, r_smooth = prior(phi)
            J_smooth = diff2[:, ffree]
            Hff = np.diag((Jf * Jf).sum((0, 2)) + 1 / params.zoom_prior ** 2) + J_smooth.T @ J_smooth
            H = np.block([[H, Hpf.reshape(n_pose, n_phi)], [Hpf.reshape(n_pose, n_phi).T, Hff]])
            gc = np.concatenate([gc, (Jf * rw[:2, ffree]).sum((0, 2)) + r_prior / params.zoom_prior
                                 + J_smooth.T @ r_smooth])
            W = np.concatenate([W, Wf.transpose(1, 0, 2)])
        if len(lens_free):  # d (weighted pixel residual) / d (phi, k1, k2), each (2, F, P')
            Jl = np.stack([np.stack([fxs * xn * gain, fys * yn * gain]), np.stack([fxs * xn * r2, fys * yn * r2]),
                           np.stack([fxs * xn * r2 * r2, fys * yn * r2 * r2])])[lens_free]
            Wl = (Jl[:, :, None] * Jp[None, :2]).sum(1)  # (L, 3, F, P')
            Hlc = np.concatenate([(Jl[:, :, None, free] * Jr[None, :2]).sum(1), -Wl[:, :, free]], 1).sum(-1)
            Hlc = Hlc.reshape(len(lens_free), -1)
            Hll = np.einsum("afp,bfp->ab", Jl.reshape(len(Jl), -1, grid[1]), Jl.reshape(len(Jl), -1, grid[1]))
            H = np.block([[H, Hlc.T], [Hlc, Hll]])
            gc = np.append(gc, (Jl * rw[None, :2]).sum((1, 2, 3)))
            W = np.concatenate([W, Wl.sum(2)])
        Hpp = N.sum(2) + np.eye(3)[:, :, None] * anchor_weight ** 2
        return Hpp, gp.sum(1) + (P.T - anchor_xyz) * anchor_weight ** 2, H, gc, W

    def reduced(system, lam):
        """Point factors L, ``v = L^-1 gp``, ``Z = W L^-T`` (n, 3P') and the damped reduced system S (n, n)."""
        Hpp, gp, H, _, W = system
        L = _cholesky3(Hpp + lam * np.eye(3)[:, :, None] * (Hpp + 1e-9))
        Z = np.stack(_forward(L, *W.transpose(1, 0, 2)), 1).reshape(len(W), 3 * W.shape[2])
        S = H - Z @ Z.T
        S[np.diag_indices(len(S))] += lam * (np.diag(H) + 1e-9)
        return L, np.stack(_forward(L, *gp)), Z, S

    lens, phi = np.array([0.0, *distortion]), np.zeros(len(fixed))
    state = evaluate(R, C, P, lens, phi)
    cost = state[-1]
    lam = 1e-4
    for _ in range(iterations):
        system = normal_equations(R, P, lens, phi, *state[:-1])
        while True:
            L, v, Z, S = reduced(system, lam)
            dc = np.linalg.solve(S, Z @ v.ravel() - system[3]) if len(S) else np.zeros(0)
            dp = -np.stack(_backward(L, *(v + (Z.T @ dc).reshape(3, -1))))
            d_cam = dc[:n_pose].reshape(6, n_cam).T
            R_new, C_new, phi_new = R.copy(), C.copy(), phi.copy()
            R_new[free] = R[free] @ rotvec_to_rotation(d_cam[:, :3])
            C_new[free] = C[free] + d_cam[:, 3:]
            phi_new[ffree] += dc[n_pose:n_pose + n_phi]
            P_new, lens_new = P + dp.T, lens.copy()
            lens_new[lens_free] += dc[n_pose + n_phi:]
            trial = evaluate(R_new, C_new, P_new, lens_new, phi_new)
            if trial[-1] < cost:
                lam = max(lam / 3, 1e-8)
                break
            lam *= 8
            if lam > 1e6:
                break
        if trial[-1] >= cost:
            break
        improvement = (cost - trial[-1]) / cost
        R, C, P, lens, phi = R_new, C_new, P_new, lens_new, phi_new
        state, cost = trial, trial[-1]
        if improvement < tolerance:
            break
    phi_std = float("inf")
    if refine_focal:  # the reduced system at the solution is the inverse covariance of cameras and lens
        S = reduced(normal_equations(R, P, lens, phi, *state[:-1]), 0.0)[3]
        unit = np.zeros(len(S))
        unit[n_pose] = 1.0
        phi_std = float(np.sqrt(max(np.linalg.solve(S, unit)[n_pose], 0.0)))
    T = world_from_cam.copy()
    T[:, :3, :3], T[:, :3, 3] = R, C
    out = points.copy()
    out[point_ids] = P
    return T, out, float(np.exp(lens[0])), phi_std, (float(lens[1]), float(lens[2])), np.exp(phi)

def _gram(A: np.ndarray, B: np.ndarray, symmetric: bool = False) -> np.ndarray:
    """(a, b, ...) products ``A[:, :, n].T @ B[:, :, n]`` of (3, a, ...) and (3, b, ...) stacks, element-wise
    (``symmetric``: A is B, only the upper triangle is computed)."""
    out = np.empty(A.shape[1:2] + B.shape[1:])
    for i in range(A.shape[1]):
        for j in range(i if symmetric else 0, B.shape[1]):
            out[i, j] = A[0, i] * B[0, j] + A[1, i] * B[1, j] + A[2, i] * B[2, j]
            if symmetric:
                out[j, i] = out[i, j]
    return out


def _cholesky3(H: np.ndarray) -> tuple[np.ndarray, ...]:
    """Lower Cholesky factors (l00, l10, l11, l20, l21, l22), each (P,), of symmetric positive (3, 3, P) matrices."""
    l00 = np.sqrt(H[0, 0])
    l10, l20 = H[0, 1] / l00, H[0, 2] / l00
    l11 = np.sqrt(H[1, 1] - l10 ** 2)
    l21 = (H[1, 2] - l20 * l10) / l11
    return l00, l10, l11, l20, l21, np.sqrt(H[2, 2] - l20 ** 2 - l21 ** 2)


def _forward(L, b0, b1, b2):
    """Components of ``L^-1 b`` for the components b0, b1, b2 (..., P) of 3-vectors, each point's factor L
    (``_cholesky3``) applied to its own."""
    l00, l10, l11, l20, l21, l22 = L
    y0 = b0 / l00
    y1 = (b1 - l10 * y0) / l11
    return y0, y1, (b2 - l20 * y0 - l21 * y1) / l22


def _backward(L, y0, y1, y2):
    """Components of ``L^-T y`` for the components y0, y1, y2 (P,) of 3-vectors."""
    l00, l10, l11, l20, l21, l22 = L
    x2 = y2 / l22
    x1 = (y1 - l21 * x2) / l11
    return (y0 - l10 * x1 - l20 * x2) / l00, x1, x2
