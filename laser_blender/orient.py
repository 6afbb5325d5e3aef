"""Scene orientation and scale: the run world -> scene world similarity (``RUN/scene.json``).

Automatic (:func:`auto_orientation`, run when ``reconstruct``/``align`` complete): the
dominant ground plane of the static cloud becomes Z = 0 with +Z up, the origin under the
first camera, +Y along the first camera's horizontal view direction. Manual edits, like
Blender's tracker (Set Floor / Set Origin / Set X Axis / Set Scale), take points in the
*current scene world* (what Blender shows and every export writes) and compose a
similarity on the left of the current transform, so each edit keeps the others' effect:
a floor keeps the scale, a scale keeps the floor at Z = 0 (it scales about the origin).

The world is in metres only after a known distance or camera height (:class:`Units`).
numpy only: ships in the Blender extension (the add-on's Scene panel calls these).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from core.errors import UserError
from core.geometry.plane import Plane, ransac_ground
from core.run.files import RunDirError
from core.run.rundir import RunDir
from core.run.scene_transform import FIRST_CAMERA, SceneTransform, Units
from core.run.tum import read_tum
from laser_blender.points import select_points, window_dynamic, window_points

GROUND_TOLERANCE = 0.02
"""A point lies on the ground when within this share of its depth (network depth noise grows with depth)."""
MIN_SUPPORT = 0.15
"""A credible ground holds at least this share of the static cloud's (confidence-rank) weight ..."""
MAX_TILT_DEG = 60.0
"""... its normal is within this angle of the cameras' mean up direction ..."""
MIN_CAMERAS_ABOVE = 0.9
"""... and at least this share of the camera centres are above it (not a ceiling)."""
MIN_UP_AGREEMENT = 0.5
"""The cameras' up directions must agree: their mean is at least this long (else no up is known)."""
CLOUD_POINTS = 200_000
CLOUD_WINDOWS = 12


class OrientError(UserError):
    """An orientation edit that cannot be made (no floor to measure a camera height from, ...)."""


@dataclass
class StaticCloud:
    """A sample of a run's static points in the run world.

    Attributes:
        points: (N, 3) run-world points (dynamic pixels left out).
        weights: (N,) confidence rank within its window, in (0, 1].
        tolerance: (N,) ground tolerance (``GROUND_TOLERANCE`` x depth), run units.
    """

    points: np.ndarray
    weights: np.ndarray
    tolerance: np.ndarray


def static_cloud(run: RunDir, max_points: int = CLOUD_POINTS, max_windows: int = CLOUD_WINDOWS,
                 seed: int = 0) -> StaticCloud:
    """Sample about ``max_points`` confident, static points of ``run`` from at most ``max_windows``
    windows spread evenly over the shot (the static/dynamic split costs about 2 s per window
    at 518x294 on one core, so a long shot is sampled, not read whole)."""
    windows = run.aligned_windows()
    if not windows:
        raise RunDirError(f"{run.root} has no registered window yet; nothing to orient")
    chosen = [windows[k][0] for k in np.unique(np.linspace(0, len(windows) - 1, max_windows).round().astype(int))]
    points, weights, tolerance = [], [], []
    for index in chosen:
        win = run.load_aligned(index)
        m, i, j = select_points(win, max(1, max_points // len(chosen)), 0.0, seed)
        static = ~window_dynamic(run, win)[m, i, j]
        m, i, j = m[static], i[static], j[static]
        conf = win.conf[m, i, j]
        rank = (np.argsort(np.argsort(conf)) + 1) / max(len(conf), 1)
        points.append(window_points(win, m, i, j))
        weights.append(rank)
        tolerance.append(GROUND_TOLERANCE * win.depth[m, i, j].astype(np.float64))
    return StaticCloud(np.concatenate(points), np.concatenate(weights), np.concatenate(tolerance))


def run_cameras(run: RunDir) -> np.ndarray:
    """(F, 4, 4) run-world camera-to-world poses of every registered frame (from trajectory.tum)."""
    poses = read_tum(run.trajectory_path)[1]
    if not len(poses):
        raise RunDirError(f"{run.trajectory_path} is empty; nothing to orient")
    return poses


def cameras_up(scene_from_cam: np.ndarray) -> np.ndarray:
    """(3,) mean up direction (OpenCV -y) of (F, 4, 4) camera poses; its length says how well they agree."""
    return -scene_from_cam[:, :3, 1].mean(0)


# --------------------------------------------------------------------------- edits in the scene world

def _compose(edit: np.ndarray, current: SceneTransform, step: str, units: Units | None = None) -> SceneTransform:
    """``edit`` (4, 4 similarity in the scene world) after ``current``; ``step`` appended to the method."""
    method = step if current.method.startswith(FIRST_CAMERA) else f"{current.method}, {step}"
    return SceneTransform.from_matrix(edit @ current.matrix(), units=units or current.units, method=method)


def set_floor(current: SceneTransform, plane: Plane, cameras: np.ndarray, step: str = "floor") -> SceneTransform:
    """The plane (scene world) becomes Z = 0, its normal +Z; the origin under the first camera,
    +Y along its view direction projected on the floor (its up direction when it looks straight down).

    Args:
        plane: in the current scene world; its normal points up.
        cameras: (F, 4, 4) run-world camera poses (the first is the anchor).
    """
    z = plane.normal / np.linalg.norm(plane.normal)
    first = current.apply_poses(cameras[:1])[0]
    origin = first[:3, 3] - plane.distance(first[:3, 3]) * z
    forward = first[:3, 2] - (first[:3, 2] @ z) * z
    if np.linalg.norm(forward) < 0.1:
        forward = -first[:3, 1] - (-first[:3, 1] @ z) * z
    y = forward / np.linalg.norm(forward)
    x = np.cross(y, z)
    edit = np.eye(4)
    edit[:3, :3] = np.stack([x, y, z])
    edit[:3, 3] = -edit[:3, :3] @ origin
    return _compose(edit, current, step)


def set_origin(current: SceneTransform, point: np.ndarray) -> SceneTransform:
    """``point`` (scene world) becomes the origin."""
    edit = np.eye(4)
    edit[:3, 3] = -np.asarray(point, np.float64)
    return _compose(edit, current, "origin")


def set_x_axis(current: SceneTransform, point: np.ndarray) -> SceneTransform:
    """Turn about Z so that ``point`` (scene world) lies on +X (the floor stays the floor)."""
    p = np.asarray(point, np.float64)
    if math.hypot(p[0], p[1]) < 1e-9:
        raise OrientError("the X axis point lies on the Z axis (above or below the origin); pick another point")
    a = -math.atan2(p[1], p[0])
    edit = np.eye(4)
    edit[:2, :2] = [[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]]
    return _compose(edit, current, "X axis")


def set_scale_distance(current: SceneTransform, a: np.ndarray, b: np.ndarray, metres: float) -> SceneTransform:
    """Scale about the origin so that scene points ``a`` and ``b`` are ``metres`` apart (units: metres)."""
    d = float(np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64)))
    if not d > 0 or not metres > 0:
        raise OrientError(f"need two distinct points and a positive distance (got {d:g} apart, {metres:g} m)")
    return _compose(np.diag([metres / d] * 3 + [1.0]), current, f"scale {metres:g} m", Units.metres)


