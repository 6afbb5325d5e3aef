"""The line protocol between the Blender add-on and the engine's worker process.

One JSON object per line, UTF-8, every object carrying the protocol version
``"v": 1`` and a ``type`` that selects its model:

* client -> worker, on the worker's stdin: the :class:`Job` (first line), then
  optionally :class:`Cancel` (the bare word ``cancel`` is accepted too);
* worker -> client, on the worker's stdout: ``started``, then ``window_done``
  and ``progress`` per window, each window announced earlier by ``predicting``
  when the network starts on it (inference runs ahead of registration, so
  ``predicting`` for window k+1 may come before ``window_done`` for window k),
  then exactly one terminal event, ``finished``,
  ``cancelled`` or ``error``; ``warning`` may come at any point (the weights'
  licence comes before ``started``). A resumed run's ``started`` counts the
  windows already on disk, for which no ``window_done`` is sent.

Both sides validate every line. :func:`decode` and :func:`decode_control` never
raise, whatever they are given (text, or bytes read as UTF-8 with undecodable bytes
replaced): a line that is longer than :data:`MAX_LINE_CHARS`, nests deeper than
:data:`MAX_NESTING`, is not JSON, speaks another version, names an unknown type or
fails validation becomes a :class:`ProtocolIssue` the reader can report. Paths in a
:class:`Job` are never empty and never hold a NUL byte.

This module ships inside Blender: it imports pydantic, the standard library and
the settings in ``core.run.settings`` (never torch or bpy).
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Annotated, ClassVar, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    FiniteFloat,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from core.run.manifest import RunStatus
from core.run.settings import BACKBONES, BackboneName, EngineSettings, NonNegative, StreamSettings

PROTOCOL_VERSION = 1
MAX_LINE_CHARS = 1 << 20
"""The longest line a reader parses (1 MiB; the longest real event is a few kB)."""
MAX_NESTING = 64
"""The deepest nesting of JSON arrays and objects a reader parses (real lines nest 3 deep)."""

Dtype = Literal["auto", "float32", "bfloat16", "float16"]


class Message(BaseModel):
    """Base of every line: strict fields and the protocol version."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1] = PROTOCOL_VERSION


# --------------------------------------------------------------------------- client -> worker

