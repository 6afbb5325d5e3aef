"""Reading run directories in tests: run.json as the raw JSON a user's tool would see."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from core.run.arrays import AlignedWindow
from core.run.rundir import RunDir


def read_run(run_dir: Path) -> dict[str, Any]:
    """run.json as plain JSON (the on-disk contract, not the model)."""
    return json.loads(RunDir(run_dir).manifest_path.read_text())


def iter_aligned(run_dir: Path) -> Iterator[AlignedWindow]:
    return RunDir(run_dir).iter_aligned()
