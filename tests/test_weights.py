"""Checkpoint discovery, reading and strict loading (core.backbones.weights)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from core.backbones.pi3 import Pi3, build_pi3
from core.backbones.weights import (
    HubFile,
    StateDictMismatch,
    WeightsError,
    WeightsNotFound,
    half_precision_keys,
    licence_notice,
    load_network,
    parse_weights,
    read_config,
    save_checkpoint,
    tied_keys,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_config(fixtures_dir: Path) -> dict:
    return json.loads((fixtures_dir / "pi3_tiny_config.json").read_text())


@pytest.fixture(scope="module")
def tiny_state(fixtures_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(fixtures_dir / "pi3_tiny_state_dict.safetensors")


def assert_same_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    ours = model.state_dict()
    assert set(ours) == set(state)
    for key, value in state.items():
        assert ours[key].device.type == "cpu", key
        assert ours[key].dtype == value.dtype and torch.equal(ours[key], value), key


def test_safetensors_round_trip_uses_embedded_config(tmp_path, tiny_config, tiny_state) -> None:
    model = build_pi3(tiny_config)
    model.load_state_dict(tiny_state)
    path = save_checkpoint(model, tmp_path / "tiny.safetensors", tiny_config)
    assert read_config(path) == tiny_config
    loaded = load_network("pi3", str(path))
    assert isinstance(loaded, Pi3) and not loaded.training
    assert loaded.config == model.config
    assert_same_state(loaded, tiny_state)


@pytest.mark.parametrize("wrapper", ["plain", "model", "state_dict", "ddp"])
def test_torch_checkpoint_round_trip(tmp_path, tiny_config, tiny_state, wrapper) -> None:
    payload = {
        "plain": tiny_state,
        "model": {"model": tiny_state, "epoch": 3},
        "state_dict": {"state_dict": tiny_state, "optimizer": {"lr": 1e-4}},
        "ddp": {"model": {f"module.{k}": v for k, v in tiny_state.items()}},
    }[wrapper]
    path = tmp_path / "tiny.pt"
    torch.save(payload, path)
    assert read_config(path) is None
    loaded = load_network("pi3", str(path), config=tiny_config)
    assert_same_state(loaded, tiny_state)


def test_torch_checkpoint_with_pickled_code_is_refused(tmp_path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "hook": Path("/tmp")}, path)
    with pytest.raises(WeightsError, match="cannot read weights"):
        load_network("pi3", str(path))


def test_strict_mismatch_lists_missing_unexpected_and_shapes(tmp_path, tiny_config, tiny_state) -> None:
    state = dict(tiny_state)
    del state["camera_head.fc_t.bias"]
    state["encoder.mask_token"] = torch.zeros(1, 64)
    state["point_head.proj.weight"] = torch.zeros(10, 48)
    path = tmp_path / "bad.safetensors"
    save_file(state, str(path), metadata={"laser_blender_config": json.dumps(tiny_config)})
    with pytest.raises(StateDictMismatch) as info:
        load_network("pi3", str(path))
    message = str(info.value)
    assert str(path) in message
    assert "missing from the checkpoint (1):\n    camera_head.fc_t.bias (3,)" in message
    assert "unexpected in the checkpoint (1):\n    encoder.mask_token (1, 64)" in message
    assert "point_head.proj.weight: network (588, 48), checkpoint (10, 48)" in message


def test_full_size_default_when_no_config_embedded(tmp_path, tiny_state) -> None:
    path = tmp_path / "no_config.safetensors"
    save_file(tiny_state, str(path))
    with pytest.raises(StateDictMismatch, match=r"shape differs \(\d+\)"):
        load_network("pi3", str(path))


def test_half_precision_storage_keeps_heads_norms_and_tokens_float32(tmp_path, tiny_config, tiny_state) -> None:
    model = build_pi3(tiny_config)
    model.load_state_dict(tiny_state)
    path = save_checkpoint(model, tmp_path / "tiny.safetensors", tiny_config)
    loaded = load_network("pi3", str(path), half=torch.bfloat16)
    halves = half_precision_keys(loaded)
    state = loaded.state_dict()
    assert "decoder.0.attn.qkv.weight" in halves and "encoder.patch_embed.proj.weight" in halves
    assert not any(k.startswith(("point_head", "conf_head", "camera_head")) for k in halves)
    for key, value in state.items():
        assert value.dtype == (torch.bfloat16 if key in halves else torch.float32), key
        assert torch.equal(value.float(), tiny_state[key].to(value.dtype).float()), key
    assert state["decoder.0.norm1.weight"].dtype == torch.float32
    assert state["register_token"].dtype == torch.float32


def test_random_weights_build_without_checkpoint(tiny_config) -> None:
    model = load_network("pi3", "random", config=tiny_config, half=torch.bfloat16)
    assert model.decoder[0].attn.qkv.weight.dtype == torch.bfloat16
    assert model.camera_head.fc_t.weight.dtype == torch.float32
    assert torch.isfinite(model.decoder[0].attn.qkv.weight.float()).all()


def test_parse_weights(tmp_path) -> None:
    local = tmp_path / "ckpt.safetensors"
    local.write_bytes(b"")
    assert parse_weights("pi3", None) == HubFile("yyfz233/Pi3", "model.safetensors")
    assert parse_weights("vggt", None) == HubFile("facebook/VGGT-1B", "model.pt")
    assert parse_weights("da3", None) == HubFile("depth-anything/DA3-BASE", "model.safetensors")
    assert parse_weights("da3-base", None) == HubFile("depth-anything/DA3-BASE", "model.safetensors")
    assert parse_weights("da3-small", None) == HubFile("depth-anything/DA3-SMALL", "model.safetensors")
    assert parse_weights("vggt", "facebook/VGGT-1B-Commercial") == HubFile("facebook/VGGT-1B-Commercial", "model.pt")
    assert parse_weights("vggt", "facebook/VGGT-1B/model.safetensors") == HubFile("facebook/VGGT-1B", "model.safetensors")
    assert parse_weights("pi3", str(local)) == local
    for missing in ("./nope.safetensors", str(tmp_path / "nope.pt"), "nope.safetensors", "dir/nope.pt"):
        with pytest.raises(WeightsNotFound, match="weights file not found"):
            parse_weights("pi3", missing)


def run_offline(code: str, hf_home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(hf_home), "PYTHONPATH": str(REPO)}
    env.pop("HF_HUB_CACHE", None)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "network, weights, repo, filename",
    [
        ("pi3", None, "yyfz233/Pi3", "model.safetensors"),
        ("vggt", None, "facebook/VGGT-1B", "model.pt"),
        ("vggt", "facebook/VGGT-1B-Commercial", "facebook/VGGT-1B-Commercial", "model.pt"),
        ("da3", None, "depth-anything/DA3-BASE", "model.safetensors"),
        ("da3-small", None, "depth-anything/DA3-SMALL", "model.safetensors"),
    ],
)
def test_missing_weights_offline_says_which_file_and_how_to_provide_it(tmp_path, network, weights, repo, filename):
    code = (
        "from core.backbones.weights import WeightsNotFound, load_network\n"
        "try:\n"
        f"    load_network({network!r}, {weights!r})\n"
        "except WeightsNotFound as e:\n"
        "    print(e)\n"
        "    raise SystemExit(3)\n"
    )
    result = run_offline(code, tmp_path / "hf")
    assert result.returncode == 3, result.stderr
    message = result.stdout
    assert f"'{filename}' of the Hugging Face repo '{repo}'" in message
    assert "HF_HUB_OFFLINE is set" in message
    assert "--weights /path/to/that/file" in message
    assert "network access" in message and "cache" in message


def test_offline_uses_a_prepopulated_cache(tmp_path, tiny_config, tiny_state) -> None:
    model = build_pi3(tiny_config)
    model.load_state_dict(tiny_state)
    commit = "0" * 40
    repo_dir = tmp_path / "hf" / "hub" / "models--yyfz233--Pi3"
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(commit)
    (repo_dir / "snapshots" / commit).mkdir(parents=True)
    save_checkpoint(model, repo_dir / "snapshots" / commit / "model.safetensors", tiny_config)
    code = (
        "from core.backbones.weights import load_network\n"
        "m = load_network('pi3', None)\n"
        "print(type(m).__name__, m.config.decoder.embed_dim)\n"
    )
    result = run_offline(code, tmp_path / "hf")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["Pi3", "64"]


def test_licence_notices() -> None:
    pi3 = licence_notice("pi3", None)
    assert "non-commercial" in pi3 and "CC BY-NC 4.0" in pi3
    vggt = licence_notice("vggt", None)
    assert "non-commercial" in vggt
    assert "--weights facebook/VGGT-1B-Commercial" in vggt and "gated" in vggt and "login" in vggt
    for notice in (pi3, vggt):  # the non-commercial networks point to the commercial choice
        assert "--backbone da3" in notice and "Apache-2.0" in notice
    commercial = licence_notice("vggt", "facebook/VGGT-1B-Commercial")
    assert "commercial use permitted" in commercial and "non-commercial" not in commercial
    for name, repo in [("da3", "DA3-BASE"), ("da3-base", "DA3-BASE"), ("da3-small", "DA3-SMALL")]:
        notice = licence_notice(name, None)
        assert f"depth-anything/{repo}" in notice and "Apache-2.0" in notice
        assert "commercial use permitted" in notice and "non-commercial" not in notice


@pytest.fixture(scope="module")
def da3_tiny(fixtures_dir: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    config = json.loads((fixtures_dir / "da3_tiny_config.json").read_text())
    return config, load_file(fixtures_dir / "da3_tiny_state_dict.safetensors")


def test_da3_official_checkpoint_layout_loads_unchanged(tmp_path, da3_tiny) -> None:
    """Released DA3 files hold the network under ``model.`` (the Hugging Face wrapper) and
    the LayerNorm shared by the four ray heads once, under its first name."""
    config, state = da3_tiny
    model = load_network("da3", "random", config=config)
    aliases = tied_keys(model)
    assert sorted(aliases) == [f"head.scratch.output_conv2_aux.{i}.2.{p}" for i in (1, 2, 3) for p in ("bias", "weight")]
    assert set(aliases.values()) == {"head.scratch.output_conv2_aux.0.2.weight", "head.scratch.output_conv2_aux.0.2.bias"}
    path = tmp_path / "model.safetensors"
    save_file({f"model.{k}": v for k, v in state.items() if k not in aliases}, str(path))
    assert read_config(path) is None
    loaded = load_network("da3", str(path), config=config)
    assert_same_state(loaded, state)
    shared = loaded.head.scratch.output_conv2_aux
    assert all(shared[i][2] is shared[0][2] for i in range(4))
    # The variant decides the size when neither the file nor the caller gives a config.
    with pytest.raises(StateDictMismatch, match=r"shape differs"):
        load_network("da3-small", str(path))


def test_da3_checkpoint_round_trip_stores_tied_tensor_once(tmp_path, da3_tiny) -> None:
    config, state = da3_tiny
    model = load_network("da3", "random", config=config)
    model.load_state_dict(state)
    path = save_checkpoint(model, tmp_path / "da3.safetensors", config)
    assert len(load_file(path)) == len(state) - 6
    assert_same_state(load_network("da3-small", str(path)), state)  # the embedded config wins


# --------------------------------------------------------------------------- bad weights: one line naming the file

def _first_line(error: pytest.ExceptionInfo) -> str:
    return str(error.value).splitlines()[0]


def test_bad_checkpoint_files_say_what_is_wrong_and_what_to_do(tmp_path, tiny_config, tiny_state) -> None:
    """Each kind of broken file: a WeightsError (a user error) whose one line starts ``--weights FILE:``."""
    import numpy as np

    from core.errors import UserError

    model = build_pi3(tiny_config)
    model.load_state_dict(tiny_state)
    good = save_checkpoint(model, tmp_path / "good.safetensors", tiny_config).read_bytes()
    torch.save({"w": torch.zeros(1000)}, tmp_path / "zip.pt")
    (tmp_path / "folder").mkdir()
    (tmp_path / "with_ckpt").mkdir()
    (tmp_path / "with_ckpt" / "model.pt").write_bytes(b"x")
    cases = {
        "short.safetensors": (good[:5], "truncated"),
        "half.safetensors": (good[: len(good) // 2], "truncated"),
        "empty.pt": (b"", "empty (0 bytes)"),
        "cut.pt": ((tmp_path / "zip.pt").read_bytes()[:300], "damaged or truncated torch checkpoint"),
        "lfs.safetensors": (b"version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 9\n", "Git LFS pointer"),
        "page.pt": (b"<!DOCTYPE html>\n<html><body>Pi3</body></html>", "a web page"),
        "notes.txt": ("températures\n".encode(), "a text file"),
        "noise.bin": (np.random.default_rng(1).bytes(4000), "not a checkpoint"),
        "bad_config.safetensors": (None, "embedded network configuration"),
        "folder": (None, "pass the checkpoint file itself"),
        "with_ckpt": (None, str(tmp_path / "with_ckpt" / "model.pt")),
        "/dev/null": (None, "not a regular file"),
    }
    save_file(tiny_state, str(tmp_path / "bad_config.safetensors"), metadata={"laser_blender_config": "{oops"})
    for name, (data, says) in cases.items():
        path = tmp_path / name
        if data is not None:
            path.write_bytes(data)
        with pytest.raises(WeightsError) as info:
            load_network("pi3", str(path))
        line = _first_line(info)
        assert isinstance(info.value, UserError) and "\n" not in str(info.value), (name, str(info.value))
        assert line.startswith(f"--weights {path}:") and says in line, (name, line)


@pytest.mark.parametrize("payload, holds", [
    ([1, 2, 3], "a list"),
    ({}, "an empty dict"),
    ({"epoch": 3, "lr": 0.1}, "a dict without tensors (keys epoch, lr)"),
    ({"w": torch.zeros(2), "step": 7}, "a dict mixing tensors with other values ('step': int)"),
    (torch.zeros(3), "a Tensor"),
])
def test_torch_file_that_is_not_a_state_dict(tmp_path, payload, holds) -> None:
    path = tmp_path / "ckpt.pt"
    torch.save(payload, path)
    with pytest.raises(WeightsError) as info:
        load_network("pi3", str(path))
    assert str(info.value).startswith(f"--weights {path}: holds {holds}, not a state dict of tensors; pass ")


def test_pickled_objects_are_refused_in_one_line(tmp_path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "hook": Path("/tmp")}, path)
    with pytest.raises(WeightsError) as info:
        load_network("pi3", str(path))
    assert str(info.value).startswith(f"--weights {path}: cannot read weights") and "\n" not in str(info.value)


def test_legacy_torch_checkpoint_loads(tmp_path, tiny_config, tiny_state) -> None:
    """torch.save's format before torch 1.6 (a pickle, not a zip) is read too, still without running code."""
    path = tmp_path / "legacy.pth"
    torch.save({"state_dict": tiny_state}, path, _use_new_zipfile_serialization=False)
    assert path.read_bytes()[:1] == b"\x80"
    assert_same_state(load_network("pi3", str(path), config=tiny_config), tiny_state)


