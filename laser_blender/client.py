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

The add-on never waits forever, whatever the worker does. Every stream ends with
exactly one terminal event (``finished``, ``cancelled`` or ``error``) and nothing
after it is delivered; :meth:`WorkerClient.poll` never raises:

* a malformed line (not JSON, another version, longer than
  :data:`~laser_blender.protocol.MAX_LINE_CHARS`, nested deeper than
  :data:`~laser_blender.protocol.MAX_NESTING`, binary) is a ``warning`` (the first
  :data:`MAX_REPORTED_ISSUES` of them; the rest are dropped);
* the worker exits without a terminal event (a crash, a SIGKILL): an ``error``
  naming its exit status, its last stderr line and its log;
* **it stops talking**: its stdout ends while the process keeps running. After
  ``eof_grace_s`` an ``error`` says so; the worker is stopped first (SIGTERM, then
  SIGKILL after ``kill_grace_s``) and the message says how;
* **it stalls**: no line at all for ``stall_timeout_s`` (default 30 minutes: a window
  on the CPU can take minutes; every line resets it, and the worker sends
  ``predicting`` when a window starts and ``progress`` when it is done). The worker is
  stopped the same way, then an ``error`` names the stall and the log;
* it exits but its stdout stays open (a process it started holds it): an ``error``
  after ``eof_grace_s`` without output;
* any failure of the client's own reader threads: an ``error`` saying so, the worker
  stopped as above.

When an ``error`` of the client's own ends the stream the worker is already gone
(up to ``kill_grace_s`` plus a few seconds after the cause); finished windows stay on
disk and a later run can resume.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path

from core.run.rundir import RunDir
from laser_blender.protocol import (
    MAX_LINE_CHARS,
    Cancel,
    ErrorEvent,
    Event,
    Job,
    ProtocolIssue,
    WarningEvent,
    decode,
    encode,
    is_terminal,
)

ENV_PYTHON = "LASER_BLENDER_PYTHON"
STDERR_TAIL_LINES = 50
STDERR_LINE_BYTES = 2000      # longer stderr lines are kept in pieces
MAX_REPORTED_ISSUES = 100     # malformed lines reported as warnings; later ones are dropped
KILL_WAIT_S = 5.0             # how long a SIGKILLed process may take to be reaped
JOIN_S = 2.0                  # how long close() waits for the reader threads

log = logging.getLogger(__name__)


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


def _duration(seconds: float) -> str:
    if seconds >= 120:
        return f"{seconds / 60:g} minutes"
    return f"{seconds:g} s"