def set_camera_height(current: SceneTransform, cameras: np.ndarray, metres: float) -> SceneTransform:
    """Scale about the origin so that the cameras' median height above Z = 0 is ``metres`` (units: metres)."""
    height = float(np.median(current.apply_poses(cameras)[:, 2, 3]))
    if not metres > 0:
        raise OrientError(f"--camera-height must be positive, got {metres:g}")
    if current.method.startswith(FIRST_CAMERA) or not height > 0:
        raise OrientError("a camera height needs a floor below the cameras; set one first (--floor, or Set Floor in Blender)")
    return _compose(np.diag([metres / height] * 3 + [1.0]), current, f"camera height {metres:g} m", Units.metres)


# --------------------------------------------------------------------------- the ground

@dataclass(frozen=True)
class GroundSearch:
    """What the automatic ground search found: a plane (scene world) or why there is none."""

    plane: Plane | None
    reason: str


def find_ground(cloud: StaticCloud, cameras: np.ndarray, current: SceneTransform) -> GroundSearch:
    """The dominant credible ground plane of ``cloud``, in ``current``'s scene world.

    Credible: its normal within ``MAX_TILT_DEG`` of the cameras' mean up direction, at
    least ``MIN_SUPPORT`` of the confidence weight within ``GROUND_TOLERANCE`` x depth of
    it, and ``MIN_CAMERAS_ABOVE`` of the cameras above it.
    """
    scene_cams = current.apply_poses(cameras)
    up = cameras_up(scene_cams)
    if np.linalg.norm(up) < MIN_UP_AGREEMENT:
        return GroundSearch(None, "the cameras do not agree on an up direction")
    fit = ransac_ground(current.apply_points(cloud.points), cloud.weights, current.scale * cloud.tolerance, up,
                        MAX_TILT_DEG)
    if fit is None:
        return GroundSearch(None, f"no plane within {MAX_TILT_DEG:g} degrees of the cameras' up direction")
    above = float((fit.plane.distance(scene_cams[:, :3, 3]) > 0).mean())
    facts = (f"{100 * fit.support:.0f}% of the static cloud within {100 * GROUND_TOLERANCE:g}% of depth, "
             f"{fit.tilt_deg:.1f} degrees from the cameras' up")
    if fit.support < MIN_SUPPORT:
        return GroundSearch(None, f"the best plane holds only {100 * fit.support:.0f}% of the static cloud "
                                  f"(needs {100 * MIN_SUPPORT:g}%)")
    if above < MIN_CAMERAS_ABOVE:
        return GroundSearch(None, f"the best plane ({facts}) has {100 * (1 - above):.0f}% of the cameras "
                                  "below it (a ceiling?)")
    return GroundSearch(fit.plane, facts)


def auto_orientation(run: RunDir) -> SceneTransform:
    """The automatic orientation of a run: its ground, else the first-camera anchoring (the method says which and why)."""
    cameras = run_cameras(run)
    base = SceneTransform.first_camera(cameras[0])
    search = find_ground(static_cloud(run), cameras, base)
    if search.plane is None:
        return base.model_copy(update={"method": f"first camera (no credible ground plane: {search.reason})"})
    return set_floor(base, search.plane, cameras, f"ground plane (auto: {search.reason})")


def orient_new_run(run_dir) -> SceneTransform:
    """Write the automatic orientation of a just-completed run to ``scene.json``; returns it."""
    run = RunDir(run_dir)
    transform = auto_orientation(run)
    run.write_scene_transform(transform)
    return transform


def describe(transform: SceneTransform) -> str:
    """One line for a user: how the scene was set and its unit."""
    unit = "metres" if transform.units == Units.metres else "the network's unit (no distance given)"
    return f"scene: {transform.method}; unit: {unit}; scale {transform.scale:.6g}"
