"""Pure geometry helpers (numpy only; they ship in the Blender extension), by concept.

Import from the module that owns the concept; this package re-exports nothing.

* :mod:`core.geometry.rotations`: quaternions, rotation angles, the nearest rotation (Procrustes).
* :mod:`core.geometry.transforms`: rigid and Sim(3) transforms: applying them, fitting them
  to point pairs (Kabsch, Umeyama).
* :mod:`core.geometry.camera`: pinhole cameras: pixel grid, intrinsics, unprojection,
  projection, z-buffer.
* :mod:`core.geometry.fitting`: robust one-parameter fits to network predictions: a scale
  from noisy ratios, the focal length from predicted points.

Conventions: OpenCV camera axes (x right, y down, z forward); poses are camera-to-world
(``world_from_cam``) unless named otherwise; transforms are named by their frames
(``b_from_a`` maps points in frame a to frame b); pixel (row i, col j) is centred at
(j + 0.5, i + 0.5); ``shape`` is (H, W), ``size`` is (W, H).
"""
