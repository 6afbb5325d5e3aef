"""The camera solve's run-directory files: solve.json and the per-window bundles, read back through RunDir."""

from __future__ import annotations

import numpy as np
import pytest

from core.run.files import RunDirError
from core.run.rundir import RunDir, RunWriter
from core.run.solve import Bundles, SolveReport


def bundles(rng: np.random.Generator, points: int, obs: int, first_frame: int) -> Bundles:
    return Bundles(rng.normal(size=(points, 3)), rng.integers(0, 256, (points, 3)).astype(np.uint8),
                   rng.integers(0, points, obs), first_frame + rng.integers(0, 20, obs),
                   rng.uniform(0, 1920, (obs, 2)).astype(np.float32))


def test_bundles_are_written_per_window_and_read_as_one_set(tmp_path):
    run, rng = RunDir(tmp_path / "run"), np.random.default_rng(0)
    assert run.read_bundles() is None and run.read_solve() is None
    writer = RunWriter(run)
    parts = [bundles(rng, 40, 200, 0), bundles(rng, 25, 90, 20)]
    for index, part in enumerate(parts):
        report = SolveReport(rms_px=0.2 + index, per_frame_px={20 * index: 0.2}, tracks=65, points=65, inliers=290,
                             focal=1000.0)
        writer.write_solve(index, part, report)
    got = run.read_bundles()
    assert got.xyz.dtype == np.float64 and got.rgb.dtype == np.uint8 and got.obs_xy.dtype == np.float32
    assert got.xyz.shape == (65, 3) and len(got.obs_point) == 290
    # the second window's observations point at its own points, after the first window's
    np.testing.assert_array_equal(got.xyz[got.obs_point[200:]], parts[1].xyz[parts[1].obs_point])
    np.testing.assert_array_equal(got.obs_frame, np.r_[parts[0].obs_frame, parts[1].obs_frame])
    assert run.read_solve() == report and run.read_solve().per_frame_px == {20: 0.2}
    assert report.summary() == "Solve error: 1.20 px (65 points, 290 inlier observations)"
    refined = report.model_copy(update={"focal_refined": True})
    assert refined.summary().endswith("290 inlier observations; focal length 1000.0 px, refined)")
    run.clear()
    assert run.read_bundles() is None and run.read_solve() is None


def test_bundles_reject_inconsistent_arrays():
    rng = np.random.default_rng(1)
    good = bundles(rng, 5, 10, 0)
    with pytest.raises(RunDirError, match="obs_xy has shape"):
        Bundles(good.xyz, good.rgb, good.obs_point, good.obs_frame, good.obs_xy[:5])
    with pytest.raises(RunDirError, match="outside 0..4"):
        Bundles(good.xyz, good.rgb, good.obs_point + 5, good.obs_frame, good.obs_xy)
