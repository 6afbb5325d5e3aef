"""Add-on preferences: the engine's Python, installing the engine, weights location, device."""

from __future__ import annotations

import os
from collections import deque
from pathlib import Path

import bpy
from bpy.props import EnumProperty, StringProperty

from laser_blender import __version__
from laser_blender.client import find_engine_python, probe_engine_python

from .engine_install import Installer, bundled_engine_wheel, read_self_check, torch_requirement, venv_python
from .torch_choice import TorchChoice, choose_torch, this_machine

PACKAGE = __package__
INSTALL_LOG: deque[str] = deque(maxlen=8)  # last lines of the running or last install
_INSTALLER: list[Installer] = []            # at most one running install
_MACHINE: list[tuple[str, str, bool]] = []  # this_machine(), read once (nvidia-smi is slow for a redraw)


def prefs(context=None):
    return (context or bpy.context).preferences.addons[PACKAGE].preferences


def engine_python(context=None) -> str | None:
    """The configured engine Python, else the auto-detected one, else the one Install Engine made."""
    if prefs(context).python:
        return bpy.path.abspath(prefs(context).python)
    installed = venv_python(engine_venv())
    return find_engine_python() or (str(installed) if installed.exists() else None)


def worker_env(context=None) -> dict[str, str]:
    """Environment for the worker: weights cache location; offline when Blender forbids network access."""
    env = dict(os.environ)
    p = prefs(context)
    if p.weights_dir:
        env["HF_HOME"] = bpy.path.abspath(p.weights_dir)
    if not bpy.app.online_access:
        env["HF_HUB_OFFLINE"] = "1"
    return env


def engine_venv() -> Path:
    return Path(bpy.utils.extension_path_user(PACKAGE, path="engine", create=True))


def install_plan(context=None) -> tuple[str | None, TorchChoice | None]:
    """What Install Engine installs: (pip requirement, torch build) -- by default the engine
    wheel this extension carries and the torch build for this machine."""
    p = prefs(context)
    requirement = p.requirement.strip() or (str(bundled_engine_wheel() or "") or None)
    if requirement is None or not requirement.endswith(".whl"):
        return requirement, None  # a name/folder/URL: pip resolves torch from PyPI itself
    if not _MACHINE:
        _MACHINE.append(this_machine())
    return requirement, choose_torch(*_MACHINE[0], torch_requirement(Path(requirement)), p.index_url)


def engine_status() -> tuple[str, str]:
    """(one line, icon) about the engine Install Engine made: self-check result, out of date."""
    check = read_self_check(engine_venv())
    if check is None:
        return "Not installed by the add-on yet", "INFO"
    if check.version != __version__:
        return f"Engine out of date: {check.version}, add-on {__version__}: update it", "ERROR"
    if not check.ok:
        return f"Self-check failed: {check.error}", "ERROR"
    return f"Self-check passed: laser-blender {check.version}, torch {check.torch}, device {check.device}", "CHECKMARK"


class LASER_AddonPreferences(bpy.types.AddonPreferences):
    bl_idname = PACKAGE

    python: StringProperty(
        name="Engine Python", subtype="FILE_PATH",
        description="Python interpreter with the laser-blender engine (torch) installed; empty: auto-detect")
    requirement: StringProperty(
        name="Engine Package", default="",
        description="What 'Install Engine' pip-installs: empty: the engine wheel this extension carries; "
                    "else a package name, a source folder, a wheel or a git URL")
    index_url: StringProperty(
        name="PyTorch Index", default="",
        description="pip index URL for torch; empty: chosen for this machine (CUDA, MPS or CPU build)")
    weights_dir: StringProperty(
        name="Weights", subtype="DIR_PATH",
        description="Where model weights are downloaded and cached (HF_HOME); empty: the default cache")
    device: EnumProperty(
        name="Device", default="auto",
        items=(("auto", "Auto", "CUDA when available, else MPS on Apple silicon, else CPU"),
               ("cuda", "CUDA", "NVIDIA GPU"), ("mps", "MPS", "Apple silicon GPU (Metal)"),
               ("cpu", "CPU", "Slow, but works everywhere")))

    def draw(self, context):
        layout = self.layout
        row = layout.row(align=True)
        row.prop(self, "python")
        row.operator(LASER_OT_detect_engine.bl_idname, text="", icon="VIEWZOOM")
        if not self.python:
            found = engine_python(context)
            layout.label(text=f"Auto-detected: {found}" if found else "No engine found: install it below",
                         icon="CHECKMARK" if found else "ERROR")
        layout.prop(self, "weights_dir")
        layout.prop(self, "device")
        box = layout.box()
        status, icon = engine_status()
        box.label(text=status, icon=icon)
        box.prop(self, "requirement")
        box.prop(self, "index_url")
        try:
            _, torch = install_plan(context)
        except (OSError, ValueError) as e:
            torch = None
            box.label(text=f"Engine wheel unreadable: {e}", icon="ERROR")
        if torch is not None:
            box.label(text=f"PyTorch: {torch.build} build ({torch.reason})")
        row = box.row()
        row.enabled = bpy.app.online_access and not _INSTALLER
        outdated = icon == "ERROR" and status.startswith("Engine out of date")
        row.operator(LASER_OT_install_engine.bl_idname, icon="IMPORT",
                     text="Update Engine" if outdated else "Install Engine")
        if not bpy.app.online_access:
            box.label(text="Installing needs online access (Preferences > System > Network)", icon="INFO")
        for line in INSTALL_LOG:
            box.label(text=line[-120:])


