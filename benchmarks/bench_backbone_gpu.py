"""Full-size backbones inside the streaming engine on a GPU: end-to-end frames/s and peak GPU memory.

For each backbone (default: pi3, VGGT and DA3-BASE, one after the other), a synthetic
512-frame stream (the analytic scene of ``core.synthetic``, pre-rendered at the
backbone's native input size so rendering is not timed) runs through
:func:`core.engine.reconstruct` with 30-frame windows overlapping by 10: inference,
registration, layer alignment and the run directory written to a temporary folder.
The networks are full size with random weights (speed and memory do not depend on
the values), loaded like a real checkpoint: trunk Linear/Conv weights in bfloat16
(float16 before Ampere), heads float32, autocast.

Each footage aspect (16:9 at 1920x1080, 4:3 at 1440x1080; pi3 672x378 and 574x434,
VGGT 518x294 and 518x392, DA3 504x280 and 504x378) reports ``fps`` (end-to-end) and
``network_fps`` (the windows through the backbone alone), and ``peak_gpu_mb`` from
``torch.cuda.max_memory_allocated`` (weights included). Anchor: LASER reports 14 FPS
at 6 GB peak on an RTX A6000 with pi3.

    .venv/bin/python benchmarks/bench_backbone_gpu.py [--backbones pi3 vggt da3] [--frames 512] [--json out.json]

Without CUDA it exits with status 2 and says so. ``--device cpu --config
pi3_tiny_config.json --frames 40`` runs the same code path on CPU as a smoke test: a
``--config`` file (repeatable, the fixtures' ``*_tiny_config.json`` schema) sizes the
backbones of the network its ``model`` entry names ("pi3-tiny ...", "da3-tiny ..."),
and with configs the backbones default to those networks.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _results import save_results  # noqa: E402  (beside this script)

from core.run.manifest import SourceInfo  # noqa: E402

FOOTAGE = {"16:9": (1920, 1080), "4:3": (1440, 1080)}
DEFAULT_BACKBONES = ("pi3", "vggt", "da3")


class MemorySource:
    """Pre-rendered frames at the network's input size (the engine's frame-source interface)."""

    def __init__(self, frames: np.ndarray, footage: tuple[int, int], fps: float) -> None:
        self.images = frames
        self.info = SourceInfo(path=f"memory:{footage[0]}x{footage[1]}", width=footage[0], height=footage[1],
                               fps=fps, num_frames=len(frames))

    def frames(self, geometry=None, skip: int = 0, warn=None) -> Iterator[tuple[int, np.ndarray]]:
        size = (self.images.shape[2], self.images.shape[1])
        if geometry is not None and tuple(geometry.size) != size:
            raise ValueError(f"frames were rendered at {size}, the backbone asks for {geometry.size}")
        yield from enumerate(self.images[skip:], start=skip)


def render_stream(footage: tuple[int, int], size: tuple[int, int], num_frames: int) -> MemorySource:
    """The synthetic scene's camera path rendered straight at ``size`` (no resize)."""
    from core.synthetic import Scene, SceneConfig

    scene = Scene(SceneConfig(width=footage[0], height=footage[1], num_frames=num_frames))
    frames = np.stack([scene.render(i, *size)["colors"] for i in range(num_frames)])
    return MemorySource(frames, footage, scene.config.fps)


def synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def network_only(backbone, source: MemorySource, window: int, overlap: int) -> float:
    """Seconds for all windows of the stream through ``backbone.predict`` alone."""
    from core.engine import iter_windows

    synchronize(backbone.device)
    t0 = time.perf_counter()
    for _, items in iter_windows(enumerate(source.images), window, overlap):
        backbone.predict(np.stack([img for _, img in items]), np.array([i for i, _ in items]))
    synchronize(backbone.device)
    return time.perf_counter() - t0


def run_engine(backbone, source: MemorySource, window: int, overlap: int, workdir: Path) -> tuple[str, float]:
    """The whole streaming engine on ``source``; (status, seconds)."""
    from core.engine import reconstruct
    from core.run.settings import EngineSettings

    synchronize(backbone.device)
    t0 = time.perf_counter()
    # backbone + registration only: the frames exist at network size (the camera solve: bench_solve.py)
    settings = EngineSettings(window=window, overlap=overlap, refine=False)
    status = reconstruct(source, backbone, workdir / "run", settings)
    synchronize(backbone.device)
    return status, time.perf_counter() - t0


