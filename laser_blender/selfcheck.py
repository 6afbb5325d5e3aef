"""``python -m laser_blender.selfcheck [--write FILE]``: can this Python run the engine?

Imports torch and the worker, resolves device ``auto`` and runs a tiny forward pass on
it. Prints one line ``SELFCHECK {json}`` (a :class:`laser_blender.protocol.SelfCheck`)
and, with ``--write``, saves the same JSON to FILE (the add-on's preferences show it).
Exit 0 when it passed. Runs in the engine's Python only (not shipped in the extension).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from laser_blender import __version__
from laser_blender.protocol import SelfCheck

PREFIX = "SELFCHECK "


def run_check() -> SelfCheck:
    try:
        import torch

        import laser_blender.worker  # noqa: F401 - the worker's imports must work
        from core.backbones.adapter import resolve_device

        device = resolve_device("auto")
        layer = torch.nn.Linear(8, 4).to(device)
        out = layer(torch.ones(2, 8, device=device))
        if tuple(out.shape) != (2, 4) or not bool(torch.isfinite(out).all()):
            raise RuntimeError(f"tiny forward on {device} gave {tuple(out.shape)} / non-finite values")
        return SelfCheck(version=__version__, ok=True, torch=torch.__version__, device=str(device))
    except Exception as e:  # noqa: BLE001 - any failure is the answer
        return SelfCheck(version=__version__, ok=False, error=f"{type(e).__name__}: {e}".splitlines()[0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m laser_blender.selfcheck", description=__doc__.split("\n")[0])
    parser.add_argument("--write", type=Path, help="also save the result as JSON here")
    args = parser.parse_args(argv)
    result = run_check()
    print(PREFIX + result.model_dump_json(), flush=True)
    if args.write:
        args.write.write_text(result.model_dump_json())
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
