"""How a run ends, in the one vocabulary of the CLI, the worker and the add-on.

Exit codes (every command and the worker process):

====  ==============  ===============================================================
code  name            meaning
====  ==============  ===============================================================
0     OK              finished: the run (or command) is complete
1     INTERNAL_ERROR  a bug: the message says so and names the log with the traceback
2     USER_ERROR      bad input, options, job, weights, device or path: the one-line
                      message names the file or option and what to do
130   CANCELLED       cancelled (Ctrl-C, SIGTERM, a ``cancel`` line): finished windows
                      are kept and ``--resume`` continues
====  ==============  ===============================================================

Imports the standard library and ``core.run`` only: it ships inside Blender.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from core.run.manifest import RunStatus


class ExitCode(enum.IntEnum):
    OK = 0
    INTERNAL_ERROR = 1
    USER_ERROR = 2
    CANCELLED = 130


@dataclass(frozen=True)
class Outcome:
    """The result of running one job.

    Attributes:
        status: complete, cancelled or failed.
        windows: windows on disk (earlier runs of a resumed run included).
        frames: frames on disk.
        seconds: wall time of this run.
        error: what to tell the user when it failed (one line).
        internal: the failure is a bug, not the user's input (exit code 1).
        resumable: finished windows are on disk and ``--resume`` continues.
    """

    status: RunStatus
    windows: int = 0
    frames: int = 0
    seconds: float = 0.0
    error: str | None = None
    internal: bool = False
    resumable: bool = False

    @property
    def exit_code(self) -> ExitCode:
        if self.status == RunStatus.complete:
            return ExitCode.OK
        if self.status == RunStatus.cancelled:
            return ExitCode.CANCELLED
        return ExitCode.INTERNAL_ERROR if self.internal else ExitCode.USER_ERROR
