"""Finding, reading and loading network weights.

``--weights`` accepts a local checkpoint file (safetensors, or a torch checkpoint
read with ``weights_only=True`` so no pickled code runs) or a Hugging Face repo id,
optionally followed by the file inside the repo (``owner/name[/file]``). Hub files
are downloaded once into the Hugging Face cache; ``HF_HUB_OFFLINE=1`` is honoured.

A safetensors checkpoint may carry its network configuration as JSON under the
metadata key ``laser_blender_config`` (the schema of ``*_tiny_config.json``); it is
then built at that size, otherwise at the backbone's released size. That is how tests
hand small checkpoints to the real loading path (see :func:`save_checkpoint`).

Checkpoints are read as released: keys under a wrapper prefix (``module.`` from
distributed training, ``model.`` from DA3's Hugging Face wrapper) lose it, and a tensor
that the network registers under several names (DA3's shared LayerNorm) may be stored
under one of them only, as ``safetensors`` writes tied tensors.

Networks are built with parameters on the meta device and the checkpoint tensors
are assigned in place, one at a time, already cast and on the target device, so
loading never holds two copies of the weights.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

import torch
from torch import Tensor, nn

from core.backbones import NETWORK_BACKBONES, build
from core.errors import UserError

CONFIG_METADATA_KEY = "laser_blender_config"
RANDOM_WEIGHTS = "random"


@dataclass(frozen=True)
class HubFile:
    """A file in a Hugging Face model repository."""

    repo: str
    filename: str

    def __str__(self) -> str:
        return f"{self.repo}/{self.filename}"


DEFAULT_WEIGHTS: dict[str, HubFile] = {name: HubFile(info.repo, info.filename)
                                       for name, info in NETWORK_BACKBONES.items()}
"""The released weights of every backbone name."""
VGGT_COMMERCIAL_REPO = "facebook/VGGT-1B-Commercial"
_CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")
_WRAPPER_KEYS = ("model", "state_dict", "model_state_dict", "module")
_WRAPPER_PREFIXES = ("module.", "model.")


class WeightsError(UserError):
    """Weights cannot be found, read, or do not fit the network."""


class WeightsNotFound(WeightsError, FileNotFoundError):
    """The checkpoint is neither on disk nor obtainable from the Hugging Face Hub."""


class StateDictMismatch(WeightsError):
    """Checkpoint keys or shapes differ from the network's."""


def parse_weights(backbone: str, weights: str | None) -> Path | HubFile:
    """Interpret a ``--weights`` value for ``backbone`` (a :data:`~core.backbones.NETWORK_BACKBONES` name).

    None gives the backbone's released hub file. An existing path is a local file. A
    value shaped like ``owner/name`` or ``owner/name/file`` that is not a path on disk
    is a hub repo (default file name of the backbone). Anything else is a missing file.
    """
    if backbone not in DEFAULT_WEIGHTS:
        raise ValueError(f"unknown backbone {backbone!r}; choose one of {', '.join(DEFAULT_WEIGHTS)}")
    if weights is None:
        return DEFAULT_WEIGHTS[backbone]
    path = Path(weights).expanduser()
    if path.exists():
        return path
    parts = weights.split("/")
    looks_local = weights.startswith(("/", ".", "~")) or "\\" in weights
    if not looks_local and len(parts) >= 2 and all(parts):
        if len(parts) == 2 and not weights.endswith(_CHECKPOINT_SUFFIXES):
            return HubFile(weights, DEFAULT_WEIGHTS[backbone].filename)
        if len(parts) > 2:
            return HubFile("/".join(parts[:2]), "/".join(parts[2:]))
    raise WeightsNotFound(
        f"weights file not found: {path}\n"
        f"Pass --weights with an existing checkpoint file, or a Hugging Face repo id "
        f"(default for {backbone}: {DEFAULT_WEIGHTS[backbone].repo})."
    )


def _missing_message(source: HubFile, reason: str) -> str:
    return (
        f"cannot get the weights file '{source.filename}' of the Hugging Face repo '{source.repo}': {reason}\n"
        "Provide it in one of two ways:\n"
        f"  1. download it yourself (https://huggingface.co/{source.repo}/blob/main/{source.filename}) "
        "and pass --weights /path/to/that/file, or\n"
        "  2. allow network access (and leave HF_HUB_OFFLINE unset) so it is downloaded once into "
        "the Hugging Face cache, or pre-populate that cache (HF_HOME) on this machine."
    )


