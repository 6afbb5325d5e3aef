"""The upstream tiny reference models (shared/fixtures) as tests use them."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from core.backbones import build
from core.backbones.weights import save_checkpoint


def assert_close(name: str, ours: torch.Tensor, ref: torch.Tensor, atol: float, rtol: float = 0.0) -> None:
    """Element-wise ``|ours - ref| <= atol + rtol * |ref|`` with a message naming the worst excess."""
    assert ours.shape == ref.shape, f"{name}: shape {tuple(ours.shape)} != {tuple(ref.shape)}"
    excess = (ours.double() - ref.double()).abs() - (atol + rtol * ref.double().abs())
    worst = excess.max().item()
    assert worst <= 0, f"{name}: exceeds |d| <= {atol} + {rtol}|ref| by {worst:.3g}"


def assert_matches_manifest(model: torch.nn.Module, manifest: dict) -> None:
    """``model`` (full size, built on the meta device) has exactly the state-dict keys and
    shapes of an upstream manifest, its parameter counts (in total and per top-level
    module where listed), and loads a state dict of that layout strictly."""
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    ref = {k: v["shape"] for k, v in manifest["state_dict"].items()}
    assert len(ref) == manifest["num_state_dict_keys"]
    assert sorted(set(ref) - set(ours)) == [], "keys missing from our model"
    assert sorted(set(ours) - set(ref)) == [], "keys our model has but the checkpoint lacks"
    assert {k: s for k, s in ours.items() if s != ref[k]} == {}
    assert sum(p.numel() for p in model.parameters()) == manifest["total_parameter_count"]
    for top, count in manifest.get("parameter_count_by_top_level_module", {}).items():
        part = getattr(model, top)  # a submodule, or a parameter held directly by the model
        assert (part.numel() if isinstance(part, torch.nn.Parameter)
                else sum(p.numel() for p in part.parameters())) == count, top
    with torch.device("meta"):
        model.load_state_dict({k: torch.empty(s) for k, s in ref.items()}, strict=True, assign=True)


def tiny_config(fixtures_dir: Path, network: str) -> dict:
    return json.loads((fixtures_dir / f"{network}_tiny_config.json").read_text())


def tiny_model(fixtures_dir: Path, network: str) -> torch.nn.Module:
    """The tiny ``network`` ("pi3", "vggt" or "da3") with the reference weights, loaded strictly, in eval mode."""
    model = build(network, tiny_config(fixtures_dir, network)).eval()
    model.load_state_dict(load_file(fixtures_dir / f"{network}_tiny_state_dict.safetensors"), strict=True)
    return model


def tiny_reference(fixtures_dir: Path, network: str) -> dict:
    """Model, inputs and fp32/fp64 reference outputs of the tiny ``network``."""
    return {
        "model": tiny_model(fixtures_dir, network),
        "inputs": load_file(fixtures_dir / f"{network}_tiny_inputs.safetensors"),
        "fp32": load_file(fixtures_dir / f"{network}_tiny_outputs_fp32.safetensors"),
        "fp64": load_file(fixtures_dir / f"{network}_tiny_outputs_fp64.safetensors"),
    }


def write_tiny_checkpoint(fixtures_dir: Path, network: str, path: Path) -> Path:
    """A safetensors checkpoint of the tiny model that embeds its config (what ``--weights FILE`` loads)."""
    return save_checkpoint(tiny_model(fixtures_dir, network), path, tiny_config(fixtures_dir, network))