def bench_aspect(backbone, aspect: str, frames: int, window: int, overlap: int) -> dict:
    import torch

    from core.engine import count_windows

    footage = FOOTAGE[aspect]
    geometry = backbone.input_geometry(footage)
    source = render_stream(footage, geometry.size, frames)
    cuda = backbone.device.type == "cuda"
    backbone.predict(source.images[:window], np.arange(min(window, frames)))  # warm-up: kernels, caches
    if cuda:
        torch.cuda.reset_peak_memory_stats(backbone.device)
    net_s = network_only(backbone, source, window, overlap)
    net_peak = torch.cuda.max_memory_allocated(backbone.device) if cuda else None
    if cuda:
        torch.cuda.reset_peak_memory_stats(backbone.device)
    with tempfile.TemporaryDirectory(prefix="laser-bench-") as tmp:
        status, e2e_s = run_engine(backbone, source, window, overlap, Path(tmp))
    e2e_peak = torch.cuda.max_memory_allocated(backbone.device) if cuda else None
    mb = lambda b: None if b is None else round(b / 2**20, 1)  # noqa: E731
    return {
        "aspect": aspect,
        "footage": list(footage),
        "input_size": list(geometry.size),
        "frames": frames,
        "windows": count_windows(frames, window, overlap),
        "status": status,
        "seconds": round(e2e_s, 2),
        "fps": round(frames / e2e_s, 2),
        "network_seconds": round(net_s, 2),
        "network_fps": round(frames / net_s, 2),
        "peak_gpu_mb": mb(e2e_peak),
        "network_peak_gpu_mb": mb(net_peak),
    }


def bench_backbone(name: str, config_name: str | None, config: dict | None, args) -> tuple[dict, list[dict]]:
    """Load one backbone (random weights), run every aspect, free it; (backbone info, per-aspect results)."""
    import torch

    from core.backbones.adapter import load_backbone

    t0 = time.perf_counter()
    backbone = load_backbone(name, "random", device=args.device, dtype=args.dtype, config=config)
    load_s = time.perf_counter() - t0
    cuda = backbone.device.type == "cuda"
    info = {
        "backbone": name,
        "network": f"{name} full size (random weights)" if config is None else f"{name} config {config_name}",
        "parameters": sum(p.numel() for p in backbone.model.parameters()),
        "compute_dtype": str(backbone.amp_dtype or torch.float32).removeprefix("torch."),
        "load_seconds": round(load_s, 1),
        "weights_gpu_mb": round(torch.cuda.memory_allocated(backbone.device) / 2**20, 1) if cuda else None,
    }
    results = [
        {"backbone": name, **bench_aspect(backbone, a, args.frames, args.window, args.overlap)} for a in args.aspects
    ]
    del backbone
    if cuda:
        torch.cuda.empty_cache()
    return info, results


def main() -> int:
    from core.backbones import NETWORK_BACKBONES

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=512)
    ap.add_argument("--window", type=int, default=30)
    ap.add_argument("--overlap", type=int, default=10)
    ap.add_argument("--aspects", nargs="+", default=list(FOOTAGE), choices=list(FOOTAGE))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    ap.add_argument("--backbones", nargs="+", choices=list(NETWORK_BACKBONES),
                    help="default: pi3 vggt da3 (DA3-BASE), or those of them whose network a --config sizes")
    ap.add_argument("--config", type=Path, action="append", default=[],
                    help="network config JSON, repeatable (default: full size)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()

    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("bench_backbone_gpu: CUDA is not available on this machine; this benchmark needs an NVIDIA GPU "
              "(or run a CPU smoke test: --device cpu --config <tiny config> --frames 40).", file=sys.stderr)
        return 2

    configs = {}
    for path in args.config:
        config = json.loads(path.read_text())
        configs[str(config.get("model", "")).split("-", 1)[0]] = (path.name, config)
    backbones = args.backbones or [b for b in DEFAULT_BACKBONES if not configs or NETWORK_BACKBONES[b].network in configs]
    runs = [bench_backbone(b, *configs.get(NETWORK_BACKBONES[b].network, (None, None)), args) for b in backbones]
    cuda = torch.device(args.device).type == "cuda"
    result = {
        "benchmark": "backbones in the streaming engine",
        "device": torch.cuda.get_device_name(args.device) if cuda else "cpu",
        "torch": torch.__version__,
        "window": args.window,
        "overlap": args.overlap,
        "backbones": [info for info, _ in runs],
        "results": [r for _, aspects in runs for r in aspects],
    }
    print(json.dumps(result, indent=1))
    save_results(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
