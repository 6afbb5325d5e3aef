"""Argument groups shared by several subcommands."""

from __future__ import annotations

import argparse


def add_registration_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("registration")
    g.add_argument("--conf-keep", type=float, default=0.5, metavar="SHARE",
                   help="share of most confident pixels kept per frame (default 0.5)")
    g.add_argument("--no-layer-align", dest="layer_align", action="store_false",
                   help="Sim(3) registration only, no layer-wise scale alignment")
    g.add_argument("--focal-px", type=float, help="known focal length in footage pixels")
    g.add_argument("--focal-mm", type=float, help="known focal length in mm (with --sensor-width-mm)")
    g.add_argument("--sensor-width-mm", type=float, help="camera sensor width in mm")


def add_stream_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("streaming")
    g.add_argument("--window", type=int, default=30, help="frames per window (default 30)")
    g.add_argument("--overlap", type=int, default=10, help="frames shared by consecutive windows (default 10)")
    g.add_argument("--stride", type=int, default=1, help="use every N-th frame")
    g.add_argument("--start", type=int, default=0, help="first frame index")
    g.add_argument("--max-frames", type=int, help="stop after this many frames")
