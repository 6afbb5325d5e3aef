"""Nuke camera channels (``.chan``): what a Camera node's *import chan file* reads.

One line per frame: ``frame tx ty tz rx ry rz vfov``, whitespace separated.

* ``frame``: Blender's frame number (source frame + 1), so a Nuke script and the .blend agree.
* ``tx ty tz``: the camera centre in Nuke's world, +Y up: scene ``(x, y, z)`` -> ``(x, z, -y)``
  (the scene world's floor, Z = 0, becomes Nuke's ground plane, Y = 0).
* ``rx ry rz``: degrees, for Nuke's default rotation order **ZXY** (rotate about Z first,
  then X, then Y: ``R = Ry @ Rx @ Rz``) of a camera looking down its -Z with +Y up;
  continuous over time (:func:`zxy_euler_deg`), so a pan past 180 degrees never flips.
* ``vfov``: the vertical field of view in degrees, ``2 atan(H / (2 fy))`` at footage resolution;
  Nuke derives the focal length from it and the vertical aperture. The principal point
  (Nuke's ``win_translate``) is not part of the format.

numpy only (the add-on writes this format).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from core.run.files import atomic_write, output_file
from laser_blender.exporters import ExportOptions, ExportSummary
from laser_blender.exporters.shot import Shot, read_shot
from laser_blender.scene import FRAME_START

NUKE_FROM_SCENE = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
"""Scene world (+Z up) -> Nuke world (+Y up)."""
OPENCV_TO_OPENGL = np.diag([1.0, -1.0, -1.0])


def zxy_euler_deg(R: np.ndarray) -> np.ndarray:
    """(N, 3, 3) rotations -> (N, 3) ``rx ry rz`` degrees with ``R = Ry @ Rx @ Rz``, continuous over N.

    Each rotation has two Euler triples, ``(rx, ry, rz)`` and ``(180 - rx, ry + 180, rz + 180)``,
    each up to whole turns per angle; every frame takes the one nearest the previous frame's,
    so interpolation between keys never spins the long way round.
    """
    rx = np.arctan2(-R[:, 1, 2], np.hypot(R[:, 1, 0], R[:, 1, 1]))
    ry = np.arctan2(R[:, 0, 2], R[:, 2, 2])
    rz = np.arctan2(R[:, 1, 0], R[:, 1, 1])
    first = np.stack([rx, ry, rz], axis=1)
    candidates = np.stack([first, np.stack([np.pi - rx, ry + np.pi, rz + np.pi], axis=1)], axis=1)  # (N, 2, 3)
    out = np.empty_like(first)
    previous = first[0]
    for n in range(len(first)):  # sequential: each frame follows the one before
        near = candidates[n] + 2 * np.pi * np.round((previous - candidates[n]) / (2 * np.pi))
        previous = out[n] = near[np.argmin(np.abs(near - previous).sum(axis=1))]
    return np.degrees(out)


def channels(shot: Shot) -> np.ndarray:
    """(N, 8) ``frame tx ty tz rx ry rz vfov`` of ``shot``."""
    rotation = NUKE_FROM_SCENE @ shot.scene_from_cam[:, :3, :3] @ OPENCV_TO_OPENGL
    centre = shot.scene_from_cam[:, :3, 3] @ NUKE_FROM_SCENE.T
    vfov = np.degrees(2 * np.arctan(shot.size[1] / (2 * shot.K[:, 1, 1])))
    return np.column_stack([shot.frames + FRAME_START, centre, zxy_euler_deg(rotation), vfov])


def export(run_dir: Path, path: Path, options: ExportOptions, fmt: str) -> ExportSummary:
    path = output_file(path)
    shot = read_shot(run_dir)
    buffer = io.BytesIO()
    np.savetxt(buffer, channels(shot), fmt="%d" + " %.9g" * 7)
    atomic_write(path, lambda f: f.write(buffer.getvalue()))
    return ExportSummary(path=path, format="chan", frames=len(shot), points=0, files=(path,))
