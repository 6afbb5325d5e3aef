"""Synthetic footage with exact ground truth, and a backbone that predicts it like a network.

* :class:`Scene` / :class:`SceneConfig`: the analytic scene.
* :class:`SyntheticBackbone` / :class:`SyntheticNoise`: monocular-network-like predictions.
* :class:`SyntheticSource`: a frame source that renders on the fly (no video file).
* :func:`render_clip`: writes an mp4 plus a ground-truth directory (``core.groundtruth``).
* :func:`load_synthetic_backbone`: the backbone for a ground-truth directory.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

from core.errors import UserError
from core.frames import FrameSourceError, apply_geometry
from core.groundtruth import GroundTruthWriter, load_ground_truth
from core.run.manifest import InputGeometry, SourceInfo
from core.synthetic.backbone import SyntheticBackbone, SyntheticNoise
from core.synthetic.scene import Scene, SceneConfig

__all__ = ["Scene", "SceneConfig", "SyntheticBackbone", "SyntheticNoise", "SyntheticSource",
           "render_clip", "load_synthetic_backbone"]


class SyntheticSource:
    """Frames of a :class:`Scene` rendered on demand (same interface as ``core.frames``)."""

    def __init__(self, scene: Scene, num_frames: int | None = None, supersample: int = 1):
        self.scene = scene
        self.supersample = supersample  # footage colours rendered this many times larger and area-averaged
        c = scene.config
        self.info = SourceInfo(path=f"synthetic:{c.width}x{c.height}", width=c.width, height=c.height,
                                  fps=c.fps, num_frames=num_frames or c.num_frames)

    def _footage(self, i: int) -> np.ndarray:
        """(H, W, 3) uint8 footage frame ``i``; with ``supersample`` filtered like a real camera's
        (the ray caster point-samples)."""
        w, h, k = self.info.width, self.info.height, self.supersample
        img = self.scene.render(i, k * w, k * h)["colors"]
        return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA) if k > 1 else img

    def _network_input(self, i: int, geometry: InputGeometry | None, footage: np.ndarray | None) -> np.ndarray:
        """Frame ``i`` through ``geometry``: a plain resize is rendered directly at its size (cheaper than the
        footage), so the network sees the same image whether or not the footage is also asked for."""
        if geometry is not None and geometry.offset == (0, 0) and geometry.resized == geometry.size:
            return self.scene.render(i, *geometry.size)["colors"]
        return apply_geometry(self._footage(i) if footage is None else footage, geometry)

    def frames(self, geometry: InputGeometry | None = None, skip: int = 0,
               warn=None) -> Iterator[tuple[int, np.ndarray]]:
        """``(index, image)``: the footage frame through ``geometry``."""
        for i in range(skip, self.info.num_frames):
            yield i, self._network_input(i, geometry, None)

    def frame_pairs(self, geometry: InputGeometry | None = None, skip: int = 0,
                    warn=None) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """``(index, network input, footage frame)``; the network input as :meth:`frames` gives it."""
        for i in range(skip, self.info.num_frames):
            img = self._footage(i)
            yield i, self._network_input(i, geometry, img), img


def render_clip(out_dir: Path, config: SceneConfig = SceneConfig(),
                progress: Callable[[int, int], None] | None = None,
                noise: SyntheticNoise | None = None) -> tuple[Path, Path]:
    """Render ``config`` to ``out_dir/clip.mp4`` and ground truth to ``out_dir/gt``.

    ``noise``, when given, is recorded in gt.json: the synthetic backbone of that directory
    predicts with it (the default noise otherwise). A zooming scene's ground truth holds
    each frame's intrinsics.

    Returns:
        (clip path, ground-truth directory).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    scene = Scene(config)
    clip = out_dir / "clip.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), config.fps, (config.width, config.height))
    if not writer.isOpened():
        raise FrameSourceError(f"{clip}: OpenCV cannot write mp4 video on this machine")
    gt = GroundTruthWriter(out_dir / "gt", config.width, config.height, config.fps, scene.K(),
                           scene.layer_names, extra={"scene": config.to_dict(),
                                                     **({"noise": asdict(noise)} if noise else {})})
    try:
        for i in range(config.num_frames):
            r = scene.render(i)
            writer.write(cv2.cvtColor(r["colors"], cv2.COLOR_RGB2BGR))
            gt.add_frame(i, scene.pose(i), r["depth"], r["layers"], K=scene.K(frame=i) if config.zoom != 1 else None)
            if progress:
                progress(i + 1, config.num_frames)
    finally:
        writer.release()
    gt.close()
    return clip, out_dir / "gt"


def load_synthetic_backbone(gt_dir: str | Path, noise: SyntheticNoise | None = None,
                            size: tuple[int, int] | None = None) -> SyntheticBackbone:
    """The synthetic backbone for a ground-truth directory written by :func:`render_clip` (with the
    noise recorded there when ``noise`` is None and it has one)."""
    if gt_dir is None:
        raise UserError("the synthetic backbone needs the ground-truth directory of its scene "
                         "(--synthetic-scene GT_DIR, written by `laser-blender demo`)")
    gt = load_ground_truth(gt_dir)
    if "scene" not in gt.extra:
        raise UserError(f"{gt_dir} holds no synthetic scene description (gt.json has no 'scene')")
    if noise is None:
        noise = SyntheticNoise(**gt.extra["noise"]) if "noise" in gt.extra else SyntheticNoise()
    return SyntheticBackbone(Scene(SceneConfig.from_dict(gt.extra["scene"])), noise, size)
