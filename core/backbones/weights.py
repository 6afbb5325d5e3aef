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

Every problem with a checkpoint is a :class:`WeightsError` (a user error) whose first
line starts ``--weights FILE:`` and says what to do: a folder, an empty, truncated or
damaged file, a text file (a Git LFS pointer, an HTML page), a file holding something
other than a state dict, or another network's weights (named when recognised). The
format is told from the file's first bytes, not its name.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import pickle
import struct
import zipfile
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
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # torch.save's format since torch 1.6
_PICKLE_MAGIC = b"\x80"  # pickle protocol 2+: torch.save's legacy format
_SAFETENSORS_MAX_HEADER = 100_000_000  # the safetensors library's own limit
_EXPECTED = "expected a .safetensors file or a torch .pt/.pth checkpoint"


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
        f"--weights {path}: weights file not found; pass an existing checkpoint file, or a Hugging Face "
        f"repo id (default for {backbone}: {DEFAULT_WEIGHTS[backbone].repo})"
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


def _get_it_again(path: Path) -> str:
    """What to do about a damaged checkpoint: download it again (from the cache: delete it first)."""
    try:
        from huggingface_hub import constants

        cache = Path(constants.HF_HUB_CACHE)
        in_cache = path.is_relative_to(cache) or path.resolve().is_relative_to(cache.resolve())
    except Exception:  # noqa: BLE001 - only a hint
        in_cache = False
    if in_cache:
        return f"delete it from the Hugging Face cache ({cache}) so that it is downloaded again"
    return "download it again"


