"""Apply a worker's events to a Blender scene: the per-event import logic, no event loop.

A :class:`ImportSession` owns one :class:`~laser_blender.client.WorkerClient`.
Its :meth:`~ImportSession.tick` drains the events the client's reader thread has
queued and applies them on the calling (main) thread: ``started`` opens the run's
collection, each ``window_done`` adds that window's camera keys and points at
once, ``finished`` re-applies the scene transform the completed run now has, ``progress`` updates the numbers a panel shows, ``error`` keeps everything
already imported and records a message the user can act on.

Where it runs:

* the add-on's modal operator calls :meth:`tick` from its timer;
* background mode (``blender -b``, the bpy module, tests) loops with
  :meth:`run_to_end`, since neither has an event loop that fires timers.

Either way, :meth:`close` joins the client's threads before Blender exits (the bpy
module deadlocks at exit with a thread alive).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from core.run.files import RunDirError
from core.run.manifest import RunStatus
from core.run.rundir import RunDir
from laser_blender.client import WorkerClient
from laser_blender.protocol import (
    Cancelled,
    ErrorEvent,
    Finished,
    Predicting,
    Progress,
    Started,
    WarningEvent,
    WindowDone,
)
from laser_blender.scene import RunScene, SceneOptions

if TYPE_CHECKING:  # pragma: no cover
    import bpy

log = logging.getLogger(__name__)

Reporter = Callable[[str, str], None]  # (level: 'INFO' | 'WARNING' | 'ERROR', message)


def log_report(level: str, message: str) -> None:
    """Default reporter: the logging module."""
    log.log({"INFO": logging.INFO, "WARNING": logging.WARNING}.get(level, logging.ERROR), message)


@dataclass
class SessionState:
    """What a panel shows about a running reconstruction."""

    status: RunStatus | None = None  # None until the worker has started
    frames_done: int = 0
    total_frames: int | None = None
    fps: float = 0.0
    eta_s: float | None = None
    windows: list[int] = field(default_factory=list)
    points: int = 0
    last_error: str | None = None
    warnings: list[str] = field(default_factory=list)
    stage: str = ""  # what the worker is doing now, e.g. "predicting window 3 (frames 60-89)"

    @property
    def running(self) -> bool:
        return self.status in (None, RunStatus.running)

    @property
    def status_text(self) -> str:
        return "starting" if self.status is None else self.status.value

    @property
    def fraction(self) -> float:
        """Share of frames done, 0..1 (0 while the length is unknown)."""
        return min(self.frames_done / self.total_frames, 1.0) if self.total_frames else 0.0

    def progress_text(self) -> str:
        """'42/120 frames, 3.1 frames/s, ETA 25 s' (as much as is known)."""
        total = f"/{self.total_frames}" if self.total_frames else ""
        text = f"{self.frames_done}{total} frames, {self.fps:.1f} frames/s"
        text += f", ETA {self.eta_s:.0f} s" if self.eta_s is not None else ""
        return text + (f"; {self.stage}" if self.stage else "")


class ImportSession:
    """Streams one worker run into ``scene``.

    Args:
        scene: the Blender scene to build in.
        client: a started (or startable) worker client; its job names the run directory.
        options: scene-building options (point budget, confidence percentile, ...).
        report: called with (level, message) for what the user should see.
    """

    def __init__(self, scene: "bpy.types.Scene", client: WorkerClient, options: SceneOptions | None = None,
                 report: Reporter = log_report):
        self.scene = scene
        self.client = client
        self.options = options or SceneOptions()
        self.report = report
        self.state = SessionState()
        self.run: RunScene | None = None

    @property
    def run_dir(self) -> Path:
        return Path(self.client.job.run_dir)

    def start(self) -> "ImportSession":
        """Start the worker (raises ``laser_blender.client.WorkerError`` if it cannot run)."""
        self.client.start()
        return self

    def tick(self, timeout: float = 0.0) -> bool:
        """Apply the events received so far; True while the run goes on.

        Waits up to ``timeout`` seconds for the first event (0: never blocks, for UI timers).
        """
        if not self.state.running:
            return False
        for event in self.client.poll(timeout):
            self.apply(event)
        return self.state.running

    def run_to_end(self, poll_s: float = 0.2) -> SessionState:
        """Background mode: tick until the run ends, then close the worker."""
        try:
            while self.tick(poll_s):
                pass
        finally:
            self.close()
        return self.state

    def cancel(self) -> None:
        """Ask the worker to stop after its current window (the run stays resumable)."""
        self.client.cancel()

    def close(self, timeout: float = 30.0) -> None:
        """Stop the worker if it still runs and join its reader threads."""
        self.client.close(timeout)

    # ---------------------------------------------------------------- events

    def apply(self, event) -> None:
        """Apply one event to the scene and the state; never raises.

        A window that cannot be imported (unreadable file, malformed run) ends the
        session with an error naming it, and the worker is asked to stop.
        """
        try:
            self._apply(event)
        except (RunDirError, OSError, ValueError) as e:
            self.state.status = RunStatus.failed
            self.state.last_error = f"Cannot import the run {self.run_dir} into Blender: {e}"
            self.report("ERROR", self.state.last_error)
            self.client.cancel()

    def _apply(self, event) -> None:
        state = self.state
        if isinstance(event, Started):
            state.status = RunStatus.running
            state.total_frames = event.total_frames
            if self.options.frame_count is None and event.total_frames:
                self.options.frame_count = event.total_frames
            self._open_run()
            if event.resumed:
                self._catch_up()
            self.report("INFO", f"Reconstructing {event.total_frames or '?'} frames "
                                f"({event.width}x{event.height}, {event.backbone})")
        elif isinstance(event, Predicting):
            state.stage = f"predicting window {event.index} (frames {event.first_frame}-{event.last_frame})"
        elif isinstance(event, WindowDone):
            run = self._open_run()
            run.add_window_file(Path(event.path))
            state.windows = sorted(run.windows)
            state.points = run.points
        elif isinstance(event, Progress):
            state.frames_done, state.fps, state.eta_s = event.frames_done, event.fps, event.eta_s
            state.total_frames = event.total_frames or state.total_frames
        elif isinstance(event, WarningEvent):
            state.warnings.append(event.message)
            self.report("WARNING", event.message)
        elif isinstance(event, ErrorEvent):
            state.status, state.last_error = event.status, event.message
            self._catch_up()
            self.report("ERROR", event.message)
        elif isinstance(event, (Finished, Cancelled)):
            state.status = event.status
            self._catch_up()
            if self.run is not None:  # a completed run has its orientation (scene.json) now
                self.run.apply_scene_transform()
            self.report("INFO", f"Reconstruction {event.status}: {event.windows} windows, {event.frames} frames, "
                                f"{state.points} points imported")

    def _open_run(self) -> RunScene:
        if self.run is None:
            self.run = RunScene.open(self.scene, self.run_dir, self.options)
        return self.run

    def _catch_up(self) -> None:
        """Import windows on disk that no event announced (a resumed run's earlier windows)."""
        if RunDir(self.run_dir).aligned_windows():
            run = self._open_run()
            run.sync()
            self.state.windows = sorted(run.windows)
            self.state.points = run.points

