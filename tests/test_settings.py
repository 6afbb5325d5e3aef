"""One source of settings: the pydantic fields behind the job, the engine, the CLI options and the add-on."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import get_args

import pytest
from pydantic import ValidationError

from core.run.settings import BACKBONES, BackboneName, EngineSettings, LayerAlignParams
from laser_blender import cli
from laser_blender.protocol import Job, encode, parse_job

REPO = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).with_name("laser-blender"))


def _help(capsys, monkeypatch, command: str) -> list[str]:
    monkeypatch.setenv("COLUMNS", "1000")  # one line per option
    with pytest.raises(SystemExit) as info:
        cli.main([command, "--help"])
    assert info.value.code == 0
    return capsys.readouterr().out.splitlines()


@pytest.mark.parametrize("command", ["reconstruct", "align"])
def test_help_lists_every_layer_alignment_parameter_with_its_default(capsys, monkeypatch, command):
    lines = [ln.strip() for ln in _help(capsys, monkeypatch, command)]
    for name, field in LayerAlignParams.model_fields.items():
        flag = "--lsa-" + name.replace("_", "-")
        at = next((i for i, ln in enumerate(lines) if ln.startswith(flag + " ")), None)
        assert at is not None, f"{flag} missing from `{command} --help`"
        entry = lines[at] if "(default" in lines[at] else lines[at + 1]  # help on the next line for long flags
        assert entry.endswith(f"(default {field.default})")


def test_reconstruct_keeps_its_flags_and_takes_backbones_from_the_settings(capsys, monkeypatch):
    text = "\n".join(_help(capsys, monkeypatch, "reconstruct"))
    for flag in ("--window", "--overlap", "--stride", "--start", "--max-frames", "--conf-keep", "--no-layer-align",
                 "--focal-px", "--focal-mm", "--sensor-width-mm", "--backbone", "--weights", "--synthetic-scene",
                 "--device", "--dtype", "--resume", "--blend", "--no-predictions"):
        assert flag in text
    assert "{" + ",".join(BACKBONES) + "}" in text
    assert "(default 30)" in text and "CC BY-NC 4.0" in text


@pytest.mark.parametrize("argv, first_line", [
    (["reconstruct", "x.mp4", "-o", "r", "--window", "1"], "--window: must be at least 2"),
    (["reconstruct", "x.mp4", "-o", "r", "--window", "10", "--overlap", "10"],
     "--overlap (10) must be smaller than --window (10)"),
    (["reconstruct", "x.mp4", "-o", "r", "--conf-keep", "nan"], "--conf-keep: must be a finite number"),
    (["reconstruct", "x.mp4", "-o", "r", "--focal-mm", "35"], "--focal-mm needs --sensor-width-mm"),
    (["reconstruct", "x.mp4", "-o", "r", "--lsa-bridge", "4"], "--lsa-bridge: must be an odd number, got 4"),
    (["reconstruct", "x.mp4", "-o", "r", "--lsa-max-scale", "1"], "--lsa-max-scale: must be greater than 1"),
    (["align", "pred", "-o", "r", "--lsa-edge-log", "0.1"], "--lsa-edge-log (0.1) must not exceed --lsa-merge-log"),
    (["align", "pred", "-o", "r", "--conf-keep", "1.5"], "--conf-keep: must be at most 1"),
    (["align", "pred", "-o", "r", "--lsa-min-pair-pixels", "0"], "--lsa-min-pair-pixels: must be at least 1"),
])
def test_bad_option_values_exit_2_naming_the_flag(capsys, argv, first_line):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("laser-blender: error: " + first_line), err


def test_bad_option_value_from_the_installed_command(tmp_path):
    r = subprocess.run([CLI, "reconstruct", "x.mp4", "-o", str(tmp_path / "r"), "--lsa-temporal-weight", "-1"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.splitlines()[0] == "laser-blender: error: --lsa-temporal-weight: must be at least 0.0"
    assert not (tmp_path / "r").exists()


def test_batch_script_names_the_flag():
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "blender_batch.py"), "--", "x.mp4", "--window", "1"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2
    assert "--window: must be at least 2" in r.stderr.splitlines()[0]


def test_options_become_the_job_and_the_engine_settings(tmp_path):
    from laser_blender.commands import _options, align, reconstruct

    parser = cli.build_parser()
    args = parser.parse_args(["reconstruct", "shot.mp4", "-o", str(tmp_path / "run"), "--window", "12",
                              "--overlap", "4", "--lsa-max-scale", "3", "--no-layer-align", "--no-predictions"])
    job = _options.job_from_args(args, args.input, args.output)
    assert job == Job(input=str(Path("shot.mp4").absolute()), run_dir=str(tmp_path / "run"), window=12, overlap=4,
                      layer_align=False, save_predictions=False, layer=LayerAlignParams(max_scale=3.0))
    assert reconstruct.help and align.help
    args = parser.parse_args(["align", "pred", "-o", "run", "--conf-keep", "0.3", "--lsa-stride", "2"])
    assert _options.settings_from_args(args) == EngineSettings(conf_keep=0.3, layer=LayerAlignParams(stride=2))


def test_job_without_layer_parses_to_the_defaults():
    job = parse_job(json.dumps({"input": "a.mp4", "run_dir": "r", "window": 6, "overlap": 2}))
    assert job.layer == LayerAlignParams()
    assert job == Job(input="a.mp4", run_dir="r", window=6, overlap=2)


def test_job_with_layer_parameters_round_trips():
    job = parse_job(json.dumps({"input": "a.mp4", "run_dir": "r", "layer": {"max_scale": 3}}))
    assert job.layer == LayerAlignParams(max_scale=3.0)
    assert json.loads(encode(job))["layer"]["max_scale"] == 3.0
    assert parse_job(encode(job)) == job
    with pytest.raises(ValueError, match="layer.bridge"):
        parse_job(json.dumps({"input": "a.mp4", "run_dir": "r", "layer": {"bridge": 4}}))
    with pytest.raises(ValueError, match="layer.maxscale"):
        parse_job(json.dumps({"input": "a.mp4", "run_dir": "r", "layer": {"maxscale": 3}}))


def test_job_gives_the_engine_settings_for_a_footage_width():
    job = Job(input="a.mp4", run_dir="r", window=12, overlap=4, conf_keep=0.3, layer_align=False,
              save_predictions=False, focal_mm=35.0, sensor_width_mm=36.0, layer={"min_layer": 0.01})
    settings = job.engine_settings(1920)
    assert settings == EngineSettings(window=12, overlap=4, conf_keep=0.3, layer_align=False,
                                      save_predictions=False, focal_px=35.0 / 36.0 * 1920,
                                      layer=LayerAlignParams(min_layer=0.01))
    assert settings.step == 8
    assert Job(input="a", run_dir="r", focal_px=900.0).engine_settings(1920).focal_px == 900.0
    assert Job(input="a", run_dir="r").engine_settings(1920).focal_px is None


def test_engine_settings_validate_like_the_engine_config():
    settings = EngineSettings(window=12, overlap=4, layer_align=False, focal_px=123.0, queue_size=2)
    assert (settings.step, settings.layer) == (8, LayerAlignParams())
    for bad in ({"window": 10, "overlap": 10}, {"overlap": 0}, {"window": 1}, {"conf_keep": 0.0},
                {"focal_px": 0.0}, {"focal_px": float("inf")}, {"conf_keep": float("nan")}, {"queue_size": 0},
                {"windw": 5}):
        with pytest.raises(ValidationError):
            EngineSettings(**bad)
    with pytest.raises(ValidationError):
        settings.window = 5  # frozen


def test_layer_align_params_validate_each_field():
    assert LayerAlignParams(pair_outlier_log=10.0).pair_outlier_log == 10.0
    assert hash(LayerAlignParams()) == hash(LayerAlignParams())
    for bad, field in (({"stride": 0}, "stride"), ({"bridge": 4}, "bridge"), ({"max_scale": 1.0}, "max_scale"),
                       ({"edge_log": 0.0}, "edge_log"), ({"edge_log": 0.1}, "merge_log"),
                       ({"irls_c": float("inf")}, "irls_c"), ({"min_layer": 2.0}, "min_layer")):
        with pytest.raises(ValidationError, match=field):
            LayerAlignParams(**bad)


def test_backbone_names_match_the_table():
    assert get_args(BackboneName) == tuple(BACKBONES) == ("pi3", "vggt", "da3", "da3-small", "da3-base", "synthetic")
    assert all(info.description and info.licence for info in BACKBONES.values())


@pytest.fixture()
def laser_settings():
    bpy = pytest.importorskip("bpy")
    from addon import properties

    bpy.utils.register_class(properties.LaserSettings)
    properties.register()
    yield bpy.context.scene.laser, properties
    properties.unregister()
    bpy.utils.unregister_class(properties.LaserSettings)


def test_addon_properties_take_defaults_limits_and_descriptions_from_the_fields(laser_settings):
    settings, properties = laser_settings
    rna = properties.LaserSettings.bl_rna.properties
    for prop, field in (("window", "window"), ("overlap", "overlap"), ("stride", "stride"),
                        ("layer_align", "layer_align"), ("backbone", "backbone")):
        assert getattr(settings, prop) == Job.model_fields[field].default
    for name in properties.LAYER_PROPERTIES:
        assert getattr(settings, f"lsa_{name}") == pytest.approx(LayerAlignParams.model_fields[name].default)
        assert rna[f"lsa_{name}"].description.lower() == LayerAlignParams.model_fields[name].description.lower()
    assert rna["window"].hard_min == 2 and rna["stride"].hard_min == 1
    assert rna["lsa_max_scale"].hard_min > 1 and rna["lsa_min_layer"].hard_max == 1
    assert [item.identifier for item in rna["backbone"].enum_items] == list(BACKBONES)
    assert all(BACKBONES[item.identifier].licence in item.description for item in rna["backbone"].enum_items)

    job = properties.make_job(settings, "/shot.mp4", Path("/runs/shot"), "cpu", False)
    assert job.layer == LayerAlignParams()  # single-precision properties give back the defaults exactly
    settings.lsa_max_scale, settings.lsa_temporal_weight = 3.0, 0.25
    job = properties.make_job(settings, "/shot.mp4", Path("/runs/shot"), "cpu", False)
    assert job.layer == LayerAlignParams(max_scale=3.0, temporal_weight=0.25)
    settings.window = 5
    with pytest.raises(ValidationError) as info:
        properties.make_job(settings, "/shot.mp4", Path("/runs/shot"), "cpu", False)
    assert properties.job_error(info.value) == '"Overlap" (10) must be smaller than "Window" (5)'
    settings.window = 30
    # the Camera Solve toggle is on: the engine's rule (solved from 512 px wide footage); off: never solved
    assert settings.refine and job.refine is None and rna["refine"].name == "Camera Solve"
    settings.refine_distortion = True  # only with the camera solve, and a fixed lens
    job = properties.make_job(settings, "/shot.mp4", Path("/runs/shot"), "cpu", False)
    assert job.refine is None and job.refine_distortion
    settings.refine = False
    job = properties.make_job(settings, "/shot.mp4", Path("/runs/shot"), "cpu", False)
    assert job.refine is False and not job.refine_distortion
    settings.refine, settings.zoom = True, True
    job = properties.make_job(settings, "/shot.mp4", Path("/runs/shot"), "cpu", False)
    assert job.refine is None and job.zoom and not job.refine_distortion
