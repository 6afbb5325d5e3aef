"""Frame sources: video files and image folders, streamed one frame at a time.

``open_source(path, start=, stride=, max_frames=)`` picks the reader from the path
(a directory is an image folder, anything else a video OpenCV can open) and
returns a :class:`FrameSource`. ``FrameSource.frames(geometry)`` yields
``(source_index, image)`` pairs: ``source_index`` indexes the original video or
sorted folder (``start=10, stride=2`` gives 10, 12, ...) and ``image`` is an
(h, w, 3) uint8 RGB array, brought to the network input per an
:class:`~core.backbones.base.InputGeometry` (resize, then crop) or native.

Nothing holds more than one decoded frame; skipped video frames are only
``grab()``-ed, never converted. Every problem with the input is a
:class:`FrameSourceError` naming the file and what is wrong.
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

from core.decoder_log import DecoderLog
from core.errors import UserError
from core.run.footage import IMAGE_EXTENSIONS, image_files
from core.run.manifest import InputGeometry, SourceInfo

Warn = Callable[[str], None]
"""Receives a one-line message about the footage that does not stop the stream."""
_log = logging.getLogger(__name__)

# A container's frame count may be an estimate (duration x fps, e.g. Matroska);
# a stream ending this close to it is taken as its end, not as a truncated file.
_COUNT_SLACK_FRAMES = 2
_COUNT_SLACK_FRACTION = 0.01


class FrameSourceError(UserError):
    """The input footage is missing, unreadable, empty or inconsistent."""


def selected_count(total: int, start: int, stride: int, max_frames: int | None) -> int:
    """Frames yielded from ``total`` when taking every ``stride``-th from ``start``."""
    n = max(0, math.ceil((total - start) / stride))
    return n if max_frames is None else min(n, max_frames)


def apply_geometry(image: np.ndarray, geometry: InputGeometry | None) -> np.ndarray:
    """Resize (H, W, 3) ``image`` to ``geometry.resized`` and crop ``geometry.size`` at ``offset``.

    Shrinking uses area averaging (no aliasing); enlarging uses bicubic.
    """
    if geometry is None:
        return image
    height, width = image.shape[:2]
    if (width, height) != tuple(geometry.footage):
        raise FrameSourceError(
            f"input geometry expects {geometry.footage[0]}x{geometry.footage[1]} footage, "
            f"got a {width}x{height} frame"
        )
    rw, rh = geometry.resized
    if (rw, rh) != (width, height):
        shrinking = rw <= width and rh <= height
        image = cv2.resize(image, (rw, rh), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)
    (x0, y0), (w, h) = geometry.offset, geometry.size
    if x0 < 0 or y0 < 0 or x0 + w > rw or y0 + h > rh:
        raise FrameSourceError(f"crop {w}x{h} at ({x0}, {y0}) does not fit the {rw}x{rh} resized frame")
    return np.ascontiguousarray(image[y0:y0 + h, x0:x0 + w])


class FrameSource(ABC):
    """A stream of footage frames; iterate with :meth:`frames` as often as needed."""

    def __init__(self, path: Path, start: int, stride: int, max_frames: int | None):
        self.path = path
        self.start = start
        self.stride = stride
        self.max_frames = max_frames

    @property
    @abstractmethod
    def info(self) -> SourceInfo:
        """Footage size, frame rate and how many frames :meth:`frames` yields."""

    @abstractmethod
    def _native_frames(self, skip: int, warn: Warn) -> Iterator[tuple[int, np.ndarray]]:
        """The selected frames after the first ``skip`` as (source index, (H, W, 3) uint8 RGB) at footage size."""

    def frames(self, geometry: InputGeometry | None = None, skip: int = 0,
               warn: Warn | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(source_index, (h, w, 3) uint8 RGB)``, restarting from ``start`` on each call.

        ``skip`` leaves out the first ``skip`` selected frames without decoding them
        (resuming a run continues where it stopped). ``warn`` receives a one-line message
        for problems that do not stop the stream (frames the decoder reports damaged);
        by default they are logged.
        """
        for index, image in self._native_frames(skip, warn or _log.warning):
            yield index, apply_geometry(image, geometry)

    def frame_pairs(self, geometry: InputGeometry | None = None, skip: int = 0,
                    warn: Warn | None = None) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """Like :meth:`frames`, from one decode: ``(source_index, network input, (H, W, 3) uint8 RGB footage frame)``.

        The footage frame is the decoded image at full resolution (what the camera solve tracks on).
        """
        for index, image in self._native_frames(skip, warn or _log.warning):
            yield index, apply_geometry(image, geometry), image

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        return self.frames()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({str(self.path)!r}, start={self.start}, "
                f"stride={self.stride}, max_frames={self.max_frames})")


