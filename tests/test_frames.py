"""Frame sources on real files: videos written with OpenCV, PNG/JPG folders, broken inputs."""

from __future__ import annotations

import os
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from core.frames import FrameSourceError, open_source
from core.run.footage import natural_key
from core.run.manifest import InputGeometry, SourceInfo

W, H = 64, 48
N_FRAMES = 30
LEVEL_STEP = 8  # frame i of a test video is uniformly grey at level i * LEVEL_STEP


def write_video(path: Path, fourcc: str, n: int = N_FRAMES, fps: float = 12.0) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (W, H))
    assert writer.isOpened(), f"OpenCV cannot write {fourcc} here"
    for i in range(n):
        writer.write(np.full((H, W, 3), i * LEVEL_STEP, np.uint8))
    writer.release()
    return path


def grey_level(image: np.ndarray) -> int:
    """The frame index a test-video frame shows."""
    return int(round(float(image.mean()) / LEVEL_STEP))


@pytest.fixture(params=[("mp4", "mp4v"), ("avi", "MJPG")], ids=["mp4", "avi"])
def video(request, tmp_path) -> Path:
    ext, fourcc = request.param
    return write_video(tmp_path / f"clip.{ext}", fourcc)


def write_folder(folder: Path, names: list[str], size=(W, H)) -> Path:
    """Image ``names[k]`` is uniformly grey at level k * LEVEL_STEP (PNG exact, JPG close)."""
    folder.mkdir(parents=True, exist_ok=True)
    for k, name in enumerate(names):
        assert cv2.imwrite(str(folder / name), np.full((size[1], size[0], 3), k * LEVEL_STEP, np.uint8))
    return folder


# --------------------------------------------------------------------------- videos

def test_video_info_and_all_frames(video):
    src = open_source(video)
    assert (src.info.width, src.info.height) == (W, H)
    assert src.info.fps == pytest.approx(12.0)
    assert src.info.num_frames == N_FRAMES
    got = [(i, img) for i, img in src.frames()]
    assert [i for i, _ in got] == list(range(N_FRAMES))
    assert all(img.shape == (H, W, 3) and img.dtype == np.uint8 for _, img in got)
    assert [grey_level(img) for _, img in got] == list(range(N_FRAMES))


@pytest.mark.parametrize("start,stride,max_frames,expected", [
    (0, 1, 5, [0, 1, 2, 3, 4]),
    (10, 2, None, list(range(10, 30, 2))),
    (3, 4, 3, [3, 7, 11]),
    (29, 5, None, [29]),
    (1, 7, 100, [1, 8, 15, 22, 29]),
])
def test_video_start_stride_max_frames(video, start, stride, max_frames, expected):
    src = open_source(video, start=start, stride=stride, max_frames=max_frames)
    assert src.info.num_frames == len(expected)
    frames = list(src.frames())
    assert [i for i, _ in frames] == expected
    assert [grey_level(img) for _, img in frames] == expected


def test_iterating_twice_restarts(video):
    src = open_source(video, start=5, stride=3)
    first = [i for i, _ in src.frames()]
    second = [i for i, _ in src]
    assert first == second == list(range(5, 30, 3))


def test_video_frames_are_rgb(tmp_path):
    path = tmp_path / "red.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (W, H))
    bgr_red = np.zeros((H, W, 3), np.uint8)
    bgr_red[..., 2] = 255
    for _ in range(3):
        writer.write(bgr_red)
    writer.release()
    _, image = next(open_source(path).frames())
    r, g, b = image.reshape(-1, 3).mean(0)
    assert r > 200 and g < 40 and b < 40


# --------------------------------------------------------------------------- folders

def test_natural_key_orders_numbers_by_value():
    names = ["img10.png", "img2.png", "IMG1.png", "img9b.png", "img9.png"]
    assert sorted(names, key=natural_key) == ["IMG1.png", "img2.png", "img9.png", "img9b.png", "img10.png"]


def test_folder_natural_sort_and_extensions(tmp_path):
    names = ["img1.png", "img2.png", "img9.png", "img10.png", "img11.png", "img100.png"]
    folder = write_folder(tmp_path / "seq", names)
    (folder / "notes.txt").write_text("not an image")
    (folder / "sub.png").mkdir()  # a directory named like an image is not an image
    shuffled = open_source(folder)
    assert [p.name for p in shuffled.files] == names
    frames = list(shuffled.frames())
    assert [i for i, _ in frames] == list(range(len(names)))
    assert [grey_level(img) for _, img in frames] == list(range(len(names)))


def test_folder_mixed_png_jpg(tmp_path):
    folder = write_folder(tmp_path / "mixed", ["f0.jpg", "f1.PNG", "f2.jpeg", "f3.png"])
    src = open_source(folder)
    assert src.info.fps is None and src.info.num_frames == 4
    assert [grey_level(img) for _, img in src.frames()] == [0, 1, 2, 3]


