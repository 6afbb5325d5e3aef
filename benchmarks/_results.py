"""Where the benchmarks put their figures: indented JSON, conventionally under benchmarks/results/."""

from __future__ import annotations

import json
from pathlib import Path


def save_results(results: dict, path: Path | None) -> None:
    """Write ``results`` to ``path`` (when given) as indented JSON and say where."""
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {path}")
