"""Install Engine's PyTorch decision: which index and which packages for each platform and GPU."""

from __future__ import annotations

import pytest

from addon.torch_choice import CPU_INDEX, CUDA_INDEX, choose_torch

PIN = "torch==2.13.0"


@pytest.mark.parametrize("system, machine, nvidia, index, build", [
    ("Linux", "x86_64", True, None, "CUDA"),          # PyPI's Linux torch is the CUDA build
    ("Linux", "x86_64", False, CPU_INDEX, "CPU"),     # avoid the multi-GB CUDA build without a GPU
    ("Linux", "aarch64", False, None, "CPU"),         # PyPI's aarch64 torch is CPU-only
    ("Linux", "aarch64", True, None, "CUDA"),
    ("Windows", "AMD64", True, CUDA_INDEX, "CUDA"),   # Windows CUDA wheels live on the PyTorch index
    ("Windows", "AMD64", False, None, "CPU"),         # PyPI's Windows torch is CPU-only
    ("Darwin", "arm64", False, None, "MPS"),          # Apple silicon: PyPI's build has MPS
    ("Darwin", "x86_64", False, None, "CPU"),
])
def test_choice_per_platform_and_gpu(system, machine, nvidia, index, build):
    choice = choose_torch(system, machine, nvidia, PIN)
    assert (choice.index_url, choice.build, choice.packages) == (index, build, (PIN,))
    assert choice.pip_args() == [PIN, *(["--index-url", index] if index else [])]
    assert build in choice.reason or ("NVIDIA" in choice.reason and build == "CUDA") or "Apple" in choice.reason


def test_user_index_overrides_the_choice_and_says_so():
    choice = choose_torch("Windows", "AMD64", True, PIN, index_override=" https://mirror.example/cu126 ")
    assert choice.index_url == "https://mirror.example/cu126" and choice.build == "CUDA"
    assert choice.pip_args() == [PIN, "--index-url", "https://mirror.example/cu126"]
    assert "override" in choice.reason and "mirror.example" in choice.reason
    assert choose_torch("Linux", "x86_64", False, PIN, index_override="   ").index_url == CPU_INDEX
