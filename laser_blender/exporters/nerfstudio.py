"""nerfstudio's ``transforms.json`` (their documented data conventions) and its initial cloud.

* ``transform_matrix``: camera-to-world with the camera's +X right, +Y up, +Z back (OpenGL,
  Blender): our OpenCV ``scene_from_cam`` times ``diag(1, -1, -1, 1)``; the world is the
  scene world (+Z up when the run was oriented).
* ``camera_model`` OPENCV with zero distortion; ``fl_x fl_y cx cy w h`` in footage pixels at the
  top level for a fixed lens, per frame when the intrinsics change (a zoom).
* ``file_path``: the footage frame's image, relative to the json (``images/<name>`` by
  default; ``laser-blender export --images`` writes them there).
* ``ply_file_path``: ``<stem>_points.ply`` beside the json, the dense cloud sampled in the
  same world (for Gaussian splatting's initialisation).

numpy only (the add-on writes this format).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from core.run.files import atomic_write, output_file
from laser_blender.exporters import ExportOptions, ExportSummary
from laser_blender.exporters.ply import write_ply
from laser_blender.exporters.shot import Shot, cloud_samples, read_shot

OPENCV_TO_OPENGL = np.diag([1.0, -1.0, -1.0, 1.0])
"""Right-multiplied on a camera-to-world pose: OpenCV camera axes (y down, z forward) -> OpenGL (y up, z back)."""


def _intrinsics(K: np.ndarray) -> dict[str, float]:
    return {"fl_x": float(K[0, 0]), "fl_y": float(K[1, 1]), "cx": float(K[0, 2]), "cy": float(K[1, 2])}


def transforms(shot: Shot, file_paths: list[str], ply_file_path: str) -> dict:
    """The ``transforms.json`` content of ``shot``."""
    W, H = shot.size
    fixed = shot.fixed_lens()
    matrices = shot.scene_from_cam @ OPENCV_TO_OPENGL
    frames = [{"file_path": file_path, "transform_matrix": matrix.tolist(),
               **({} if fixed else _intrinsics(K))}
              for file_path, matrix, K in zip(file_paths, matrices, shot.K)]
    return {"camera_model": "OPENCV", **(_intrinsics(shot.K[0]) if fixed else {}), "w": W, "h": H,
            "k1": 0.0, "k2": 0.0, "p1": 0.0, "p2": 0.0, "frames": frames, "ply_file_path": ply_file_path}


def export(run_dir: Path, path: Path, options: ExportOptions, fmt: str) -> ExportSummary:
    path = output_file(path)
    images = Path(options.images).absolute() if options.images else path.parent / "images"
    shot = read_shot(run_dir)
    cloud = cloud_samples(run_dir, shot, options.max_points, options.conf_percentile, options.seed,
                          static_only=True)
    ply = path.with_name(f"{path.stem}_points.ply")
    write_ply(ply, cloud.points, cloud.colors)
    file_paths = [Path(os.path.relpath(images / name, path.parent)).as_posix() for name in shot.names]
    content = json.dumps(transforms(shot, file_paths, ply.name), indent=2)
    atomic_write(path, lambda f: f.write(content.encode()))
    return ExportSummary(path=path, format="nerfstudio", frames=len(shot), points=len(cloud), files=(path, ply))
