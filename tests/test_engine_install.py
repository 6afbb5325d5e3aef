"""The add-on's engine installer: a real venv and a real pip install (of a local wheel: no network)."""

from __future__ import annotations

import subprocess
import sys
import time
import zipfile
from pathlib import Path

from addon.engine_install import Installer


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
