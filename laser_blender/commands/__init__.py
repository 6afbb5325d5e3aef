"""Subcommands of ``laser-blender``, one module each (discovered by ``laser_blender.cli``)."""
