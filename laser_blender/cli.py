"""``laser-blender``: the command line. Each subcommand is a module in ``laser_blender.commands``
defining ``help: str``, ``add_arguments(parser)`` and ``run(args) -> int``.

A subcommand may let a :data:`core.errors.USER_ERRORS` escape: :func:`main` prints its message
as one line and exits 2. Anything else is an internal error (exit 1; ``-v`` shows the traceback).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import signal
import sys

from core.errors import USER_ERRORS
from laser_blender import __version__, commands
from laser_blender.console import fail
from laser_blender.driver import describe_error
from laser_blender.outcome import ExitCode


def _command_modules():
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            yield info.name.replace("_", "-"), importlib.import_module(f"{commands.__name__}.{info.name}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="laser-blender",
                                     description="Streaming 4D reconstruction (LASER) for Blender.")
    parser.add_argument("--version", action="version", version=f"laser-blender {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in _command_modules():
        p = sub.add_parser(name, help=module.help, description=module.help)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a subcommand; its errors for the user are one line, anything else an internal error (exit 1)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    code = _run(args)
    if code == ExitCode.CANCELLED:
        # Python drops its signal handlers while shutting down; a further Ctrl-C there would
        # end the process by SIGINT instead of the documented 130. Nothing is left to cancel.
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, signal.SIG_IGN)
    return code


def _run(args) -> int:
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("\nlaser-blender: interrupted", file=sys.stderr)
        return ExitCode.CANCELLED
    except USER_ERRORS as e:
        return fail(str(e))
    except Exception as e:  # noqa: BLE001 - the last line of defence: no traceback unless asked
        if args.verbose:
            raise
        return fail(describe_error(e, None), ExitCode.INTERNAL_ERROR)


if __name__ == "__main__":
    sys.exit(main())
