"""The run's coloured point cloud as PLY (binary), GLB (glTF binary, through trimesh) or XYZ
(text ``x y z r g b``), in the scene world."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.run.files import atomic_write, output_file
from laser_blender.exporters import ExportOptions, ExportSummary
from laser_blender.exporters.ply import write_ply
from laser_blender.exporters.shot import cloud_samples, read_shot


def export(run_dir: Path, path: Path, options: ExportOptions, fmt: str) -> ExportSummary:
    path = output_file(path)
    shot = read_shot(run_dir)
    cloud = cloud_samples(run_dir, shot, options.max_points, options.conf_percentile, options.seed)
    if fmt == "ply":
        write_ply(path, cloud.points, cloud.colors)
    elif fmt == "xyz":
        table = np.column_stack([cloud.points, cloud.colors])
        atomic_write(path, lambda f: np.savetxt(f, table, fmt="%.7g %.7g %.7g %d %d %d"))
    else:
        import trimesh

        rgba = np.concatenate([cloud.colors, np.full((len(cloud), 1), 255, np.uint8)], axis=1)
        data = trimesh.PointCloud(cloud.points.astype(np.float32), colors=rgba).export(file_type="glb")
        atomic_write(path, lambda f: f.write(data))
    return ExportSummary(path=path, format=fmt, frames=len(shot), points=len(cloud), files=(path,))
