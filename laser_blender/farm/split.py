"""A long shot across several workers: its windows are predicted in parallel, registered here in order.

Network inference per window is independent; registration is a cheap ordered chain. The
engine reads the footage and registers as in a single-process run (``core.engine``
with a :data:`~core.engine.Predictor`), while :func:`parallel_predictor` hands each
window's images to a Ray task and returns the predictions in window order, with at most
``in_flight`` windows submitted and not yet registered, so memory stays flat. Only one
window's images (to the worker) and one window's prediction (back) pass through Ray's
object store. A window whose worker dies is retried by Ray (``max_retries``).
"""

from __future__ import annotations

from collections import deque
from typing import Any, Iterator

import numpy as np
import ray

from core.engine import Predictor, WindowInput
from core.run.arrays import WindowPrediction
from core.run.manifest import InputGeometry
from laser_blender.farm import tasks
from laser_blender.protocol import Job

MAX_RETRIES = 3
"""Attempts after the first for a task whose worker process died (Ray's ``max_retries``)."""


class RemoteBackbone:
    """The job's backbone, run by Ray workers (implements :class:`core.backbones.base.Backbone`).

    ``licence`` is known once :meth:`input_geometry` has asked a worker (the engine asks
    for the geometry first).
    """

    def __init__(self, job: Job, resources: dict[str, Any]):
        self.job = job
        self.name = job.backbone
        self.licence = ""
        self._describe = ray.remote(tasks.describe_backbone).options(**resources, max_retries=MAX_RETRIES)
        self._predict = ray.remote(tasks.predict_window).options(**resources, max_retries=MAX_RETRIES)

    def input_geometry(self, footage: tuple[int, int]) -> InputGeometry:
        self.licence, geometry = _result(self._describe.remote(self.job, tuple(footage)))
        return geometry

    def submit(self, images: np.ndarray, frames: np.ndarray) -> "ray.ObjectRef":
        """Start predicting one window on a worker; the reference resolves to its WindowPrediction."""
        return self._predict.remote(self.job, images, frames)

    def predict(self, images: np.ndarray, frames: np.ndarray) -> WindowPrediction:
        return _prediction(self.submit(images, frames))


def _result(ref: "ray.ObjectRef") -> Any:
    """The task's result; an error the task raised is raised here as itself (its message, not Ray's traceback)."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as e:
        if isinstance(e.cause, Exception):
            raise e.cause from None
        raise


def _prediction(ref: "ray.ObjectRef") -> WindowPrediction:
    """A window's prediction, its arrays owned by this process (Ray hands numpy arrays back read-only)."""
    pred = _result(ref)
    return WindowPrediction(**{k: None if v is None else np.array(v) for k, v in vars(pred).items()})


def parallel_predictor(backbone: RemoteBackbone, in_flight: int) -> Predictor:
    """A :data:`~core.engine.Predictor` that keeps up to ``in_flight`` windows predicting at once."""
    if in_flight < 1:
        raise ValueError(f"in_flight must be at least 1, got {in_flight}")

    def predict(windows: Iterator[WindowInput]) -> Iterator[tuple[int, WindowPrediction]]:
        pending: deque[tuple[int, ray.ObjectRef]] = deque()
        try:
            for index, frames, images in windows:
                pending.append((index, backbone.submit(images, frames)))
                if len(pending) >= in_flight:
                    done, ref = pending.popleft()
                    yield done, _prediction(ref)
            while pending:
                done, ref = pending.popleft()
                yield done, _prediction(ref)
        finally:  # cancelled or failed: windows nobody will register are not worth finishing
            for _, ref in pending:
                ray.cancel(ref)

    return predict