def download(source: HubFile) -> Path:
    """Path of ``source`` in the Hugging Face cache, downloading it if needed and allowed.

    Raises:
        WeightsNotFound: offline and not cached, no network, gated or unknown repo/file.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    try:
        return Path(hf_hub_download(source.repo, source.filename))
    except GatedRepoError as e:
        reason = "the repo is gated: accept its licence on huggingface.co and log in (`hf auth login`)"
        raise WeightsNotFound(_missing_message(source, reason)) from e
    except RepositoryNotFoundError as e:
        reason = "no such repo (or it is private and you are not logged in)"
        raise WeightsNotFound(_missing_message(source, reason)) from e
    except LocalEntryNotFoundError as e:
        if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
            reason = "HF_HUB_OFFLINE is set and the file is not in the local Hugging Face cache"
        else:
            reason = "the file is not in the local Hugging Face cache and the Hub cannot be reached"
        raise WeightsNotFound(_missing_message(source, reason)) from e
    except EntryNotFoundError as e:
        raise WeightsNotFound(_missing_message(source, "the repo has no such file")) from e
    except (HfHubHTTPError, OSError) as e:
        raise WeightsNotFound(_missing_message(source, f"download failed ({e})")) from e


def resolve(backbone: str, weights: str | None) -> Path:
    """Local path of the checkpoint that ``weights`` names (see :func:`parse_weights`)."""
    source = parse_weights(backbone, weights)
    return source if isinstance(source, Path) else download(source)


def _is_safetensors(path: Path) -> bool:
    return path.suffix == ".safetensors"


def read_config(path: Path) -> dict[str, Any] | None:
    """Network configuration embedded in a safetensors checkpoint's metadata, else None."""
    if not _is_safetensors(path):
        return None
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        text = (f.metadata() or {}).get(CONFIG_METADATA_KEY)
    return json.loads(text) if text else None


def _unwrap(checkpoint: Any, path: Path) -> dict[str, Tensor]:
    """The state dict inside a torch checkpoint: plain, or under a common wrapper key."""
    while isinstance(checkpoint, Mapping):
        if checkpoint and all(isinstance(v, Tensor) for v in checkpoint.values()):
            break
        inner = next((checkpoint[k] for k in _WRAPPER_KEYS if isinstance(checkpoint.get(k), Mapping)), None)
        if inner is None:
            break
        checkpoint = inner
    if not isinstance(checkpoint, Mapping) or not all(isinstance(v, Tensor) for v in checkpoint.values()):
        raise WeightsError(f"{path} does not hold a state dict of tensors")
    return dict(checkpoint)


def wrapper_prefix(keys: Iterable[str]) -> str:
    """The wrapper prefix (``module.`` or ``model.``) that every key carries, else ""."""
    keys = list(keys)
    return next((p for p in _WRAPPER_PREFIXES if keys and all(k.startswith(p) for k in keys)), "")


def iter_tensors(path: Path) -> Iterator[tuple[str, Tensor]]:
    """Yield (key, CPU tensor) of a checkpoint, one tensor at a time for safetensors.
    Keys lose a wrapper prefix that all of them carry (see :func:`wrapper_prefix`)."""
    try:
        if _is_safetensors(path):
            from safetensors import safe_open

            with safe_open(str(path), framework="pt", device="cpu") as f:
                prefix = wrapper_prefix(f.keys())
                for key in f.keys():
                    yield key.removeprefix(prefix), f.get_tensor(key)
        else:
            state = _unwrap(torch.load(path, map_location="cpu", weights_only=True, mmap=True), path)
            prefix = wrapper_prefix(state)
            for key, value in state.items():
                yield key.removeprefix(prefix), value
    except WeightsError:
        raise
    except Exception as e:  # corrupt or foreign files raise many different types
        raise WeightsError(f"cannot read weights from {path}: {e}") from e


