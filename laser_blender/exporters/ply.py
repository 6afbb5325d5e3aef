"""Binary little-endian PLY of coloured points (numpy only: the add-on writes it too)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.run.files import atomic_write

VERTEX = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])


def write_ply(path: Path, points: np.ndarray, colors: np.ndarray) -> None:
    """Write (P, 3) points and (P, 3) uint8 RGB colours as vertices ``x y z red green blue``."""
    vertices = np.empty(len(points), VERTEX)
    for k, name in enumerate("xyz"):
        vertices[name] = points[:, k]
    for k, name in enumerate(("red", "green", "blue")):
        vertices[name] = colors[:, k]
    header = ("ply\nformat binary_little_endian 1.0\n"
              f"element vertex {len(vertices)}\n"
              + "".join(f"property {'float' if VERTEX[n].kind == 'f' else 'uchar'} {n}\n" for n in VERTEX.names)
              + "end_header\n")
    atomic_write(path, lambda f: (f.write(header.encode("ascii")), f.write(vertices.tobytes())))