class VideoSource(FrameSource):
    """A video file read with OpenCV (any container and codec its FFmpeg backend reads)."""

    def __init__(self, path: Path, start: int, stride: int, max_frames: int | None):
        super().__init__(path, start, stride, max_frames)
        cap = self._open()
        try:
            width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
            height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
            fps = float(cap.get(cv2.CAP_PROP_FPS))
            count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
            if width <= 0 or height <= 0:
                raise FrameSourceError(f"{path}: the video reports no frame size; it is empty or corrupt")
            if count == 0 and not cap.grab():
                raise FrameSourceError(f"{path}: the video contains no frames")
        finally:
            cap.release()
        self._total = count if count > 0 else None
        if self._total is not None and start >= self._total:
            raise FrameSourceError(f"{path}: start={start} is beyond the end of the video ({self._total} frames)")
        self._info = SourceInfo(
            path=str(path), width=width, height=height,
            fps=fps if fps > 0 and math.isfinite(fps) else None,
            num_frames=None if self._total is None else selected_count(self._total, start, stride, max_frames),
            start=start, stride=stride,
        )

    @property
    def info(self) -> SourceInfo:
        return self._info

    def _open(self) -> cv2.VideoCapture:
        # One decoding thread: FFmpeg then reports damage while the frame it concerns is being read,
        # so each warning names the right frame (about 2 ms more per 1080p frame on a 2-core CPU).
        cap = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])
        if not cap.isOpened():
            raise FrameSourceError(
                f"{self.path}: cannot be opened as a video (not a video, unsupported codec, "
                f"empty or corrupt file)"
            )
        return cap

    def _ended_early(self, index: int) -> bool:
        """Whether the stream stopping at ``index`` contradicts the container's frame count."""
        if self._total is None:
            return False
        slack = max(_COUNT_SLACK_FRAMES, int(_COUNT_SLACK_FRACTION * self._total))
        return index < self._total - slack

    def _native_frames(self, skip: int, warn: Warn) -> Iterator[tuple[int, np.ndarray]]:
        wanted = self.max_frames if self._info.num_frames is None else self._info.num_frames
        damaged: list[tuple[int, str]] = []  # the current run of consecutive damaged frames: (index, message)

        def report_damage() -> None:
            if damaged:
                (first, message), last = damaged[0], damaged[-1][0]
                frames = f"frame {first} is" if first == last else f"frames {first}-{last} are"
                warn(f"{self.path}: {frames} damaged in the file (the decoder reported: {message}); "
                     f"their pixels may be wrong")
                damaged.clear()

        cap = self._open()
        try:
            with DecoderLog() as decoder:
                index, yielded = 0, 0
                while wanted is None or yielded < wanted:
                    grabbed, damage = decoder.call(cap.grab)
                    if damage:
                        damaged.append((index, damage[0]))
                    else:
                        report_damage()
                    if not grabbed:
                        if self._ended_early(index):
                            raise FrameSourceError(
                                f"{self.path}: frame {index} cannot be read although the video reports "
                                f"{self._total} frames; the file is truncated or corrupt"
                            )
                        if index == 0:
                            raise FrameSourceError(f"{self.path}: the video contains no frames")
                        if yielded == 0:
                            raise FrameSourceError(
                                f"{self.path}: start={self.start} is beyond the end of the video ({index} frames)"
                            )
                        return
                    selected = index >= self.start and (index - self.start) % self.stride == 0
                    if selected and yielded < skip:
                        yielded += 1  # counted, never decoded
                    elif selected:
                        ok, bgr = cap.retrieve()
                        if not ok or bgr is None:
                            raise FrameSourceError(f"{self.path}: frame {index} fails to decode")
                        if bgr.shape[:2] != (self._info.height, self._info.width):
                            raise FrameSourceError(
                                f"{self.path}: frame {index} is {bgr.shape[1]}x{bgr.shape[0]}, "
                                f"the video reports {self._info.width}x{self._info.height}"
                            )
                        yield index, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                        yielded += 1
                    index += 1
        finally:
            report_damage()
            cap.release()