def check_state_dict(expected: Mapping[str, torch.Size], found: Mapping[str, torch.Size], source: str) -> None:
    """Raise :class:`StateDictMismatch` with a readable diff unless keys and shapes agree exactly."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    shapes = sorted(k for k in set(expected) & set(found) if tuple(expected[k]) != tuple(found[k]))
    if not (missing or unexpected or shapes):
        return

    def listing(title: str, keys: list[str], describe: Callable[[str], str], limit: int = 12) -> list[str]:
        if not keys:
            return []
        lines = [f"  {title} ({len(keys)}):"] + [f"    {describe(k)}" for k in keys[:limit]]
        return lines + ([f"    ... and {len(keys) - limit} more"] if len(keys) > limit else [])

    lines = [f"weights in {source} do not fit the network:"]
    lines += listing("missing from the checkpoint", missing, lambda k: f"{k} {tuple(expected[k])}")
    lines += listing("unexpected in the checkpoint", unexpected, lambda k: f"{k} {tuple(found[k])}")
    lines += listing(
        "shape differs", shapes, lambda k: f"{k}: network {tuple(expected[k])}, checkpoint {tuple(found[k])}"
    )
    lines.append("Is this a checkpoint of this network at this size?")
    raise StateDictMismatch("\n".join(lines))


@contextlib.contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Build modules with parameters on the meta device but real buffers.

    Parameter storage and initialisation are skipped (fast, no memory); buffers,
    including non-persistent ones that no checkpoint holds, keep their values.
    It swaps ``nn.Module.register_parameter`` for its duration, so no other thread
    should build modules meanwhile.
    """
    register = nn.Module.register_parameter

    def register_on_meta(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        register(module, name, param)
        if param is not None and param.device.type != "meta":
            module._parameters[name] = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)

    nn.Module.register_parameter = register_on_meta
    try:
        yield
    finally:
        nn.Module.register_parameter = register


def float32_modules(model: nn.Module) -> list[nn.Module]:
    """Sub-modules that run in float32 even under autocast (the output heads).

    A network lists them in a ``float32_modules`` attribute; otherwise its top-level
    children whose name ends in ``head`` are taken.
    """
    listed = getattr(model, "float32_modules", None)
    if listed is not None:
        return list(listed)
    return [m for name, m in model.named_children() if name.endswith("head")]


def half_precision_keys(model: nn.Module) -> set[str]:
    """State-dict keys worth storing in half precision: Linear/Conv weights and biases
    outside :func:`float32_modules`.

    Under autocast these layers compute in half precision anyway, so storing them
    that way halves the memory without changing results. Norms, LayerScale, tokens
    and position embeddings stay float32, which keeps the residual stream float32.
    """
    keep = {id(m) for root in float32_modules(model) for m in root.modules()}
    keys: set[str] = set()
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)) and id(module) not in keep:
            keys.update(f"{name}.{p}" for p, _ in module.named_parameters(recurse=False))
    return keys


def tied_keys(model: nn.Module) -> dict[str, str]:
    """State-dict keys that name a tensor listed earlier under another key: alias -> first key.

    A module object placed at several points of the tree (DA3's shared LayerNorm) appears
    in the state dict once per place; ``safetensors`` stores such a tensor once.
    """
    first: dict[int, str] = {}
    aliases: dict[str, str] = {}
    for key, value in model.state_dict(keep_vars=True).items():
        if id(value) in first:
            aliases[key] = first[id(value)]
        else:
            first[id(value)] = key
    return aliases


def load_state(
    model: nn.Module,
    tensors: Iterator[tuple[str, Tensor]],
    source: str,
    device: torch.device,
    half: torch.dtype | None = None,
) -> nn.Module:
    """Strictly load ``tensors`` into ``model`` (built under :func:`parameters_on_meta`).

    Each floating tensor is cast (``half`` for :func:`half_precision_keys`, else
    float32) and moved to ``device`` as it is read. A tied tensor (:func:`tied_keys`)
    stored under one of its names only fills the others. Buffers that no checkpoint
    holds (non-persistent) are moved to ``device`` too.
    """
    expected = {k: v.shape for k, v in model.state_dict().items()}
    halves = half_precision_keys(model) if half is not None else set()
    state: dict[str, Tensor] = {}
    for key, value in tensors:
        if value.is_floating_point():
            value = value.to(half if key in halves else torch.float32)
        state[key] = value.to(device)
    for alias, key in tied_keys(model).items():
        if alias not in state and key in state:
            state[alias] = state[key]
    check_state_dict(expected, {k: v.shape for k, v in state.items()}, source)
    model.load_state_dict(state, strict=True, assign=True)
    for module in model.modules():
        for name, buffer in module.named_buffers(recurse=False):
            module._buffers[name] = buffer.to(device)
    return model.eval()


