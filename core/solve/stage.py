"""The camera solve as an engine stage: each registered window's new cameras refined against footage tracks.

For each window, after the Sim(3) and layer alignment, the bundle adjustment (``core.solve.bundle``)
sees the window's KLT tracks over all its frames (``core.solve.tracks.WindowTracker``): the overlap
frames, already emitted, keep their cameras (fixed: the run stays append-only, and they carry the
gauge and the scale from window to window); the new frames' cameras and the track points are
refined, with the network depth of every observation as a prior. The first window has no emitted
frames: its first camera is held and the depth prior sets the scale.

Lens: unless the focal length was given (or the lens zooms), the engine first hands the windows
covering the first ``SolveParams.focal_frames`` frames, registered but not yet solved or written, to
:meth:`CameraSolve.calibrate`: their cameras, their tracks' points and one focal length adjusted
together (a single window is too short: the focal trades against depth and only the camera's
rotation separates them). The run is then registered and solved from its first window with that
focal length (the windows' ``K``, solve.json's ``focal``); when the tracks do not determine it to
``SolveParams.focal_std``, or the shot is shorter than ``focal_frames``, the network's is kept and a
notice says so. With ``--refine-distortion`` the same pass solves the radial distortion (k1, k2),
and every window's tracks are then solved through it (solve.json's ``distortion``); the dense depth
and points stay the network's pinhole geometry. That pass runs twice: the tracks are first checked
against the network's pinhole cameras, which leaves out the observations the distortion moves far
(towards the corners, where k2 shows), then again through the lens and cameras the first solve found
(at 1280x720 through k1 -0.08, k2 0.02, three seeds: the lens over the frame at most 0.41 -> 0.19 px off).

A zoom (``--zoom``: the windows carry per-frame ``frame_K``) needs no lens pass: each window's new
frames get their own focal length refined with their cameras, near the network's smoothed one and
along a smooth curve (``BundleParams.zoom_prior``, ``zoom_smooth``); the overlap frames, already
emitted, keep theirs.

Scale from window to window: the overlap cameras' short baseline shows little depth, and the network
prior is loose, so on their own a window could settle a few % off the one before (at 640x480, up to
2 %: the dense clouds then disagree and the ground fitted to them tilts). The previous window's solved
points were triangulated over all its frames: a track of this window that follows one of them over the
overlap frames is that point, and is anchored there (``_anchors``; ``SolveParams.link_*``).

Then the dense depth follows the solve (``_depth_factors``): each new frame's depth map is rescaled
by the median ratio of its solved track depths to the network's depth under them, and each of its
depth layers (segmented as the layer alignment does) towards its own tracks' median, as far as the
layers' differences over the window stand out from their uncertainty (at least
``SolveParams.layer_bias``): the network's layers are off by different scales, which the cameras'
motion measures, and where they are not (the differences no larger than the solve's own), every
layer keeps its frame's factor. So the point cloud written for a frame agrees with its refined
camera layer by layer. Tracks seen over little parallax (far ones) count less in those medians:
their solved depth is barely measured (``SolveParams.depth_parallax_deg``).

Each track starts from the median back-projection of its network depth where the confidence mask
keeps it, or, where the network is unsure of every pixel the track crosses, of the unmasked depth
(``_start_points``): the mask keeps the network's surest half of the pixels, and tracks elsewhere are
as good. (Left out, they would be more than half of the synthetic shot's tracks; with them its static
points reproject 6x closer than without: 0.035 against 0.21 px at 1280x720, with the tracker of then.)
The depth prior stays on the confident depth only. Track observations far from where the network's
own cameras and depth put them (more than ``SolveParams.network_gate`` of the footage width: moving
things, mismatches) are left out first, so a moving object cannot pull the solve.

A window whose tracks give too few solved points (textureless or static footage), or whose solve
would move a camera implausibly far, keeps its registered cameras, and :attr:`WindowSolve.warning`
says why: the solve never makes a window worse than the network's cameras by failing silently.

Conventions: OpenCV cameras, camera-to-world poses, footage pixels with pixel centres at +0.5; the
intrinsics given are at prediction resolution and mapped to the footage by the run's
:class:`~core.run.manifest.InputGeometry`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from scipy.spatial import cKDTree

from core.layer_align.apply import upsample_blocks
from core.layer_align.segment import block_chroma, log_depth, sample_grid, segment_layers
from core.layer_align.solve import group_weighted_median
from core.registration import Reference, RegistrationResult
from core.run.arrays import AlignedWindow
from core.run.manifest import InputGeometry
from core.run.settings import LayerAlignParams
from core.run.solve import Bundles, SolveReport, SolveTally
from core.solve.bundle import Anchors, BundleParams, Observations, adjust, initial_points, project, scaled_focal
from core.solve.tracks import WindowTracks


@dataclass(frozen=True)
class SolveParams:
    """Settings of the solve stage (the bundle adjustment's own in ``bundle``)."""

    min_points: int = 30        # solved points a window needs, else its cameras stay as registered
    max_shift: float = 0.25     # a solve moving a camera centre farther than this share of the median
    #                             track depth is not trusted
    min_depth_obs: int = 20     # inlier observations a frame needs for its depth map to be rescaled
    depth_parallax_deg: float = 1.0  # in that rescale, tracks seen over less parallax than this count less, by
    #                                  the square of the ratio (the precision of their depth)
    layer_bias: float = 0.02    # a depth layer's own rescale (log) is uncertain by its tracks' scatter and by at
    #                             least this much: the solve's own depth biases between layers (far tracks seen
    #                             through a slightly wrong lens) reach about 2 % (see ``_depth_factors``)
    segment: LayerAlignParams = field(default_factory=LayerAlignParams)  # how the depth layers are segmented
    #                                                                      (the engine passes the run's own)
    network_gate: float = 0.01  # track observations farther than this share of the footage width from where
    #                             the network's cameras and depth put them are left out before the adjustment
    #                             (moving things, mismatches): they would otherwise pull the solve
    focal_frames: int = 90      # the lens is refined over the first windows covering this many frames (a
    #                             shorter shot keeps the network's focal: 50 frames at 1280x720 put it 0.43 %
    #                             off while its standard error said under 0.1 %)
    focal_std: float = 0.001    # ... and taken when its standard error is below this fraction (the camera
    #                             motion determines it well enough). The figure assumes independent tracker
    #                             noise and is optimistic up to 10x on the synthetic shot (30 frames: +-0.5 %,
    #                             4 % off; 90 frames: +-0.03 %, 0.16 % off; with the distortion: +-0.08 %,
    #                             0.11 % off)
    focal_change: float = 0.25  # ... and it differs from the network's by less than this fraction
    link_px: float = 0.5        # a track of this window is the previous window's solved point when their
    link_views: int = 3         # observations lie this close (footage pixels) on this many overlap frames ...
    link_sigma: float = 0.01    # ... and that point holds it to this share of its distance from the camera
    bundle: BundleParams = field(default_factory=BundleParams)


@dataclass
class WindowSolve:
    """One window after the solve: the refined ``result``, its sparse solve, a ``warning`` when it was skipped."""

    result: RegistrationResult
    bundles: Bundles
    warning: str | None = None


def _sample_depth(depth: np.ndarray, mask: np.ndarray | None, frame: np.ndarray,
                  xy_pred: np.ndarray) -> np.ndarray:
    """(M,) depth under prediction pixels ``xy_pred`` (M, 2) of frames ``frame`` (M,), where ``mask`` (confident
    pixels; None: all) holds it; NaN elsewhere."""
    n, h, w = depth.shape
    col, row = np.floor(xy_pred[:, 0]).astype(np.int64), np.floor(xy_pred[:, 1]).astype(np.int64)
    inside = (col >= 0) & (col < w) & (row >= 0) & (row < h)
    col, row = np.clip(col, 0, w - 1), np.clip(row, 0, h - 1)
    d = depth[frame, row, col]
    if mask is not None:
        inside &= mask[frame, row, col]
    return np.where(inside & (d > 0), d, np.nan).astype(np.float64)


def _start_points(world_from_cam: np.ndarray, K: np.ndarray, obs: Observations, raw_depth: np.ndarray,
                  num_points: int, distortion: tuple[float, float]) -> np.ndarray:
    """(P, 3) each track's first guess: the median back-projection of its confident network depth (``obs.depth``)
    or, for a track with none, of the network's depth regardless of confidence (``raw_depth`` (M,)); NaN: no depth.

    The confidence mask keeps only the network's surest pixels (half of them by default): without a start
    the tracks elsewhere, more than half of them on the synthetic shot, would be left out of the solve (and
    of the check against the network's cameras) though the footage tracks them as well as any.
    """
    start = initial_points(world_from_cam, K, obs, num_points, distortion)
    unsure = ~np.isfinite(start).all(1)
    if unsure.any():
        start[unsure] = initial_points(world_from_cam, K, replace(obs, depth=raw_depth), num_points, distortion)[unsure]
    return start


def _depth_factors(depth: np.ndarray, colors: np.ndarray, frame: np.ndarray, xy_pred: np.ndarray,
                   log_ratio: np.ndarray, weight: np.ndarray, params: SolveParams) -> np.ndarray:
    """(N, H, W) float32 factors that bring the network ``depth`` (N, H, W) of a window's new frames to their
    solved tracks: per frame the weighted median of the tracks' ``log_ratio`` (M,) (solved over network depth,
    observations on frames ``frame`` (M,) at prediction pixels ``xy_pred`` (M, 2), ``weight`` (M,) in [0, 1]);
    per depth layer of a frame (segmented from the depth and ``colors`` (N, H, W, 3) as the layer alignment
    does) the layer's own median, shrunk towards the frame's (empirical Bayes over the window's layers, each
    uncertain by its tracks' scatter and at least ``params.layer_bias``): the network's layers are off by
    different scales, and the tracks measure each against the cameras' motion. A frame with fewer than
    ``params.min_depth_obs`` observations keeps its depth (factor 1)."""
    n, height, width = depth.shape
    stride = params.segment.stride
    layers = segment_layers(log_depth(sample_grid(depth, stride)), params.segment, block_chroma(colors, stride))
    h, w = layers.labels.shape[1:]
    col = np.clip(np.floor(xy_pred[:, 0]).astype(np.int64) // stride, 0, w - 1)
    row = np.clip(np.floor(xy_pred[:, 1]).astype(np.int64) // stride, 0, h - 1)
    label = layers.labels[frame, row, col]
    weight = weight + 1e-9  # where every weight is zero: the plain median
    per_frame = group_weighted_median(log_ratio, frame, weight, n)
    per_frame = np.where(np.bincount(frame, minlength=n) >= params.min_depth_obs, per_frame, np.nan)
    on = label >= 0
    label, log_ratio, weight = label[on], log_ratio[on], weight[on]
    base = per_frame[layers.frame]
    median = group_weighted_median(log_ratio, label, weight, layers.count)
    # each layer's difference from its frame, and that difference's variance: its tracks' scatter (MAD) over
    # their weight; the spread of the true differences over the window (tau^2) is what the measured ones
    # show beyond that variance. Each layer keeps tau^2 / (tau^2 + its variance) of its own: none where the
    # network's layers agree with each other (an exact network), most where they do not
    n_layer = np.bincount(label, weight, minlength=layers.count)
    mad = 1.4826 * group_weighted_median(np.abs(log_ratio - median[label]), label, weight, layers.count)
    variance = (mad ** 2 + 1e-6) / np.maximum(n_layer, 1e-9) + params.layer_bias ** 2
    own = median - base
    seen = np.isfinite(own) & (n_layer >= 1)
    tau2 = max(float(np.sum(n_layer[seen] * (own[seen] ** 2 - variance[seen])) / max(n_layer[seen].sum(), 1e-9)),
               0.0)
    per_layer = base + np.where(seen, own * tau2 / (tau2 + variance), 0.0)
    grid = np.where(layers.labels >= 0, per_layer[np.maximum(layers.labels, 0)], per_frame[:, None, None])
    return upsample_blocks(np.exp(np.nan_to_num(grid)).astype(np.float32), height, width, stride)


def _parallax(world_from_cam: np.ndarray, points: np.ndarray, obs: Observations) -> np.ndarray:
    """(P,) each point's parallax (radians): the angle between the rays to it from its first and last
    observing cameras (``world_from_cam`` (F, 4, 4), observations in frame order); 0 where unsolved."""
    ray = np.nan_to_num(points)[obs.point] - world_from_cam[obs.frame, :3, 3]
    ray /= np.maximum(np.linalg.norm(ray, axis=1, keepdims=True), 1e-12)
    order = np.lexsort((obs.frame, obs.point))
    point = obs.point[order]
    first = np.flatnonzero(np.r_[True, point[1:] != point[:-1]])
    last = np.r_[first[1:] - 1, len(point) - 1]
    out = np.zeros(len(points))
    cos = (ray[order[first]] * ray[order[last]]).sum(1)
    out[point[first]] = np.arccos(np.clip(cos, -1.0, 1.0))
    return np.where(np.isfinite(points).all(1), out, 0.0)


class CameraSolve:
    """Refines registered windows against their footage tracks and keeps the run's solve figures.

    Attributes:
        geometry: how footage frames became network inputs (maps prediction pixels to footage pixels).
        params: the stage's settings.
        refine_focal: refine the focal length over the first windows (not when it was given, nor for a zoom).
        refine_distortion: solve the lens's radial distortion over the first windows (``--refine-distortion``).
        focal_refined: the run's focal length is the solve's.
        distortion: (k1, k2) the tracks are solved through, once solved; None: none (a pinhole).
        tally: running figures of every window solved so far (solve.json).
    """

    def __init__(self, geometry: InputGeometry, params: SolveParams | None = None, refine_focal: bool = False,
                 refine_distortion: bool = False):
        self.geometry = geometry
        self.params = params or SolveParams()
        self.refine_focal = refine_focal
        self.refine_distortion = refine_distortion
        self.focal_refined = False
        self.distortion: tuple[float, float] | None = None
        self.tally = SolveTally()
        self._to_footage = geometry.to_footage()
        self._previous: Bundles | None = None  # the last window's sparse solve (its points anchor the next's)

    @property
    def refines_lens(self) -> bool:
        """Whether the lens pass (:meth:`calibrate`) runs before the first window."""
        return self.refine_focal or self.refine_distortion

    def restore(self, windows: list[Bundles], report: SolveReport | None) -> None:
        """Resume: the figures of the windows already on disk (oldest first) and their solve.json."""
        self.tally = SolveTally()
        for bundles in windows:
            self.tally.add(bundles)
        self._previous = windows[-1] if windows else None
        self.focal_refined = bool(report and report.focal_refined)
        self.distortion = report.distortion if report is not None else None

    def report(self, K: np.ndarray | None) -> SolveReport:
        """solve.json's figures so far; ``K`` (3, 3) the run's intrinsics at prediction resolution (None: a
        zoom, each frame its own)."""
        focal = None if K is None else float((self._to_footage @ K)[0, 0])
        return self.tally.report(focal=focal, focal_refined=self.focal_refined,
                                 distortion=self.distortion)

    @property
    def _lens_distortion(self) -> tuple[float, float]:
        return self.distortion or (0.0, 0.0)

    def refine(self, result: RegistrationResult, previous: Reference | None, K: np.ndarray,
               tracks: WindowTracks) -> WindowSolve:
        """Refine ``result``'s new cameras and depth; see the module docstring.

        Args:
            result: the window as registered (``result.window`` holds its new frames only).
            previous: the previous window's tail (the frames this window shares with it, already emitted),
                None for the first window.
            K: (3, 3) intrinsics at prediction resolution (with a zoom, the frames' ``frame_K`` instead,
                refined and returned in the window's ``frame_K`` and the reference's).
            tracks: the window's tracks, over all its frames.
        """
        win = result.window
        fixed_frames = previous.frames if previous is not None else np.zeros(0, np.int64)
        n_fixed = len(fixed_frames)
        frames = np.concatenate([fixed_frames, win.frames])
        poses = np.concatenate([previous.poses if previous is not None else np.zeros((0, 4, 4)),
                                win.poses]).astype(np.float64)
        depth = win.depth if previous is None else np.concatenate([previous.depth, win.depth])
        mask = win.mask if previous is None else np.concatenate([previous.mask, win.mask])
        zoom = win.frame_K is not None  # each frame's own intrinsics, the new frames' refined
        if zoom:
            K = win.frame_K if previous is None else np.concatenate([previous.frame_K, win.frame_K])
        Kf = self._to_footage @ K.astype(np.float64)
        obs, rgb, tracked, start = self._observations(frames, poses, depth, mask, Kf, [tracks],
                                                      self._lens_distortion)

        few = f"tracked points (at least {self.params.min_points} needed; textureless, blurred or static footage?)"
        if tracked < self.params.min_points:
            return self._skipped(result, tracks.count, f"only {tracked} {few}")
        views = np.bincount(obs.point, minlength=tracked)
        usable = int((views >= self.params.bundle.min_views).sum())
        if usable < self.params.min_points:
            return self._skipped(result, tracks.count, f"only {usable} tracked points agree with the network's "
                                 f"cameras over {self.params.bundle.min_views} frames or more (at least "
                                 f"{self.params.min_points} needed; damaged, blurred or mostly moving footage?)")
        lens = self._lens_distortion
        anchors = _anchors(obs, frames, n_fixed, poses, self._previous, tracked, self.params)
        start = np.where(np.isfinite(anchors.xyz), anchors.xyz, start)
        ba = adjust(poses, np.arange(len(frames)) < n_fixed, Kf, obs, start,
                    self.params.bundle, distortion=lens, refine_frame_focal=zoom, anchors=anchors)
        solved = int(np.isfinite(ba.points).all(1).sum())
        typical = float(np.nanmedian(obs.depth)) if np.isfinite(obs.depth).any() else np.inf
        shift = float(np.linalg.norm(ba.world_from_cam[n_fixed:, :3, 3] - poses[n_fixed:, :3, 3], axis=1).max(
            initial=0.0))
        if solved < self.params.min_points:
            return self._skipped(result, tracks.count, f"only {solved} solved {few}")
        if not np.isfinite(ba.rms_px):
            return self._skipped(result, tracks.count, "the adjustment did not converge")
        if shift > self.params.max_shift * typical:
            return self._skipped(result, tracks.count, f"the solve moved a camera by {shift:.3g} scene units "
                                 f"at a typical depth of {typical:.3g} (mismatched tracks?)")

        # dense depth follows the solve, frame by frame and layer by layer (``_depth_factors``), the tracks with
        # little parallax weighted down by how poorly the cameras' motion measures their depth (the inverse
        # variance of log depth goes as the parallax squared)
        R, C = ba.world_from_cam[:, :3, :3], ba.world_from_cam[:, :3, 3]
        uv, z = project(R, C, scaled_focal(Kf, ba.frame_focal_scale), np.nan_to_num(ba.points), obs, lens)
        use = ba.inlier & np.isfinite(obs.depth) & (obs.frame >= n_fixed)
        parallax = _parallax(ba.world_from_cam, ba.points, obs.subset(ba.inlier))[obs.point[use]]
        weight = np.minimum(np.degrees(parallax) / self.params.depth_parallax_deg, 1.0) ** 2
        factor = _depth_factors(win.depth, win.colors, obs.frame[use] - n_fixed, self._prediction_pixels(obs.xy[use]),
                                np.log(z[use] / obs.depth[use]), weight, self.params)
        new_poses = ba.world_from_cam[n_fixed:]
        refined = replace(win, poses=new_poses.astype(np.float32), depth=win.depth * factor)
        if zoom:
            frame_K = scaled_focal(win.frame_K, ba.frame_focal_scale[n_fixed:]).astype(np.float32)
            refined = replace(refined, frame_K=frame_K, K=np.median(frame_K, axis=0))
            self.focal_refined = True
        reference = _updated_reference(result.reference, win.frames, new_poses, factor, refined.frame_K)

        bundles = self._bundles(obs, ba.inlier, n_fixed, frames, ba.points, rgb,
                                np.linalg.norm(uv - obs.xy, axis=1), tracks.count)
        self.tally.add(bundles)
        self._previous = bundles
        return WindowSolve(RegistrationResult(window=refined, reference=reference), bundles)

    def calibrate(self, windows: list[AlignedWindow], tracks: list[WindowTracks],
                  K: np.ndarray) -> tuple[np.ndarray, str]:
        """The lens refined over the run's first windows, before any is solved or written: the focal length
        (``refine_focal``) and the radial distortion (``refine_distortion``, kept in :attr:`distortion`).

        Args:
            windows: the first windows as registered (each its new frames only, oldest first).
            tracks: their tracks: one set over all their frames, or each window's own.
            K: (3, 3) their intrinsics at prediction resolution.

        Returns:
            The run's intrinsics from now on (``K`` with the refined focal length, or ``K`` itself when the
            tracks do not determine it to ``params.focal_std`` or move it by ``params.focal_change`` or more)
            and a line saying what was found. The first camera is held; the windows' cameras, their tracks'
            points and the lens are adjusted together.
        """
        frames = np.concatenate([w.frames for w in windows])
        Kf, notes = self._to_footage @ K.astype(np.float64), []
        focal = self.refine_focal and len(frames) >= self.params.focal_frames
        if self.refine_focal and not focal:
            notes.append(f"focal length not refined: the shot has {len(frames)} frames, the lens pass needs "
                         f"{self.params.focal_frames}; keeping the network's {Kf[0, 0]:.1f} px (give it with "
                         "--focal-px if it is known)")
        if not focal and not self.refine_distortion:
            return K, notes[0]
        poses = np.concatenate([w.poses for w in windows]).astype(np.float64)
        depth, mask = np.concatenate([w.depth for w in windows]), np.concatenate([w.mask for w in windows])
        obs, _, tracked, start = self._observations(frames, poses, depth, mask, Kf, tracks, (0.0, 0.0))
        span = f"frames {frames[0]}-{frames[-1]}"
        views = np.bincount(obs.point, minlength=tracked)
        if (views >= self.params.bundle.min_views).sum() < self.params.min_points:
            return K, f"lens not refined: too few tracked points over {span}; keeping the network's focal length"
        ba = adjust(poses, np.zeros(len(frames), bool), Kf, obs, start, self.params.bundle,
                    refine_focal=focal, refine_distortion=self.refine_distortion)
        if self.refine_distortion:
            # the tracks were checked against a pinhole: where the distortion moves a track far across the
            # frame (towards the corners, where k2 is measured) its observations were left out. Check them
            # again through the lens just found, with its cameras, and solve again from there
            Kl = scaled_focal(Kf, ba.focal_scale)
            obs, _, tracked, start = self._observations(frames, ba.world_from_cam, depth, mask, Kl, tracks,
                                                        ba.distortion)
            again = adjust(ba.world_from_cam, np.zeros(len(frames), bool), Kl, obs, start, self.params.bundle,
                           refine_focal=focal, distortion=ba.distortion, refine_distortion=True)
            ba = replace(again, focal_scale=ba.focal_scale * again.focal_scale)
        found = f"{Kf[0, 0]:.1f} -> {Kf[0, 0] * ba.focal_scale:.1f} px (+-{ba.focal_std:.2%})"
        if focal and not ba.focal_std < self.params.focal_std:
            notes.append(f"focal length not refined: the camera motion over {span} does not determine it "
                         f"(+-{ba.focal_std:.2%}); keeping the network's {Kf[0, 0]:.1f} px (give it with "
                         "--focal-px if it is known)")
        elif focal and abs(ba.focal_scale - 1) >= self.params.focal_change:
            notes.append(f"focal length not refined: the tracks put it implausibly far, {found}; keeping the "
                         "network's")
        elif focal:
            notes.append(f"focal length refined: {found} over {span}")
            self.focal_refined = True
            K = scaled_focal(K, ba.focal_scale).astype(np.float32).astype(np.float64)
        if self.refine_distortion:
            if focal and not self.focal_refined:  # solved with a focal length that is not taken
                ba = adjust(poses, np.zeros(len(frames), bool), Kf, obs, start, self.params.bundle,
                            refine_distortion=True)
            self.distortion = ba.distortion
            notes.append(f"lens distortion solved: k1 {ba.distortion[0]:+.4f}, k2 {ba.distortion[1]:+.4f} "
                         f"over {span}")
        return K, "; ".join(notes)

    def _observations(self, frames: np.ndarray, poses: np.ndarray, depth: np.ndarray, mask: np.ndarray,
                      Kf: np.ndarray, tracks: list[WindowTracks],
                      lens: tuple[float, float]) -> tuple[Observations, np.ndarray, int, np.ndarray]:
        """The observations of ``tracks`` on ``frames`` (F,) (cameras ``poses`` (F, 4, 4), network ``depth`` and
        ``mask`` (F, h, w) at prediction resolution, footage intrinsics ``Kf``, radial distortion ``lens``): one
        point per window and track, with the network depth under each observation; those far from where the
        cameras and network depth put them (a moving object, a mismatch) left out. Returns them, their (M, 3)
        uint8 colours, the number of points (tracks), agreeing or not, and the points' (P, 3) starts
        (``_start_points``)."""
        parts, tracked = [], 0
        for t in tracks:
            local = np.searchsorted(frames, t.frame)
            known = (local < len(frames)) & (frames[np.minimum(local, len(frames) - 1)] == t.frame)
            ids, point = np.unique(t.track[known], return_inverse=True)
            parts.append((local[known], point + tracked, t.xy[known].astype(np.float64), t.rgb[known]))
            tracked += len(ids)
        local, point, xy, rgb = (np.concatenate(a) for a in zip(*parts))
        xy_pred = self._prediction_pixels(xy)
        obs = Observations(local, point, xy, _sample_depth(depth, mask, local, xy_pred))
        raw = _sample_depth(depth, None, local, xy_pred)
        if not tracked:
            return obs, rgb, 0, np.zeros((0, 3))
        start = np.nan_to_num(_start_points(poses, Kf, obs, raw, tracked, lens))
        uv, _ = project(poses[:, :3, :3], poses[:, :3, 3], Kf, start, obs, lens)
        agree = np.linalg.norm(uv - obs.xy, axis=1) < self.params.network_gate * self.geometry.footage[0]
        obs = obs.subset(agree)
        return obs, rgb[agree], tracked, _start_points(poses, Kf, obs, raw[agree], tracked, lens)

    def _prediction_pixels(self, xy: np.ndarray) -> np.ndarray:
        """(M, 2) prediction pixels of footage pixels ``xy`` (M, 2)."""
        return (xy - self._to_footage[:2, 2]) / np.diag(self._to_footage)[:2]

    def _skipped(self, result: RegistrationResult, count: int, why: str) -> WindowSolve:
        """The window as registered, with no sparse solve and a warning saying ``why``."""
        empty = Bundles(np.zeros((0, 3)), np.zeros((0, 3), np.uint8), np.zeros(0, np.int64), np.zeros(0, np.int64),
                        np.zeros((0, 2), np.float32), tracks=count)
        self.tally.add(empty)
        self._previous = empty
        return WindowSolve(result, empty, f"window {result.window.index}: camera solve skipped, {why}; "
                                          "keeping the network's cameras for its frames")

    def _bundles(self, obs: Observations, inlier: np.ndarray, n_fixed: int, frames: np.ndarray,
                 points: np.ndarray, rgb: np.ndarray, err: np.ndarray, count: int) -> Bundles:
        """The window's sparse solve: points with at least two inlier observations on its new frames."""
        keep = inlier & (obs.frame >= n_fixed)
        views = np.bincount(obs.point[keep], minlength=len(points))
        keep &= views[obs.point] >= 2
        used, slot = np.unique(obs.point[keep], return_inverse=True)
        first = np.zeros(len(used), np.int64)
        first[slot[::-1]] = np.flatnonzero(keep)[::-1]  # each point's first observation (its colour)
        return Bundles(points[used], rgb[first], slot, frames[obs.frame[keep]], obs.xy[keep].astype(np.float32),
                       err[keep].astype(np.float32), tracks=count)


def _anchors(obs: Observations, frames: np.ndarray, n_fixed: int, world_from_cam: np.ndarray,
             previous: Bundles | None, num_points: int, params: SolveParams) -> Anchors:
    """The window's points that are the ``previous`` window's solved points, anchored there.

    The window's tracker and the previous window's both follow the overlap frames (``frames[:n_fixed]``, the
    previous window's last): a track of this window whose observations there lie within ``params.link_px``
    of one solved point's on ``params.link_views`` frames or more is that point, held to it within
    ``params.link_sigma`` of its distance from the first overlap camera. The overlap cameras alone carry the
    scale from window to window only through their short baseline; the previous window's points were
    triangulated over all its frames.

    Args:
        obs: the window's observations (camera indices into ``frames``), ``num_points`` points.
        frames: (F,) source frames of the window's cameras, the ``n_fixed`` overlap frames first.
        world_from_cam: (F, 4, 4) their cameras.
        previous: the previous window's sparse solve (None or empty: no anchors).
    """
    out = Anchors.none(num_points)
    here = obs.frame < n_fixed
    if previous is None or not len(previous.xyz) or not here.any():
        return out
    # one KD-tree over both windows' overlap observations, frames kept apart along a third axis
    apart = 4.0 * params.link_px + 1e6
    mine = np.c_[obs.xy[here], frames[obs.frame[here]] * apart]
    theirs = np.c_[previous.obs_xy, previous.obs_frame * apart]
    dist, nearest = cKDTree(theirs).query(mine, distance_upper_bound=params.link_px)
    close = np.isfinite(dist)
    pairs, votes = np.unique(np.c_[obs.point[here][close], previous.obs_point[nearest[close]]], axis=0,
                             return_counts=True)
    pairs = pairs[votes >= params.link_views]
    # a track taken by two of the previous points (or a point by two tracks): keep neither, they are ambiguous
    unique = (np.bincount(pairs[:, 0], minlength=num_points)[pairs[:, 0]] == 1) & (
        np.bincount(pairs[:, 1], minlength=len(previous.xyz))[pairs[:, 1]] == 1)
    track, point = pairs[unique].T
    xyz = previous.xyz[point]
    out.xyz[track] = xyz
    out.sigma[track] = params.link_sigma * np.linalg.norm(xyz - world_from_cam[0, :3, 3], axis=1)
    return out


def _updated_reference(reference: Reference, frames: np.ndarray, poses: np.ndarray, factor: np.ndarray,
                       frame_K: np.ndarray | None) -> Reference:
    """``reference`` with the refined ``poses`` (N, 4, 4), depth ``factor`` (N, H, W) and, with a zoom, intrinsics
    ``frame_K`` (N, 3, 3) of the window's new ``frames``."""
    at = np.searchsorted(frames, reference.frames)
    ours = (at < len(frames)) & (frames[np.minimum(at, len(frames) - 1)] == reference.frames)
    new_poses = reference.poses.copy()
    new_poses[ours] = poses[at[ours]].astype(np.float32)  # as stored, so a resumed run continues exactly
    scale = np.where(ours[:, None, None], factor[np.minimum(at, len(frames) - 1)], np.float32(1))
    if frame_K is not None:
        new_K = reference.frame_K.copy()
        new_K[ours] = frame_K[at[ours]]
        reference = replace(reference, frame_K=new_K)
    return replace(reference, poses=new_poses, depth=reference.depth * scale,
                   sim3_depth=reference.sim3_depth * scale)
