"""The camera path as a TUM trajectory (``time tx ty tz qx qy qz qw``, camera-to-scene, OpenCV
axes; time in seconds when the footage has a frame rate, else the source frame index)."""

from __future__ import annotations

from pathlib import Path

from core.run.files import atomic_write, output_file
from core.run.tum import format_tum
from laser_blender.exporters import ExportOptions, ExportSummary
from laser_blender.exporters.shot import read_shot


def export(run_dir: Path, path: Path, options: ExportOptions, fmt: str) -> ExportSummary:
    path = output_file(path)
    shot = read_shot(run_dir)
    times = shot.frames / shot.fps if shot.fps else shot.frames.astype(float)
    lines = format_tum(times, shot.scene_from_cam)
    atomic_write(path, lambda f: f.write(lines.encode()))
    return ExportSummary(path=path, format="tum", frames=len(shot), points=0, files=(path,))
