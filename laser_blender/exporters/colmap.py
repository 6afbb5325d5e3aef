"""A COLMAP sparse model folder: ``cameras``, ``images``, ``points3D`` (``.bin``, or ``.txt``
with ``text``), as COLMAP's documentation describes them (Output format).

* Cameras: at footage resolution; one camera per distinct set of intrinsics (a fixed lens is
  one camera, a zoom one per frame). PINHOLE (``fx fy cx cy``); when the run's camera solve
  (``RUN/solve.json``) found lens distortion, RADIAL (``f cx cy k1 k2``; square pixels) or
  OPENCV (``fx fy cx cy k1 k2 p1 p2`` with ``p1 = p2 = 0``; non-square pixels). Both distort
  normalised image coordinates ``(x, y) = (X/Z, Y/Z)`` by ``1 + k1 r^2 + k2 r^4``, ``r^2 = x^2 + y^2``,
  before ``u = fx x + cx``: the polynomial of Blender's motion tracker (``POLYNOMIAL`` with
  ``k3 = 0``), which is how solve.json gives ``k1, k2``. The solve's focal, when given, replaces
  ``fx`` (``fy`` keeps its ratio to ``fx``).
* Images: one per registered frame, ids 1..N in frame order, the world-to-camera pose as
  quaternion ``qw qx qy qz`` and translation (``x_cam = R x_world + t``, OpenCV axes,
  the scene world), named like the footage frames (:func:`core.run.footage.frame_names`).
* Points3D: the camera solve's track points (``RUN/bundles/``) when the run has them, each
  observed where the solve tracked it (its points2D in those images); else sampled from the
  dense cloud, each observed in the frame whose pixel it came from (a track of length one).
  A point's error is its mean reprojection error through the written cameras.

Pixel coordinates have pixel centres at +0.5 in COLMAP as here (footage pixels pass through
unchanged). numpy only (the add-on writes this format).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.errors import UserError
from core.geometry.rotations import rotation_to_quaternion
from core.run.files import atomic_write
from core.run.rundir import RunDir
from core.run.solve import Bundles, SolveReport
from laser_blender.exporters import ExportOptions, ExportSummary
from laser_blender.exporters.shot import Shot, cloud_samples, read_shot

PINHOLE, RADIAL, OPENCV = (1, "PINHOLE"), (3, "RADIAL"), (4, "OPENCV")  # COLMAP's model ids and names
IMAGE_HEAD = np.dtype([("id", "<i4"), ("q", "<f8", 4), ("t", "<f8", 3), ("camera", "<i4")])
POINT2D = np.dtype([("xy", "<f8", 2), ("point3D", "<i8")])


@dataclass(frozen=True)
class Lens:
    """Each image's intrinsics at footage resolution: ``fx fy cx cy k1 k2`` (N, 6), and the
    COLMAP model that writes them (PINHOLE without distortion, RADIAL with it and square pixels, else OPENCV)."""

    intrinsics: np.ndarray
    model: tuple[int, str]

    @classmethod
    def of(cls, shot: Shot, solve: SolveReport | None) -> "Lens":
        fx, fy, cx, cy = shot.K[:, 0, 0], shot.K[:, 1, 1], shot.K[:, 0, 2], shot.K[:, 1, 2]
        if solve is not None and solve.focal is not None:
            fx, fy = np.full_like(fx, solve.focal), fy * solve.focal / fx
        distortion = None if solve is None else solve.distortion
        k1, k2 = (0.0, 0.0) if distortion is None else distortion
        if distortion is None:
            model = PINHOLE
        elif np.allclose(fx, fy, rtol=1e-6, atol=0):  # square pixels up to float32 storage
            model, fx = RADIAL, (fx + fy) / 2
            fy = fx
        else:
            model = OPENCV
        return cls(np.stack([fx, fy, cx, cy, np.full_like(fx, k1), np.full_like(fx, k2)], axis=1), model)

    def params(self) -> np.ndarray:
        """(N, n) each image's parameters in the order of COLMAP's model."""
        fx, fy, cx, cy, k1, k2 = self.intrinsics.T
        if self.model == PINHOLE:
            return np.stack([fx, fy, cx, cy], axis=1)
        if self.model == RADIAL:
            return np.stack([fx, cx, cy, k1, k2], axis=1)
        return np.stack([fx, fy, cx, cy, k1, k2, np.zeros_like(fx), np.zeros_like(fx)], axis=1)

    def project(self, image: np.ndarray, cam: np.ndarray) -> np.ndarray:
        """(O, 2) footage pixels of camera-space points ``cam`` (O, 3) seen by images ``image`` (O,)."""
        fx, fy, cx, cy, k1, k2 = self.intrinsics[image].T
        x, y = cam[:, 0] / cam[:, 2], cam[:, 1] / cam[:, 2]
        r2 = x * x + y * y
        radial = 1 + k1 * r2 + k2 * r2 * r2
        return np.stack([fx * x * radial + cx, fy * y * radial + cy], axis=1)


@dataclass(frozen=True)
class Model:
    """A sparse model ready to write. Observations are flat arrays, one entry each.

    Attributes:
        model: COLMAP's camera model (id, name); camera_params: (C, n) its parameters per camera;
            image_camera: (N,) 0-based camera of each image.
        cam_from_world: (N, 4, 4) world-to-camera poses of the images.
        points: (P, 3) world points; colors (P, 3) uint8; error (P,) mean reprojection error in pixels.
        obs_point, obs_image: (O,) 0-based point and image of each observation; obs_xy (O, 2) its pixel.
    """

    size: tuple[int, int]
    model: tuple[int, str]
    camera_params: np.ndarray
    image_camera: np.ndarray
    cam_from_world: np.ndarray
    names: list[str]
    points: np.ndarray
    colors: np.ndarray
    error: np.ndarray
    obs_point: np.ndarray
    obs_image: np.ndarray
    obs_xy: np.ndarray


def model_of(shot: Shot, lens: Lens, points: np.ndarray, colors: np.ndarray, obs_point: np.ndarray,
             obs_image: np.ndarray, obs_xy: np.ndarray) -> Model:
    """The model of ``shot``'s cameras seen through ``lens`` and the given points and observations
    (errors computed here)."""
    camera_params, image_camera = np.unique(lens.params(), axis=0, return_inverse=True)
    cam_from_world = np.linalg.inv(shot.scene_from_cam)
    seen_by = cam_from_world[obs_image]
    cam = np.einsum("oab,ob->oa", seen_by[:, :3, :3], points[obs_point]) + seen_by[:, :3, 3]
    residual = np.linalg.norm(lens.project(obs_image, cam) - obs_xy, axis=1)
    counts = np.bincount(obs_point, minlength=len(points))
    error = np.bincount(obs_point, residual, minlength=len(points)) / np.maximum(counts, 1)
    return Model(size=shot.size, model=lens.model, camera_params=camera_params,
                 image_camera=image_camera.reshape(-1), cam_from_world=cam_from_world, names=shot.names,
                 points=points, colors=colors, error=error, obs_point=obs_point, obs_image=obs_image, obs_xy=obs_xy)


def solve_tracks(shot: Shot, bundles: Bundles, max_points: int, seed: int = 0):
    """The solve's points as ``(points, colors, obs_point, obs_image, obs_xy)`` for :func:`model_of`:
    scene-world points observed in the frames of ``shot`` (observations of other frames dropped,
    points left without one too), at most ``max_points`` of them (a seeded random choice)."""
    image = np.minimum(np.searchsorted(shot.frames, bundles.obs_frame), len(shot) - 1)
    seen = shot.frames[image] == bundles.obs_frame
    keep = np.zeros(len(bundles.xyz), bool)
    keep[bundles.obs_point[seen]] = True
    if keep.sum() > max_points:
        chosen = np.random.default_rng(seed).choice(np.flatnonzero(keep), max_points, replace=False)
        keep[:] = False
        keep[chosen] = True
    renumber = np.cumsum(keep) - 1
    obs = seen & keep[bundles.obs_point]
    return (shot.transform.apply_points(bundles.xyz[keep]), bundles.rgb[keep], renumber[bundles.obs_point[obs]],
            image[obs], bundles.obs_xy[obs].astype(np.float64))


def export(run_dir: Path, path: Path, options: ExportOptions, fmt: str) -> ExportSummary:
    path = Path(path).absolute()
    if path.exists() and not path.is_dir():
        raise UserError(f"{path} is a file; a COLMAP model is a folder: give -o a folder")
    shot = read_shot(run_dir)
    run = RunDir(run_dir)
    lens, bundles = Lens.of(shot, run.read_solve()), run.read_bundles()
    if bundles is not None:
        model = model_of(shot, lens, *solve_tracks(shot, bundles, options.max_points, options.seed))
    else:
        cloud = cloud_samples(run_dir, shot, options.max_points, options.conf_percentile, options.seed,
                              static_only=True)
        model = model_of(shot, lens, cloud.points, cloud.colors, np.arange(len(cloud)), cloud.shot_index, cloud.uv)
    files = write_model(model, path, text=options.text)
    return ExportSummary(path=path, format="colmap", frames=len(shot), points=len(model.points), files=files)


# --------------------------------------------------------------------------- layout of the observations

def _points2d(model: Model) -> tuple[np.ndarray, np.ndarray]:
    """Observations sorted by image (stable) and each one's index among its image's points2D."""
    order = np.argsort(model.obs_image, kind="stable")
    starts = np.searchsorted(model.obs_image[order], np.arange(len(model.names)))
    index = np.empty(len(order), np.int64)
    index[order] = np.arange(len(order)) - starts[model.obs_image[order]]
    return order, index


def _tracks(model: Model, point2d_index: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Points grouped by track length: ``[(point indices, (n, L, 2) image id and point2D index)]``."""
    order = np.argsort(model.obs_point, kind="stable")
    lengths = np.bincount(model.obs_point, minlength=len(model.points))
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    groups = []
    for length in np.unique(lengths):
        points = np.flatnonzero(lengths == length)
        obs = order[starts[points, None] + np.arange(length)]  # (n, L)
        groups.append((points, np.stack([model.obs_image[obs] + 1, point2d_index[obs]], axis=-1)))
    return groups


