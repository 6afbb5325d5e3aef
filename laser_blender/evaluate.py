"""Score a run directory against a ground-truth directory (``core.groundtruth``).

Frames are joined by source frame index. The run is read twice, a window at a time,
so memory stays bounded however long the run:

1. poses, a deterministic sample of depth ratios (for the global depth scale) and
   subsampled world points of run and ground truth;
2. with the global depth scale known: depth errors and per-layer depth drift.

Ground-truth depth and layer maps (footage resolution) are brought to the
prediction grid by nearest-neighbour lookup of the ground-truth pixel under each
prediction pixel centre, through the run's input geometry (resize and crop).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.geometry.camera import unproject
from core.geometry.transforms import apply_sim3_to_points, transform_points, umeyama_sim3
from core.groundtruth import GroundTruth, GroundTruthError, load_ground_truth
from core.metrics import ate, depth_errors, pointcloud_metrics, rpe, subsample, valid_depth
from core.run.files import RunDirError
from core.run.manifest import InputGeometry
from core.run.rundir import RunDir
from core.run.solve import SolveReport

DEFAULT_MAX_POINTS = 200_000
MAX_RATIO_SAMPLES = 4_000_000  # depth ratios kept for the global median scale
MIN_LAYER_PIXELS = 20  # a layer counts in a frame when at least this many valid pixels show it


def prediction_to_gt_pixels(geometry: InputGeometry, gt_size: tuple[int, int]) -> np.ndarray:
    """(3, 3) affine map from prediction pixel coordinates to ground-truth pixel coordinates.

    The ground truth may be rendered at another resolution than the footage the run read;
    both cover the same field of view.
    """
    to_gt = np.diag([gt_size[0] / geometry.footage[0], gt_size[1] / geometry.footage[1], 1.0])
    return to_gt @ geometry.to_footage()


def resample_nearest(image: np.ndarray, A: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Values of (H, W, ...) ``image`` under the centres of a (h, w) = ``size[::-1]`` prediction grid.

    ``A`` is an axis-aligned affine map from prediction to ``image`` pixel coordinates.
    """
    w, h = size
    x = A[0, 0] * (np.arange(w) + 0.5) + A[0, 2]
    y = A[1, 1] * (np.arange(h) + 0.5) + A[1, 2]
    cols = np.clip(np.floor(x).astype(np.int64), 0, image.shape[1] - 1)
    rows = np.clip(np.floor(y).astype(np.int64), 0, image.shape[0] - 1)
    return image[rows[:, None], cols[None, :]]


@dataclass
class _Join:
    """The run's windows matched to the ground truth, frame by frame."""

    run_dir: Path
    gt: GroundTruth
    A: np.ndarray  # prediction -> ground-truth pixels
    K_gt: np.ndarray  # ground-truth intrinsics on the prediction grid (one per gt frame with a zoom: (N, 3, 3))
    size: tuple[int, int]  # prediction (w, h)
    run_frames: int = 0

    def frames(self):
        """Yield (window, row in window, row in gt, gt depth on the prediction grid) per matched frame."""
        seen: set[int] = set()
        for win in RunDir(self.run_dir).iter_aligned():
            if win.depth.shape[1:] != self.size[::-1]:
                raise RunDirError(f"{self.run_dir}: window {win.index} depth is {win.depth.shape[1:]}, "
                                  f"the run's geometry says {self.size[::-1]}")
            rows = np.searchsorted(self.gt.frames, win.frames)
            for i, (frame, row) in enumerate(zip(win.frames.tolist(), rows.tolist())):
                if frame in seen:
                    raise RunDirError(f"{self.run_dir}: frame {frame} appears in more than one aligned window")
                seen.add(frame)
                if row < len(self.gt.frames) and self.gt.frames[row] == frame:
                    yield win, i, row, resample_nearest(self.gt.depth(frame), self.A, self.size)
        self.run_frames = len(seen)


