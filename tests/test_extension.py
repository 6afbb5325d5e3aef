"""The Blender extension: built by Blender's builder, installed and enabled in bpy, run headless.

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
import zipfile
from pathlib import Path

import pytest

from core.synthetic import SceneConfig, render_clip

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def extension_zip(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ext")
    result = subprocess.run([sys.executable, "-m", "laser_blender.cli", "build-extension", "-o", str(out)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    path = Path(result.stdout.strip().splitlines()[-1])
    assert path.parent == out and path.suffix == ".zip" and path.exists()
    return path


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
out["points"] = sum(len(o.data.vertices) for o in bpy.data.objects if o.type == "MESH")
out["clip"] = scene.active_clip.filepath if scene.active_clip else None
bpy.ops.wm.read_homefile(use_empty=True)
bpy.context.scene.laser.point_budget = 20000
out["import_run"] = sorted(bpy.ops.laser.import_run(filepath={runs!r} + "/clip"))
out["imported_points"] = sum(len(o.data.vertices) for o in bpy.data.objects if o.type == "MESH")
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
