"""The footage frames of a shot as image files, named as the exports refer to them
(:func:`core.run.footage.frame_names`): an image folder's images are copied as they are,
a video's frames are decoded and written as PNG. Engine side (OpenCV); the add-on never
imports it."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np

from core.errors import UserError
from core.frames import open_source
from core.run.files import atomic_write
from core.run.footage import image_files
from core.run.rundir import RunDir
from laser_blender.exporters.shot import Shot


def write_frames(run_dir: str | Path, shot: Shot, folder: str | Path) -> list[Path]:
    """Write every frame of ``shot`` into ``folder`` (created); returns the files written."""
    source = RunDir(Path(run_dir)).read_manifest().source
    if not source.path or not Path(source.path).exists():
        raise UserError(f"--images: the run's footage {source.path or '(none recorded in run.json)'} is not there; "
                        f"the frames cannot be written")
    folder = Path(folder).absolute()
    folder.mkdir(parents=True, exist_ok=True)
    wanted = dict(zip(shot.frames.tolist(), shot.names))
    written = []
    if Path(source.path).is_dir():
        files = image_files(Path(source.path))
        for frame, name in wanted.items():
            shutil.copyfile(files[frame], folder / name)
            written.append(folder / name)
        return written
    for index, rgb in open_source(source.path, start=int(shot.frames.min()), stride=source.stride).frames():
        if index in wanted:
            _write_png(folder / wanted[index], rgb)
            written.append(folder / wanted[index])
        if index >= shot.frames.max():
            break
    return written


def _write_png(path: Path, rgb: np.ndarray) -> None:
    ok, png = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]))
    if not ok:
        raise UserError(f"{path}: the frame could not be encoded as PNG")
    atomic_write(path, lambda f: f.write(png.tobytes()))
