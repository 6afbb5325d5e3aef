"""What FFmpeg says while OpenCV decodes a frame.

OpenCV's video API reports a frame as read even when the decoder concealed damaged
data in it; FFmpeg only says so on the process's standard error (file descriptor 2),
as lines like ``[h264 @ 0x55d1c0] error while decoding MB 12 3``. :class:`DecoderLog`
points descriptor 2 at a scratch file for the duration of one call, returns FFmpeg's
lines from it, and passes anything else written there meanwhile (another thread's
output) on to the real standard error, so nothing is lost or reordered by more than
one frame's decoding time. Where descriptor 2 cannot be redirected (it is closed),
calls run unobserved.
"""

from __future__ import annotations

import os
import re
import tempfile
from typing import Callable, TypeVar

T = TypeVar("T")

_FFMPEG_LINE = re.compile(rb"^\[[\w.-]+ @ (?:0x)?[0-9a-fA-F]+\] ?(.*?)\s*$")
_BENIGN = re.compile(rb"deprecated pixel format", re.IGNORECASE)
"""OpenCV lets FFmpeg print errors only; what it prints while decoding is damage, except these."""


class DecoderLog:
    """Run calls with FFmpeg's messages captured; use as a context manager around a decoding loop."""

    def __init__(self) -> None:
        self._scratch = None
        self._stderr = -1

    def __enter__(self) -> DecoderLog:
        try:
            self._stderr = os.dup(2)
            self._scratch = tempfile.TemporaryFile()
        except OSError:
            self.__exit__()
        return self

    def __exit__(self, *exc) -> None:
        if self._stderr >= 0:
            os.close(self._stderr)
            self._stderr = -1
        if self._scratch is not None:
            self._scratch.close()
            self._scratch = None

    def call(self, fn: Callable[[], T]) -> tuple[T, list[str]]:
        """``fn()`` and the damage FFmpeg reported while it ran (messages, in order; empty when clean)."""
        if self._scratch is None:
            return fn(), []
        os.dup2(self._scratch.fileno(), 2)
        try:
            result = fn()
        finally:
            os.dup2(self._stderr, 2)
        self._scratch.seek(0)
        written = self._scratch.read()
        if not written:
            return result, []
        self._scratch.seek(0)
        self._scratch.truncate()
        damage, others = [], []
        for line in written.splitlines(keepends=True):
            match = _FFMPEG_LINE.match(line)
            if match and not _BENIGN.search(match.group(1)):
                damage.append(match.group(1).decode("utf-8", "replace"))
            else:
                others.append(line)
        if others:
            os.write(self._stderr, b"".join(others))
        return result, damage
