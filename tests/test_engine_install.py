"""The add-on's engine installer: a real venv and a real pip install (of a local wheel: no network)."""

from __future__ import annotations

import subprocess
import sys
import time
import zipfile
from pathlib import Path

from addon.engine_install import Installer, install_commands, read_self_check, self_check_path, venv_python
from addon.torch_choice import CUDA_INDEX, choose_torch
from laser_blender import __version__
from laser_blender.protocol import SelfCheck


def tiny_wheel(folder: Path) -> Path:
    path = folder / "laser_probe-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("laser_probe/__init__.py", "VALUE = 42\n")
        z.writestr("laser_probe-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: laser-probe\nVersion: 1.0\n")
        z.writestr("laser_probe-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr("laser_probe-1.0.dist-info/RECORD", "")
    return path


def drain(installer: Installer, timeout: float = 300) -> list[str]:
    """What the panel does on its timer: collect output lines until the install ends."""
    lines, end = [], time.monotonic() + timeout
    while not installer.done and time.monotonic() < end:
        lines += installer.poll()
        time.sleep(0.1)
    installer.join(5)
    return lines + installer.poll()


def test_installer_creates_venv_and_installs_with_visible_output(tmp_path):
    installer = Installer(tmp_path / "engine", str(tiny_wheel(tmp_path)), base_python=sys.executable).start()
    lines = drain(installer)
    assert installer.returncode == 0, lines
    assert lines[0].startswith("[1/2]") and any(line.startswith("[2/2]") for line in lines)
    assert any("Successfully installed laser-probe-1.0" in line for line in lines)
    out = subprocess.run([str(installer.python), "-c", "import laser_probe; print(laser_probe.VALUE)"],
                         capture_output=True, text=True)
    assert out.stdout.strip() == "42"
    again = Installer(tmp_path / "engine", str(tiny_wheel(tmp_path))).commands
    assert len(again) == 1  # the venv exists: only the install runs


def test_installer_reports_a_failed_install(tmp_path):
    installer = Installer(tmp_path / "engine", str(tmp_path / "missing.whl"), base_python=sys.executable).start()
    lines = drain(installer)
    assert installer.returncode not in (0, None)
    assert lines[-1].startswith("failed with exit code")
    log = installer.log.read_text().splitlines()  # everything, next to the venv; the last lines kept for the message
    assert log == lines and list(installer.tail) == log[-len(installer.tail):]
    assert any("missing.whl" in line for line in installer.tail)


def test_install_steps_torch_then_engine_then_self_check(tmp_path):
    choice = choose_torch("Windows", "AMD64", True, "torch==2.13.0")
    commands = install_commands(tmp_path / "engine", "engine.whl", "/usr/bin/python3.11", torch=choice, self_check=True)
    python = str(venv_python(tmp_path / "engine"))
    assert commands == [
        ["/usr/bin/python3.11", "-m", "venv", str(tmp_path / "engine")],
        [python, "-m", "pip", "install", "torch==2.13.0", "--index-url", CUDA_INDEX],
        [python, "-m", "pip", "install", "--upgrade", "engine.whl"],
        [python, "-m", "laser_blender.selfcheck", "--write", str(self_check_path(tmp_path / "engine"))],
    ]


def test_self_check_runs_a_forward_and_saves_its_result(tmp_path):
    path = self_check_path(tmp_path / "engine")
    out = subprocess.run([sys.executable, "-m", "laser_blender.selfcheck", "--write", str(path)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    check = SelfCheck.model_validate_json(path.read_text())
    assert check.ok and check.version == __version__ and check.device == "cpu" and check.torch.startswith("2.13.0")
    assert out.stdout.strip() == "SELFCHECK " + check.model_dump_json()
    assert read_self_check(tmp_path / "engine") == check  # where the preferences look: next to the venv
