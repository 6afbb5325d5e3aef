"""Atomic, readable files: every write goes to a temporary name and is renamed into place.

A reader polling a growing run (the Blender add-on) therefore never sees half a file,
and a crash or cancel loses nothing that was finished. Files get the process's normal
mode (0666 less the umask), so other users of a shared project folder can read them.
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable, TypeVar

import numpy as np
from pydantic import BaseModel, ValidationError

from core.errors import UserError

WINDOW_FILE = re.compile(r"^w(\d{5,})\.npz$")
M = TypeVar("M", bound=BaseModel)


class RunDirError(UserError):
    """A run or predictions directory, or one of its files, is missing, incomplete or malformed."""


class FileWriteError(UserError):
    """A file could not be written (a full disk, a quota, no permission); the message names it."""


class RunDirRefused(RunDirError):
    """Writing into a run directory was refused before anything in it was touched."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()


def output_file(path: Path | str) -> Path:
    """An output file's absolute path, its folder created; a one-line error naming it when it cannot be written."""
    path = Path(path).absolute()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        blocker = f" ({e.filename} is not a folder)" if isinstance(e, (FileExistsError, NotADirectoryError)) else ""
        raise UserError(f"{path}: cannot write there{blocker or f': {e.strerror}'}; choose another -o") from None
    if path.is_dir():
        raise UserError(f"{path} is a folder; give -o a file name")
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UserError(f"{path}: no permission to write there; choose another -o")
    return path


def window_name(index: int) -> str:
    """File name of window ``index``: ``w00042.npz``."""
    return f"w{index:05d}.npz"


def atomic_write(path: Path, write: Callable[[Any], Any]) -> None:
    """Write ``path`` through ``write(binary_file)`` to a temporary name, then rename it into place.

    Raises:
        FileWriteError: the file could not be written (the message names ``path`` and the reason);
            whatever ``path`` held before is unchanged.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise FileWriteError(f"cannot write {path}: {e.strerror or e}") from None
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise FileWriteError(f"cannot write {path}: {e.strerror or e}{_WRITE_HINTS.get(e.errno, '')}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


_WRITE_HINTS = {errno.ENOSPC: " (free some disk space)", errno.EDQUOT: " (over the disk quota)",
                errno.EFBIG: " (over the file size limit)", errno.EACCES: " (no permission)"}


def write_json(path: Path, data: Any) -> None:
    """Write plain JSON data (indented), atomically."""
    payload = (json.dumps(data, indent=2) + "\n").encode()
    atomic_write(path, lambda f: f.write(payload))


def write_model(path: Path, model: BaseModel) -> None:
    """Write a pydantic model as indented JSON, atomically."""
    write_json(path, model.model_dump(mode="json"))


def read_model(path: Path, model: type[M]) -> M:
    """Read a JSON file into ``model``, with a one-line error naming the file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunDirError(f"{path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RunDirError(f"{path} is not readable JSON: {e}") from None
    try:
        return model.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'file'}: {err['msg']}" for err in e.errors())
        raise RunDirError(f"{path}: {problems}") from None


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write an uncompressed .npz atomically (writing is on the hot path).

    The archive is built in memory first: numpy leaves its zip writer open when the file
    write fails, and that writer would later complain about the closed file.
    """
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write(path, lambda f: f.write(buffer.getbuffer()))


def read_npz(path: Path, required: tuple[str, ...]) -> dict[str, np.ndarray]:
    """All arrays of an .npz file (no pickles), with a clear error when it is unreadable or lacks keys."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in required if k not in z.files]
            if missing:
                raise RunDirError(f"{path} lacks arrays {missing}; expected {list(required)}")
            return {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise RunDirError(f"{path} does not exist") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise RunDirError(f"{path} is not a readable .npz file (truncated or corrupt?): {e}") from None


def read_npz_array(path: Path, key: str) -> np.ndarray:
    """One array of an .npz file, without reading the others."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            if key not in z.files:
                raise RunDirError(f"{path} lacks the array {key!r}")
            return z[key]
    except FileNotFoundError:
        raise RunDirError(f"{path} does not exist") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise RunDirError(f"{path} is not a readable .npz file (truncated or corrupt?): {e}") from None


def list_windows(directory: Path) -> list[tuple[int, Path]]:
    """Sorted (index, path) of the ``wNNNNN.npz`` files in ``directory`` (empty when it does not exist)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := WINDOW_FILE.match(p.name))]
    return sorted(found)
