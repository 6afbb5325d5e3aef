"""Exporters: a run's cameras and points as the files other pipelines read.

One registry, :data:`FORMATS`: each format names the module of this package that writes
it (a module with ``export(run_dir, path, options, fmt) -> ExportSummary``, ``fmt`` the format's name), the file
suffixes that select it, and whether the add-on offers it in File > Export (the formats
Blender has no exporter of its own for; their modules are numpy-only and ship with the
extension). Every exporter writes the scene world: ``RUN/scene.json``'s transform applied
(:meth:`core.run.rundir.RunDir.scene_transform`).

Modules are imported when a format is used, so the add-on never loads the ones that need
trimesh or OpenCV.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import UserError


@dataclass(frozen=True)
class ExportOptions:
    """Choices shared by the exporters (each reads the ones it needs).

    Attributes:
        max_points: point budget of the cloud (None: the format's ``default_points``).
        conf_percentile: drop this percentage of each window's least confident pixels.
        seed: seed of the random subsampling.
        text: COLMAP's text files instead of binary ones.
        images: folder the footage frames are (or will be) in, for formats that refer
            to them by path (nerfstudio); None: ``images/`` beside the output.
        sensor_width: camera sensor width in mm for the Blender-built formats.
    """

    max_points: int | None = None
    conf_percentile: float = 0.0
    seed: int = 0
    text: bool = False
    images: Path | None = None
    sensor_width: float = 36.0


@dataclass(frozen=True)
class ExportSummary:
    path: Path
    format: str
    frames: int
    points: int
    files: tuple[Path, ...] = field(default_factory=tuple)
    """Every file written."""


@dataclass(frozen=True)
class ExportFormat:
    name: str
    module: str
    suffixes: tuple[str, ...]
    description: str
    default_points: int = 200_000
    menu: bool = False
    """Offered in the add-on's File > Export menu (Blender has no exporter of its own)."""

    def export(self, run_dir: str | Path, path: str | Path, options: ExportOptions) -> ExportSummary:
        if options.max_points is None:
            options = dataclasses.replace(options, max_points=self.default_points)
        module = importlib.import_module(f"{__name__}.{self.module}")
        return module.export(Path(run_dir), Path(path), options, self.name)


FORMATS = {f.name: f for f in (
    ExportFormat("colmap", "colmap", (), "COLMAP sparse model folder (cameras, images, points3D)", menu=True),
    ExportFormat("nerfstudio", "nerfstudio", (".json",), "nerfstudio transforms.json and its initial cloud (.ply)",
                 menu=True),
    ExportFormat("chan", "nuke", (".chan",), "Nuke camera channels (.chan)", menu=True),
    ExportFormat("fbx", "blender_formats", (".fbx",), "FBX: animated camera and point cloud (Blender's exporter)"),
    ExportFormat("alembic", "blender_formats", (".abc",), "Alembic: animated camera and point cloud"),
    ExportFormat("usd", "blender_formats", (".usd", ".usda", ".usdc", ".usdz"),
                 "USD: animated camera and point cloud"),
    ExportFormat("tum", "trajectory", (".tum",), "TUM trajectory (camera-to-scene, OpenCV axes)"),
    ExportFormat("ply", "clouds", (".ply",), "coloured point cloud (binary PLY)", default_points=2_000_000),
    ExportFormat("glb", "clouds", (".glb",), "coloured point cloud (glTF binary)", default_points=2_000_000),
    ExportFormat("xyz", "clouds", (".xyz",), "coloured point cloud (text: x y z r g b)", default_points=2_000_000),
)}


def format_for(path: str | Path, name: str | None = None) -> ExportFormat:
    """The format named ``name``, else the one ``path``'s suffix selects (no suffix: a COLMAP folder)."""
    if name is not None:
        if name not in FORMATS:
            raise UserError(f"--format {name!r} is unknown; use one of {', '.join(FORMATS)}")
        return FORMATS[name]
    suffix = Path(path).suffix.lower()
    if not suffix:
        return FORMATS["colmap"]
    for fmt in FORMATS.values():
        if suffix in fmt.suffixes:
            return fmt
    known = ", ".join(s for f in FORMATS.values() for s in f.suffixes)
    raise UserError(f"{path}: the suffix {suffix!r} names no export format ({known}, or a folder for COLMAP); "
                    f"give --format")


def export(run_dir: str | Path, path: str | Path, fmt: str | None = None,
           options: ExportOptions | None = None) -> ExportSummary:
    """Write ``run_dir`` as ``path`` in format ``fmt`` (default: from ``path``'s suffix)."""
    return format_for(path, fmt).export(run_dir, path, options or ExportOptions())