def test_another_networks_weights_are_named_on_the_first_line(tmp_path, fixtures_dir) -> None:
    from tiny_models import write_tiny_checkpoint

    path = write_tiny_checkpoint(fixtures_dir, "vggt", tmp_path / "vggt.safetensors")
    with pytest.raises(StateDictMismatch) as info:
        load_network("pi3", str(path))
    line = _first_line(info)
    assert line.startswith(f"--weights {path}: these weights do not fit the pi3 network (")
    assert line.endswith("they look like vggt weights: use --backbone vggt. Details:")
    assert "unexpected in the checkpoint" in str(info.value)  # the diff follows


def test_whose_weights_recognises_released_sizes() -> None:
    """A released DA3-SMALL layout given to --backbone da3 (DA3-BASE) is named exactly."""
    from core.backbones.weights import _released_layout, whose_weights

    small, aliases = _released_layout("da3-small")
    found = {k: torch.Size(s) for k, s in small.items() if k not in aliases}  # tied tensors stored once
    assert whose_weights(found, "da3") == "they are da3-small weights: use --backbone da3-small"
    assert whose_weights(found, "pi3") == "they are da3-small weights: use --backbone da3-small"
    pi3, _ = _released_layout("pi3")
    pi3_found = {k: torch.Size(s) for k, s in pi3.items()}
    assert whose_weights(pi3_found, "vggt") == "they are pi3 weights: use --backbone pi3"
    assert whose_weights({"foo.weight": torch.Size([3])}, "pi3") is None


