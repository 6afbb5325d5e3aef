"""Install the engine into its own virtual environment, with output a panel can show.

The engine (torch, the networks) cannot live in Blender's Python; it gets a venv
made with Blender's own interpreter (Python 3.11, what the engine needs) and
``pip install <requirement>`` there. Commands run one after another in a thread
that only reads their output into a queue; the UI drains it from a timer.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
from pathlib import Path


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def install_commands(venv: Path, requirement: str, base_python: str = sys.executable) -> list[list[str]]:
    """Create ``venv`` (if needed) and pip-install ``requirement`` (a name, path, wheel or URL) into it."""
    commands = [] if venv_python(venv).exists() else [[base_python, "-m", "venv", str(venv)]]
    return commands + [[str(venv_python(venv)), "-m", "pip", "install", "--upgrade", requirement]]


class Installer:
    """Runs the install commands in a thread; :meth:`poll` returns new output lines."""

    def __init__(self, venv: Path, requirement: str, base_python: str = sys.executable):
        self.venv = Path(venv)
        self.commands = install_commands(self.venv, requirement, base_python)
        self.step = 0
        self.returncode: int | None = None
        self._lines: queue.Queue[str] = queue.Queue()
        self._cancel = threading.Event()
        self._proc: subprocess.Popen | None = None
        self._thread = threading.Thread(target=self._run, name="laser-engine-install", daemon=True)

    @property
    def python(self) -> Path:
        return venv_python(self.venv)

    @property
    def done(self) -> bool:
        return self.returncode is not None

    def start(self) -> "Installer":
        self._thread.start()
        return self

    def poll(self) -> list[str]:
        lines = []
        while True:
            try:
                lines.append(self._lines.get_nowait())
            except queue.Empty:
                return lines

    def cancel(self) -> None:
        self._cancel.set()
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        code = 0
        for self.step, cmd in enumerate(self.commands, 1):
            if self._cancel.is_set():
                code = -1
                break
            self._lines.put(f"[{self.step}/{len(self.commands)}] {' '.join(cmd)}")
            try:
                self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                              errors="replace")
            except OSError as e:
                self._lines.put(f"cannot run {cmd[0]}: {e}")
                code = 1
                break
            for line in self._proc.stdout:
                self._lines.put(line.rstrip())
            code = self._proc.wait()
            if code != 0:
                self._lines.put(f"failed with exit code {code}")
                break
        self.returncode = code
