"""LASER reconstruction for Blender: camera track and point cloud from footage, streamed as it runs.

The engine (torch) runs in its own Python as a worker subprocess; this add-on only
speaks its line protocol (``laser_blender.client``) and builds the scene
(``laser_blender.scene``), both shipped as bundled wheels with pydantic.
"""

from __future__ import annotations

import bpy

from laser_blender import scene_edit

from . import export_menu, operators, panels, preferences, properties

_MODULES = (properties, preferences, operators, export_menu, panels)


@bpy.app.handlers.persistent
def _sync_scene_files(scene, *_) -> None:
    """After undo/redo: each run's scene.json follows the orientation the scene shows again."""
    scene_edit.sync_scene_files(scene)


def register() -> None:
    for module in _MODULES:
        for cls in module.CLASSES:
            bpy.utils.register_class(cls)
    properties.register()
    export_menu.register()
    bpy.app.handlers.undo_post.append(_sync_scene_files)
    bpy.app.handlers.redo_post.append(_sync_scene_files)


def unregister() -> None:
    for handlers in (bpy.app.handlers.undo_post, bpy.app.handlers.redo_post):
        if _sync_scene_files in handlers:
            handlers.remove(_sync_scene_files)
    export_menu.unregister()
    operators.close_all()
    preferences.cancel_install()
    properties.unregister()
    for module in reversed(_MODULES):
        for cls in reversed(module.CLASSES):
            bpy.utils.unregister_class(cls)
