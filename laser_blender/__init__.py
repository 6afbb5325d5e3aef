"""laser-blender: CLI, worker process, protocol, exporters and Blender scene builder."""

__version__ = "0.1.0"
