"""LASER reconstruction for Blender: camera track and point cloud from footage, streamed as it runs.

The engine (torch) runs in its own Python as a worker subprocess; this add-on only
speaks its line protocol (``laser_blender.client``) and builds the scene
(``laser_blender.scene``), both shipped as bundled wheels with pydantic.
"""

from __future__ import annotations

import bpy

from . import operators, panels, preferences, properties

_MODULES = (properties, preferences, operators, panels)


def register() -> None:
    for module in _MODULES:
        for cls in module.CLASSES:
            bpy.utils.register_class(cls)
    properties.register()


def unregister() -> None:
    operators.close_all()
    preferences.cancel_install()
    properties.unregister()
    for module in reversed(_MODULES):
        for cls in reversed(module.CLASSES):
            bpy.utils.unregister_class(cls)
