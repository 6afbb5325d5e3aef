"""laser-blender's streaming engine: torch/numpy/opencv only, never bpy."""