def _first_pass(join: _Join, max_points: int):
    n_gt = len(join.gt.frames)
    ratio_cap = max(1, MAX_RATIO_SAMPLES // n_gt)
    point_cap = max(1, max_points // n_gt)
    rows, poses, ratios, run_points, gt_points = [], [], [], [], []
    for win, i, row, gt_depth in join.frames():
        depth = win.depth[i]
        rows.append(row)
        poses.append(win.poses[i])
        valid = valid_depth(depth, gt_depth)
        ratios.append(subsample(gt_depth[valid] / depth[valid], ratio_cap))
        run_valid = valid_depth(depth, depth, win.mask[i])
        run_points.append(transform_points(win.poses[i].astype(np.float64),
                                           subsample(unproject(depth, win.frame_intrinsics[i])[run_valid], point_cap)))
        gt_valid = valid_depth(gt_depth, gt_depth, win.mask[i])
        gt_points.append(transform_points(join.gt.poses[row],
                                          subsample(unproject(gt_depth, join.K_gt if join.K_gt.ndim == 2
                                                              else join.K_gt[row])[gt_valid], point_cap)))
    if len(rows) < 3:
        raise GroundTruthError(f"only {len(rows)} of the run's {join.run_frames} frames are in the ground truth "
                               f"{join.gt.root} (frames {join.gt.frames[0]}..{join.gt.frames[-1]}); need 3")
    ratios = np.concatenate(ratios)
    if ratios.size == 0:
        raise GroundTruthError(f"no pixel has valid depth in both the run and the ground truth {join.gt.root}")
    return (np.array(rows), np.array(poses, np.float64), float(np.median(ratios)),
            np.concatenate(run_points), np.concatenate(gt_points))


def _second_pass(join: _Join, scale: float, with_layers: bool):
    abs_rel_sum, inliers, count = 0.0, 0, 0
    layer_values: dict[int, list[float]] = {}
    for win, i, row, gt_depth in join.frames():
        depth = win.depth[i]
        a, b, c = depth_errors([depth], [gt_depth], scale)
        abs_rel_sum, inliers, count = abs_rel_sum + a, inliers + b, count + c
        ids = join.gt.layers(int(join.gt.frames[row])) if with_layers else None
        if ids is not None:
            for layer, value in layer_log_ratios(scale * depth, gt_depth, resample_nearest(ids, join.A, join.size)):
                layer_values.setdefault(layer, []).append(value)
    depth = {"abs_rel": abs_rel_sum / count, "delta_1_25": inliers / count, "scale": scale, "valid": count}
    return depth, layer_values


def layer_log_ratios(depth: np.ndarray, gt_depth: np.ndarray, ids: np.ndarray):
    """(layer id, median log(depth / gt_depth) over the layer's valid pixels) for one (H, W) frame."""
    valid = valid_depth(depth, gt_depth)
    log_ratio = np.log(depth[valid] / gt_depth[valid])
    layer_of = ids[valid]
    for layer in np.unique(layer_of).tolist():
        values = log_ratio[layer_of == layer]
        if values.size >= MIN_LAYER_PIXELS:
            yield layer, float(np.median(values))


def evaluate_run(run_dir: str | Path, gt_dir: str | Path, max_points: int = DEFAULT_MAX_POINTS) -> dict[str, Any]:
    """Accuracy of a run against ground truth.

    Returns a JSON-ready dict:
        ``frames``: run / matched / ground-truth frame counts;
        ``ate``, ``rpe``: see :func:`core.metrics.ate` / :func:`core.metrics.rpe` (delta 1 frame of the run);
        ``depth``: Abs Rel and delta < 1.25 over every pixel with valid depth in both, after one
        global median-ratio scale;
        ``pointcloud``: accuracy / completeness / Chamfer in ground-truth units between the run's
        points (mapped by the ATE similarity) and the ground truth's points on the same pixels:
        those the run's confidence mask keeps; both subsampled to about ``max_points``;
        with scene layers in the ground truth, ``layer_log_ratio_std``: per layer name, the
        standard deviation over frames of the median log(scaled depth / true depth) of its pixels
        (0 when each layer keeps one scale through time), and ``layer_log_ratio_std_mean``;
        with a camera solve (``RUN/solve.json``), ``solve``: its figures without the per-frame errors.
    """
    run_dir, gt = Path(run_dir), load_ground_truth(gt_dir)
    run = RunDir(run_dir)
    manifest = run.read_manifest()
    if not run.aligned_windows():
        raise RunDirError(f"{run_dir}: no aligned windows to evaluate (status {manifest.status})")
    # A run that recorded no geometry read the ground truth's footage resized to the prediction size.
    geometry = run.geometry(footage=(gt.width, gt.height))
    A = prediction_to_gt_pixels(geometry, (gt.width, gt.height))
    join = _Join(run_dir, gt, A, np.linalg.inv(A) @ (gt.K if gt.frame_K is None else gt.frame_K), tuple(geometry.size))

    rows, est_poses, depth_scale, run_points, gt_points = _first_pass(join, max_points)
    gt_poses = gt.poses[rows]
    order = np.argsort(rows)
    est_poses, gt_poses = est_poses[order], gt_poses[order]
    s, R, t = umeyama_sim3(est_poses[:, :3, 3], gt_poses[:, :3, 3])
    depth, layer_values = _second_pass(join, depth_scale, gt.has_layers)

    metrics: dict[str, Any] = {
        "run": str(run_dir), "gt": str(gt.root), "status": manifest.status.value,
        "frames": {"run": join.run_frames, "matched": len(rows), "ground_truth": len(gt.frames)},
        "ate": ate(est_poses, gt_poses),
        "rpe": rpe(est_poses, gt_poses),
        "depth": depth,
        "pointcloud": pointcloud_metrics(apply_sim3_to_points(s, R, t, run_points), gt_points, max_points),
    }
    spread = {gt.layer_names.get(layer, f"layer {layer}"): float(np.std(values))
              for layer, values in sorted(layer_values.items()) if len(values) >= 2}
    if spread:
        metrics["layer_log_ratio_std"] = spread
        metrics["layer_log_ratio_std_mean"] = float(np.mean(list(spread.values())))
    solve = run.read_solve()
    if solve is not None:
        metrics["solve"] = solve.model_dump(mode="json", exclude={"per_frame_px"})
    return metrics


def format_report(metrics: dict[str, Any]) -> str:
    """The metrics of :func:`evaluate_run` as a few lines for a terminal."""
    f, a, r, d, p = (metrics[k] for k in ("frames", "ate", "rpe", "depth", "pointcloud"))
    lines = [
        f"frames      {f['matched']} matched (run {f['run']}, ground truth {f['ground_truth']})",
        f"ATE         rmse {a['rmse']:.4g} = {100 * a['rmse_over_length']:.3g}% of the {a['length']:.4g} path"
        f"  (mean {a['mean']:.4g}, median {a['median']:.4g}, max {a['max']:.4g}; Sim(3) scale {a['scale']:.4g})",
        f"RPE         translation {r['trans_rmse']:.4g}, rotation {r['rot_rmse_deg']:.4g} deg (rmse per frame step)",
        f"depth       Abs Rel {d['abs_rel']:.4g}, delta<1.25 {100 * d['delta_1_25']:.2f}%"
        f"  (global scale {d['scale']:.4g}, {d['valid']} pixels)",
        f"points      accuracy {p['accuracy']:.4g}, completeness {p['completeness']:.4g}, Chamfer {p['chamfer']:.4g}",
    ]
    if "layer_log_ratio_std" in metrics:
        per_layer = ", ".join(f"{name} {v:.4g}" for name, v in metrics["layer_log_ratio_std"].items())
        lines.append(f"layer drift std of log depth ratio over time: mean {metrics['layer_log_ratio_std_mean']:.4g}"
                     f" ({per_layer})")
    if "solve" in metrics:
        lines.append(f"solve       {SolveReport.model_validate(metrics['solve']).summary()}")
    return "\n".join(lines)
