"""The Blender extension: one zip per platform built by Blender's builder; the Linux one installed
and enabled in bpy, run headless (and, in the slow test, installing its own engine).

The installed add-on is exercised in a fresh Python with the development checkout
hidden (no editable ``laser_blender``) and torch made unimportable: everything it
imports must come from the zip's bundled wheels and must not need torch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from addon.engine_install import torch_requirement
from core.synthetic import SceneConfig, render_clip
from laser_blender import __version__
from laser_blender.commands.build_extension import PLATFORMS, blender_builder

REPO = Path(__file__).resolve().parents[1]
PLATFORM_TAG = {  # which wheel platform tags each Blender platform accepts
    "linux-x64": lambda tag: tag.startswith("manylinux") and tag.endswith("_x86_64"),
    "windows-x64": lambda tag: tag == "win_amd64",
    "macos-arm64": lambda tag: tag.startswith("macosx_") and tag.endswith(("_arm64", "_universal2")),
    "macos-x64": lambda tag: tag.startswith("macosx_") and tag.endswith(("_x86_64", "_universal2")),
}


@pytest.fixture(scope="module")
def extension_zips(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("ext")
    result = subprocess.run([sys.executable, "-m", "laser_blender.cli", "build-extension", "-o", str(out)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    paths = [Path(line) for line in result.stdout.strip().splitlines()]
    assert all(p.parent == out and p.suffix == ".zip" and p.exists() for p in paths)
    zips = {p.stem.split("-")[-1].replace("_", "-"): p for p in paths}
    assert sorted(zips) == sorted(PLATFORMS)
    return zips


@pytest.fixture(scope="module")
def extension_zip(extension_zips) -> Path:
    return extension_zips["linux-x64"]


def wheel_fits(platform: str, wheel: str) -> bool:
    """A wheel file name's Python and platform tags suit CPython 3.11 on Blender's ``platform``."""
    python, abi, tags = wheel[:-len(".whl")].split("-")[-3:]
    if tags == "any":
        return python.startswith("py3") and abi == "none"
    return python == "cp311" and abi in ("cp311", "abi3") and all(PLATFORM_TAG[platform](t) for t in tags.split("."))


def test_one_zip_per_platform_with_its_wheels_only(extension_zips):
    for platform, path in extension_zips.items():
        with zipfile.ZipFile(path) as z:
            manifest = tomllib.loads(z.read("blender_manifest.toml").decode())
            wheels = sorted(n for n in z.namelist() if n.startswith("wheels/") and n.endswith(".whl"))
            engine = [n for n in z.namelist() if n.startswith("engine/")]
        assert manifest["platforms"] == [platform] and manifest["version"] == __version__
        assert sorted(w.removeprefix("./") for w in manifest["wheels"]) == wheels
        assert all(wheel_fits(platform, w.split("/")[-1]) for w in wheels), (platform, wheels)
        assert sum("pydantic_core" in w for w in wheels) == 1  # the compiled one, for this platform
        assert engine == [f"engine/laser_blender-{__version__}-py3-none-any.whl"]
    assert not wheel_fits("windows-x64", "pydantic_core-2.0-cp311-cp311-manylinux2014_x86_64.whl")  # the check bites
    assert not wheel_fits("macos-arm64", "pydantic_core-2.0-cp311-cp311-macosx_10_12_x86_64.whl")


def test_blender_builder_validates_each_zip(extension_zips):
    for path in extension_zips.values():
        result = subprocess.run([sys.executable, str(blender_builder()), "validate", str(path)],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0 and "Success" in result.stdout, result.stdout + result.stderr


def test_engine_wheel_carries_the_pinned_dependencies(extension_zip, tmp_path):
    with zipfile.ZipFile(extension_zip) as z:
        wheel = Path(z.extract(f"engine/laser_blender-{__version__}-py3-none-any.whl", tmp_path))
    pins = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert torch_requirement(wheel) == next(p for p in pins if p.startswith("torch"))
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        metadata = z.read(next(n for n in names if n.endswith("METADATA"))).decode()
    listed = {Requirement(line.split(":", 1)[1]) for line in metadata.splitlines() if line.startswith("Requires-Dist:")}
    assert {Requirement(pin) for pin in pins} <= listed  # pyproject.toml's pins, as they are
    assert {"laser_blender/worker.py", "core/engine.py", "laser_blender/selfcheck.py"} <= set(names)


def test_zip_holds_addon_and_wheels_only(extension_zip):
    names = zipfile.ZipFile(extension_zip).namelist()
    assert "__init__.py" in names and "blender_manifest.toml" in names
    wheels = {n.split("/")[1].split("-")[0] for n in names if n.startswith("wheels/")}
    assert {"laser_blender", "pydantic", "pydantic_core", "typing_extensions", "annotated_types"} <= wheels
    assert not [n for n in names if n.startswith(("tests", "benchmarks", "docs", "core", ".")) or "__pycache__" in n]
    own = zipfile.ZipFile(extension_zip).open(next(n for n in names if n.startswith("wheels/laser_blender")))
    inner = zipfile.ZipFile(own).namelist()
    assert "laser_blender/scene.py" in inner and "core/run/rundir.py" in inner
    assert not [n for n in inner if "engine" in n or "worker" in n or "backbones/pi3" in n]


INSTALLED_SCRIPT = """
import json, sys
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in getattr(f, "__module__", "")]
sys.path[:] = [p for p in sys.path if p not in ("", {repo!r}) and "__editable__" not in p]
sys.modules["torch"] = None  # the add-on must never import torch
import bpy
try:
    import laser_blender
    raise SystemExit("laser_blender importable before installing: the checkout is not hidden")
