"""Scene layouts beyond the default one, for studies on scenes layer alignment was not tuned on.

Each builder returns a :class:`SceneConfig` whose object placement is drawn from ``seed``
(sizes, positions and colours vary; the kind of scene does not):

* ``street``: objects (boxes, a few spheres, one moving) standing on the ground between
  two building walls, a far backdrop at 70 m; depth about 2-70 m;
* ``room``: an indoor room (floor, ceiling, four walls) with furniture boxes against the
  walls; depth about 1.5-10 m;
* ``field``: an open field with objects scattered up to 80 m and a far horizon at 400 m.

World frame as in :mod:`core.synthetic.scene` (y down, ground at ``y = ground_height``,
the camera starts near the origin looking along +z).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from core.synthetic.scene import Box, SceneConfig, Sphere

GROUND_Y = 1.6


def _color(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(40, 230, size=3))


def _on_ground(name: str, x: float, z: float, w: float, h: float, d: float, color) -> Box:
    """A box of size (w, h, d) standing on the ground at (x, z)."""
    return Box(name, (x, GROUND_Y - h / 2, z), (w / 2, h / 2, d / 2), color)


def street(seed: int = 0, **overrides) -> SceneConfig:
    """Objects standing on the ground between two building walls, a far backdrop at 70 m."""
    rng = np.random.default_rng([seed, 101])
    boxes = [Box("left_wall", (-7.5, GROUND_Y - 6.0, 30.0), (0.5, 6.0, 40.0), (170, 150, 130)),
             Box("right_wall", (7.5, GROUND_Y - 6.0, 30.0), (0.5, 6.0, 40.0), (140, 150, 165))]
    for k, z in enumerate(np.sort(rng.uniform(4.0, 50.0, size=7))):
        side = -1 if k % 2 else 1
        w, h, d = rng.uniform(0.8, 2.2), rng.uniform(0.8, 2.5), rng.uniform(0.8, 3.0)
        x = side * rng.uniform(1.8, 6.5 - w / 2)
        boxes.append(_on_ground(f"box_{k}", float(x), float(z), w, h, d, _color(rng)))
    spheres = []
    for k, z in enumerate(rng.uniform(6.0, 35.0, size=2)):
        r = rng.uniform(0.4, 1.0)
        spheres.append(Sphere(f"ball_{k}", (float(rng.uniform(-5.5, 5.5)), GROUND_Y - r, float(z)), r,
                              _color(rng)))
    spheres.append(Sphere("moving_object", (0.0, GROUND_Y - 0.45, 9.0), 0.45, (230, 200, 40),
                          motion=(2.5, 0.0, 1.5)))
    cfg = dict(wall_distance=70.0, objects=tuple(spheres), boxes=tuple(boxes))
    return SceneConfig(**{**cfg, **overrides})


def room(seed: int = 0, **overrides) -> SceneConfig:
    """An indoor room, 10 m wide, 3 m high, with furniture against the walls."""
    rng = np.random.default_rng([seed, 102])
    top = GROUND_Y - 3.0
    boxes = [Box("left_wall", (-5.25, GROUND_Y - 1.5, 1.0), (0.25, 1.6, 8.0), (200, 195, 180)),
             Box("right_wall", (5.25, GROUND_Y - 1.5, 1.0), (0.25, 1.6, 8.0), (185, 200, 190)),
             Box("ceiling", (0.0, top - 0.25, 1.0), (5.5, 0.25, 8.0), (235, 235, 230)),
             Box("back_wall", (0.0, GROUND_Y - 1.5, -7.25), (5.5, 1.6, 0.25), (190, 190, 200))]
    # furniture along the side walls and the far wall (which is the scene's plane wall at z = 7)
    for k in range(3):
        w, h, d = rng.uniform(0.5, 0.9), rng.uniform(0.5, 1.8), rng.uniform(1.0, 2.2)
        z = -1.0 + 2.6 * k + rng.uniform(0.0, 0.6)
        boxes.append(_on_ground(f"left_{k}", -5.0 + w / 2, float(z + 2.0), w, h, d, _color(rng)))
    for k in range(3):
        w, h, d = rng.uniform(0.5, 0.9), rng.uniform(0.5, 1.8), rng.uniform(1.0, 2.2)
        z = -0.5 + 2.6 * k + rng.uniform(0.0, 0.6)
        boxes.append(_on_ground(f"right_{k}", 5.0 - w / 2, float(z + 2.0), w, h, d, _color(rng)))
    for k, x in enumerate((-2.8, 0.2, 3.0)):
        w, h, d = rng.uniform(1.0, 1.8), rng.uniform(0.6, 2.0), rng.uniform(0.4, 0.7)
        boxes.append(_on_ground(f"back_{k}", float(x + rng.uniform(-0.3, 0.3)), 7.0 - d / 2, w, h, d, _color(rng)))
    boxes.append(_on_ground("table", float(rng.uniform(-1.0, 1.0)), 4.2, 1.4, 0.75, 0.9, _color(rng)))
    cfg = dict(wall_distance=7.0, objects=(), boxes=tuple(boxes), dolly=1.0, sway=1.0, bob=0.1)
    return SceneConfig(**{**cfg, **overrides})


def field(seed: int = 0, **overrides) -> SceneConfig:
    """An open field with objects scattered up to 80 m and a far horizon at 400 m."""
    rng = np.random.default_rng([seed, 103])
    boxes, spheres = [], []
    for k, z in enumerate(np.sort(rng.uniform(5.0, 80.0, size=8))):
        x = rng.uniform(-0.35, 0.35) * (6.0 + z)
        if k % 3 == 2:
            r = rng.uniform(0.6, 1.5) * (1 + z / 30)
            spheres.append(Sphere(f"ball_{k}", (float(x), GROUND_Y - r, float(z)), r, _color(rng)))
        else:
            s = 1 + z / 30
            boxes.append(_on_ground(f"box_{k}", float(x), float(z), rng.uniform(1.0, 3.0) * s,
                                    rng.uniform(1.0, 3.5) * s, rng.uniform(1.0, 3.0) * s, _color(rng)))
    cfg = dict(wall_distance=400.0, objects=tuple(spheres), boxes=tuple(boxes))
    return SceneConfig(**{**cfg, **overrides})


SCENE_TYPES: dict[str, Callable[..., SceneConfig]] = {"street": street, "room": room, "field": field}
