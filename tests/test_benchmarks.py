"""Every benchmark runs end to end at toy sizes, so interface changes cannot silently break
the scripts whose figures the README reports (speed itself is measured by running them in full)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _bench(script: str, *args, timeout: int = 300) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *map(str, args)],
                       capture_output=True, text=True, timeout=timeout, cwd=REPO)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def test_gpu_benchmark_code_path_on_cpu(fixtures_dir, tmp_path):
    out = tmp_path / "gpu.json"
    _bench("bench_backbone_gpu.py", "--device", "cpu", "--config", fixtures_dir / "pi3_tiny_config.json",
           "--frames", 12, "--window", 6, "--overlap", 2, "--aspects", "4:3", "--json", out)
    result = json.loads(out.read_text())["results"][0]
    assert result["status"] == "complete" and result["windows"] == 3
    assert result["input_size"] == [574, 434] and result["fps"] > 0 and result["network_fps"] > 0


@pytest.mark.parametrize("refine", [[], ["--refine"]], ids=["network", "solve"])
def test_memory_benchmark(tmp_path, refine):
    out = tmp_path / "memory.json"
    _bench("bench_memory.py", "--frames", 12, 24, "--size", "128x96", *refine, "--json", out)
    result = json.loads(out.read_text())
    runs = result["runs"]
    assert result["refine"] == bool(refine)
    assert [r["frames"] for r in runs] == [12, 24] and all(r["status"] == "complete" for r in runs)
    assert all(r["peak_rss_mb"] > 0 for r in runs)


def test_registration_benchmark(tmp_path):
    out = tmp_path / "registration.json"
    _bench("bench_registration.py", "--size", "96x72", "--windows", 3, "--repeats", 1, "--json", out)
    median = json.loads(out.read_text())["ms_per_frame_median"]
    assert {"sim3_only", "sim3_plus_lsa", "lsa_segment", "lsa_match", "lsa_solve", "lsa_parallax",
            "lsa_apply"} <= set(median)
    assert all(v > 0 for v in median.values())


def test_farm_benchmark(tmp_path):
    out = tmp_path / "farm.json"
    _bench("bench_farm.py", "--size", "64x48", "--long-frames", 40, "--shots", 2, "--short-frames", 24,
           "--json", out)
    result = json.loads(out.read_text())
    assert [result["long_shot"][f"{n}_workers"]["frames"] for n in (1, 2)] == [40, 40]
    assert result["short_shots"]["sequential"]["frames"] == result["short_shots"]["farm"]["frames"] == 48
    assert result["long_shot"]["speedup"] > 0 and result["short_shots"]["speedup"] > 0


@pytest.mark.parametrize("script,args", [
    ("bench_backbone_cpu.py", ["--frames", 2, "--size", "56x42", "--repeats", 1]),
    ("bench_blender_import.py", ["--points", 20_000, "--frames", 50, "--windows", 2]),
    ("lsa_accuracy.py", ["--scenes", "street", "--seeds", 0, "--windows", 2, "--size", "96x72",
                         "--scenarios", "layers", "--texture"]),
])
def test_small_benchmarks_run(script, args):
    _bench(script, *args)


@pytest.mark.parametrize("script,args", [
    ("render_readme.py", ["--samples", 1, "--size", 96, 54]),
    ("figure_lsa.py", ["--size", "64x48", "--windows", 3]),
])
def test_readme_figure_scripts_draw_a_picture(script, args, tmp_path):
    import cv2

    out = tmp_path / "figure.png"
    flag = "--out" if script == "figure_lsa.py" else "--output"
    r = subprocess.run([sys.executable, str(REPO / "scripts" / script), *map(str, args), flag, str(out)],
                       capture_output=True, text=True, timeout=300, cwd=REPO)
    assert r.returncode == 0, r.stderr[-3000:]
    image = cv2.imread(str(out))
    assert image is not None and image.std() > 5  # a picture, not a blank canvas


def test_solve_benchmark(tmp_path):
    out = tmp_path / "solve.json"
    _bench("bench_solve.py", "--size", "320x180", "--frames", 8, "--fixed", 3, "--json", out)
    result = json.loads(out.read_text())
    assert result["size"] == [320, 180] and result["points"] > 100 and 0 < result["rms_px"] < 1
    assert all(v > 0 for v in result["per_frame_median_ms"].values())


def test_footage_size_benchmark(tmp_path):
    out = tmp_path / "size.json"
    _bench("solve_footage_size.py", "--sizes", "128x96", "--frames", 24, "--prediction", "64x48", "--seed", 1,
           "--layer-align", "--json", out)
    results = json.loads(out.read_text())
    row = results["rows"][0]
    assert row["size"] == [128, 96] and results["seed"] == 1 and results["layer_align"]
    for run in (row["registered"], row["solved"]):
        assert 0 <= run["ground_off"] < 10 and 0 <= run["ground_off_path"] < 10
        assert 0 <= run["heading_deg"] < 45 and 0 < run["ate_over_length"] < 1
        assert run["chamfer"] > 0 and 0 < run["abs_rel"] < 1
    assert row["solved"] != row["registered"]  # the solve moved the cameras


def test_solve_benchmark_times_whole_runs(tmp_path):
    out = tmp_path / "engine.json"
    _bench("bench_solve.py", "--engine", "--size", "320x180", "--frames", 24, "--repeats", 1, "--json", out)
    result = json.loads(out.read_text())
    assert result["frames"] == 24 and result["size"] == [320, 180]
    assert all(v > 0 for v in result["run_ms_per_frame"].values())