def _image_poses(model: Model) -> tuple[np.ndarray, np.ndarray]:
    """(N, 4) ``qw qx qy qz`` and (N, 3) translations of the world-to-camera poses."""
    q = rotation_to_quaternion(model.cam_from_world[:, :3, :3])
    return q[:, [3, 0, 1, 2]], model.cam_from_world[:, :3, 3]


# --------------------------------------------------------------------------- writers

def write_model(model: Model, folder: Path, text: bool = False) -> tuple[Path, ...]:
    """Write the three files into ``folder`` (created); returns their paths."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{folder}: cannot create the model folder: {e.strerror}; choose another -o") from None
    suffix = ".txt" if text else ".bin"
    writers = (_cameras_txt, _images_txt, _points_txt) if text else (_cameras_bin, _images_bin, _points_bin)
    files = tuple(folder / f"{name}{suffix}" for name in ("cameras", "images", "points3D"))
    for path, writer in zip(files, writers):
        _write(path, writer, model)
    return files


def _write(path: Path, writer, model: Model) -> None:
    """``writer(model, binary_stream)`` into ``path``, atomically."""
    buffer = io.BytesIO()
    writer(model, buffer)
    atomic_write(path, lambda f: f.write(buffer.getvalue()))


def _cameras_bin(model: Model, out) -> None:
    row = np.dtype([("id", "<i4"), ("model", "<i4"), ("width", "<u8"), ("height", "<u8"),
                    ("params", "<f8", model.camera_params.shape[1])])
    cams = np.zeros(len(model.camera_params), row)
    cams["id"] = np.arange(1, len(cams) + 1)
    cams["model"], cams["width"], cams["height"] = model.model[0], *model.size
    cams["params"] = model.camera_params
    out.write(np.uint64(len(cams)).tobytes() + cams.tobytes())


def _images_bin(model: Model, out) -> None:
    q, t = _image_poses(model)
    order = _points2d(model)[0]
    bounds = np.searchsorted(model.obs_image[order], np.arange(len(model.names) + 1))
    out.write(np.uint64(len(model.names)).tobytes())
    for n, name in enumerate(model.names):
        head = np.zeros(1, IMAGE_HEAD)
        head["id"], head["q"], head["t"], head["camera"] = n + 1, q[n], t[n], model.image_camera[n] + 1
        obs = order[bounds[n]:bounds[n + 1]]
        pts = np.zeros(len(obs), POINT2D)
        pts["xy"], pts["point3D"] = model.obs_xy[obs], model.obs_point[obs] + 1
        out.write(head.tobytes() + name.encode() + b"\0" + np.uint64(len(obs)).tobytes() + pts.tobytes())


def _points_bin(model: Model, out) -> None:
    out.write(np.uint64(len(model.points)).tobytes())
    for points, track in _tracks(model, _points2d(model)[1]):
        length = track.shape[1]
        rows = np.zeros(len(points), np.dtype([("id", "<u8"), ("xyz", "<f8", 3), ("rgb", "u1", 3), ("error", "<f8"),
                                               ("length", "<u8"), ("track", "<i4", (length, 2))]))
        rows["id"], rows["xyz"], rows["rgb"] = points + 1, model.points[points], model.colors[points]
        rows["error"], rows["length"], rows["track"] = model.error[points], length, track
        out.write(rows.tobytes())


def _cameras_txt(model: Model, out) -> None:
    out.write(b"# Camera list with one line of data per camera:\n"
              b"#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]\n")
    W, H = model.size
    for n, params in enumerate(model.camera_params):
        out.write(f"{n + 1} {model.model[1]} {W} {H} {' '.join(repr(float(p)) for p in params)}\n".encode())


def _images_txt(model: Model, out) -> None:
    q, t = _image_poses(model)
    order = _points2d(model)[0]
    bounds = np.searchsorted(model.obs_image[order], np.arange(len(model.names) + 1))
    out.write(b"# Image list with two lines of data per image:\n"
              b"#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME\n"
              b"#   POINTS2D[] as (X, Y, POINT3D_ID)\n")
    for n, name in enumerate(model.names):
        pose = " ".join(repr(float(v)) for v in (*q[n], *t[n]))
        out.write(f"{n + 1} {pose} {model.image_camera[n] + 1} {name}\n".encode())
        obs = order[bounds[n]:bounds[n + 1]]
        if len(obs):
            row = np.column_stack([model.obs_xy[obs], model.obs_point[obs] + 1]).reshape(1, -1)
            np.savetxt(out, row, fmt=" ".join(["%.17g %.17g %d"] * len(obs)))
        else:
            out.write(b"\n")


def _points_txt(model: Model, out) -> None:
    out.write(b"# 3D point list with one line of data per point:\n"
              b"#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)\n")
    for points, track in _tracks(model, _points2d(model)[1]):
        table = np.column_stack([points + 1, model.points[points], model.colors[points], model.error[points],
                                 track.reshape(len(points), -1)])
        np.savetxt(out, table, fmt="%d %.17g %.17g %.17g %d %d %d %.17g" + " %d %d" * track.shape[1])