def test_folder_start_stride_max_frames(tmp_path):
    folder = write_folder(tmp_path / "seq", [f"frame_{k}.png" for k in range(12)])
    src = open_source(folder, start=2, stride=3, max_frames=3)
    assert src.info == SourceInfo(path=str(folder), width=W, height=H, fps=None, num_frames=3, start=2, stride=3)
    frames = list(src.frames())
    assert [i for i, _ in frames] == [2, 5, 8]
    assert [grey_level(img) for _, img in frames] == [2, 5, 8]
    assert [i for i, _ in open_source(folder, start=10, stride=5).frames()] == [10]


def test_folder_grey_image_becomes_rgb(tmp_path):
    folder = tmp_path / "grey"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), np.full((H, W), 77, np.uint8))
    _, image = next(open_source(folder).frames())
    assert image.shape == (H, W, 3) and (image == 77).all()


# --------------------------------------------------------------------------- geometry

def block_image(block_values: np.ndarray, block: int) -> np.ndarray:
    """(H, W, 3) image of constant ``block`` x ``block`` tiles with the given values."""
    tiles = np.kron(block_values, np.ones((block, block))).astype(np.uint8)
    return np.repeat(tiles[..., None], 3, axis=2)


def test_geometry_shrinks_by_area_then_crops(tmp_path):
    values = (np.arange(10)[:, None] * 20 + np.arange(20)[None, :]).astype(np.uint8)  # (10, 20)
    folder = tmp_path / "blocks"
    folder.mkdir()
    cv2.imwrite(str(folder / "0.png"), block_image(values, 2))  # 40x20 footage
    src = open_source(folder)
    geometry = InputGeometry(footage=(40, 20), resized=(20, 10), size=(8, 6), offset=(4, 2))
    _, image = next(src.frames(geometry))
    # Area-halving 2x2 constant tiles gives each tile's value exactly.
    assert image.shape == (6, 8, 3)
    np.testing.assert_array_equal(image[..., 0], values[2:8, 4:12])


def test_geometry_enlarges(video):
    geometry = InputGeometry.resize_only(footage=(W, H), size=(2 * W + 6, 2 * H + 2))
    index, image = next(open_source(video, start=4).frames(geometry))
    assert index == 4
    assert image.shape == (2 * H + 2, 2 * W + 6, 3) and image.dtype == np.uint8
    assert grey_level(image) == 4


def test_geometry_for_other_footage_is_refused(video):
    geometry = InputGeometry.resize_only(footage=(W * 2, H * 2), size=(32, 24))
    with pytest.raises(FrameSourceError, match="expects 128x96 footage, got a 64x48 frame"):
        next(open_source(video).frames(geometry))


def test_crop_outside_resized_frame_is_refused(video):
    geometry = InputGeometry(footage=(W, H), resized=(32, 24), size=(32, 24), offset=(4, 0))
    with pytest.raises(FrameSourceError, match="does not fit"):
        next(open_source(video).frames(geometry))


# --------------------------------------------------------------------------- errors

def test_missing_path(tmp_path):
    with pytest.raises(FrameSourceError, match="nope.mp4: no such file or folder"):
        open_source(tmp_path / "nope.mp4")


def test_garbage_file(tmp_path):
    path = tmp_path / "garbage.mp4"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(FrameSourceError, match="garbage.mp4: cannot be opened as a video"):
        open_source(path)


def test_empty_video(tmp_path):
    path = write_video(tmp_path / "empty.avi", "MJPG", n=0)
    with pytest.raises(FrameSourceError, match="empty.avi: .*(no frames|cannot be opened)"):
        open_source(path)


def test_truncated_video_names_the_failing_frame(tmp_path):
    rng = np.random.default_rng(1)
    path = tmp_path / "noisy.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (W, H))
    for _ in range(N_FRAMES):  # noise does not compress: every frame takes real bytes
        writer.write(rng.integers(0, 256, (H, W, 3), dtype=np.uint8))
    writer.release()
    data = path.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) // 2])
    src = open_source(cut)  # the header still promises 30 frames
    assert src.info.num_frames == N_FRAMES
    seen = []
    with pytest.raises(FrameSourceError, match=r"cut.avi: frame (\d+) cannot be read .* truncated or corrupt") as err:
        for index, _ in src.frames():
            seen.append(index)
    assert 0 < len(seen) < N_FRAMES
    assert f"frame {len(seen)} " in str(err.value)


def test_video_start_beyond_end(video):
    with pytest.raises(FrameSourceError, match=r"start=30 is beyond the end of the video \(30 frames\)"):
        open_source(video, start=30)


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FrameSourceError, match="empty: the folder contains no images"):
        open_source(tmp_path / "empty")


