"""An analytic synthetic scene with exact ground truth, rendered by ray casting at any resolution.

World frame: y points down (like the OpenCV camera), the ground is the plane
``y = ground_height`` and a far wall is the plane ``z = wall_distance``. Spheres of
different sizes stand at different depths (one may move), and axis-aligned boxes (objects
standing on the ground, side walls, a room's walls and furniture; ``core.synthetic.scenes``
builds such layouts). The camera dollies and sways on a periodic path, so streams of any
length stay inside the scene.

Every pixel gets z-depth, an RGB colour and the id of the scene layer it shows, seen through the
lens's radial distortion when the config has one (``SceneConfig.distortion``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from core.geometry.camera import intrinsics, pixel_grid
from core.geometry.distortion import undistort

GROUND, WALL = 0, 1


@dataclass(frozen=True)
class Sphere:
    name: str
    center: tuple[float, float, float]
    radius: float
    color: tuple[int, int, int]
    motion: tuple[float, float, float] = (0.0, 0.0, 0.0)  # amplitude of a sinusoidal motion (metres)
    period: float = 90.0  # frames per cycle of that motion


@dataclass(frozen=True)
class Box:
    """An axis-aligned box (world axes: y down), e.g. an object on the ground or a wall slab."""

    name: str
    center: tuple[float, float, float]
    half: tuple[float, float, float]  # half extents along x, y, z (metres)
    color: tuple[int, int, int]


def default_objects() -> tuple[Sphere, ...]:
    """Near, middle and far objects, plus one moving object, spanning 1:20+ in depth."""
    return (
        Sphere("near_object", (-0.9, 0.9, 3.5), 0.7, (220, 60, 50)),
        Sphere("mid_object", (1.6, 0.2, 9.0), 1.4, (60, 170, 70)),
        Sphere("far_object", (-4.0, -1.5, 24.0), 4.0, (70, 90, 210)),
        Sphere("moving_object", (1.2, 1.1, 6.0), 0.5, (230, 200, 40), motion=(1.8, 0.0, 1.0)),
    )


@dataclass(frozen=True)
class SceneConfig:
    """Scene and camera path. Distances in metres, footage size in pixels."""

    width: int = 512
    height: int = 384
    fps: float = 30.0
    num_frames: int = 120
    hfov_deg: float = 62.0
    ground_height: float = 1.6
    wall_distance: float = 90.0
    dolly: float = 2.0        # forward/backward amplitude of the camera path
    sway: float = 1.5         # sideways amplitude
    bob: float = 0.15         # vertical amplitude
    yaw_deg: float = 12.0     # panning amplitude
    period: float = 240.0     # frames per cycle of the camera path
    zoom: float = 1.0         # focal length at the zoom's peak relative to hfov_deg's (1: a fixed lens)
    zoom_period: float = 120.0  # frames per cycle of the zoom: in from hfov_deg to the peak and back out
    distortion: tuple[float, float] = (0.0, 0.0)  # radial k1, k2 of the lens every render goes through
    #                                               (core.geometry.distortion: Blender's polynomial model)
    moving_object: bool = True
    texture: bool = False     # world-fixed multi-scale noise on every surface (features a tracker can follow)
    objects: tuple[Sphere, ...] = field(default_factory=default_objects)
    boxes: tuple[Box, ...] = ()

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SceneConfig":
        d = dict(d)
        d["objects"] = tuple(Sphere(**{**o, "center": tuple(o["center"]), "color": tuple(o["color"]),
                                       "motion": tuple(o["motion"])}) for o in d.get("objects", ()))
        d["distortion"] = tuple(d.get("distortion", (0.0, 0.0)))
        d["boxes"] = tuple(Box(b["name"], tuple(b["center"]), tuple(b["half"]), tuple(b["color"]))
                           for b in d.get("boxes", ()))
        return cls(**d)


class Scene:
    """Ground truth for :class:`SceneConfig`: camera path, intrinsics and ray-cast renders."""

    def __init__(self, config: SceneConfig):
        self.config = config
        objects = config.objects if config.moving_object else tuple(
            o for o in config.objects if o.motion == (0.0, 0.0, 0.0))
        self.objects = objects
        self.box_base = 2 + len(objects)  # layer id of the first box
        self.layer_names = {GROUND: "ground", WALL: "far_wall",
                            **{2 + i: o.name for i, o in enumerate(objects)},
                            **{self.box_base + j: b.name for j, b in enumerate(config.boxes)}}

    # ------------------------------------------------------------------ camera

    def K(self, width: int | None = None, height: int | None = None, frame: int | None = None) -> np.ndarray:
        """(3, 3) intrinsics at (width, height) (footage size by default), centred principal point;
        at ``frame`` the zoomed focal length (:meth:`zoom_factor`), else the widest (hfov_deg's)."""
        w = width or self.config.width
        h = height or self.config.height
        f = (self.config.width / 2) / math.tan(math.radians(self.config.hfov_deg) / 2) * w / self.config.width
        if frame is not None and self.config.zoom != 1.0:
            f *= float(self.zoom_factor(frame))
        return intrinsics(f, f * (h / self.config.height) / (w / self.config.width), w / 2, h / 2)

    def zoom_factor(self, frame: int | np.ndarray) -> np.ndarray:
        """Focal length at frame(s) relative to hfov_deg's: a smooth zoom in to ``zoom`` and back out,
        ``zoom ** ((1 - cos(2 pi frame / zoom_period)) / 2)`` (1 for a fixed lens)."""
        c = self.config
        phase = 2 * np.pi * np.asarray(frame, np.float64) / c.zoom_period
        return np.power(c.zoom, (1 - np.cos(phase)) / 2)

    def pose(self, frame: int | np.ndarray) -> np.ndarray:
        """Camera-to-world pose(s), (4, 4) or (N, 4, 4), at frame index(es)."""
        t = np.atleast_1d(np.asarray(frame, np.float64))
        c = self.config
        ph = 2 * np.pi * t / c.period
        centre = np.stack([c.sway * np.sin(ph), c.bob * np.sin(2 * ph), c.dolly * np.sin(ph + 0.6) - c.dolly], -1)
        yaw = np.radians(c.yaw_deg) * np.sin(ph + 1.2)
        pitch = np.radians(3.0) * np.sin(0.5 * ph)
        cy, sy, cp, sp = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch)
        zeros, ones = np.zeros_like(yaw), np.ones_like(yaw)
        R_yaw = np.stack([np.stack([cy, zeros, sy], -1), np.stack([zeros, ones, zeros], -1),
                          np.stack([-sy, zeros, cy], -1)], -2)
        R_pitch = np.stack([np.stack([ones, zeros, zeros], -1), np.stack([zeros, cp, -sp], -1),
                            np.stack([zeros, sp, cp], -1)], -2)
        T = np.tile(np.eye(4), (len(t), 1, 1))
        T[:, :3, :3] = R_yaw @ R_pitch
        T[:, :3, 3] = centre
        return T[0] if np.ndim(frame) == 0 else T

    def object_centers(self, frame: int) -> np.ndarray:
        """(S, 3) sphere centres at a frame."""
        out = np.array([o.center for o in self.objects], np.float64).reshape(-1, 3)
        for i, o in enumerate(self.objects):
            out[i] += np.asarray(o.motion) * math.sin(2 * math.pi * frame / o.period)
        return out

    # ------------------------------------------------------------------ rendering

    def render(self, frame: int, width: int | None = None, height: int | None = None) -> dict[str, np.ndarray]:
        """Ray-cast one frame.

        Returns:
            ``depth`` (H, W) float32 z-depth, ``layers`` (H, W) uint8 layer ids,
            ``colors`` (H, W, 3) uint8 RGB, ``points`` (H, W, 3) float32 world points.
        """
        w = width or self.config.width
        h = height or self.config.height
        K = self.K(w, h, frame)
        T = self.pose(frame)
        u, v = pixel_grid(h, w)
        x, y = undistort((u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], self.config.distortion)
        d_cam = np.stack([x, y, np.ones((h, w), np.float32)], -1)
        d = d_cam @ T[:3, :3].T.astype(np.float32)  # world ray directions with camera-z = 1
        o = T[:3, 3].astype(np.float32)
        c = self.config

        inf = np.float32(np.inf)
        t_best = np.full((h, w), inf, np.float32)
        layer = np.full((h, w), WALL, np.uint8)
        with np.errstate(divide="ignore", invalid="ignore"):
            t_wall = (c.wall_distance - o[2]) / d[..., 2]
            t_wall = np.where(t_wall > 0, t_wall, inf)
            t_ground = (c.ground_height - o[1]) / d[..., 1]
            t_ground = np.where(t_ground > 0, t_ground, inf)
        t_best = np.minimum(t_best, t_wall)
        hit = t_ground < t_best
        t_best = np.where(hit, t_ground, t_best)
        layer[hit] = GROUND

        dd = (d * d).sum(-1)
        for i, centre in enumerate(self.object_centers(frame).astype(np.float32)):
            oc = o - centre
            b = (d * oc).sum(-1)
            disc = b * b - dd * ((oc * oc).sum() - self.objects[i].radius ** 2)
            with np.errstate(invalid="ignore"):
                t_s = (-b - np.sqrt(disc)) / dd
            t_s = np.where((disc > 0) & (t_s > 0), t_s, inf)
            hit = t_s < t_best
            t_best = np.where(hit, t_s, t_best)
            layer[hit] = 2 + i

        with np.errstate(divide="ignore", invalid="ignore"):
            inv = np.float32(1) / d
        for j, box in enumerate(c.boxes):
            lo = np.asarray(box.center, np.float32) - np.asarray(box.half, np.float32)
            hi = np.asarray(box.center, np.float32) + np.asarray(box.half, np.float32)
            with np.errstate(invalid="ignore"):
                t1, t2 = (lo - o) * inv, (hi - o) * inv
            t_near = np.nanmax(np.minimum(t1, t2), axis=-1)
            t_far = np.nanmin(np.maximum(t1, t2), axis=-1)
            t_b = np.where((t_near <= t_far) & (t_near > 0), t_near, inf)
            hit = t_b < t_best
            t_best = np.where(hit, t_b, t_best)
            layer[hit] = self.box_base + j

        points = o + d * t_best[..., None]
        # metres of surface one pixel covers (grazing views stretch it): textures finer than that fade
        # out like a mipmap, as a real lens and sensor filter them, instead of aliasing
        normal_dot = np.ones((h, w), np.float32)
        ray = d / np.linalg.norm(d, axis=-1, keepdims=True)
        normal_dot[layer == GROUND] = np.abs(ray[layer == GROUND][:, 1])
        normal_dot[layer == WALL] = np.abs(ray[layer == WALL][:, 2])
        footprint = t_best / K[0, 0] / np.maximum(normal_dot, np.float32(0.05))
        colors = self._shade(points, layer, frame, footprint)
        return {"depth": t_best.astype(np.float32), "layers": layer, "colors": colors,
                "points": points.astype(np.float32)}

    def _shade(self, points: np.ndarray, layer: np.ndarray, frame: int, footprint: np.ndarray) -> np.ndarray:
        """Textured colours: checkerboards on ground and wall, banded shaded spheres."""
        x, y, z = points[..., 0], points[..., 1], points[..., 2]
        base = np.zeros(points.shape, np.float32)
        checker_ground = ((np.floor(x) + np.floor(z)) % 2).astype(np.float32)
        base[layer == GROUND] = (np.array([150, 140, 120], np.float32)
                                 * (0.6 + 0.4 * checker_ground[layer == GROUND, None]))
        checker_wall = ((np.floor(x / 4) + np.floor(y / 4)) % 2).astype(np.float32)
        base[layer == WALL] = (np.array([170, 190, 215], np.float32)
                               * (0.7 + 0.3 * checker_wall[layer == WALL, None]))
        light = np.array([0.4, -0.8, -0.45], np.float32)
        light /= np.linalg.norm(light)
        for i, (o, centre) in enumerate(zip(self.objects, self.object_centers(frame))):
            sel = layer == 2 + i
            if not sel.any():
                continue
            n = (points[sel] - centre.astype(np.float32)) / o.radius
            lambert = 0.35 + 0.65 * np.clip(n @ light, 0, 1)
            bands = 0.75 + 0.25 * (np.floor(4 * np.arctan2(n[:, 0], n[:, 2]) / np.pi) % 2)
            base[sel] = np.asarray(o.color, np.float32) * (lambert * bands)[:, None]
        for j, box in enumerate(self.config.boxes):
            sel = layer == self.box_base + j
            if not sel.any():
                continue
            # the face hit: the axis along which the point is deepest into the box's extent
            rel = (points[sel] - np.asarray(box.center, np.float32)) / np.asarray(box.half, np.float32)
            axis = np.argmax(np.abs(rel), axis=-1)
            n = np.zeros_like(rel)
            n[np.arange(rel.shape[0]), axis] = np.sign(rel[np.arange(rel.shape[0]), axis])
            lambert = 0.45 + 0.55 * np.clip(n @ light, 0, 1)
            base[sel] = np.asarray(box.color, np.float32) * lambert[:, None]
        if self.config.texture:
            base *= self._texture(points, layer, frame, footprint)[..., None]
        return np.clip(base, 0, 255).astype(np.uint8)

    def _texture(self, points: np.ndarray, layer: np.ndarray, frame: int, footprint: np.ndarray) -> np.ndarray:
        """(H, W) float32 brightness factor in [0.45, 1.55] fixed to each surface (spheres: to the moving sphere).

        Surface coordinates in metres: (x, z) on the ground, (x, y) on the wall, (longitude, latitude)
        arc lengths on a sphere; three octaves of value noise. An octave whose cells are smaller than
        3 pixels' ``footprint`` (H, W) (metres per pixel on the surface) fades to its mean, gone at 1.5 pixels.
        """
        s = np.zeros(layer.shape + (2,), np.float32)
        scale = np.ones(layer.shape, np.float32)
        ground, wall = layer == GROUND, layer == WALL
        s[ground] = points[ground][:, [0, 2]]
        scale[ground] = 0.12
        s[wall] = points[wall][:, [0, 1]]
        scale[wall] = 1.5
        for i, (o, centre) in enumerate(zip(self.objects, self.object_centers(frame))):
            sel = layer == 2 + i
            n = (points[sel] - centre.astype(np.float32)) / o.radius
            s[sel] = o.radius * np.stack([np.arctan2(n[:, 0], n[:, 2]), np.arcsin(np.clip(n[:, 1], -1, 1))], -1)
            scale[sel] = 0.04 * o.radius
        tex = 0.5
        for k, w, seed in ((1.0, 0.5, 1), (2.7, 0.3, 2), (7.0, 0.2, 3)):
            cell = scale / k
            fade = np.clip((cell / footprint - 1.5) / 1.5, 0, 1)
            tex = tex + w * fade * (_value_noise(s / cell[..., None], seed) - 0.5)
        return (0.45 + 1.1 * tex).astype(np.float32)


def _value_noise(uv: np.ndarray, seed: int) -> np.ndarray:
    """(...,) float32 smooth noise in [0, 1]: lattice values hashed from integer cells, smoothstep-interpolated."""
    cell = np.floor(uv)
    f = uv - cell
    f = f * f * (3 - 2 * f)
    i = cell[..., 0].astype(np.int64)
    j = cell[..., 1].astype(np.int64)

    def lattice(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        h = (a * 73856093) ^ (b * 19349663) ^ (seed * 83492791)
        h = (h ^ (h >> 13)) * 1274126177
        return ((h ^ (h >> 16)) & 0xFFFF).astype(np.float32) / 65535.0

    top = lattice(i, j) * (1 - f[..., 0]) + lattice(i + 1, j) * f[..., 0]
    bottom = lattice(i, j + 1) * (1 - f[..., 0]) + lattice(i + 1, j + 1) * f[..., 0]
    return top * (1 - f[..., 1]) + bottom * f[..., 1]
