"""``laser-blender build-extension -o DIR``: the Blender extension zip, built by Blender's own builder.

The repository's ``blender_manifest.toml`` and ``addon/`` are staged into a temporary
folder (Blender wants ``__init__.py`` next to the manifest) with the wheels the
add-on imports:

* ``laser_blender`` + the numpy-only parts of ``core`` it uses (protocol, client,
  scene builder, session, run-directory reader), packed here as a pure-Python wheel;
* pydantic and its dependencies for CPython 3.11 on Linux x86-64 (what Blender 4.5
  runs), fetched from PyPI by ``pip download`` into ``.whl/`` once, then reused.

Blender installs bundled wheels into the extension's site-packages, so ``addon/``
imports ``laser_blender`` absolutely, as in tests. Tests, benchmarks and dev files
never enter the zip: only the staged files do.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import importlib.metadata
import importlib.util
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from laser_blender import __version__
from laser_blender.console import fail

help = "build the Blender extension zip (add-on + bundled wheels) and print its path"

REPO = Path(__file__).resolve().parents[2]
WHEEL_CACHE = REPO / ".whl"
# The Blender side of the project: imports numpy, pydantic and the standard library only
# (tests/test_imports.py checks that nothing here reaches torch or cv2).
BLENDER_MODULES = (
    "laser_blender/__init__.py", "laser_blender/protocol.py", "laser_blender/client.py",
    "laser_blender/scene.py", "laser_blender/points.py", "laser_blender/session.py",
    "laser_blender/blendfile.py", "laser_blender/outcome.py", "laser_blender/orient.py",
    "laser_blender/scene_edit.py",
    # the File > Export formats (numpy only); FBX/Alembic/USD are Blender's own exporters
    "laser_blender/exporters/__init__.py", "laser_blender/exporters/shot.py", "laser_blender/exporters/ply.py",
    "laser_blender/exporters/colmap.py", "laser_blender/exporters/nerfstudio.py", "laser_blender/exporters/nuke.py",
    "core/__init__.py", "core/errors.py",
)
BLENDER_PACKAGES = ("core/run", "core/geometry")  # shipped whole: the run-directory contract and its geometry


def blender_files() -> list[str]:
    """Every file of the project's Blender side, relative to the repository."""
    packaged = (path.relative_to(REPO).as_posix() for package in BLENDER_PACKAGES
                for path in sorted((REPO / package).glob("*.py")))
    return [*BLENDER_MODULES, *packaged]
PYDANTIC_PLATFORM = ("manylinux2014_x86_64", "3.11", "cp311")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", required=True, help="folder for the zip (created if needed)")


def blender_builder() -> Path:
    """Blender's extension builder inside the installed bpy wheel."""
    spec = importlib.util.find_spec("bpy")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the bpy module (pip install bpy==4.5.*) is needed for Blender's extension builder")
    found = sorted(Path(spec.submodule_search_locations[0]).glob("*/scripts/addons_core/bl_pkg/cli/blender_ext.py"))
    if not found:
        raise FileNotFoundError("Blender's extension builder (bl_pkg/cli/blender_ext.py) is not in the bpy module")
    return found[-1]


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def build_project_wheel(out_dir: Path) -> Path:
    """A pure-Python wheel of :func:`blender_files` (the add-on's runtime part of this project)."""
    name = f"laser_blender-{__version__}"
    dist_info = f"{name}.dist-info"
    files = {rel: (REPO / rel).read_bytes() for rel in blender_files()}
    files[f"{dist_info}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: laser-blender\nVersion: {__version__}\n"
        "Summary: laser-blender's Blender-side modules (protocol, client, scene builder)\n").encode()
    files[f"{dist_info}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: laser-blender\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    record = "".join(f"{path},{_record_hash(data)},{len(data)}\n" for path, data in files.items())
    files[f"{dist_info}/RECORD"] = (record + f"{dist_info}/RECORD,,\n").encode()
    path = out_dir / f"{name}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for rel, data in files.items():
            z.writestr(zipfile.ZipInfo(rel, date_time=(2024, 1, 1, 0, 0, 0)), data)
    return path


def pydantic_wheels() -> list[Path]:
    """pydantic (the installed version) and its dependencies for Blender's Python, from the cache or PyPI."""
    version = importlib.metadata.version("pydantic")
    platform, python, abi = PYDANTIC_PLATFORM
    cache = WHEEL_CACHE / f"pydantic-{version}-{abi}"
    if not (cache / ".complete").exists():
        cache.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", f"pydantic=={version}", "--only-binary=:all:",
               "--platform", platform, "--python-version", python, "--implementation", "cp", "--abi", abi,
               "--dest", str(cache), "--quiet"]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"cannot download pydantic {version} wheels for Blender's Python "
                               f"(network needed once; cached in {WHEEL_CACHE}):\n{result.stderr.strip()}")
        (cache / ".complete").touch()
    return sorted(cache.glob("*.whl"))


def stage(stage_dir: Path, wheels: list[Path]) -> None:
    """Manifest (with its ``wheels`` list) + add-on modules + wheels, as Blender's builder wants them."""
    for src in sorted((REPO / "addon").glob("*.py")):
        shutil.copy2(src, stage_dir / src.name)
    (stage_dir / "wheels").mkdir()
    for wheel in wheels:
        shutil.copy2(wheel, stage_dir / "wheels" / wheel.name)
    lines = (REPO / "blender_manifest.toml").read_text().splitlines(keepends=True)
    first_table = next(k for k, line in enumerate(lines) if line.startswith("["))
    listing = "wheels = [\n" + "".join(f'  "./wheels/{w.name}",\n' for w in wheels) + "]\n\n"
    (stage_dir / "blender_manifest.toml").write_text("".join(lines[:first_table]) + listing
                                                     + "".join(lines[first_table:]))


def build_extension(out_dir: Path) -> Path:
    """Build the extension zip into ``out_dir``; returns its path."""
    if not (REPO / "blender_manifest.toml").exists() or not (REPO / "addon" / "__init__.py").exists():
        raise FileNotFoundError(f"build-extension needs the source checkout (blender_manifest.toml, addon/); "
                                f"{REPO} has none")
    out_dir = Path(out_dir).absolute()
    out_dir.mkdir(parents=True, exist_ok=True)
    builder = blender_builder()
    with tempfile.TemporaryDirectory(prefix="laser-ext-") as tmp:
        tmp = Path(tmp)
        (tmp / "wheels").mkdir()
        wheels = [build_project_wheel(tmp / "wheels"), *pydantic_wheels()]
        (tmp / "src").mkdir()
        stage(tmp / "src", wheels)
        before = set(out_dir.glob("*.zip"))
        for args in (["validate", str(tmp / "src")],
                     ["build", "--source-dir", str(tmp / "src"), "--output-dir", str(out_dir)]):
            result = subprocess.run([sys.executable, str(builder), *args], capture_output=True, text=True)
            if result.returncode != 0:
                raise RuntimeError(f"Blender's extension builder ({args[0]}) failed:\n"
                                   f"{(result.stdout + result.stderr).strip()}")
    built = sorted(set(out_dir.glob("*.zip")) - before) or sorted(out_dir.glob("laser_blender-*.zip"))
    return built[-1]


def run(args: argparse.Namespace) -> int:
    try:
        path = build_extension(Path(args.output))
    except (FileNotFoundError, RuntimeError) as e:
        return fail(str(e))
    print(path)
    return 0
