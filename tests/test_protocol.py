"""The worker line protocol: round trips, versioning, and lines a reader must survive."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from pydantic import ValidationError

from laser_blender.protocol import (
    PROTOCOL_VERSION,
    Cancel,
    Cancelled,
    ErrorEvent,
    Finished,
    Job,
    Progress,
    ProtocolIssue,
    Started,
    WarningEvent,
    WindowDone,
    decode,
    decode_control,
    encode,
    is_terminal,
    parse_job,
)

EVENTS = [
    Started(run_dir="/runs/a", total_frames=120, fps=29.97, width=1920, height=1080,
            pred_width=518, pred_height=294, backbone="pi3", windows_done=3),  # resumed
    Started(run_dir="/runs/a", total_frames=None, fps=None, width=64, height=48,
            pred_width=64, pred_height=48, backbone="synthetic"),
    WindowDone(index=4, frames=[80, 81, 82], path="/runs/a/aligned/w00004.npz"),
    Progress(frames_done=83, total_frames=120, fps=14.5, eta_s=2.6),
    Progress(frames_done=83, total_frames=None, fps=0.0, eta_s=None),
    WarningEvent(message="pi3 weights are licensed for non-commercial use only\nsecond line"),
    ErrorEvent(message="cannot open /x.mp4: no such file", log="/runs/a/worker.log", resumable=True),
    Finished(run_dir="/runs/a", windows=6, frames=120, seconds=8.25),
    Cancelled(run_dir="/runs/a", windows=2, frames=50),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: e.type)
def test_event_round_trip_is_one_versioned_line(event):
    line = encode(event)
    assert "\n" not in line
    obj = json.loads(line)
    assert obj["v"] == PROTOCOL_VERSION == 1 and obj["type"] == event.type
    back = decode(line + "\n")
    assert type(back) is type(event) and back == event


def test_job_round_trip_and_defaults():
    job = Job(input="/footage/shot.mp4", run_dir="/runs/shot", backbone="vggt", weights="/w/vggt.pt",
              window=24, overlap=8, stride=2, start=10, max_frames=100, layer_align=False,
              focal_mm=35.0, sensor_width_mm=36.0, device="cuda:1", dtype="bfloat16", resume=True)
    assert parse_job(encode(job)) == job
    default = Job(input="a.mp4", run_dir="r")
    assert (default.window, default.overlap, default.backbone, default.layer_align) == (30, 10, "pi3", True)


def test_job_file_may_span_lines_and_omit_version_and_type():
    text = json.dumps({"input": "a.mp4", "run_dir": "r", "window": 6, "overlap": 2}, indent=2)
    assert "\n" in text
    assert parse_job(text) == Job(input="a.mp4", run_dir="r", window=6, overlap=2)


@pytest.mark.parametrize("text, expected", [
    ("", "not JSON"),
    ("[]", "expected a JSON object"),
    ('{"v": 2, "input": "a", "run_dir": "r"}', "version 2"),
    ('{"type": "cancel"}', "type is 'cancel'"),
    ('{"input": "a"}', "run_dir: Field required"),
    ('{"input": "a", "run_dir": "r", "windw": 5}', "windw: Extra inputs are not permitted"),
    ('{"input": "a", "run_dir": "r", "window": 6, "overlap": 6}', "overlap (6) must be smaller than window (6)"),
    ('{"input": "a", "run_dir": "r", "overlap": 0}', "overlap: Input should be greater than or equal to 1"),
    ('{"input": "a", "run_dir": "r", "focal_mm": 35}', "needs sensor_width_mm"),
    ('{"input": "a", "run_dir": "r", "focal_mm": 35, "sensor_width_mm": 36, "focal_px": 900}', "not both"),
    ('{"input": "a", "run_dir": "r", "backbone": "synthetic"}', "needs synthetic_scene"),
    ('{"input": "a", "run_dir": "r", "backbone": "dust3r"}', "backbone: Input should be 'pi3', 'vggt', 'da3', 'da3-small', 'da3-base' or 'synthetic'"),
])
def test_invalid_jobs_are_rejected_with_the_reason(text, expected):
    with pytest.raises(ValueError) as info:
        parse_job(text)
    assert expected in str(info.value)


@pytest.mark.parametrize("line, reason", [
    ("", "empty line"),
    ("   \n", "empty line"),
    ("Traceback (most recent call last):", "not JSON"),
    ('{"v": 1, "type": "started"', "not JSON"),
    ("42", "expected a JSON object, got int"),
    ('"started"', "expected a JSON object, got str"),
    ('{"type": "progress", "frames_done": 1, "fps": 1.0}', "protocol version None"),
    ('{"v": 2, "type": "progress", "frames_done": 1, "fps": 1.0}', "protocol version 2, this reader speaks 1"),
    ('{"v": "1", "type": "progress", "frames_done": 1, "fps": 1.0}', "protocol version '1'"),
    ('{"v": 1, "type": "telemetry", "x": 1}', "unknown event type 'telemetry'"),
    ('{"v": 1}', "unknown event type None"),
    ('{"v": 1, "type": "job", "input": "a", "run_dir": "r"}', "unknown event type 'job'"),
    ('{"v": 1, "type": "progress", "frames_done": -1, "fps": 1.0}',
     "frames_done: Input should be greater than or equal to 0"),
    ('{"v": 1, "type": "progress", "frames_done": 1, "fps": "fast"}', "fps: Input should be a valid number"),
    ('{"v": 1, "type": "progress", "frames_done": 1, "fps": NaN}', "fps"),
    ('{"v": 1, "type": "window_done", "index": 0, "frames": [1], "path": "p", "extra": 1}', "extra: Extra inputs"),
    ('{"v": 1, "type": "started", "run_dir": "r"}', "invalid started event"),
])
def test_malformed_lines_become_issues_never_exceptions(line, reason):
    issue = decode(line)
    assert isinstance(issue, ProtocolIssue)
    assert reason in issue.reason
    warning = issue.as_warning()
    assert isinstance(warning, WarningEvent) and issue.reason in warning.message
    assert isinstance(decode(encode(warning)), WarningEvent)


def test_issue_quotes_long_lines_shortened():
    issue = decode("x" * 10_000)
    assert isinstance(issue, ProtocolIssue) and len(issue.line) == 200


def test_senders_cannot_build_lines_readers_reject():
    with pytest.raises(ValidationError):
        Progress(frames_done=1, fps=float("inf"))
    with pytest.raises(ValidationError):
        WindowDone(index=-1, frames=[], path="p")
    with pytest.raises(ValidationError):
        ErrorEvent(message="m", unexpected=1)


def test_control_lines():
    assert decode_control("cancel\n") == Cancel()
    assert decode_control(encode(Cancel())) == Cancel()
    assert isinstance(decode_control("stop"), ProtocolIssue)
    assert isinstance(decode_control('{"v": 1, "type": "job"}'), ProtocolIssue)
    assert isinstance(decode_control('{"v": 9, "type": "cancel"}'), ProtocolIssue)


def test_terminal_events():
    assert [e.type for e in EVENTS if is_terminal(e)] == ["error", "finished", "cancelled"]
    assert not is_terminal(decode("junk"))


def test_protocol_and_client_import_neither_torch_cv2_nor_bpy():
    code = ("import sys, laser_blender.protocol, laser_blender.client;"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'cv2', 'bpy'));"
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_started_says_whether_earlier_windows_exist():
    assert EVENTS[0].resumed and not EVENTS[1].resumed
    assert "resumed" not in json.loads(encode(EVENTS[0]))
