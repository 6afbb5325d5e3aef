"""A synthetic backbone that predicts windows the way an offline monocular network does.

For each window it renders the analytic scene and then corrupts it like a real
feed-forward network:

* the window lives in its own arbitrary Sim(3) frame (random scale, rotation, offset);
* every scene layer gets its own depth scale in each window (monocular layer-scale
  inconsistency), drifting smoothly from window to window;
* per-frame pose noise, per-pixel depth noise;
* confidence that drops at depth edges and far away;
* optionally, per-frame focal-length noise, with the points consistent with the noisy
  intrinsics (pi3-like: the focal is only in the points), and the intrinsics themselves
  predicted (VGGT-like). A zooming scene's focal length changes per frame (``SceneConfig.zoom``).

All amplitudes are parameters; :meth:`SyntheticNoise.none` gives exact predictions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from core.geometry.camera import unproject
from core.geometry.transforms import apply_sim3_to_poses
from core.run.arrays import WindowPrediction
from core.run.manifest import InputGeometry
from core.synthetic.scene import Scene


@dataclass(frozen=True)
class SyntheticNoise:
    """How the synthetic backbone departs from the truth (defaults: realistic).

    Attributes:
        seed: random seed (predictions are a deterministic function of seed and frames).
        window_sim3: put each window in its own random Sim(3) frame.
        layer_scale: amplitude of the per-layer log depth scale (0.2 -> about +-20%).
        layer_period: frames per cycle of the smooth drift of those scales.
        first_window_clean: no layer distortion in the window starting at ``clean_frame``.
        clean_frame: first frame of the distortion-free window.
        depth_noise: relative per-pixel depth noise (standard deviation).
        pose_rot_deg: per-frame rotation noise (degrees, standard deviation).
        pose_trans: per-frame camera-centre noise (metres, standard deviation).
        edge_conf: confidence factor on depth edges.
        far_conf: depth (metres) at which confidence halves.
        focal_noise: relative per-frame focal-length noise (standard deviation).
        focal_bias: relative error of the focal length shared by every frame (0.03: 3 % long), as a
            network's focal estimate is typically off for a whole shot.
        predict_intrinsics: also predict per-frame intrinsics (as VGGT and DA3 do; pi3 does not).
    """

    seed: int = 0
    window_sim3: bool = True
    layer_scale: float = 0.2
    layer_period: float = 160.0
    first_window_clean: bool = False
    clean_frame: int = 0
    depth_noise: float = 0.01
    pose_rot_deg: float = 0.05
    pose_trans: float = 0.005
    edge_conf: float = 0.2
    far_conf: float = 30.0
    focal_noise: float = 0.0
    focal_bias: float = 0.0
    predict_intrinsics: bool = False

    @classmethod
    def none(cls, seed: int = 0) -> "SyntheticNoise":
        """Exact predictions, still each window in its own Sim(3) frame."""
        return cls(seed=seed, layer_scale=0.0, depth_noise=0.0, pose_rot_deg=0.0, pose_trans=0.0)


def _random_rotation(rng: np.random.Generator, max_angle: float) -> np.ndarray:
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = rng.uniform(-max_angle, max_angle)
    rvec = (axis * angle).reshape(3, 1)
    return cv2.Rodrigues(rvec)[0]


class SyntheticBackbone:
    """Implements :class:`core.backbones.base.Backbone` on top of a :class:`Scene`.

    Args:
        scene: the ground truth.
        noise: corruption model.
        size: prediction (w, h); footage size when None.
    """

    name = "synthetic"
    licence = ""

    def __init__(self, scene: Scene, noise: SyntheticNoise = SyntheticNoise(), size: tuple[int, int] | None = None):
        self.scene = scene
        self.noise = noise
        self.size = size
        rng = np.random.default_rng([noise.seed, 7])
        self._layer_phase = rng.uniform(0, 2 * np.pi, size=256)
        self._layer_speed = rng.uniform(0.7, 1.3, size=256)

    def input_geometry(self, footage: tuple[int, int]) -> InputGeometry:
        return InputGeometry.resize_only(footage, self.size or footage)

    def layer_scales(self, first_frame: int) -> np.ndarray:
        """(256,) depth scale per layer id for the window starting at ``first_frame``."""
        n = self.noise
        if n.layer_scale == 0 or (n.first_window_clean and first_frame == n.clean_frame):
            return np.ones(256)
        phase = 2 * np.pi * first_frame / n.layer_period * self._layer_speed + self._layer_phase
        return np.exp(n.layer_scale * np.sin(phase))

    def window_frame(self, first_frame: int) -> tuple[float, np.ndarray, np.ndarray]:
        """The arbitrary Sim(3) (s, R, t) of the window starting at ``first_frame``."""
        if not self.noise.window_sim3:
            return 1.0, np.eye(3), np.zeros(3)
        rng = np.random.default_rng([self.noise.seed, 1, first_frame])
        return float(np.exp(rng.uniform(-1, 1))), _random_rotation(rng, math.pi), rng.normal(scale=3.0, size=3)

    def predict(self, images: np.ndarray, frames: np.ndarray) -> WindowPrediction:
        n = self.noise
        h, w = images.shape[1:3]
        first = int(frames[0])
        s, R, t = self.window_frame(first)
        layer_scale = self.layer_scales(first)
        rng = np.random.default_rng([n.seed, 2, first])

        depth = np.empty((len(frames), h, w), np.float32)
        conf = np.empty_like(depth)
        poses = np.empty((len(frames), 4, 4), np.float64)
        Ks = self.intrinsics(frames, w, h)
        for i, f in enumerate(frames):
            gt = self.scene.render(int(f), w, h)
            d = gt["depth"] * layer_scale[gt["layers"]].astype(np.float32)
            if n.depth_noise:
                d = d * (1 + n.depth_noise * rng.standard_normal(d.shape, dtype=np.float32))
            depth[i] = s * d
            conf[i] = self._confidence(gt["depth"])
            pose = self.scene.pose(int(f))
            if n.pose_rot_deg:
                pose[:3, :3] = _random_rotation(rng, math.radians(n.pose_rot_deg) * 1.7) @ pose[:3, :3]
            if n.pose_trans:
                pose[:3, 3] += rng.normal(scale=n.pose_trans, size=3)
            poses[i] = pose
        poses = apply_sim3_to_poses(s, R, t, poses)
        points = np.stack([unproject(d, K) for d, K in zip(depth, Ks)])
        return WindowPrediction(
            frames=np.asarray(frames, np.int64), points=points, poses=poses.astype(np.float32),
            conf=conf, colors=np.ascontiguousarray(images, dtype=np.uint8),
            intrinsics=Ks.astype(np.float32) if n.predict_intrinsics else None,
        )

    def intrinsics(self, frames: np.ndarray, w: int, h: int) -> np.ndarray:
        """(N, 3, 3) predicted intrinsics of ``frames`` at (w, h): the scene's (zoomed) ones with
        ``focal_bias`` and ``focal_noise`` (each window draws its own, so a shared frame's two predictions differ)."""
        Ks = np.stack([self.scene.K(w, h, int(f)) for f in frames])
        Ks[:, :2, :2] *= 1 + self.noise.focal_bias
        if self.noise.focal_noise:
            rng = np.random.default_rng([self.noise.seed, 3, int(frames[0])])
            Ks[:, :2, :2] *= (1 + self.noise.focal_noise * rng.standard_normal(len(frames)))[:, None, None]
        return Ks

    def _confidence(self, depth: np.ndarray) -> np.ndarray:
        """(H, W) in (0, 1]: lower far away and on depth discontinuities."""
        log_d = np.log(depth)
        gy, gx = np.gradient(log_d)
        edges = cv2.dilate((np.hypot(gx, gy) > 0.05).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        conf = 1.0 / (1.0 + depth / self.noise.far_conf)
        return np.where(edges, conf * self.noise.edge_conf, conf).astype(np.float32)

