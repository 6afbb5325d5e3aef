"""A synthetic run with a known ground, a known scale and a moving object, for the orientation,
scale and dynamic-point tests; and the map from the synthetic ground truth into a run's world."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.engine import reconstruct
from core.geometry.transforms import umeyama_sim3
from core.run.rundir import RunDir
from core.run.settings import EngineSettings
from core.run.tum import read_tum
from core.synthetic import Scene, SceneConfig, SyntheticBackbone, SyntheticNoise, SyntheticSource

CONFIG = SceneConfig(width=256, height=192, num_frames=120)
PREDICTION = (128, 96)
NOISE = SyntheticNoise(layer_scale=0.0)
"""Depth noise (1%), pose noise and each window in its own Sim(3), but no per-layer depth scale errors:
the reconstruction's ground is then a plane, so the tests measure orientation, not the network."""


def make_run(run_dir: Path) -> Path:
    """Reconstruct the synthetic shot (windows of 30, overlap 10) into ``run_dir``, keeping the predictions."""
    scene = Scene(CONFIG)
    status = reconstruct(SyntheticSource(scene), SyntheticBackbone(scene, NOISE, size=PREDICTION), run_dir,
                         EngineSettings(window=30, overlap=10, layer_align=False, save_predictions=True))
    assert status == "complete"
    return run_dir


def run_from_truth(run_dir: Path) -> np.ndarray:
    """(4, 4) similarity from the synthetic world (metres, y down) to the run's world, fitted on camera centres."""
    _, poses = read_tum(RunDir(run_dir).trajectory_path)
    truth = Scene(CONFIG).pose(np.arange(len(poses)))
    s, R, t = umeyama_sim3(truth[:, :3, 3], poses[:, :3, 3])
    m = np.eye(4)
    m[:3, :3], m[:3, 3] = s * R, t
    return m


def moving_layer() -> int:
    """Layer id of the moving object in the synthetic renders."""
    scene = Scene(CONFIG)
    return 2 + [o.name for o in scene.objects].index("moving_object")