class LASER_OT_detect_engine(bpy.types.Operator):
    """Find the engine's Python and check that it can run the worker"""

    bl_idname = "laser.detect_engine"
    bl_label = "Detect Engine"

    def execute(self, context):
        found = engine_python(context)
        if not found:
            self.report({"ERROR"}, "No engine Python found; install the engine or set its path")
            return {"CANCELLED"}
        problem = probe_engine_python(found)
        if problem:
            self.report({"ERROR"}, problem)
            return {"CANCELLED"}
        prefs(context).python = found
        self.report({"INFO"}, f"Engine found: {found}")
        return {"FINISHED"}


class LASER_OT_install_engine(bpy.types.Operator):
    """Create a virtual environment and pip-install the engine into it (downloads several GB)"""

    bl_idname = "laser.install_engine"
    bl_label = "Install Engine"

    _timer = None

    @classmethod
    def poll(cls, context):
        return bpy.app.online_access and not _INSTALLER

    def execute(self, context):
        try:
            requirement, torch = install_plan(context)
        except (OSError, ValueError) as e:
            self.report({"ERROR"}, f"Cannot read the engine wheel: {e}")
            return {"CANCELLED"}
        if requirement is None:
            self.report({"ERROR"}, "No engine wheel in this extension: set Engine Package to a wheel, folder or name")
            return {"CANCELLED"}
        installer = Installer(engine_venv(), requirement, torch=torch, self_check=True).start()
        _INSTALLER.append(installer)
        INSTALL_LOG.clear()
        if bpy.app.background:  # no event loop: wait here
            installer.join()
            return self._finish(context, installer)
        wm = context.window_manager
        self._timer = wm.event_timer_add(0.25, window=context.window)
        wm.progress_begin(0, len(installer.commands))
        wm.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        installer = _INSTALLER[0]
        if event.type == "ESC":
            installer.cancel()
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        INSTALL_LOG.extend(installer.poll())
        context.window_manager.progress_update(installer.step)
        for area in context.screen.areas if context.screen else ():
            area.tag_redraw()
        if not installer.done:
            return {"RUNNING_MODAL"}
        context.window_manager.event_timer_remove(self._timer)
        context.window_manager.progress_end()
        return self._finish(context, installer)

    def _finish(self, context, installer: Installer):
        installer.join()
        INSTALL_LOG.extend(installer.poll())
        _INSTALLER.clear()
        if installer.returncode != 0:
            tail = "\n".join(list(installer.tail)[-6:])
            self.report({"ERROR"}, f"Engine install failed (full log: {installer.log}):\n{tail}")
            return {"CANCELLED"}
        prefs(context).python = str(installer.python)
        status, _ = engine_status()
        self.report({"INFO"}, f"Engine installed: {installer.python}. {status}")
        return {"FINISHED"}


def cancel_install() -> None:
    """Stop a running install and join its thread (on unregister)."""
    for installer in _INSTALLER:
        installer.cancel()
        installer.join(10)
    _INSTALLER.clear()


CLASSES = (LASER_OT_detect_engine, LASER_OT_install_engine, LASER_AddonPreferences)