except ImportError:
    pass
bpy.ops.extensions.package_install_files(filepath={zip!r}, repo="user_default", enable_on_install=True)
import laser_blender
out = {{"enabled": "bl_ext.user_default.laser_blender" in bpy.context.preferences.addons,
        "laser_blender": laser_blender.__file__,
        "operators": sorted(dir(bpy.ops.laser))}}
bpy.ops.wm.read_homefile(use_empty=True)
scene = bpy.context.scene
prefs = bpy.context.preferences.addons["bl_ext.user_default.laser_blender"].preferences
prefs.python = {engine_python!r}
prefs.device = "cpu"
s = scene.laser
s.footage, s.backbone, s.synthetic_scene = {clip!r}, "synthetic", {gt!r}
s.runs_dir, s.window, s.overlap, s.point_budget = {runs!r}, 8, 2, 20000
out["reconstruct"] = sorted(bpy.ops.laser.reconstruct())
cams = [o for o in bpy.data.objects if o.type == "CAMERA"]
fc = cams[0].animation_data.action.fcurves[0]
out["keys"] = [kp.co[0] for kp in fc.keyframe_points]
out["points"] = sum(len(o.data.vertices) for o in bpy.data.objects if o.type == "MESH" and not o.get("laser_bundles"))
out["clip"] = scene.active_clip.filepath if scene.active_clip else None
bpy.ops.wm.read_homefile(use_empty=True)
bpy.context.scene.laser.point_budget = 20000
out["import_run"] = sorted(bpy.ops.laser.import_run(filepath={runs!r} + "/clip"))
out["imported_points"] = sum(len(o.data.vertices) for o in bpy.data.objects if o.type == "MESH" and not o.get("laser_bundles"))
out["exports"] = [sorted(bpy.ops.laser.export_colmap(filepath={runs!r} + "/colmap")),
                  sorted(bpy.ops.laser.export_nerfstudio(filepath={runs!r} + "/ns/transforms.json")),
                  sorted(bpy.ops.laser.export_chan(filepath={runs!r} + "/camera.chan"))]
