"""Backbones: the networks (pi3, VGGT, DA3) and the engine adapters around them.

``build(network, config)`` constructs a raw network module from a configuration dict in
the schema of ``shared/fixtures/*_tiny_config.json`` (full-size defaults when omitted;
DA3 also takes ``{"variant": "small" | "base"}``). pi3 and VGGT take (B, N, 3, H, W) RGB
in [0, 1]; DA3 takes the same images ImageNet-normalised. Each returns a dict under the
upstream output names.

:data:`NETWORK_BACKBONES` lists the ``--backbone`` names that run a network, with the
network, size and released weights behind each (from :data:`core.run.settings.BACKBONES`,
the one table of backbone names). This module imports no torch.
"""

from __future__ import annotations

from typing import Any

from core.run.settings import BACKBONES, BackboneInfo

NETWORKS = ("pi3", "vggt", "da3")
NETWORK_BACKBONES: dict[str, BackboneInfo] = {name: info for name, info in BACKBONES.items() if info.network}
"""The ``--backbone`` names that run a network (all but "synthetic"), with its weights."""


def build(name: str, config: dict[str, Any] | None = None):
    """Build the raw network ``name`` ("pi3", "vggt" or "da3") from ``config``."""
    if name == "pi3":
        from core.backbones.pi3 import build_pi3

        return build_pi3(config)
    if name == "vggt":
        from core.backbones.vggt import build_vggt

        return build_vggt(config)
    if name == "da3":
        from core.backbones.da3 import build_da3

        return build_da3(config)
    raise ValueError(f"unknown network {name!r}; choose one of {', '.join(NETWORKS)}")
