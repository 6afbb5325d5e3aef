"""Install the engine into its own virtual environment, with output a panel can show.

The engine (torch, the networks) cannot live in Blender's Python; it gets a venv
made with Blender's own interpreter (Python 3.11, what the engine needs). The steps:
create the venv; pip-install the torch build :mod:`.torch_choice` picked for this
machine (the version is the engine wheel's pin); pip-install the engine wheel the
extension zip carries in ``engine/`` (its other dependencies come from PyPI); run
``python -m laser_blender.selfcheck`` there, which saves its result next to the venv.
Commands run one after another in a thread that only reads their output into a queue
(and the log file); the UI drains it from a timer.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import zipfile
from collections import deque
from pathlib import Path

from laser_blender.protocol import SelfCheck

from .torch_choice import TorchChoice

ENGINE_DIR = Path(__file__).resolve().parent / "engine"  # the engine wheel inside the installed extension


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def self_check_path(venv: Path) -> Path:
    return Path(venv).parent / "selfcheck.json"


def log_path(venv: Path) -> Path:
    return Path(venv).parent / "install.log"


def bundled_engine_wheel(folder: Path = ENGINE_DIR) -> Path | None:
    """The engine wheel the extension zip carries (None in a development checkout)."""
    found = sorted(Path(folder).glob("laser_blender-*.whl"))
    return found[-1] if found else None


def torch_requirement(wheel: Path) -> str:
    """The engine's torch pin (``torch==X``), read from the wheel's metadata (pyproject.toml's dependency)."""
    with zipfile.ZipFile(wheel) as z:
        metadata = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    for line in metadata.splitlines():
        if line.startswith("Requires-Dist:"):
            requirement = line.split(":", 1)[1].split(";")[0].strip()
            if requirement.replace(" ", "").startswith(("torch=", "torch<", "torch>", "torch~", "torch!")):
                return requirement.replace(" ", "")
    raise ValueError(f"{wheel.name}: no torch requirement in its metadata")


def read_self_check(venv: Path) -> SelfCheck | None:
    """The last self-check of the engine in ``venv``, None when it never ran."""
    path = self_check_path(venv)
    try:
        return SelfCheck.model_validate_json(path.read_text())
    except (OSError, ValueError):
        return None


def install_commands(venv: Path, requirement: str, base_python: str = sys.executable,
                     torch: TorchChoice | None = None, self_check: bool = False) -> list[list[str]]:
    """Create ``venv`` (if needed), pip-install ``torch``'s build (if given), then ``requirement``
    (a wheel, path, name or URL), then (``self_check``) run the engine's self-check."""
    python = str(venv_python(venv))
    commands = [] if venv_python(venv).exists() else [[base_python, "-m", "venv", str(venv)]]
    if torch is not None:
        commands.append([python, "-m", "pip", "install", *torch.pip_args()])
    commands.append([python, "-m", "pip", "install", "--upgrade", requirement])
    if self_check:
        commands.append([python, "-m", "laser_blender.selfcheck", "--write", str(self_check_path(venv))])
    return commands


class Installer:
    """Runs the install commands in a thread; :meth:`poll` returns new output lines.

    Every line also goes to :func:`log_path`; :attr:`tail` keeps the last ones for an error message.
    """

    def __init__(self, venv: Path, requirement: str, base_python: str = sys.executable,
                 torch: TorchChoice | None = None, self_check: bool = False):
        self.venv = Path(venv)
        self.commands = install_commands(self.venv, requirement, base_python, torch, self_check)
        self.torch = torch
        self.log = log_path(self.venv)
        self.tail: deque[str] = deque(maxlen=12)
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

    def _put(self, line: str) -> None:
        self.tail.append(line)
        self._lines.put(line)
        self._log.write(line + "\n")

    def _run(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "w", encoding="utf-8", errors="replace") as self._log:
            if self.torch is not None:
                self._put(f"PyTorch: {self.torch.build} build ({self.torch.reason})")
            self._run_commands()

    def _run_commands(self) -> None:
        code = 0
        for self.step, cmd in enumerate(self.commands, 1):
            if self._cancel.is_set():
                code = -1
                break
            self._put(f"[{self.step}/{len(self.commands)}] {' '.join(cmd)}")
            try:
                self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                              errors="replace")
            except OSError as e:
                self._put(f"cannot run {cmd[0]}: {e}")
                code = 1
                break
            for line in self._proc.stdout:
                self._put(line.rstrip())
            code = self._proc.wait()
            if code != 0:
                self._put(f"failed with exit code {code}")
                break
        self.returncode = code
