"""Video I/O: round trips through every writer, GIF timing, bad files, resize/crop, image modes."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageSequence

from lamp_cli import video
from lamp_cli.errors import InvalidInput, NotFound

T, H, W = 8, 48, 64


def smooth_clip(t: int = T, h: int = H, w: int = W) -> np.ndarray:
    """Gradients that move frame to frame: compress well, so decoded pixels stay close."""
    y, x = np.mgrid[0:h, 0:w]
    frames = []
    for i in range(t):
        r = (x * 255 // (w - 1) + 20 * i) % 256
        g = (y * 255 // (h - 1)).astype(np.int64)
        b = np.full_like(x, 40 + 20 * i)
        frames.append(np.stack([r, g, b], axis=-1))
    return np.asarray(frames, dtype=np.uint8)


@pytest.mark.parametrize("name", ["clip.mp4", "clip.webm", "clip.gif", "clip_frames"])
def test_write_read_round_trip(tmp_path, name):
    frames = smooth_clip()
    out = video.write_video(frames, tmp_path / name, fps=8)
    assert out == tmp_path / name and out.exists()
    clip = video.read_video(out)
    assert clip.frames.shape == (T, H, W, 3) and clip.frames.dtype == np.uint8
    assert clip.fps == pytest.approx(8.0, abs=0.01)
    # lossy codecs: compare the mean error, which a wrong frame order or color swap would blow up
    err = np.abs(clip.frames.astype(int) - frames.astype(int)).mean()
    assert err < 6, err
    info = video.probe_video(out)
    assert (info.num_frames, info.width, info.height) == (T, W, H)
    assert info.fps == pytest.approx(8.0, abs=0.01)
    # nothing but the result is left in the folder (atomic writes clean up their temp files)
    assert [p.name for p in tmp_path.iterdir()] == [name]


def test_png_frames_are_exact_and_named(tmp_path):
    frames = smooth_clip()
    out = video.write_video(frames, tmp_path / "f", fps=8, format="frames")
    assert sorted(p.name for p in out.iterdir()) == [f"frame_{i:04d}.png" for i in range(T)]
    np.testing.assert_array_equal(video.read_video(out).frames, frames)
    # rewriting the folder replaces it whole
    video.write_video(frames[:3], out, fps=8, format="frames")
    assert len(list(out.iterdir())) == 3


def test_folder_of_frames_natural_order(tmp_path):
    frames = smooth_clip(t=11)
    for i, f in enumerate(frames):
        Image.fromarray(f).save(tmp_path / f"img{i}.png")
    clip = video.read_video(tmp_path)
    np.testing.assert_array_equal(clip.frames, frames)  # img10 after img9, not after img1


@pytest.mark.parametrize(
    "fps,expected", [(10, [100] * 8), (25, [40] * 8), (8, [130, 120] * 4), (4, [250] * 8)]
)
def test_gif_frame_durations(tmp_path, fps, expected):
    frames = smooth_clip()
    path = video.write_video(frames, tmp_path / "a.gif", fps=fps)
    with Image.open(path) as im:
        assert im.n_frames == T
        assert im.info.get("loop") == 0  # loops forever
        delays = [f.info["duration"] for f in ImageSequence.Iterator(im)]
    assert delays == expected
    # GIF stores centiseconds: each delay is within 5 ms of 1000/fps and the total never drifts
    assert all(abs(d - 1000 / fps) <= 5 for d in delays)
    assert sum(delays) == round(T * 1000 / fps / 10) * 10


def test_gif_keeps_identical_frames(tmp_path):
    frames = np.repeat(smooth_clip(t=1), 6, axis=0)
    clip = video.read_video(video.write_video(frames, tmp_path / "still.gif", fps=8))
    assert clip.frames.shape[0] == 6
    assert clip.fps == pytest.approx(8.0)


def test_odd_size_mp4_is_padded_to_even(tmp_path, caplog):
    frames = smooth_clip(h=47, w=63)
    path = video.write_video(frames, tmp_path / "odd.mp4", fps=8)
    assert "padding 63x47 to 64x48" in caplog.text
    clip = video.read_video(path)
    assert clip.frames.shape == (T, 48, 64, 3)


def test_mp4_is_h264_yuv420p(tmp_path):
    import imageio_ffmpeg

    path = video.write_video(smooth_clip(), tmp_path / "a.mp4", fps=12)
    gen = imageio_ffmpeg.read_frames(str(path))
    meta = next(gen)
    gen.close()
    assert meta["codec"] == "h264" and meta["pix_fmt"].startswith("yuv420p")
    assert meta["fps"] == pytest.approx(12.0)


@pytest.mark.parametrize("name", ["bad.mp4", "bad.gif", "bad.webm", "bad.mkv"])
def test_unreadable_video_is_invalid_input(tmp_path, name):
    path = tmp_path / name
    path.write_text("this is not a video\n")
    with pytest.raises(InvalidInput, match="cannot read video"):
        video.read_video(path)
    with pytest.raises(InvalidInput, match="cannot read video"):
        video.probe_video(path)


def test_missing_and_unsupported_inputs(tmp_path):
    with pytest.raises(NotFound):
        video.read_video(tmp_path / "nope.mp4")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InvalidInput, match="unsupported extension"):
        video.read_video(tmp_path / "notes.txt")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InvalidInput, match="no png/jpg frames"):
        video.read_video(empty)
    with pytest.raises(InvalidInput):
        video.write_video(smooth_clip(), tmp_path / "x.avi", fps=8)
    with pytest.raises(InvalidInput):
        video.write_video(smooth_clip().astype(np.float32), tmp_path / "x.mp4", fps=8)


def test_sample_window():
    frames = np.arange(20)[:, None, None, None] * np.ones((1, 2, 2, 3), dtype=np.uint8)
    win = video.sample_window(frames, start=3, count=4, stride=2)
    assert win[:, 0, 0, 0].tolist() == [3, 5, 7, 9]
    assert video.sample_window(frames, 4, 16, 1)[:, 0, 0, 0].tolist() == list(range(4, 20))
    with pytest.raises(InvalidInput, match="needs frames 5..20"):
        video.sample_window(frames, 5, 16, 1)
    with pytest.raises(InvalidInput):
        video.sample_window(frames, 0, 0, 1)


def test_resize_center_crop_keeps_the_center():
    # 300×100: left third red, middle third green, right third blue -> 100×100 is all green
    img = np.zeros((100, 300, 3), dtype=np.uint8)
    img[:, :100, 0] = 255
    img[:, 100:200, 1] = 255
    img[:, 200:, 2] = 255
    out = video.resize_center_crop(img, 100, 100)
    assert out.shape == (100, 100, 3)
    np.testing.assert_array_equal(out, img[:, 100:200])
    # downscale 2× of the same crop: still pure green
    small = video.resize_center_crop(img, 50, 50)
    assert small.shape == (50, 50, 3) and (small == [0, 255, 0]).all()
    # too tall: keep full width, crop the vertical center
    tall = np.zeros((300, 100, 3), dtype=np.uint8)
    tall[100:200] = 200
    np.testing.assert_array_equal(video.resize_center_crop(tall, 100, 100), tall[100:200])


def test_resize_center_crop_stack_and_identity():
    frames = smooth_clip()
    assert video.resize_center_crop(frames, W, H) is not frames
    np.testing.assert_array_equal(video.resize_center_crop(frames, W, H), frames)
    out = video.resize_center_crop(frames, 32, 32)
    assert out.shape == (T, 32, 32, 3) and out.dtype == np.uint8
    # each frame resized independently and identically to the single-image path
    np.testing.assert_array_equal(out[3], video.resize_center_crop(frames[3], 32, 32))


def test_load_image_modes(tmp_path):
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., 0] = 255  # red
    rgba[:2, :, 3] = 255  # top half opaque, bottom half transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    out = video.load_image(tmp_path / "rgba.png")
    assert out.shape == (4, 4, 3) and out.dtype == np.uint8
    assert (out[:2] == [255, 0, 0]).all() and (out[2:] == [255, 255, 255]).all()  # on white

    gray = np.arange(16, dtype=np.uint8).reshape(4, 4) * 16
    Image.fromarray(gray, "L").save(tmp_path / "gray.png")
    out = video.load_image(tmp_path / "gray.png")
    assert out.shape == (4, 4, 3)
    np.testing.assert_array_equal(out[..., 1], gray)

    g16 = np.arange(16, dtype=np.uint16).reshape(4, 4) * 4369  # 0..65535
    Image.fromarray(g16).save(tmp_path / "g16.png")
    out = video.load_image(tmp_path / "g16.png")
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out[..., 0], (np.arange(16).reshape(4, 4) * 17).astype(np.uint8))

    pal = Image.fromarray(np.full((4, 4, 3), (10, 200, 30), dtype=np.uint8)).quantize(4)
    pal.save(tmp_path / "pal.png")
    assert (video.load_image(tmp_path / "pal.png") == [10, 200, 30]).all()

    (tmp_path / "fake.png").write_text("not an image")
    with pytest.raises(InvalidInput, match="cannot read image"):
        video.load_image(tmp_path / "fake.png")
    with pytest.raises(NotFound):
        video.load_image(tmp_path / "missing.png")


@pytest.mark.parametrize("suffix", [".mov", ".mkv"])
def test_reads_mov_and_mkv_written_by_ffmpeg(tmp_path, suffix):
    import imageio_ffmpeg

    frames = smooth_clip()
    path = tmp_path / f"ext{suffix}"
    gen = imageio_ffmpeg.write_frames(
        str(path), (W, H), fps=10, codec="libx264", macro_block_size=1, ffmpeg_log_level="error"
    )
    gen.send(None)
    for f in frames:
        gen.send(f.tobytes())
    gen.close()
    clip = video.read_video(path)
    assert clip.frames.shape == (T, H, W, 3) and clip.fps == pytest.approx(10.0)
    assert video.probe_video(path).num_frames == T


def test_rotated_phone_video_is_read_upright(tmp_path, caplog):
    import subprocess

    import imageio_ffmpeg

    frames = np.zeros((T, H, W, 3), dtype=np.uint8)
    frames[:, :, :10] = 255  # a white band on the left edge
    src = video.write_video(frames, tmp_path / "src.mp4", fps=8)
    rotated = tmp_path / "rot.mp4"
    subprocess.run(
        [
            imageio_ffmpeg.get_ffmpeg_exe(),
            "-loglevel",
            "error",
            "-display_rotation",
            "90",
            "-i",
            str(src),
            "-c",
            "copy",
            str(rotated),
        ],
        check=True,
    )
    clip = video.read_video(rotated)
    assert clip.frames.shape == (T, W, H, 3)  # portrait now
    band = clip.frames[0, :, :, 0].mean(axis=1)  # the band became a horizontal one
    top_band = band[:8].mean() > 200 and band[-20:].mean() < 50
    bottom_band = band[-8:].mean() > 200 and band[:20].mean() < 50
    assert top_band or bottom_band  # which one depends on the rotation's sign
    assert video.probe_video(rotated) == video.VideoInfo(T, 8.0, H, W)
    assert "different from the source frame size" not in caplog.text


def test_explicit_format_wins_over_the_extension(tmp_path):
    path = video.write_video(smooth_clip(), tmp_path / "clip.bin", fps=8, format="mp4")
    with open(path, "rb") as f:
        assert f.read(12)[4:8] == b"ftyp"  # an MP4 container, whatever the name says
    path = video.write_video(smooth_clip(), tmp_path / "anim.out", fps=8, format="gif")
    assert path.read_bytes()[:6] == b"GIF89a"
