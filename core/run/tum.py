"""TUM trajectories: ``timestamp tx ty tz qx qy qz qw`` per line, camera-to-world."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.geometry.rotations import quaternion_to_rotation, rotation_to_quaternion
from core.run.files import RunDirError


def format_tum(timestamps: np.ndarray, world_from_cam: np.ndarray) -> str:
    """TUM lines for (N,) times and (N, 4, 4) camera-to-world poses."""
    poses = np.asarray(world_from_cam, np.float64)
    q = rotation_to_quaternion(poses[:, :3, :3])
    t = poses[:, :3, 3]
    rows = np.concatenate([np.asarray(timestamps, np.float64)[:, None], t, q], axis=1)
    return "".join(" ".join(f"{v:.9g}" for v in row) + "\n" for row in rows)


def read_tum(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a TUM trajectory -> ((N,) timestamps, (N, 4, 4) camera-to-world)."""
    path = Path(path)
    try:
        rows = [line.split() for line in path.read_text().splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    except FileNotFoundError:
        raise RunDirError(f"{path} does not exist") from None
    try:
        data = np.array(rows, dtype=np.float64)
    except ValueError:
        raise RunDirError(f"{path} is not a TUM trajectory (8 numbers per line)") from None
    if data.ndim != 2 or data.shape[1] != 8:
        raise RunDirError(f"{path} is not a TUM trajectory (8 numbers per line)")
    poses = np.tile(np.eye(4), (len(data), 1, 1))
    poses[:, :3, :3] = quaternion_to_rotation(data[:, 4:8])
    poses[:, :3, 3] = data[:, 1:4]
    return data[:, 0], poses
