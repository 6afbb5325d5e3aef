"""The run-directory contract: typed manifests, settings, array types and paths.

Imports numpy, pydantic and the standard library only (never torch, cv2 or bpy):
the Blender extension ships this package as it is.
"""
