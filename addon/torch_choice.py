"""Which PyTorch build Install Engine puts in the engine's environment, and from where.

:func:`choose_torch` is a pure decision over (operating system, machine, NVIDIA GPU
seen) so that every case is tested; :func:`detect_nvidia` and :func:`this_machine`
read the real machine. The torch version itself is not chosen here: it is the pin in
the engine wheel's metadata (``pyproject.toml`` is the one place it is written).
"""

from __future__ import annotations

import platform
import shutil
import subprocess
from dataclasses import dataclass

PYPI = None  # pip's default index (and whatever pip.conf adds)
CUDA_INDEX = "https://download.pytorch.org/whl/cu128"  # Windows CUDA wheels are not on PyPI
CPU_INDEX = "https://download.pytorch.org/whl/cpu"     # Linux: PyPI's torch is the multi-GB CUDA build


@dataclass(frozen=True)
class TorchChoice:
    index_url: str | None     # pip --index-url; None: pip's default (PyPI)
    packages: tuple[str, ...]  # pip requirements, e.g. ("torch==2.13.0",)
    build: str                 # "CUDA", "MPS" or "CPU"
    reason: str                # one line for the preferences: what was chosen and why

    def pip_args(self) -> list[str]:
        return [*self.packages, *(["--index-url", self.index_url] if self.index_url else [])]


def choose_torch(system: str, machine: str, nvidia: bool, torch_requirement: str,
                 index_override: str = "") -> TorchChoice:
    """The torch build for ``system`` (``platform.system()``: Linux, Windows, Darwin) and ``machine``
    (``platform.machine()``: x86_64/AMD64, arm64/aarch64) with or without an NVIDIA driver.

    ``index_override`` (the preferences' index URL), when set, replaces the chosen index.
    """
    arm = machine.lower() in ("arm64", "aarch64")
    if system == "Darwin":
        index, build, why = PYPI, ("MPS" if arm else "CPU"), ("Apple silicon: Metal (MPS)" if arm else "Intel Mac: CPU")
    elif nvidia and system == "Windows":
        index, build, why = CUDA_INDEX, "CUDA", "NVIDIA driver found: CUDA build from the PyTorch index"
    elif nvidia and system == "Linux":
        index, build, why = PYPI, "CUDA", "NVIDIA driver found: CUDA build from PyPI"
    elif system == "Linux" and not arm:
        index, build, why = CPU_INDEX, "CPU", "no NVIDIA driver: CPU build from the PyTorch index"
    else:
        index, build, why = PYPI, "CPU", "no NVIDIA driver: CPU build from PyPI"
    if index_override.strip():
        index, why = index_override.strip(), f"{why.split(':')[0]}: {build} build from {index_override.strip()} (override)"
    return TorchChoice(index_url=index, packages=(torch_requirement,), build=build, reason=why)


def detect_nvidia(timeout: float = 10.0) -> bool:
    """True when ``nvidia-smi`` is on PATH and lists at least one GPU."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return False
    try:
        result = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0 and "GPU" in result.stdout


def this_machine() -> tuple[str, str, bool]:
    """(system, machine, NVIDIA GPU seen) of the running machine, for :func:`choose_torch`."""
    return platform.system(), platform.machine(), detect_nvidia()
