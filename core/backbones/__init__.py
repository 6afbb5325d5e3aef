"""Backbones: the networks (pi3, VGGT) and the engine adapters around them.

``build(name, config)`` constructs a raw network module from a configuration dict in
the schema of ``shared/fixtures/*_tiny_config.json`` (full-size defaults when omitted).
Its ``forward(images)`` takes (B, N, 3, H, W) RGB in [0, 1] and returns a dict under
the upstream output names.
"""

from __future__ import annotations

from typing import Any

NETWORKS = ("pi3", "vggt")


def build(name: str, config: dict[str, Any] | None = None):
    """Build the raw network ``name`` ("pi3" or "vggt") from ``config``."""
    if name == "pi3":
        from core.backbones.pi3 import build_pi3

        return build_pi3(config)
    if name == "vggt":
        from core.backbones.vggt import build_vggt

        return build_vggt(config)
    raise ValueError(f"unknown network {name!r}; choose one of {', '.join(NETWORKS)}")
