"""From a :class:`~laser_blender.protocol.Job` to what the streaming engine runs.

The one place where a job (from the add-on, a job file or the CLI's arguments)
becomes a frame source, a backbone, an engine configuration and the run
information recorded in ``run.json``. The worker and ``laser-blender reconstruct``
both call :func:`build_pipeline`.

The engine is imported lazily, so this module imports without torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from laser_blender.protocol import Job

if TYPE_CHECKING:
    from core.backbones.base import Backbone
    from core.engine import EngineConfig
    from core.frames import FrameSource


def focal_in_pixels(job: Job, footage_width: int) -> float | None:
    """The job's known focal length in footage pixels, or None to let the engine estimate it."""
    if job.focal_px is not None:
        return job.focal_px
    if job.focal_mm is not None:
        return job.focal_mm / job.sensor_width_mm * footage_width
    return None


def run_info(job: Job) -> dict[str, Any]:
    """What ``run.json`` records beyond the engine's own source/settings/backbone: the job itself.

    Keeping the whole job lets a later ``--resume`` or a re-run repeat it exactly.
    """
    return {"job": job.model_dump(mode="json")}


def load_job_backbone(job: Job) -> "Backbone":
    """The backbone the job names, with its weights loaded."""
    if job.backbone == "synthetic":
        from core.synthetic import load_synthetic_backbone

        return load_synthetic_backbone(job.synthetic_scene)
    from core.backbones.adapter import load_backbone

    return load_backbone(job.backbone, job.weights, job.device, job.dtype)


def build_pipeline(job: Job) -> tuple["FrameSource", "Backbone", "EngineConfig", dict[str, Any]]:
    """Open the footage, load the backbone, configure the engine.

    The footage is opened first, so a bad input path fails before a slow model load.

    Returns:
        ``(source, backbone, config, run_info)`` for :func:`core.engine.reconstruct`.

    Raises:
        core.frames.FrameSourceError: the footage cannot be read (the message names the file).
        Whatever the backbone loader raises for missing or unreadable weights.
    """
    from core.engine import EngineConfig
    from core.frames import open_source

    source = open_source(job.input, start=job.start, stride=job.stride, max_frames=job.max_frames)
    backbone = load_job_backbone(job)
    config = EngineConfig(
        window=job.window, overlap=job.overlap, conf_keep=job.conf_keep,
        layer_align=job.layer_align, focal_px=focal_in_pixels(job, source.info.width),
        save_predictions=job.save_predictions,
    )
    return source, backbone, config, run_info(job)