class Job(StreamSettings, Message):
    """One reconstruction: what the add-on, the CLI or a job file asks the worker to do.

    The streaming and registration fields (window, overlap, conf_keep, layer_align,
    focal_px, save_predictions and the nested ``layer`` parameters) are
    :class:`~core.run.settings.StreamSettings`'; the job's JSON stays flat apart from
    ``layer``, which may be left out. Paths are strings as the user gave them
    (absolute paths recommended: the worker may run in another working directory).
    """

    type: Literal["job"] = "job"
    input: str = Field(min_length=1, description="footage: a video file or a folder of images")
    run_dir: str = Field(min_length=1, description="run directory to write (or resume)")
    backbone: BackboneName = Field("pi3", description="the reconstruction network; its weights' licence: "
                                   + "; ".join(f"{name}: {info.licence}" for name, info in BACKBONES.items()))
    weights: str | None = Field(None, description="checkpoint file (.safetensors/.pt) or Hugging Face repo id; "
                                                  "default per backbone")
    synthetic_scene: str | None = Field(None, description="synthetic scene's ground-truth folder (backbone 'synthetic')")
    stride: int = Field(1, ge=1, description="use every N-th frame")
    start: int = Field(0, ge=0, description="first frame index")
    max_frames: int | None = Field(None, ge=1, description="stop after this many frames")
    focal_mm: FiniteFloat | None = Field(None, gt=0, description="known focal length in mm (needs the sensor width)")
    sensor_width_mm: FiniteFloat | None = Field(None, gt=0, description="camera sensor width in mm")
    device: str = Field("auto", description="'auto', 'cpu', 'cuda', 'cuda:1', ...")
    dtype: Dtype = Field("auto", description="network precision; 'auto': bfloat16/float16 autocast on CUDA, "
                                             "float32 on CPU")
    resume: bool = Field(False, description="continue a cancelled or crashed run from its last finished window")
    overwrite: bool = Field(False, description="replace the run already in the run directory (its windows, "
                                               "predictions and run.json are deleted first)")

    @field_validator("input", "run_dir", "weights", "synthetic_scene")
    @classmethod
    def _usable_path(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if not value:
            raise ValueError("must not be empty")
        if "\0" in value:
            raise ValueError(f"contains a NUL byte, which no path can hold: {value!r}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "Job":
        if self.focal_px is not None and self.focal_mm is not None:
            raise ValueError("give the focal length either in pixels (focal_px) or in mm (focal_mm), not both")
        if self.focal_mm is not None and self.sensor_width_mm is None:
            raise ValueError("focal_mm needs sensor_width_mm (the camera's sensor width in mm)")
        if self.zoom and self.focal_mm is not None:
            raise ValueError("zoom estimates a focal length per frame: it cannot take a known fixed focal_mm")
        if self.backbone == "synthetic" and not self.synthetic_scene:
            raise ValueError("backbone 'synthetic' needs synthetic_scene (the scene's ground-truth folder)")
        return self

    def engine_settings(self, footage_width: int) -> EngineSettings:
        """The engine's settings for this job on footage ``footage_width`` pixels wide.

        A focal length given in mm becomes footage pixels (``focal_mm / sensor_width_mm * width``).
        """
        values = {name: getattr(self, name) for name in StreamSettings.model_fields}
        if self.focal_mm is not None:
            values["focal_px"] = self.focal_mm / self.sensor_width_mm * footage_width
        return EngineSettings(**values)


class Cancel(Message):
    """Ask the worker to stop after the window in progress."""

    type: Literal["cancel"] = "cancel"


# --------------------------------------------------------------------------- worker -> client

class Started(Message):
    """The footage is open and the backbone loaded; frames are about to stream."""

    type: Literal["started"] = "started"
    run_dir: str
    total_frames: int | None = Field(None, ge=0, description="None when the source cannot tell")
    fps: NonNegative | None = None
    width: int = Field(ge=1, description="footage width in pixels")
    height: int = Field(ge=1)
    pred_width: int = Field(ge=1, description="network input (prediction) width")
    pred_height: int = Field(ge=1)
    backbone: str
    windows_done: int = Field(0, ge=0, description="windows already on disk when a resumed run starts; "
                                                   "no window_done event is sent for those")

    @property
    def resumed(self) -> bool:
        """True when earlier windows are already on disk (import them from the run directory)."""
        return self.windows_done > 0


class Predicting(Message):
    """The network started on a window; for a status line while a slow window runs."""

    type: Literal["predicting"] = "predicting"
    index: int = Field(ge=0)
    first_frame: int = Field(ge=0)
    last_frame: int = Field(ge=0)


class WindowDone(Message):
    """An aligned window is on disk (``path``, an ``aligned/wNNNNN.npz`` of the run)."""

    type: Literal["window_done"] = "window_done"
    index: int = Field(ge=0)
    frames: list[int]
    path: str


class Progress(Message):
    """Throughput so far."""

    type: Literal["progress"] = "progress"
    frames_done: int = Field(ge=0)
    total_frames: int | None = Field(None, ge=0)
    fps: NonNegative = Field(description="frames per second")
    eta_s: NonNegative | None = Field(None, description="seconds left; None when unknown")


class WarningEvent(Message):
    """Something the user should know that does not stop the run (e.g. the weights' licence)."""

    type: Literal["warning"] = "warning"
    message: str


class ErrorEvent(Message):
    """The run stopped on an error; ``message`` says what to do about it."""

    type: Literal["error"] = "error"
    status: ClassVar[RunStatus] = RunStatus.failed
    message: str
    log: str | None = Field(None, description="the worker's log file, when there is one")
    resumable: bool = Field(False, description="finished windows are kept and --resume continues")


class _RunEnd(Message):
    """What the run directory holds when the run ends: windows and frames on disk."""

    run_dir: str
    windows: int = Field(ge=0)
    frames: int = Field(ge=0)


class Finished(_RunEnd):
    """The run is complete."""

    type: Literal["finished"] = "finished"
    status: ClassVar[RunStatus] = RunStatus.complete
    seconds: NonNegative


class Cancelled(_RunEnd):
    """The run stopped on request after its current window; resumable."""

    type: Literal["cancelled"] = "cancelled"
    status: ClassVar[RunStatus] = RunStatus.cancelled


Event = Annotated[
    Union[Started, Predicting, WindowDone, Progress, WarningEvent, ErrorEvent, Finished, Cancelled],
    Field(discriminator="type"),
]
TERMINAL_TYPES = frozenset({"finished", "cancelled", "error"})


def is_terminal(event: object) -> bool:
    """True for the events that end a run (finished, cancelled, error)."""
    return getattr(event, "type", None) in TERMINAL_TYPES


class ProtocolIssue(BaseModel):
    """A line a reader could not accept; never sent, only produced by :func:`decode`."""

    model_config = ConfigDict(frozen=True)

    type: Literal["protocol_issue"] = "protocol_issue"
    line: str = Field(description="the offending line, shortened to 200 characters")
    reason: str

    def as_warning(self) -> WarningEvent:
        """The issue as a warning event, for readers that only show events."""
        return WarningEvent(message=f"ignored a malformed line from the worker ({self.reason}): {self.line!r}")


_EVENTS: TypeAdapter = TypeAdapter(Event)
_EVENT_TYPES = frozenset({"started", "predicting", "window_done", "progress", "warning", "error", "finished",
                          "cancelled"})


def encode(message: Message) -> str:
    """One protocol line for ``message``, without the trailing newline."""
    return message.model_dump_json()


def _printable(text: str, limit: int) -> str:
    """``text`` shortened to ``limit`` characters, lone surrogates escaped (an issue can always be sent on)."""
    if len(text) > limit:
        text = text[:limit] + "..."
    text = text.encode("utf-8", errors="backslashreplace").decode("utf-8")
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _issue(line: str, reason: str) -> ProtocolIssue:
    return ProtocolIssue(line=_printable(line, 200), reason=_printable(reason, 500))


_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_BRACKETS = re.compile(r"[^\[\]{}]+")
_DEPTH_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def _nesting(text: str) -> int:
    """An upper bound of how deep the JSON in ``text`` nests arrays and objects (brackets in strings skipped).

    Cheap for any input: no recursion, linear time, and no work at all for the usual
    line with fewer opening brackets than :data:`MAX_NESTING`.
    """
    openers = text.count("[") + text.count("{")
    if openers <= MAX_NESTING:
        return openers
    brackets = _BRACKETS.sub("", _JSON_STRING.sub("", text))
    return max(accumulate(map(_DEPTH_STEP.__getitem__, brackets)), default=0)


def _as_text(line: object) -> str | ProtocolIssue:
    """``line`` as text of at most :data:`MAX_LINE_CHARS`, or the issue with it."""
    if isinstance(line, (bytes, bytearray, memoryview)):
        data = bytes(line)
        if len(data) > MAX_LINE_CHARS:
            return _issue(data[:200].decode("utf-8", errors="replace"),
                          f"line too long ({len(data)} bytes; at most {MAX_LINE_CHARS})")
        line = data.decode("utf-8", errors="replace")
    if not isinstance(line, str):
        return _issue(repr(line)[:200], f"not a line of text: {type(line).__name__}")
    if len(line) > MAX_LINE_CHARS:
        return _issue(line[:200], f"line too long ({len(line)} characters; at most {MAX_LINE_CHARS})")
    return line


def _load_object(line: object) -> dict | ProtocolIssue:
    """The JSON object on ``line`` with a supported version, or the issue with it."""
    line = _as_text(line)
    if isinstance(line, ProtocolIssue):
        return line
    text = line.strip()
    if not text:
        return _issue(line, "empty line")
    if _nesting(text) > MAX_NESTING:
        return _issue(line, f"nested too deeply (more than {MAX_NESTING} levels of arrays and objects)")
    try:
        obj = json.loads(text)
    except ValueError as e:
        return _issue(line, f"not JSON: {e}")
    except RecursionError:
        return _issue(line, "nested too deeply")
    if not isinstance(obj, dict):
        return _issue(line, f"expected a JSON object, got {type(obj).__name__}")
    if obj.get("v") != PROTOCOL_VERSION:
        return _issue(line, f"protocol version {obj.get('v')!r}, this reader speaks {PROTOCOL_VERSION}")
    return obj


def _validation_reason(kind: str, e: ValidationError) -> str:
    parts = [f"{'.'.join(str(p) for p in err['loc']) or kind}: {err['msg']}" for err in e.errors()]
    return f"invalid {kind}: " + "; ".join(parts)


def _unreadable(line: object, e: BaseException) -> ProtocolIssue:
    """The issue for a line whose parsing failed unexpectedly (the last resort of the decoders)."""
    try:
        text = line if isinstance(line, str) else repr(line)
        return _issue(text[:200], f"unreadable line ({type(e).__name__})")
    except Exception:  # noqa: BLE001 - never raise
        return ProtocolIssue(line="", reason=f"unreadable line ({type(e).__name__})")


def decode(line: str | bytes) -> Event | ProtocolIssue:
    """Parse one worker -> client line; never raises (bytes are read as UTF-8, bad bytes replaced)."""
    try:
        line = _as_text(line)
        if isinstance(line, ProtocolIssue):
            return line
        obj = _load_object(line)
        if isinstance(obj, ProtocolIssue):
            return obj
        kind = obj.get("type")
        if not isinstance(kind, str) or kind not in _EVENT_TYPES:
            return _issue(line, f"unknown event type {kind!r}")
        try:
            return _EVENTS.validate_python(obj)
        except ValidationError as e:
            return _issue(line, _validation_reason(f"{kind} event", e))
    except Exception as e:  # noqa: BLE001 - documented never to raise; RecursionError, MemoryError included
        return _unreadable(line, e)


def decode_control(line: str | bytes) -> Cancel | ProtocolIssue:
    """Parse one client -> worker line after the job; never raises (bytes as for :func:`decode`)."""
    try:
        text = _as_text(line)
        if isinstance(text, ProtocolIssue):
            return text
        if text.strip() == "cancel":
            return Cancel()
        obj = _load_object(text)
        if isinstance(obj, ProtocolIssue):
            return obj
        if obj.get("type") != "cancel":
            return _issue(text, f"unknown control message type {obj.get('type')!r}")
        try:
            return Cancel.model_validate(obj)
        except ValidationError as e:
            return _issue(text, _validation_reason("cancel message", e))
    except Exception as e:  # noqa: BLE001 - documented never to raise
        return _unreadable(line, e)


def parse_job(text: str) -> Job:
    """The job in ``text``: one JSON object, possibly spread over lines (a job file).

    ``"v"`` and ``"type"`` may be left out of hand-written job files.

    Raises:
        ValueError: naming every problem, when ``text`` is not a valid job.
    """
    if _nesting(text) > MAX_NESTING:
        raise ValueError(f"not a laser-blender job: nested too deeply (more than {MAX_NESTING} levels)")
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise ValueError(f"not a laser-blender job: not JSON: {e}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"not a laser-blender job: expected a JSON object, got {type(obj).__name__}")
    obj = {"v": PROTOCOL_VERSION, "type": "job", **obj}
    if obj["v"] != PROTOCOL_VERSION:
        raise ValueError(f"job uses protocol version {obj['v']!r}, this worker speaks {PROTOCOL_VERSION}")
    if obj["type"] != "job":
        raise ValueError(f"not a laser-blender job: type is {obj['type']!r}")
    try:
        return Job.model_validate(obj)
    except ValidationError as e:
        raise ValueError(_validation_reason("job", e)) from None


class SelfCheck(BaseModel):
    """What ``python -m laser_blender.selfcheck`` found in an engine Python (the add-on shows it)."""

    version: str               # laser-blender's version in that Python
    ok: bool
    torch: str | None = None   # torch.__version__ ("2.13.0+cpu", ...)
    device: str | None = None  # what device "auto" resolved to
    error: str | None = None   # why it failed (one line)