out["torch_loaded"] = sys.modules.get("torch") is not None
bpy.ops.preferences.addon_disable(module="bl_ext.user_default.laser_blender")
print("RESULT" + json.dumps(out))
"""


def test_extension_installs_enables_and_reconstructs_headless(extension_zip, tmp_path):
    clip, gt = render_clip(tmp_path / "synthetic", SceneConfig(width=96, height=64, num_frames=20))
    script = INSTALLED_SCRIPT.format(repo=str(REPO), zip=str(extension_zip), engine_python=sys.executable,
                                     clip=str(clip), gt=str(gt), runs=str(tmp_path / "runs"))
    env = {**os.environ, "BLENDER_USER_EXTENSIONS": str(tmp_path / "extensions")}
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=600)
    line = next((ln for ln in result.stdout.splitlines() if ln.startswith("RESULT")), None)
    assert result.returncode == 0 and line, result.stdout[-3000:] + result.stderr[-3000:]
    out = json.loads(line[len("RESULT"):])
    assert out["enabled"]
    assert out["laser_blender"].startswith(str(tmp_path / "extensions"))  # from the bundled wheel
    assert {"reconstruct", "cancel", "import_run", "install_engine", "detect_engine"} <= set(out["operators"])
    assert out["reconstruct"] == ["FINISHED"]
    assert out["keys"] == [float(f + 1) for f in range(20)]  # one key per frame
    assert 0 < out["points"] <= 20000
    assert out["clip"] == str(clip)
    assert out["import_run"] == ["FINISHED"] and out["imported_points"] == out["points"]
    assert out["exports"] == [["FINISHED"]] * 3  # File > Export entries, from the bundled wheel alone
    runs = tmp_path / "runs"
    assert {p.name for p in (runs / "colmap").iterdir()} == {"cameras.bin", "images.bin", "points3D.bin"}
    assert (runs / "ns" / "transforms.json").exists() and (runs / "ns" / "transforms_points.ply").exists()
    assert len((runs / "camera.chan").read_text().splitlines()) == 20
    assert out["torch_loaded"] is False


ENGINE_SCRIPT = """
import json, sys
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in getattr(f, "__module__", "")]
sys.path[:] = [p for p in sys.path if p not in ("", {repo!r}) and "__editable__" not in p]
sys.modules["torch"] = None
import bpy
bpy.ops.extensions.package_install_files(filepath={zip!r}, repo="user_default", enable_on_install=True)
prefs = bpy.context.preferences.addons["bl_ext.user_default.laser_blender"].preferences
addon_prefs = sys.modules["bl_ext.user_default.laser_blender.preferences"]
out = {{"online": bpy.app.online_access, "before": addon_prefs.engine_status()[0]}}
bpy.context.preferences.system.use_online_access = True  # as a user allows it (Preferences > System)
prefs.index_url = "https://pypi.org/simple"  # this machine: torch from PyPI + pip's local wheel folder
out["install"] = sorted(bpy.ops.laser.install_engine())
out["python"] = prefs.python
out["status"] = addon_prefs.engine_status()
out["log"] = list(addon_prefs.INSTALL_LOG)
bpy.ops.wm.read_homefile(use_empty=True)
prefs.device = "cpu"
s = bpy.context.scene.laser
s.footage, s.backbone, s.synthetic_scene = {clip!r}, "synthetic", {gt!r}
s.runs_dir, s.window, s.overlap, s.point_budget = {runs!r}, 8, 2, 20000
out["reconstruct"] = sorted(bpy.ops.laser.reconstruct())
cams = [o for o in bpy.data.objects if o.type == "CAMERA"]
out["keys"] = len(cams[0].animation_data.action.fcurves[0].keyframe_points) if cams else 0
out["points"] = sum(len(o.data.vertices) for o in bpy.data.objects if o.type == "MESH" and not o.get("laser_bundles"))
print("RESULT" + json.dumps(out))
"""


@pytest.mark.slow
def test_install_engine_from_the_zip_then_reconstruct(extension_zip, tmp_path):
    """Install Engine from the Linux zip alone (its engine wheel + the package index) into a fresh venv
    under a temporary extensions folder, then reconstruct the synthetic demo with that engine."""
    clip, gt = render_clip(tmp_path / "synthetic", SceneConfig(width=96, height=64, num_frames=20))
    script = ENGINE_SCRIPT.format(repo=str(REPO), zip=str(extension_zip), clip=str(clip), gt=str(gt),
                                  runs=str(tmp_path / "runs"))
    env = {**os.environ, "BLENDER_USER_EXTENSIONS": str(tmp_path / "extensions")}
    env.pop("LASER_BLENDER_PYTHON", None)
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=1800)
    line = next((ln for ln in result.stdout.splitlines() if ln.startswith("RESULT")), None)
    assert result.returncode == 0 and line, result.stdout[-3000:] + result.stderr[-3000:]
    out = json.loads(line[len("RESULT"):])
    assert out["before"] == "Not installed by the add-on yet"
    assert out["install"] == ["FINISHED"], out["log"]
    assert out["python"].startswith(str(tmp_path / "extensions"))  # the fresh engine venv, not this one
    assert out["status"] == [f"Self-check passed: laser-blender {__version__}, torch 2.13.0+cpu, device cpu",
                             "CHECKMARK"]
    log = next((tmp_path / "extensions").rglob("install.log")).read_text().splitlines()
    assert log[0] == "PyTorch: CPU build (no NVIDIA driver: CPU build from https://pypi.org/simple (override))"
    assert any(" -m pip install torch==2.13.0 --index-url https://pypi.org/simple" in ln for ln in log)
    assert out["reconstruct"] == ["FINISHED"] and out["keys"] == 20 and 0 < out["points"] <= 20000
    engine = subprocess.run([out["python"], "-c", "import laser_blender, torch; print(laser_blender.__file__)"],
                            capture_output=True, text=True, cwd=tmp_path)
    assert engine.stdout.startswith(str(tmp_path / "extensions")), engine.stderr  # from the wheel, not the checkout