def load_network(
    backbone: str,
    weights: str | None,
    device: torch.device | str = "cpu",
    half: torch.dtype | None = None,
    config: dict[str, Any] | None = None,
) -> nn.Module:
    """Build the network of ``backbone`` and load its weights, in eval mode on ``device``.

    Args:
        backbone: a :data:`~core.backbones.NETWORK_BACKBONES` name ("pi3", "vggt", "da3",
            "da3-small", "da3-base").
        weights: see :func:`parse_weights`; ``"random"`` gives randomly initialised
            weights (benchmarks: speed and memory do not depend on the values).
        device: where the weights go.
        half: store :func:`half_precision_keys` in this dtype (bfloat16 or float16)
            for autocast inference; None keeps everything float32.
        config: network configuration used when the checkpoint embeds none
            (None: the backbone's released size).

    Raises:
        WeightsNotFound, WeightsError, StateDictMismatch.
    """
    if backbone not in NETWORK_BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; choose one of {', '.join(NETWORK_BACKBONES)}")
    spec = NETWORK_BACKBONES[backbone]
    config = config or spec.config
    device = torch.device(device)
    if weights == RANDOM_WEIGHTS:
        with torch.device(device):
            model = build(spec.network, config)
        halves = half_precision_keys(model) if half is not None else set()
        for name, param in model.named_parameters():
            if name in halves:
                param.data = param.data.to(half)
        return model.eval()
    path = resolve(backbone, weights)
    with parameters_on_meta():
        model = build(spec.network, read_config(path) or config)
    return load_state(model, iter_tensors(path), str(path), device, half)


def save_checkpoint(model: nn.Module, path: Path | str, config: dict[str, Any] | None = None) -> Path:
    """Write ``model``'s state dict as safetensors, embedding ``config`` for :func:`load_network`.

    A tied tensor is written once, under its first name (:func:`tied_keys`), as released
    checkpoints store it.
    """
    from safetensors.torch import save_file

    path = Path(path)
    aliases = tied_keys(model)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if k not in aliases}
    metadata = {CONFIG_METADATA_KEY: json.dumps(config)} if config is not None else None
    save_file(state, str(path), metadata=metadata)
    return path


_COMMERCIAL_CHOICE = "For commercial work use --backbone da3 or da3-small (DA3-BASE/DA3-SMALL, Apache-2.0 weights)"


def licence_notice(backbone: str, weights: str | None) -> str:
    """What the user must know about the licence of the weights ``weights`` names for ``backbone``."""
    spec = NETWORK_BACKBONES[backbone]
    if spec.network == "da3":
        return f"Licence: the {spec.repo.split('/')[-1]} weights ({spec.repo}) are Apache-2.0: commercial use permitted."
    if spec.network == "pi3":
        return (
            "Licence: the pi3 weights (yyfz233/Pi3) are CC BY-NC 4.0, non-commercial use only. "
            f"{_COMMERCIAL_CHOICE}, or --backbone vggt --weights {VGGT_COMMERCIAL_REPO} (gated)."
        )
    commercial = weights is not None and weights.rstrip("/").startswith(VGGT_COMMERCIAL_REPO)
    if commercial:
        return (
            "Licence: VGGT-1B-Commercial weights, commercial use permitted under Meta's licence "
            "(military applications excluded)."
        )
    return (
        f"Licence: the VGGT-1B weights are non-commercial use only. {_COMMERCIAL_CHOICE}, or pick the "
        f"commercially licensed VGGT checkpoint with --weights {VGGT_COMMERCIAL_REPO} (gated: accept "
        "its licence on huggingface.co and log in with `hf auth login` first)."
    )
