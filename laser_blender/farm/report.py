"""What a farm run reports: per-shot results, ``OUT/farm.json``, progress lines and the summary table."""

from __future__ import annotations

import enum
import json
import sys
import time
from pathlib import Path
from typing import TextIO

from pydantic import BaseModel, ConfigDict, Field

from core.run.files import RunDirError, write_model
from core.run.rundir import RunDir

REPORT_NAME = "farm.json"


class ShotStatus(str, enum.Enum):
    """How a shot ended in this farm run; ``skipped``: it was already complete."""

    complete = "complete"
    skipped = "skipped"
    cancelled = "cancelled"
    failed = "failed"

    def __str__(self) -> str:
        return self.value


class ShotResult(BaseModel):
    """One shot's line in ``farm.json``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    input: str
    run_dir: str
    status: ShotStatus
    frames: int = Field(0, ge=0, description="frames registered in the run directory (earlier runs included)")
    seconds: float = Field(0.0, ge=0, description="wall time of this farm run's work on the shot")
    fps: float | None = Field(None, description="frames registered by this farm run per second")
    solve_error: float | None = Field(None, description=(
        "trajectory RMSE from the run's metrics.json (`laser-blender evaluate`), when there is one"))
    error: str | None = Field(None, description="why the shot failed")
    blend: str | None = Field(None, description="the .blend built from the run (--blend)")


class FarmReport(BaseModel):
    """``OUT/farm.json``."""

    model_config = ConfigDict(extra="forbid")

    address: str | None = Field(None, description="the Ray cluster (None: started locally)")
    split_windows: bool = False
    seconds: float = 0.0
    shots: list[ShotResult] = []

    @property
    def failed(self) -> list[ShotResult]:
        return [s for s in self.shots if s.status == ShotStatus.failed]


def solve_error(run: RunDir) -> float | None:
    """The run's trajectory RMSE from ``metrics.json`` when ``evaluate`` wrote one."""
    try:
        return float(json.loads(run.metrics_path.read_text())["ate"]["rmse"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def frames_on_disk(run: RunDir) -> int:
    """Frames registered in the run directory (0 when it holds no readable run)."""
    try:
        return run.read_manifest().frames_done if run.is_run() else 0
    except RunDirError:
        return 0


def shot_result(name: str, input: str, run: RunDir, status: ShotStatus, seconds: float, frames_before: int = 0,
                error: str | None = None, blend: str | None = None) -> ShotResult:
    """The result of a shot, its frame count read from ``run.json``."""
    frames = frames_on_disk(run)
    done_here = max(frames - frames_before, 0)
    fps = round(done_here / seconds, 3) if done_here and seconds > 0 else None
    return ShotResult(name=name, input=input, run_dir=str(run.root), status=status, frames=frames,
                      seconds=round(seconds, 3), fps=fps,
                      solve_error=solve_error(run), error=error, blend=blend)


def write_report(out: Path, report: FarmReport) -> Path:
    path = out / REPORT_NAME
    write_model(path, report)
    return path


def summary_table(report: FarmReport) -> str:
    """The end-of-run table: one row per shot, then the totals."""
    rows = [("shot", "status", "frames", "seconds", "fps", "error")]
    for s in report.shots:
        rows.append((s.name, str(s.status), str(s.frames), f"{s.seconds:.1f}",
                     f"{s.fps:.1f}" if s.fps is not None else "-", s.error or ""))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row[:5], widths)) + ("  " + row[5] if row[5] else "")
             for row in rows]
    counts = {status: sum(s.status == status for s in report.shots) for status in ShotStatus}
    lines.append(", ".join(f"{n} {status}" for status, n in counts.items() if n) + f" in {report.seconds:.1f} s")
    return "\n".join(line.rstrip() for line in lines)


class ProgressBoard:
    """Progress lines on stderr: one per shot as its frames advance (frames, fps, ETA), and the overall line.

    Lines, not a redrawn bar: several shots advance at once, possibly on other machines,
    and the output stays readable in a log. A shot's line is printed at most every
    ``interval`` seconds.
    """

    def __init__(self, names: list[str], interval: float = 1.0, stream: TextIO = sys.stderr):
        self.names = names
        self.interval = interval
        self.stream = stream
        self.frames = dict.fromkeys(names, 0)
        self.totals: dict[str, int | None] = dict.fromkeys(names)
        self.finished: dict[str, ShotStatus] = {}
        self._first: dict[str, tuple[float, int]] = {}
        self._printed: dict[str, float] = {}
        self._overall = 0.0

    def update(self, name: str, frames: int, total: int | None) -> None:
        """The shot has ``frames`` frames on disk of ``total`` (None: unknown)."""
        now = time.monotonic()
        self._first.setdefault(name, (now, frames))
        self.totals[name] = total
        if frames == self.frames[name] or now - self._printed.get(name, -1e9) < self.interval:
            self.frames[name] = max(self.frames[name], frames)
            return
        self.frames[name] = frames
        self._printed[name] = now
        t0, f0 = self._first[name]
        fps = (frames - f0) / (now - t0) if now > t0 else 0.0
        line = f"farm: {name}: {frames}/{total if total is not None else '?'} frames"
        if fps > 0:
            line += f", {fps:.1f} fps"
            if total:
                line += f", ETA {max(total - frames, 0) / fps:.0f} s"
        self._print(line)
        self._overall_line(now)

    def finish(self, result: ShotResult) -> None:
        self.finished[result.name] = result.status
        self.frames[result.name] = result.frames
        if self.totals[result.name] is None:
            self.totals[result.name] = result.frames
        detail = f": {result.error}" if result.error else ""
        self._print(f"farm: {result.name}: {result.status} ({result.frames} frames){detail}")
        self._overall_line(time.monotonic(), force=True)

    def _overall_line(self, now: float, force: bool = False) -> None:
        if not force and now - self._overall < self.interval:
            return
        self._overall = now
        frames = sum(self.frames.values())
        totals = [self.totals[n] for n in self.names]
        total = sum(totals) if all(t is not None for t in totals) else None
        share = f" ({100 * frames / total:.0f}%)" if total else ""
        self._print(f"farm: {len(self.finished)}/{len(self.names)} shots finished, "
                    f"{frames}/{total if total is not None else '?'} frames{share}")

    def _print(self, line: str) -> None:
        print(line, file=self.stream, flush=True)