def test_folder_without_images(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text("x")
    (folder / "b.npy").write_bytes(b"x")
    with pytest.raises(FrameSourceError, match="docs: the folder contains no images"):
        open_source(folder)


def test_folder_start_beyond_end(tmp_path):
    folder = write_folder(tmp_path / "seq", ["a1.png", "a2.png"])
    with pytest.raises(FrameSourceError, match=r"start=2 is beyond the end of the folder \(2 images\)"):
        open_source(folder, start=2)


def test_folder_inconsistent_sizes(tmp_path):
    folder = write_folder(tmp_path / "seq", ["a1.png", "a2.png"])
    write_folder(tmp_path / "seq", ["a3.png"], size=(W + 2, H))
    frames = open_source(folder).frames()
    assert next(frames)[0] == 0 and next(frames)[0] == 1
    with pytest.raises(FrameSourceError, match=r"a3.png: image is 66x48 but the folder's first image is 64x48"):
        next(frames)


def test_folder_corrupt_image(tmp_path):
    folder = write_folder(tmp_path / "seq", ["a1.png", "a2.png", "a3.png"])
    (folder / "a2.png").write_bytes(b"\x89PNG not really")
    frames = open_source(folder).frames()
    assert next(frames)[0] == 0
    with pytest.raises(FrameSourceError, match="a2.png: image 1 of the folder cannot be read"):
        next(frames)


@pytest.mark.parametrize("kwargs,message", [
    ({"stride": 0}, "stride must be an integer >= 1, got 0"),
    ({"stride": 1.5}, "stride must be an integer >= 1, got 1.5"),
    ({"start": -1}, "start must be an integer >= 0, got -1"),
    ({"max_frames": 0}, "max_frames must be an integer >= 1, got 0"),
    ({"max_frames": True}, "max_frames must be an integer >= 1, got True"),
])
def test_bad_arguments(video, kwargs, message):
    with pytest.raises(FrameSourceError, match=message):
        open_source(video, **kwargs)


def test_skip_leaves_out_selected_frames_without_changing_indices(tmp_path):
    """frames(skip=k) yields exactly what frames() yields from its k-th item on (video and folder)."""
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 25, (32, 24))
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(20):
        img = np.full((24, 32, 3), i * 12, np.uint8)
        writer.write(img)
        cv2.imwrite(str(folder / f"f{i}.png"), img)
    writer.release()
    for path in (video, folder):
        src = open_source(path, start=2, stride=3, max_frames=5)
        full = list(src.frames())
        for k in range(0, 7):
            part = list(src.frames(skip=k))
            assert [i for i, _ in part] == [i for i, _ in full[k:]]
            for (_, a), (_, b) in zip(part, full[k:]):
                np.testing.assert_array_equal(a, b)


def damaged_video(tmp_path: Path, n: int = N_FRAMES) -> Path:
    """An mp4 whose frame data has random bytes written over it at 40% and 70% of the file."""
    rng = np.random.default_rng(3)
    path = tmp_path / "damaged.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (W, H))
    for _ in range(n):
        writer.write(cv2.GaussianBlur(rng.integers(0, 256, (H, W, 3), dtype=np.uint8), (5, 5), 0))
    writer.release()
    data = bytearray(path.read_bytes())
    for fraction in (0.4, 0.7):
        at = int(len(data) * fraction)
        data[at:at + 600] = rng.integers(0, 256, 600, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    return path


def test_frames_the_decoder_reports_damaged_are_named(tmp_path, capfd):
    """Damaged frames the decoder conceals are named in warnings; where it can go no further the stream
    stops with an error naming that frame, after the warnings for the damaged frames before it."""
    warnings: list[str] = []
    frames: list[int] = []
    with pytest.raises(FrameSourceError, match=r"damaged.mp4: frame (\d+) cannot be read") as stop:
        for index, _ in open_source(damaged_video(tmp_path)).frames(warn=warnings.append):
            frames.append(index)
    assert f"frame {len(frames)} cannot" in str(stop.value) and frames == list(range(len(frames)))
    assert warnings, "the damage before the unreadable frame went unreported"
    for warning in warnings:
        assert warning.startswith(f"{tmp_path / 'damaged.mp4'}: frame") and "damaged in the file" in warning
    named = [int(re.search(r": frames? (\d+)", w).group(1)) for w in warnings]
    assert all(0 < f <= len(frames) for f in named) and named == sorted(named)
    assert "[mpeg4 @" not in capfd.readouterr().err  # FFmpeg's own lines became the warnings above

    clean: list[str] = []
    assert len(list(open_source(write_video(tmp_path / "clean.mp4", "mp4v")).frames(warn=clean.append))) == N_FRAMES
    assert clean == []


def test_decoder_log_passes_other_output_on(capfd):
    from core.decoder_log import DecoderLog

    with DecoderLog() as log:
        result, damage = log.call(lambda: os.write(2, b"[h264 @ 0x5f1e] error while decoding MB 3 4\nsomething else\n"))
    assert result > 0 and damage == ["error while decoding MB 3 4"]
    assert capfd.readouterr().err == "something else\n"