def _text(head: bytes) -> str | None:
    """``head`` as text when it looks like text (UTF-8, no control bytes but whitespace), else None."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        try:  # a multi-byte character cut at the end of the sample
            text = head[:-3].decode("utf-8")
        except UnicodeDecodeError:
            return None
    return text if all(c.isprintable() or c in "\t\r\n\f" for c in text) else None


def _folder_error(path: Path) -> WeightsError:
    try:
        inside = sorted(p for p in path.iterdir() if p.name.endswith(_CHECKPOINT_SUFFIXES) and p.is_file())
    except OSError:
        inside = []
    if inside:
        hint = "pass a checkpoint file inside it: " + ", ".join(str(p) for p in inside[:3])
        hint += " ..." if len(inside) > 3 else ""
    else:
        hint = f"pass the checkpoint file itself ({_EXPECTED.removeprefix('expected ')})"
    return WeightsError(f"--weights {path}: a folder, not a checkpoint file; {hint}")


def checkpoint_format(path: Path) -> str:
    """The format of the checkpoint at ``path`` from its first bytes: "safetensors", "torch"
    (zip, torch.save since 1.6) or "torch-legacy" (pickle).

    Raises:
        WeightsError: a folder or no regular file, unreadable, empty, a text file (a Git LFS
            pointer, an HTML page), or no checkpoint format; the message says what to do.
    """
    path = Path(path)
    if path.is_dir():
        raise _folder_error(path)
    if not path.is_file():
        raise WeightsError(f"--weights {path}: not a regular file; pass a checkpoint file ({_EXPECTED})")
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(512)
    except OSError as e:
        raise WeightsError(f"--weights {path}: cannot read the file ({e.strerror or e}); check that it is "
                           "readable") from None
    if size == 0:
        raise WeightsError(f"--weights {path}: the file is empty (0 bytes); {_get_it_again(path)}")
    if head.startswith(_ZIP_MAGIC):
        return "torch"
    if len(head) >= 9 and head[8:9] == b"{" and 0 < struct.unpack("<Q", head[:8])[0] < _SAFETENSORS_MAX_HEADER:
        return "safetensors"
    if head.startswith(_PICKLE_MAGIC):
        return "torch-legacy"
    text = _text(head)
    if text is not None and text.startswith("version https://git-lfs"):
        raise WeightsError(f"--weights {path}: a Git LFS pointer, not the weights; fetch the file itself "
                           "(`git lfs pull`), or pass the Hugging Face repo id instead")
    if text is not None and text.lstrip()[:15].lower().startswith(("<!doctype html", "<html")):
        raise WeightsError(f"--weights {path}: a web page, not the weights; download the file itself "
                           "(on huggingface.co the download link has /resolve/ in it, not /blob/)")
    if text is not None:
        raise WeightsError(f"--weights {path}: a text file, not a checkpoint ({_EXPECTED}); pass the "
                           "network's weights file or a Hugging Face repo id")
    if path.suffix == ".safetensors" or (len(head) < 9 and size < 9):
        raise WeightsError(f"--weights {path}: a damaged or truncated checkpoint ({size} bytes); "
                           f"{_get_it_again(path)}")
    raise WeightsError(f"--weights {path}: not a checkpoint ({_EXPECTED}; this file is neither); "
                       f"pass the network's weights file, or {_get_it_again(path)} if it is damaged")


def _read_error(path: Path, fmt: str, error: Exception) -> WeightsError:
    """A :class:`WeightsError` for ``error`` raised while reading a ``fmt`` checkpoint."""
    text = str(error).strip()
    first = (text.splitlines()[0] if text else type(error).__name__).split(". ")[0][:200]
    if fmt == "safetensors" and type(error).__name__ == "SafetensorError":
        return WeightsError(f"--weights {path}: a damaged or truncated safetensors file ({first}); "
                            f"{_get_it_again(path)}")
    if "PytorchStreamReader" in text or isinstance(error, (EOFError, zipfile.BadZipFile)):
        return WeightsError(f"--weights {path}: a damaged or truncated torch checkpoint ({first}); "
                            f"{_get_it_again(path)}")
    if isinstance(error, pickle.UnpicklingError) and "weights only load failed" in text.lower():
        return WeightsError(f"--weights {path}: cannot read weights: the file holds Python objects besides "
                            "tensors, which are never loaded (no code from a checkpoint runs); save the state "
                            "dict alone, or as .safetensors")
    return WeightsError(f"--weights {path}: cannot read weights ({first}); {_EXPECTED}")


def read_config(path: Path) -> dict[str, Any] | None:
    """Network configuration embedded in a safetensors checkpoint's metadata, else None.

    Raises:
        WeightsError: not a checkpoint, damaged, or the embedded configuration is not JSON.
    """
    path = Path(path)
    fmt = checkpoint_format(path)
    if fmt != "safetensors":
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            text = (f.metadata() or {}).get(CONFIG_METADATA_KEY)
    except Exception as e:  # noqa: BLE001 - a damaged file raises SafetensorError, OSError, ...
        raise _read_error(path, fmt, e) from e
    if not text:
        return None
    try:
        config = json.loads(text)
    except ValueError:
        config = None
    if not isinstance(config, dict):
        raise WeightsError(f"--weights {path}: its embedded network configuration ({CONFIG_METADATA_KEY}) is "
                           f"not a JSON object; {_get_it_again(path)}, or re-save it with save_checkpoint")
    return config


def _unwrap(checkpoint: Any, path: Path) -> dict[str, Tensor]:
    """The state dict inside a torch checkpoint: plain, or under a common wrapper key."""
    while isinstance(checkpoint, Mapping):
        if checkpoint and all(isinstance(v, Tensor) for v in checkpoint.values()):
            break
        inner = next((checkpoint[k] for k in _WRAPPER_KEYS if isinstance(checkpoint.get(k), Mapping)), None)
        if inner is None:
            break
        checkpoint = inner
    if not isinstance(checkpoint, Mapping):
        what = f"a {type(checkpoint).__name__}"
    elif not checkpoint:
        what = "an empty dict"
    elif not any(isinstance(v, Tensor) for v in checkpoint.values()):
        what = f"a dict without tensors (keys {', '.join(map(str, list(checkpoint)[:4]))})"
    elif not all(isinstance(v, Tensor) for v in checkpoint.values()):
        other = next(k for k, v in checkpoint.items() if not isinstance(v, Tensor))
        what = f"a dict mixing tensors with other values ({other!r}: {type(checkpoint[other]).__name__})"
    else:
        return dict(checkpoint)
    raise WeightsError(f"--weights {path}: holds {what}, not a state dict of tensors; pass the network's "
                       "weights (a state dict saved with torch.save, or a .safetensors file)")


def wrapper_prefix(keys: Iterable[str]) -> str:
    """The wrapper prefix (``module.`` or ``model.``) that every key carries, else ""."""
    keys = list(keys)
    return next((p for p in _WRAPPER_PREFIXES if keys and all(k.startswith(p) for k in keys)), "")


def iter_tensors(path: Path) -> Iterator[tuple[str, Tensor]]:
    """Yield (key, CPU tensor) of a checkpoint, one tensor at a time for safetensors.
    Keys lose a wrapper prefix that all of them carry (see :func:`wrapper_prefix`)."""
    path = Path(path)
    fmt = checkpoint_format(path)
    try:
        if fmt == "safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt", device="cpu") as f:
                prefix = wrapper_prefix(f.keys())
                for key in f.keys():
                    yield key.removeprefix(prefix), f.get_tensor(key)
        else:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=fmt == "torch")
            state = _unwrap(checkpoint, path)
            prefix = wrapper_prefix(state)
            for key, value in state.items():
                yield key.removeprefix(prefix), value
    except WeightsError:
        raise
    except Exception as e:  # corrupt or foreign files raise many different types
        raise _read_error(path, fmt, e) from e


@functools.cache
def _released_layout(backbone: str) -> tuple[dict[str, tuple[int, ...]], frozenset[str]]:
    """State-dict shapes of ``backbone`` at its released size (built on the meta device), and its tied aliases."""
    spec = NETWORK_BACKBONES[backbone]
    with parameters_on_meta():
        model = build(spec.network, spec.config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}, frozenset(tied_keys(model))


def whose_weights(found: Mapping[str, torch.Size], backbone: str | None) -> str | None:
    """Advice naming the backbone that a state dict of these keys and shapes belongs to, if not ``backbone``:
    a released size matched exactly, else a network recognised by its top-level modules. None if unknown."""
    try:
        current = NETWORK_BACKBONES.get(backbone or "")
        found_shapes = {k: tuple(v) for k, v in found.items()}
        same_as_current = [name for name, spec in NETWORK_BACKBONES.items()
                           if current and (spec.network, spec.config) == (current.network, current.config)]
        others = [name for name in NETWORK_BACKBONES if name != backbone and name not in same_as_current]
        for name in others:
            shapes, aliases = _released_layout(name)
            if all(shapes.get(k) == s for k, s in found_shapes.items()) and set(shapes) - set(found) <= aliases:
                return f"they are {name} weights: use --backbone {name}"
        tops = {k.split(".")[0] for k in found}
        for network in dict.fromkeys(NETWORK_BACKBONES[name].network for name in others):
            if current and network == current.network:
                continue
            names = [n for n, spec in NETWORK_BACKBONES.items() if spec.network == network]
            if tops == {k.split(".")[0] for k in _released_layout(names[0])[0]}:
                return f"they look like {network} weights: use --backbone {' or '.join(names)}"
    except Exception:  # noqa: BLE001 - only a hint; the mismatch itself is the error
        return None
    return None


def check_state_dict(expected: Mapping[str, torch.Size], found: Mapping[str, torch.Size], source: str,
                     backbone: str | None = None) -> None:
    """Raise :class:`StateDictMismatch` with a readable diff unless keys and shapes agree exactly.

    The message's first line names ``source`` and says what to do (the backbone the weights
    belong to, when :func:`whose_weights` recognises them); the diff follows.
    """
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    shapes = sorted(k for k in set(expected) & set(found) if tuple(expected[k]) != tuple(found[k]))
    if not (missing or unexpected or shapes):
        return
    network = f"the {backbone} network" if backbone else "the network"
    counts = ", ".join(f"{n} {what}" for n, what in ((len(missing), "missing"), (len(unexpected), "unexpected"),
                                                     (len(shapes), "of another shape")) if n)
    advice = whose_weights(found, backbone) or (
        f"pass {backbone} weights (its released checkpoint, or one that embeds its network configuration)"
        if backbone else "pass a checkpoint of this network at this size")

    def listing(title: str, keys: list[str], describe: Callable[[str], str], limit: int = 8) -> list[str]:
        if not keys:
            return []
        lines = [f"  {title} ({len(keys)}):"] + [f"    {describe(k)}" for k in keys[:limit]]
        return lines + ([f"    ... and {len(keys) - limit} more"] if len(keys) > limit else [])

    lines = [f"--weights {source}: these weights do not fit {network} ({counts} tensors); {advice}. Details:"]
    lines += listing("missing from the checkpoint", missing, lambda k: f"{k} {tuple(expected[k])}")
    lines += listing("unexpected in the checkpoint", unexpected, lambda k: f"{k} {tuple(found[k])}")
    lines += listing(
        "shape differs", shapes, lambda k: f"{k}: network {tuple(expected[k])}, checkpoint {tuple(found[k])}"
    )
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
    backbone: str | None = None,
) -> nn.Module:
    """Strictly load ``tensors`` into ``model`` (built under :func:`parameters_on_meta`).

    Each floating tensor is cast (``half`` for :func:`half_precision_keys`, else
    float32) and moved to ``device`` as it is read. A tied tensor (:func:`tied_keys`)
    stored under one of its names only fills the others. Buffers that no checkpoint
    holds (non-persistent) are moved to ``device`` too. ``backbone`` names the network
    in a mismatch message.

    Raises:
        StateDictMismatch: keys or shapes differ. UserError: ``device`` ran out of memory.
    """
    expected = {k: v.shape for k, v in model.state_dict().items()}
    floating = {k for k, v in model.state_dict().items() if v.is_floating_point()}
    halves = half_precision_keys(model) if half is not None else set()
    state: dict[str, Tensor] = {}
    try:
        for key, value in tensors:
            if value.is_floating_point():
                value = value.to(half if key in halves else torch.float32)
            state[key] = value.to(device)
        for alias, key in tied_keys(model).items():
            if alias not in state and key in state:
                state[alias] = state[key]
        check_state_dict(expected, {k: v.shape for k, v in state.items()}, source, backbone)
        integer = sorted(k for k in floating if not state[k].is_floating_point())
        if integer:
            raise StateDictMismatch(
                f"--weights {source}: {integer[0]} is {state[integer[0]].dtype} where the network needs floating "
                f"point ({len(integer)} tensor{'s' * (len(integer) > 1)} like it); a quantized checkpoint? pass the "
                "float weights (float32, float16 or bfloat16)")
        model.load_state_dict(state, strict=True, assign=True)
        for module in model.modules():
            for name, buffer in module.named_buffers(recurse=False):
                module._buffers[name] = buffer.to(device)
    except torch.OutOfMemoryError:
        state.clear()
        message = (f"--device {device}: out of memory while loading the weights {source}; free the device's "
                   "memory, or use --dtype float16/bfloat16, a smaller backbone, or --device cpu")
        raise UserError(message) from None
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
    embedded = read_config(path)  # also tells a file that is no checkpoint, before a slow build
    try:
        with parameters_on_meta():
            model = build(spec.network, embedded or config)
    except Exception as e:  # noqa: BLE001 - a foreign embedded configuration raises many types
        if embedded is None:
            raise
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise WeightsError(f"--weights {path}: the network configuration it embeds does not fit {backbone} "
                           f"({first}); pass {backbone} weights") from e
    return load_state(model, iter_tensors(path), str(path), device, half, backbone)


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
