"""``laser-blender build-extension -o DIR [--platforms ...]``: one Blender extension zip per platform.

The repository's ``blender_manifest.toml`` and ``addon/`` are staged into a temporary
folder (Blender wants ``__init__.py`` next to the manifest) with:

* ``wheels/``: what the add-on imports, installed by Blender into the extension's
  site-packages: ``laser_blender`` + the numpy-only parts of ``core`` it uses (protocol,
  client, scene builder, session, run-directory reader), packed here as a pure-Python
  wheel; pydantic and its dependencies for CPython 3.11 (what Blender 4.2-4.5 runs) for
  every platform, fetched from PyPI by ``pip download --platform`` into ``.whl/`` once,
  then reused;
* ``engine/``: the whole project (the engine) as a wheel built by ``pip wheel``, which
  the add-on's *Install Engine* installs into the engine's own environment.

Each platform is staged and built on its own (its manifest lists that platform and its
wheels only; Blender 4.5's ``--split-platforms`` filters the wheels but keeps the full
manifest), and Blender's builder validates each zip. Tests,
benchmarks and dev files never enter the zip: only the staged files do.
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

help = "build the Blender extension zips, one per platform (add-on + bundled wheels + engine), and print their paths"

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


# Blender's platform names -> pip's --platform tags for CPython 3.11 wheels.
PLATFORMS = {
    "windows-x64": ("win_amd64",),
    "linux-x64": ("manylinux2014_x86_64", "manylinux_2_17_x86_64"),
    "macos-arm64": ("macosx_11_0_arm64",),
    "macos-x64": ("macosx_10_12_x86_64",),
}
PYTHON, ABI = "3.11", "cp311"
ENGINE_SOURCES = ("pyproject.toml", "README.md", "core", "laser_blender")  # what `pip wheel` needs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", required=True, help="folder for the zips (created if needed)")
    parser.add_argument("--platforms", nargs="+", choices=sorted(PLATFORMS), default=list(PLATFORMS),
                        metavar="PLATFORM", help=f"platforms to build for (default: all: {', '.join(PLATFORMS)})")


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


def pydantic_wheels(platform: str) -> list[Path]:
    """pydantic (the installed version) and its dependencies for Blender's Python on ``platform``,
    from the cache (``.whl/``) or PyPI."""
    version = importlib.metadata.version("pydantic")
    cache = WHEEL_CACHE / f"pydantic-{version}-{ABI}-{platform}"
    if not (cache / ".complete").exists():
        cache.mkdir(parents=True, exist_ok=True)
        tags = [arg for tag in PLATFORMS[platform] for arg in ("--platform", tag)]
        cmd = [sys.executable, "-m", "pip", "download", f"pydantic=={version}", "--only-binary=:all:", *tags,
               "--python-version", PYTHON, "--implementation", "cp", "--abi", ABI,
               "--dest", str(cache), "--quiet"]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"cannot download pydantic {version} wheels for Blender's Python on {platform} "
                               f"(network needed once; cached in {WHEEL_CACHE}):\n{result.stderr.strip()}")
        (cache / ".complete").touch()
    return sorted(cache.glob("*.whl"))


def build_engine_wheel(out_dir: Path) -> Path:
    """The whole project as a wheel (``pip wheel --no-deps``, built from a copy of the sources so the
    checkout gets no build folders); its metadata carries pyproject.toml's pinned dependencies."""
    with tempfile.TemporaryDirectory(prefix="laser-engine-") as tmp:
        src = Path(tmp) / "src"
        for name in ENGINE_SOURCES:
            if (REPO / name).is_dir():
                shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
            else:
                src.mkdir(exist_ok=True)
                shutil.copy2(REPO / name, src / name)
        cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
               "--wheel-dir", str(out_dir), str(src)]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"cannot build the engine wheel:\n{(result.stdout + result.stderr).strip()}")
    return next(out_dir.glob(f"laser_blender-{__version__}-*.whl"))


def stage(stage_dir: Path, wheels: list[Path], engine_wheel: Path, platform: str) -> None:
    """Manifest (its ``wheels`` and ``platforms = [platform]``) + add-on modules + wheels + the
    engine wheel, as Blender's builder wants them."""
    for src in sorted((REPO / "addon").glob("*.py")):
        shutil.copy2(src, stage_dir / src.name)
    (stage_dir / "wheels").mkdir()
    for wheel in wheels:
        shutil.copy2(wheel, stage_dir / "wheels" / wheel.name)
    (stage_dir / "engine").mkdir()
    shutil.copy2(engine_wheel, stage_dir / "engine" / engine_wheel.name)
    lines = (REPO / "blender_manifest.toml").read_text().splitlines(keepends=True)
    lines = [f'platforms = ["{platform}"]\n' if line.startswith("platforms =") else line for line in lines]
    first_table = next(k for k, line in enumerate(lines) if line.startswith("["))
    listing = "wheels = [\n" + "".join(f'  "./wheels/{w.name}",\n' for w in wheels) + "]\n\n"
    (stage_dir / "blender_manifest.toml").write_text("".join(lines[:first_table]) + listing
                                                     + "".join(lines[first_table:]))


def _builder(builder: Path, *args: str) -> None:
    result = subprocess.run([sys.executable, str(builder), *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"Blender's extension builder ({args[0]} {args[-1]}) failed:\n"
                           f"{(result.stdout + result.stderr).strip()}")


def build_extension(out_dir: Path, platforms: list[str] | None = None) -> list[Path]:
    """Build one zip per platform (default: all of :data:`PLATFORMS`) into ``out_dir``, each
    built and then validated by Blender's builder; returns their paths."""
    if not (REPO / "blender_manifest.toml").exists() or not (REPO / "addon" / "__init__.py").exists():
        raise FileNotFoundError(f"build-extension needs the source checkout (blender_manifest.toml, addon/); "
                                f"{REPO} has none")
    platforms = list(platforms or PLATFORMS)
    out_dir = Path(out_dir).absolute()
    out_dir.mkdir(parents=True, exist_ok=True)
    builder = blender_builder()
    built = []
    with tempfile.TemporaryDirectory(prefix="laser-ext-") as tmp:
        tmp = Path(tmp)
        (tmp / "wheels").mkdir()
        (tmp / "engine").mkdir()
        own, engine = build_project_wheel(tmp / "wheels"), build_engine_wheel(tmp / "engine")
        for platform in platforms:
            src = tmp / f"src-{platform}"
            src.mkdir()
            stage(src, [own, *pydantic_wheels(platform)], engine, platform)
            path = out_dir / f"laser_blender-{__version__}-{platform.replace('-', '_')}.zip"
            _builder(builder, "build", "--source-dir", str(src), "--output-filepath", str(path))
            _builder(builder, "validate", str(path))
            built.append(path)
    return built


def run(args: argparse.Namespace) -> int:
    try:
        paths = build_extension(Path(args.output), args.platforms)
    except (FileNotFoundError, RuntimeError) as e:
        return fail(str(e))
    for path in paths:
        print(path)
    return 0
