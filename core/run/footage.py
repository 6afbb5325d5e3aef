"""Footage files by frame index (no decoding): how a source frame index names an image.

An image folder's frames are its images in natural order (``img2`` before ``img10``);
source frame ``f`` is the ``f``-th of them. A video's frame ``f`` has no file of its own:
exporters name it ``frame_{f:06d}.png`` (0-based, the index in the video).
"""

from __future__ import annotations

import re
from pathlib import Path

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})


def natural_key(name: str) -> list:
    """Sort key that orders embedded numbers by value: ``img2`` before ``img10``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def image_files(folder: Path) -> list[Path]:
    """The images of an image-folder source, in frame order."""
    return sorted((p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS),
                  key=lambda p: natural_key(p.name))


def frame_names(source: str | None, frames: list[int]) -> list[str]:
    """File names of source frames ``frames``: the folder's own image names when ``source`` is
    an image folder that is still there, else ``frame_{f:06d}.png``."""
    if source and Path(source).is_dir():
        files = image_files(Path(source))
        if all(0 <= f < len(files) for f in frames):
            return [files[f].name for f in frames]
    return [f"frame_{f:06d}.png" for f in frames]
