"""Run the engine's worker process and read its events (the add-on's side of the protocol).

Used inside Blender: imports neither torch, numpy nor bpy. A reader thread parses
the worker's stdout into a queue and never touches bpy; the add-on drains it with
:meth:`WorkerClient.poll` from the main thread (a timer, or a loop in background
mode)::

    client = WorkerClient(job, python=find_engine_python())
    client.start()
    while True:
        for event in client.poll(timeout=0.1):
            ...                     # import windows, show progress
        if client.done:
            break
    client.close()
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Mapping
from pathlib import Path

from core.run.rundir import RunDir
from laser_blender.protocol import (
    Cancel,
    ErrorEvent,
    Event,
    Job,
    ProtocolIssue,
    decode,
    encode,
    is_terminal,
)

ENV_PYTHON = "LASER_BLENDER_PYTHON"
STDERR_TAIL_LINES = 50


class WorkerError(RuntimeError):
    """The worker process could not be started."""


def describe_exit(returncode: int) -> str:
    """'exit code 1' or 'killed by signal SIGKILL' for a Popen return code."""
    if returncode < 0:
        try:
            return f"killed by signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


class WorkerClient:
    """One worker process running one job.

    Args:
        job: what to reconstruct.
        python: the engine's Python interpreter (with torch and laser-blender installed).
        env: environment for the worker (default: this process's).
        cancel_grace_s: after :meth:`cancel`, how long the worker may take to finish
            its current window before it is sent SIGTERM.
    """

    def __init__(self, job: Job, python: str = sys.executable, env: Mapping[str, str] | None = None,
                 cancel_grace_s: float = 30.0):
        self.job = job
        self.python = python
        self.env = dict(env) if env is not None else None
        self.cancel_grace_s = cancel_grace_s
        self._proc: subprocess.Popen | None = None
        self._events: queue.Queue[Event] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
        self._terminal: Event | None = None
        self._drained_terminal = False
        self._escalation: threading.Timer | None = None

    # ------------------------------------------------------------------ state

    @property
    def log_path(self) -> Path:
        """The worker's log file in the run directory."""
        return RunDir(self.job.run_dir).log_path

    @property
    def alive(self) -> bool:
        """True while the worker process runs."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """The worker's process id once started."""
        return None if self._proc is None else self._proc.pid

    @property
    def returncode(self) -> int | None:
        """The worker's exit status (negative: killed by that signal); None while it runs."""
        return None if self._proc is None else self._proc.poll()

    @property
    def done(self) -> bool:
        """True once :meth:`poll` has returned the run's terminal event (finished, cancelled or error)."""
        return self._drained_terminal

    def stderr_tail(self) -> str:
        """The last lines the worker wrote to stderr."""
        return "\n".join(self._stderr_tail)

    # ------------------------------------------------------------------ control

    def start(self) -> None:
        """Spawn ``python -m laser_blender.worker -`` and send it the job on stdin.

        Raises:
            WorkerError: the interpreter cannot be run.
        """
        if self._proc is not None:
            raise WorkerError("this worker was already started; make a new WorkerClient per run")
        try:
            self._proc = subprocess.Popen(
                [self.python, "-m", "laser_blender.worker", "-"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                env=self.env,
            )
        except OSError as e:
            raise WorkerError(f"cannot run the engine's Python {self.python!r}: {e}. "
                              "Set the engine's Python in the add-on preferences "
                              f"(or the {ENV_PYTHON} environment variable).") from None
        self._send(encode(self.job))
        # stderr first: the stdout reader joins it before quoting the stderr tail.
        self._threads = [
            threading.Thread(target=self._read_stderr, name="laser-worker-stderr", daemon=True),
            threading.Thread(target=self._read_stdout, name="laser-worker-stdout", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def poll(self, timeout: float = 0.0) -> list[Event]:
        """Events received since the last call, oldest first.

        Waits up to ``timeout`` seconds for the first one (0: never blocks).
        Malformed lines arrive as warnings; an exit without a terminal event as an error.
        """
        events: list[Event] = []
        try:
            events.append(self._events.get(timeout=timeout) if timeout > 0 else self._events.get_nowait())
            while True:
                events.append(self._events.get_nowait())
        except queue.Empty:
            pass
        if any(is_terminal(e) for e in events):
            self._drained_terminal = True
        return events

    def cancel(self) -> None:
        """Ask the worker to stop after its current window; SIGTERM after ``cancel_grace_s``.

        Both end the same way: the window in progress is finished, run.json is
        marked cancelled and a ``cancelled`` event is sent. Calling it again does nothing.
        """
        if not self.alive or self._escalation is not None:
            return
        self._send(encode(Cancel()))
        self._escalation = threading.Timer(self.cancel_grace_s, self._terminate)
        self._escalation.daemon = True
        self._escalation.start()

    def close(self, timeout: float = 30.0) -> int | None:
        """Stop and reap the worker, join the reader threads; returns the exit status.

        A worker still running is cancelled, given ``timeout`` seconds, then killed
        (its finished windows stay on disk and a later run can resume).
        """
        if self._proc is None:
            return None
        if self.alive:
            self.cancel()
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._escalation is not None:
            self._escalation.cancel()
        for thread in self._threads:
            thread.join()
        if self._proc.stdin:
            try:
                self._proc.stdin.close()
            except OSError:
                pass
        return self._proc.returncode

    # ------------------------------------------------------------------ internals

    def _send(self, line: str) -> None:
        try:
            self._proc.stdin.write((line + "\n").encode())
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            pass  # the worker is gone: its exit is reported by the reader thread

    def _terminate(self) -> None:
        if self.alive:
            self._proc.send_signal(signal.SIGTERM)

    def _read_stdout(self) -> None:
        for raw in self._proc.stdout:
            message = decode(raw.decode("utf-8", errors="replace"))
            if isinstance(message, ProtocolIssue):
                message = message.as_warning()
            elif is_terminal(message) and self._terminal is None:
                self._terminal = message
            self._events.put(message)
        self._proc.stdout.close()
        returncode = self._proc.wait()
        self._threads[0].join()  # the stderr reader: its tail is complete before it is quoted
        if self._terminal is None:
            self._events.put(self._unexpected_exit(returncode))

    def _read_stderr(self) -> None:
        for raw in self._proc.stderr:
            self._stderr_tail.append(raw.decode("utf-8", errors="replace").rstrip())
        self._proc.stderr.close()

    def _unexpected_exit(self, returncode: int) -> ErrorEvent:
        run_dir = Path(self.job.run_dir)
        resumable = bool(RunDir(run_dir).aligned_windows())
        parts = [f"The engine worker exited unexpectedly ({describe_exit(returncode)})."]
        last = next((line for line in reversed(self._stderr_tail) if line.strip()), None)
        if last:
            parts.append(f"Its last output: {last}")
        log = self.log_path if self.log_path.exists() else None
        if log:
            parts.append(f"Log: {log}.")
        if resumable:
            parts.append(f"Every finished window is kept in {run_dir}; Resume (or the worker's "
                         "--resume flag) continues from the last finished window.")
        return ErrorEvent(message=" ".join(parts), log=str(log) if log else None, resumable=resumable)


# --------------------------------------------------------------------------- engine discovery

def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _script_interpreter(script: Path) -> Path | None:
    """The interpreter of a console script: its shebang, else the ``python`` beside it."""
    try:
        with open(script, "rb") as f:
            first = f.readline(4096)
    except OSError:
        return None
    if first.startswith(b"#!"):
        candidate = Path(first[2:].decode(errors="replace").strip().split()[0])
        if _is_executable(candidate):
            return candidate
    sibling = script.parent / ("python.exe" if os.name == "nt" else "python")
    return sibling if _is_executable(sibling) else None


def find_engine_python() -> str | None:
    """Auto-detect the engine's Python for the add-on's preferences.

    In order: the ``LASER_BLENDER_PYTHON`` environment variable; the ``.venv`` of
    the repository this ``laser_blender`` is installed from (a development
    checkout); the interpreter of ``laser-blender`` on PATH. None if none is found.
    """
    env = os.environ.get(ENV_PYTHON)
    if env and _is_executable(Path(env)):
        return env
    repo_venv = _venv_python(Path(__file__).resolve().parents[1] / ".venv")
    if _is_executable(repo_venv):
        return str(repo_venv)
    import shutil

    script = shutil.which("laser-blender")
    if script:
        interpreter = _script_interpreter(Path(script))
        if interpreter:
            return str(interpreter)
    return None


def probe_engine_python(python: str, timeout: float = 120.0) -> str | None:
    """None if ``python`` can run the worker (imports torch and laser_blender), else why not."""
    try:
        result = subprocess.run(
            [python, "-c", "import torch, laser_blender.worker"],
            capture_output=True, text=True, timeout=timeout,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"cannot run {python!r}: {e}"
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        return f"{python} cannot run the engine: {lines[-1] if lines else describe_exit(result.returncode)}"
    return None