def test_out_of_memory_while_loading_names_the_device(tiny_config) -> None:
    from core.backbones.weights import load_state, parameters_on_meta
    from core.errors import UserError

    def tensors():
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        yield  # a generator

    with parameters_on_meta():
        model = build_pi3(tiny_config)
    with pytest.raises(UserError) as info:
        load_state(model, tensors(), "/w/pi3.safetensors", torch.device("cpu"))
    assert str(info.value).startswith("--device cpu: out of memory while loading the weights /w/pi3.safetensors")


# --------------------------------------------------------------------------- devices and precision the weights go to

@pytest.mark.parametrize("device, says", [
    ("nonsense", "--device nonsense: not a device; use auto, cpu, cuda, cuda:N or mps"),
    ("", "--device '': not a device"),
    ("cuda:-1", "--device cuda:-1: not a device"),
    ("meta", "--device meta: the engine does not run on meta devices"),
])
def test_unknown_devices_name_the_option(device, says) -> None:
    from core.backbones.adapter import OptionError, resolve_device
    from core.errors import UserError

    with pytest.raises(UserError) as info:
        resolve_device(device)
    assert isinstance(info.value, OptionError) and str(info.value).startswith(says)


def test_devices_this_machine_lacks(monkeypatch) -> None:
    from core.backbones import adapter

    if not torch.backends.mps.is_available():
        with pytest.raises(adapter.OptionError, match=r"^--device mps: MPS .* not available .* use --device cpu"):
            adapter.resolve_device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(adapter.OptionError, match=r"^--device cuda:7: this machine has 1 CUDA device \(cuda:0\)"):
        adapter.resolve_device("cuda:7")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(adapter.OptionError, match=r"has 2 CUDA devices \(cuda:0 to cuda:1\)"):
        adapter.resolve_device("cuda:2")
    assert adapter.resolve_device("cuda:1") == torch.device("cuda:1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(adapter.OptionError, match=r"^--device cuda: CUDA is not available on this machine"):
        adapter.resolve_device("cuda")


def test_precision_errors_name_the_option(monkeypatch) -> None:
    from core.backbones import adapter
    from core.errors import UserError

    with pytest.raises(UserError, match=r"^--dtype int8: unknown dtype; choose auto, float32, bfloat16, float16"):
        adapter.resolve_precision("int8", torch.device("cpu"))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Tesla T4")
    with pytest.raises(UserError, match=r"^--dtype bfloat16: Tesla T4 does not support bfloat16; use --dtype float16"):
        adapter.resolve_precision("bfloat16", torch.device("cuda:0"))
    assert adapter.resolve_precision("auto", torch.device("cuda:0")) == torch.float16


def test_integer_tensors_where_the_network_needs_floats(tmp_path, tiny_config, tiny_state) -> None:
    """A quantized checkpoint (int8 weights) is a one-line user error, not a failure inside load_state_dict."""
    state = {**tiny_state, "decoder.0.attn.qkv.weight": tiny_state["decoder.0.attn.qkv.weight"].to(torch.int8)}
    path = tmp_path / "int8.safetensors"
    save_file(state, str(path), metadata={"laser_blender_config": json.dumps(tiny_config)})
    with pytest.raises(StateDictMismatch) as info:
        load_network("pi3", str(path))
    assert str(info.value) == (f"--weights {path}: decoder.0.attn.qkv.weight is torch.int8 where the network needs "
                               "floating point (1 tensor like it); a quantized checkpoint? pass the float weights "
                               "(float32, float16 or bfloat16)")