class WorkerClient:
    """One worker process running one job.

    Args:
        job: what to reconstruct.
        python: the engine's Python interpreter (with torch and laser-blender installed).
        env: environment for the worker (default: this process's).
        cancel_grace_s: after :meth:`cancel`, how long the worker may take to finish
            its current window before it is sent SIGTERM.
        stall_timeout_s: a worker that sends no line at all for this long is stalled:
            it is stopped and the stream ends with an error naming the stall and the log.
            Every line resets it (``predicting`` starts each window, ``progress`` ends it),
            so it must exceed the slowest window (minutes on a CPU).
        eof_grace_s: a worker whose stdout ended but which still runs after this long
            has stopped talking: it is stopped and the stream ends with an error saying so.
            Also how long a worker that exited may keep its stdout open (through a
            process it started) before the exit is reported.
        kill_grace_s: when the client stops a worker (stall, stopped talking, a failure
            of the client's reader), how long after SIGTERM it sends SIGKILL.
    """

    def __init__(self, job: Job, python: str = sys.executable, env: Mapping[str, str] | None = None,
                 cancel_grace_s: float = 30.0, stall_timeout_s: float = 1800.0, eof_grace_s: float = 5.0,
                 kill_grace_s: float = 10.0):
        self.job = job
        self.python = python
        self.env = dict(env) if env is not None else None
        self.cancel_grace_s = cancel_grace_s
        self.stall_timeout_s = stall_timeout_s
        self.eof_grace_s = eof_grace_s
        self.kill_grace_s = kill_grace_s
        self._proc: subprocess.Popen | None = None
        self._events: queue.Queue[Event] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._stderr_thread: threading.Thread | None = None
        self._stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
        self._lock = threading.Lock()
        self._ender: str | None = None  # what ends the stream: "worker" (its terminal event) or the client's reason
        self._ended = threading.Event()  # the stream's terminal event is queued
        self._drained_terminal = False
        self._escalation: threading.Timer | None = None
        self._closed = False
        self._last_line = time.monotonic()
        self._stdout_eof = False
        self._issues = 0

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
        except (OSError, ValueError) as e:
            raise WorkerError(f"cannot run the engine's Python {self.python!r}: {e}. "
                              "Set the engine's Python in the add-on preferences "
                              f"(or the {ENV_PYTHON} environment variable).") from None
        self._last_line = time.monotonic()
        self._send(encode(self.job))
        self._stderr_thread = threading.Thread(target=self._read_stderr, name="laser-worker-stderr", daemon=True)
        self._threads = [
            self._stderr_thread,
            threading.Thread(target=self._read_stdout, name="laser-worker-stdout", daemon=True),
            threading.Thread(target=self._watch, name="laser-worker-watchdog", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def poll(self, timeout: float = 0.0) -> list[Event]:
        """Events received since the last call, oldest first; never raises.

        Waits up to ``timeout`` seconds for the first one (0: never blocks).
        Malformed lines arrive as warnings; an exit without a terminal event, a
        worker that stopped talking or stalled, as an error. The terminal event is
        the last one ever returned.
        """
        events: list[Event] = []
        if self._drained_terminal:
            return events
        try:
            wait = float(timeout)
            if wait > 0:
                events.append(self._events.get(timeout=min(wait, threading.TIMEOUT_MAX)))
            else:
                events.append(self._events.get_nowait())
            while True:
                events.append(self._events.get_nowait())
        except queue.Empty:
            pass
        except Exception:  # noqa: BLE001 - a bad timeout, say: never raise into Blender's timer
            log.exception("polling the worker's events failed")
        for i, event in enumerate(events):
            if is_terminal(event):
                self._drained_terminal = True
                return events[:i + 1]
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
        (its finished windows stay on disk and a later run can resume). None if the
        worker could not be reaped.
        """
        if self._proc is None:
            return None
        self._closed = True
        if self.alive:
            self.cancel()
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                try:
                    self._proc.wait(KILL_WAIT_S)
                except subprocess.TimeoutExpired:
                    pass
        if self._escalation is not None:
            self._escalation.cancel()
        deadline = time.monotonic() + JOIN_S
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))
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
        try:
            if self.alive:
                self._proc.send_signal(signal.SIGTERM)
        except OSError:
            pass  # it just exited

    def _claim(self, ender: str) -> bool:
        """Become the one who ends the stream; False if someone already is."""
        with self._lock:
            if self._ender is not None:
                return False
            self._ender = ender
            return True

    def _end(self, event: Event) -> None:
        """Queue the stream's terminal event (after a successful :meth:`_claim`)."""
        self._events.put(event)
        self._ended.set()

    def _deliver(self, message: Event | ProtocolIssue) -> None:
        """Queue one line's event; the worker's terminal event ends the stream, later lines are dropped."""
        if isinstance(message, ProtocolIssue):
            self._issues += 1
            if self._issues > MAX_REPORTED_ISSUES + 1:
                return
            if self._issues > MAX_REPORTED_ISSUES:
                message = WarningEvent(message=f"the worker sent more than {MAX_REPORTED_ISSUES} malformed "
                                               "lines; later ones are not reported")
            else:
                message = message.as_warning()
        elif is_terminal(message):
            if self._claim("worker"):
                self._end(message)
            return
        if not self._ended.is_set():
            self._events.put(message)

    def _read_stdout(self) -> None:
        try:
            self._pump_stdout()
        except BaseException as e:  # noqa: BLE001 - whatever happens, the stream ends with an event
            self._fail("reading", e)

    def _pump_stdout(self) -> None:
        stream = self._proc.stdout
        while True:
            raw = stream.readline(MAX_LINE_CHARS + 1)
            if not raw:
                break
            self._last_line = time.monotonic()
            if len(raw) > MAX_LINE_CHARS and not raw.endswith(b"\n"):  # skip the rest of a huge line
                head, size = raw[:200], len(raw)
                while raw and not raw.endswith(b"\n"):
                    raw = stream.readline(1 << 16)
                    size += len(raw)
                    self._last_line = time.monotonic()
                self._deliver(ProtocolIssue(line=head.decode("utf-8", errors="replace"),
                                            reason=f"line too long ({size} bytes; at most {MAX_LINE_CHARS})"))
                continue
            self._deliver(decode(raw.rstrip(b"\r\n")))
        self._stdout_eof = True
        stream.close()
        if self._ender is not None:
            return  # the worker said how the run ended, or a watchdog is ending the stream
        try:
            returncode = self._proc.wait(timeout=self.eof_grace_s)
        except subprocess.TimeoutExpired:
            if self._claim("stopped talking"):
                how = self._stop_worker()
                self._end(self._error_event(
                    f"The engine worker stopped talking: it closed its output but was still running "
                    f"{_duration(self.eof_grace_s)} later, so it {how}."))
            return
        if self._stderr_thread is not None:
            self._stderr_thread.join(self.eof_grace_s)  # its tail is complete before it is quoted
        if self._claim("exit"):
            self._end(self._unexpected_exit(returncode))

    def _watch(self) -> None:
        """The watchdog: a stalled worker, or one that exited while its stdout stays open."""
        try:
            interval = max(0.02, min(1.0, self.stall_timeout_s / 10, self.eof_grace_s / 2))
            exited_at: float | None = None
            while not self._ended.wait(interval) and not self._closed:
                if self._ender is not None:
                    continue  # someone is ending the stream
                now = time.monotonic()
                returncode = self._proc.poll()
                if returncode is not None and not self._stdout_eof:
                    exited_at = exited_at or now
                    if now - max(exited_at, self._last_line) >= self.eof_grace_s and self._claim("exit"):
                        self._end(self._unexpected_exit(returncode, " (its output was left open, by a process "
                                                                    "it started perhaps)"))
                        return
                elif now - self._last_line >= self.stall_timeout_s and self._claim("stall"):
                    how = self._stop_worker()
                    self._end(self._error_event(
                        f"The engine worker stalled: it sent nothing for {_duration(self.stall_timeout_s)} "
                        f"(the client's stall_timeout_s), so it {how}."))
                    return
        except BaseException as e:  # noqa: BLE001 - whatever happens, the stream ends with an event
            self._fail("watching", e)

    def _fail(self, doing: str, error: BaseException) -> None:
        """A reader or the watchdog failed: stop the worker and end the stream with an error."""
        try:
            log.error("%s the worker's output failed", doing, exc_info=error)
        except Exception:  # noqa: BLE001
            pass
        if self._claim("failure"):
            how = self._stop_worker()
            self._end(self._error_event(
                f"The add-on failed while {doing} the engine worker's output "
                f"({type(error).__name__}: {error}), so the worker {how}."))

    def _stop_worker(self) -> str:
        """SIGTERM, then SIGKILL after ``kill_grace_s``; says how it went ("was stopped (SIGTERM)"); never raises."""
        proc = self._proc
        try:
            if proc.poll() is not None:
                return f"had already ended ({describe_exit(proc.returncode)})"
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(self.kill_grace_s)
                return "was stopped (SIGTERM)"
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(KILL_WAIT_S)
                return f"was killed (SIGKILL, {_duration(self.kill_grace_s)} after SIGTERM)"
        except Exception as e:  # noqa: BLE001 - a process that cannot be stopped is reported, not raised
            return f"could not be stopped ({e}; process id {proc.pid})"

    def _read_stderr(self) -> None:
        stream = self._proc.stderr
        try:
            while True:
                raw = stream.readline(STDERR_LINE_BYTES)
                if not raw:
                    break
                self._stderr_tail.append(raw.decode("utf-8", errors="replace").rstrip())
        except BaseException as e:  # noqa: BLE001 - keep draining, or the worker blocks on a full pipe
            self._stderr_tail.append(f"(the add-on stopped reading the worker's stderr: {type(e).__name__}: {e})")
            try:
                while stream.read(1 << 16):
                    pass
            except BaseException:  # noqa: BLE001
                pass
        try:
            stream.close()
        except BaseException:  # noqa: BLE001
            pass

    def _unexpected_exit(self, returncode: int, detail: str = "") -> ErrorEvent:
        silent = " without saying how the run ended" if returncode == 0 else ""
        return self._error_event(
            f"The engine worker exited unexpectedly ({describe_exit(returncode)}){silent}{detail}.")

    def _error_event(self, headline: str) -> ErrorEvent:
        """``headline`` with the worker's last stderr line, its log and whether the run can resume; never raises."""
        try:
            parts = [headline]
            last = next((line for line in reversed(self._stderr_tail) if line.strip()), None)
            if last:
                parts.append(f"Its last output: {last}")
            try:
                log_file = self.log_path if self.log_path.exists() else None
            except (OSError, ValueError):
                log_file = None
            if log_file:
                parts.append(f"Log: {log_file}.")
            run_dir = Path(self.job.run_dir)
            try:
                resumable = bool(RunDir(run_dir).aligned_windows())
            except Exception:  # noqa: BLE001 - an unreadable run directory is not resumable
                resumable = False
            if resumable:
                parts.append(f"Every finished window is kept in {run_dir}; Resume (or the worker's "
                             "--resume flag) continues from the last finished window.")
            return ErrorEvent(message=" ".join(parts), log=str(log_file) if log_file else None, resumable=resumable)
        except Exception:  # noqa: BLE001
            return ErrorEvent(message=headline)


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