class ImageFolderSource(FrameSource):
    """A folder of images, ordered by natural sort of their file names."""

    def __init__(self, path: Path, start: int, stride: int, max_frames: int | None):
        super().__init__(path, start, stride, max_frames)
        files = image_files(path)
        if not files:
            kinds = ", ".join(sorted(IMAGE_EXTENSIONS))
            raise FrameSourceError(f"{path}: the folder contains no images ({kinds})")
        if start >= len(files):
            raise FrameSourceError(f"{path}: start={start} is beyond the end of the folder ({len(files)} images)")
        self.files = files
        height, width = self._read(0).shape[:2]
        self._info = SourceInfo(
            path=str(path), width=width, height=height, fps=None,
            num_frames=selected_count(len(files), start, stride, max_frames), start=start, stride=stride,
        )

    @property
    def info(self) -> SourceInfo:
        return self._info

    def _read(self, index: int) -> np.ndarray:
        """(H, W, 3) uint8 RGB of image ``index``; grey and 16-bit images are converted."""
        file = self.files[index]
        bgr = cv2.imread(str(file), cv2.IMREAD_COLOR)
        if bgr is None:
            raise FrameSourceError(f"{file}: image {index} of the folder cannot be read (corrupt or unsupported)")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def _native_frames(self, skip: int, warn: Warn) -> Iterator[tuple[int, np.ndarray]]:
        indices = range(self.start, len(self.files), self.stride)[: self._info.num_frames][skip:]
        for index in indices:
            image = self._read(index)
            if image.shape[:2] != (self._info.height, self._info.width):
                raise FrameSourceError(
                    f"{self.files[index]}: image is {image.shape[1]}x{image.shape[0]} but the folder's "
                    f"first image is {self._info.width}x{self._info.height}; all images must share one size"
                )
            yield index, image


def _check_int(path: Path, name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise FrameSourceError(f"{path}: {name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def open_source(path: str | Path, *, start: int = 0, stride: int = 1,
                max_frames: int | None = None) -> FrameSource:
    """Open a video file or image folder.

    Args:
        path: a video file (any container OpenCV reads) or a folder of images.
        start: first source frame index to yield (0-based).
        stride: yield every ``stride``-th frame from ``start``.
        max_frames: yield at most this many frames (None: all).

    Raises:
        FrameSourceError: bad arguments, or the input is missing, unreadable or empty.
    """
    path = Path(path)
    start = _check_int(path, "start", start, 0)
    stride = _check_int(path, "stride", stride, 1)
    max_frames = None if max_frames is None else _check_int(path, "max_frames", max_frames, 1)
    if not path.exists():
        raise FrameSourceError(f"{path}: no such file or folder")
    if path.is_dir():
        return ImageFolderSource(path, start, stride, max_frames)
    return VideoSource(path, start, stride, max_frames)
