"""Video and image I/O: read clips, sample windows, resize + center-crop, write videos.

Every frame array here is uint8 RGB: a clip is T×H×W×3, an image H×W×3.

Readers: mp4 / mov / webm / mkv through the ffmpeg binary that imageio-ffmpeg ships (rotation
metadata of phone videos applied), gif
through Pillow (it keeps each frame's own duration, which gives the fps), and a folder of
png/jpg frames in natural name order (`frame_2` before `frame_10`).

Writers (all atomic: a temp name in the target folder, then `os.replace`):
- mp4: H.264, yuv420p (plays everywhere). yuv420p needs even sizes, so an odd width or
  height is padded by one edge-replicated row/column (with a warning) instead of letting
  imageio rescale to multiples of 16.
- webm: VP9, yuv420p, same padding.
- gif: one GIF frame per video frame, loops forever. GIF stores delays in centiseconds, so
  1000/fps ms is exact only when it is a multiple of 10 ms (fps 10, 20, 25, 50, ...).
  Otherwise each frame gets the delay that keeps the cumulative time on the exact clock,
  rounded to 10 ms: 8 fps -> 120, 130, 120, 130, ... ms (mean 125 ms, no drift). Pillow's
  own multi-frame writer merges identical consecutive frames into one; we write frame by
  frame so a clip of T frames is a GIF of T frames.
- frames: a folder of `frame_0000.png`, `frame_0001.png`, ...

Hostile inputs: an image's or video's size is read from its header before any pixel is decoded;
sides above MAX_IMAGE_SIDE / MAX_VIDEO_SIDE (or more pixels than MAX_IMAGE_PIXELS) are refused with
a message, so a 20000×20000 PNG costs nothing. `read_video(path, size=(w, h))` resizes each frame
as it is decoded (a 4K clip never sits in memory at 4K), and a clip whose decoded frames would
exceed MAX_CLIP_BYTES is refused while reading.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from .errors import InvalidInput, NotFound
from .fsutil import TMP_PREFIX, atomic_writer, make_output_folder, temp_sibling, umask

log = logging.getLogger("lamp")


class _DropRotationNotice(logging.Filter):
    """imageio-ffmpeg warns whenever ffmpeg auto-rotates a phone video; the frames are right."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "different from the source frame size" not in record.getMessage()


logging.getLogger("imageio_ffmpeg").addFilter(_DropRotationNotice())

VIDEO_EXTENSIONS = (".mp4", ".mov", ".webm", ".mkv", ".gif")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
FRAME_EXTENSIONS = (".png", ".jpg", ".jpeg")  # what a folder of frames may hold
WRITE_FORMATS = ("mp4", "gif", "webm", "frames")

# Limits on what lamp decodes (see the module docstring).
MAX_IMAGE_SIDE = 16384
MAX_IMAGE_PIXELS = 150_000_000  # a 108 MP phone photo passes; a 20000×20000 "bomb" does not
MAX_VIDEO_SIDE = 8192  # 8K video is 7680×4320
MAX_CLIP_BYTES = 4 << 30  # decoded uint8 frames held at once (after resizing, when a size is given)

# A folder of frames carries no timing; it plays at the paper's default rate.
DEFAULT_FOLDER_FPS = 8.0
# Browsers treat GIF delays of 0 (and often 10 ms) as 100 ms; a delay below 20 ms is unreliable.
GIF_MIN_DELAY_MS = 20
GIF_DEFAULT_DELAY_MS = 100


@dataclass
class Clip:
    frames: np.ndarray  # T×H×W×3 uint8
    fps: float
    path: Path | None = None

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)"""
        return int(self.frames.shape[2]), int(self.frames.shape[1])


@dataclass(frozen=True)
class VideoInfo:
    num_frames: int
    fps: float
    width: int
    height: int


# ---------------------------------------------------------------------------------------
# reading


def _natural_key(path: Path) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


def _frame_files(folder: Path) -> list[Path]:
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in FRAME_EXTENSIONS]
    return sorted(files, key=_natural_key)


def _unreadable(path: Path, detail: str) -> InvalidInput:
    return InvalidInput(
        f"cannot read video {path}: {detail}",
        hint=f"lamp reads {', '.join(VIDEO_EXTENSIONS)} files and folders of png/jpg frames",
    )


def check_image_size(width: int, height: int, what: str, *, video: bool = False) -> None:
    """InvalidInput when a picture of width×height is too large (or empty) to decode."""
    side = MAX_VIDEO_SIDE if video else MAX_IMAGE_SIDE
    if width < 1 or height < 1:
        raise InvalidInput(f"{what} has an empty picture ({width}x{height})")
    if width > side or height > side or (not video and width * height > MAX_IMAGE_PIXELS):
        limit = f"sides up to {side} px" + ("" if video else f" and {MAX_IMAGE_PIXELS // 1_000_000} megapixels")
        raise InvalidInput(
            f"{what} is {width}x{height} pixels, too large to read (lamp reads {limit})",
            hint="scale it down first (e.g. `ffmpeg -i IN -vf scale=1920:-2 OUT`); lamp works at 512x320 anyway",
        )


class _Budget:
    """Counts decoded bytes of one clip; InvalidInput once they pass MAX_CLIP_BYTES."""

    def __init__(self, path: Path):
        self.path, self.used = path, 0

    def take(self, frame: np.ndarray) -> np.ndarray:
        self.used += frame.nbytes
        if self.used > MAX_CLIP_BYTES:
            raise InvalidInput(
                f"cannot read video {self.path}: its frames need more than {MAX_CLIP_BYTES >> 30} GiB decoded",
                hint="trim it to the part you need (e.g. `ffmpeg -i IN -t 10 OUT`) or scale it down",
            )
        return frame


def _fit(frame: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    return frame if size is None else resize_center_crop(frame, *size)


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise NotFound(f"no such file or folder: {path}")


def _gif_delays_ms(path: Path) -> list[int]:
    from PIL import Image, ImageSequence

    with Image.open(path) as im:
        return [int(f.info.get("duration") or 0) for f in ImageSequence.Iterator(im)]


def _fps_from_delays(delays: list[int]) -> float:
    # A delay of 0 is shown by browsers as 100 ms; count it as such.
    real = [d if d > 0 else GIF_DEFAULT_DELAY_MS for d in delays]
    return 1000.0 / (sum(real) / len(real))


def _read_gif(path: Path, size: tuple[int, int] | None = None) -> Clip:
    from PIL import Image, ImageSequence, UnidentifiedImageError

    budget = _Budget(path)
    try:
        with Image.open(path) as im:
            if im.format != "GIF":
                raise _unreadable(path, f"it is a {im.format} image, not a GIF")
            check_image_size(*im.size, f"video {path}", video=True)
            frames, delays = [], []
            for f in ImageSequence.Iterator(im):
                delays.append(int(f.info.get("duration") or 0))
                frames.append(budget.take(_fit(_to_rgb(f.copy()), size)))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise _unreadable(path, str(e) or type(e).__name__) from e
    if not frames:
        raise _unreadable(path, "it holds no frames")
    return Clip(np.stack(frames), _fps_from_delays(delays), path)


def _ffmpeg_meta(path: Path) -> dict:
    import imageio_ffmpeg

    gen = imageio_ffmpeg.read_frames(str(path))
    try:
        return next(gen)
    except (OSError, RuntimeError, StopIteration) as e:
        raise _unreadable(path, _short_ffmpeg_error(e)) from e
    finally:
        gen.close()


def _short_ffmpeg_error(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    for ln in reversed(lines):  # ffmpeg's last line is usually the reason
        if (
            "Invalid data" in ln
            or "No such file" in ln
            or "moov atom" in ln
            or "could not find" in ln.lower()
        ):
            return ln
    return "ffmpeg could not decode it" if not lines else lines[0][:200]


def _read_ffmpeg(path: Path, size: tuple[int, int] | None = None) -> Clip:
    import imageio_ffmpeg

    gen = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
    budget = _Budget(path)
    try:
        meta = next(gen)
        w, h = _ffmpeg_size(meta, path)
        # one frame at a time: each is resized (when a size is given) before the next is decoded
        frames = [budget.take(_fit(np.frombuffer(buf, dtype=np.uint8).reshape(h, w, 3), size)) for buf in gen]
    except (OSError, RuntimeError, StopIteration, ValueError) as e:
        raise _unreadable(path, _short_ffmpeg_error(e)) from e
    finally:
        gen.close()
    if not frames:
        raise _unreadable(path, "it holds no video frames")
    fps = float(meta.get("fps") or 0.0)
    if not fps > 0:
        raise _unreadable(path, "ffmpeg reports no frame rate")
    return Clip(np.stack(frames), fps, path)


def _ffmpeg_size(meta: dict, path: Path) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in meta["size"])
    except (KeyError, TypeError, ValueError):
        raise _unreadable(path, "ffmpeg reports no frame size") from None
    check_image_size(w, h, f"video {path}", video=True)
    return w, h


def _read_folder(path: Path, size: tuple[int, int] | None = None) -> Clip:
    files = _frame_files(path)
    if not files:
        raise InvalidInput(
            f"no png/jpg frames in folder {path}", hint="a folder of frames holds frame_0000.png, ..."
        )
    budget = _Budget(path)
    frames = [budget.take(_fit(load_image(p), size)) for p in files]
    sizes = {f.shape for f in frames}
    if len(sizes) > 1:
        raise InvalidInput(
            f"the frames in {path} differ in size: {sorted(sizes)}", hint="all frames must be the same size"
        )
    return Clip(np.stack(frames), DEFAULT_FOLDER_FPS, path)


def read_video(path: str | Path, size: tuple[int, int] | None = None) -> Clip:
    """Read a video file (mp4, mov, webm, mkv, gif) or a folder of frames into uint8 frames + fps.

    `size=(width, height)`: resize and center-crop each frame as it is decoded (the same result
    as `resize_center_crop` on the whole clip, without holding it at full size).
    """
    path = Path(path)
    _check_exists(path)
    if path.is_dir():
        return _read_folder(path, size)
    suffix = path.suffix.lower()
    if suffix not in VIDEO_EXTENSIONS:
        raise _unreadable(path, f"unsupported extension '{suffix or '(none)'}'")
    if suffix == ".gif":
        return _read_gif(path, size)
    return _read_ffmpeg(path, size)


def probe_video(path: str | Path) -> VideoInfo:
    """Frame count, fps and size of a video without keeping its frames (checks before model loads).

    For ffmpeg formats the count comes from demuxing packets (no decoding); a gif's frame
    headers are read by Pillow; a folder's first frame gives the size.
    """
    path = Path(path)
    _check_exists(path)
    if path.is_dir():
        files = _frame_files(path)
        if not files:
            raise InvalidInput(
                f"no png/jpg frames in folder {path}", hint="a folder of frames holds frame_0000.png, ..."
            )
        w, h = probe_image(files[0])
        return VideoInfo(len(files), DEFAULT_FOLDER_FPS, w, h)
    suffix = path.suffix.lower()
    if suffix not in VIDEO_EXTENSIONS:
        raise _unreadable(path, f"unsupported extension '{suffix or '(none)'}'")
    if suffix == ".gif":
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as im:
                if im.format != "GIF":
                    raise _unreadable(path, f"it is a {im.format} image, not a GIF")
                w, h = im.size
            check_image_size(w, h, f"video {path}", video=True)
            delays = _gif_delays_ms(path)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            raise _unreadable(path, str(e) or type(e).__name__) from e
        if not delays:
            raise _unreadable(path, "it holds no frames")
        return VideoInfo(len(delays), _fps_from_delays(delays), w, h)

    import imageio_ffmpeg

    meta = _ffmpeg_meta(path)
    try:
        n, _secs = imageio_ffmpeg.count_frames_and_secs(str(path))
    except (OSError, RuntimeError, ValueError) as e:
        raise _unreadable(path, _short_ffmpeg_error(e)) from e
    if n <= 0:
        raise _unreadable(path, "it holds no video frames")
    w, h = _ffmpeg_size(meta, path)
    try:
        fps = float(meta.get("fps") or 0.0)
    except (TypeError, ValueError):
        fps = 0.0
    return VideoInfo(int(n), fps if math.isfinite(fps) else 0.0, w, h)


# ---------------------------------------------------------------------------------------
# frames


def sample_window(frames: np.ndarray, start: int, count: int, stride: int = 1) -> np.ndarray:
    """Frames start, start+stride, ..., `count` of them (a copy), or InvalidInput if the clip is too short."""
    if count < 1 or stride < 1 or start < 0:
        raise InvalidInput(
            f"bad window: start={start}, count={count}, stride={stride} (need start>=0, count>=1, stride>=1)"
        )
    total = int(frames.shape[0])
    last = start + (count - 1) * stride
    if last >= total:
        need = (count - 1) * stride + 1
        raise InvalidInput(
            f"window of {count} frames at stride {stride} from frame {start} needs frames {start}..{last}, "
            f"but the clip has {total} (a window spans {need} frames)",
            hint="use fewer --frames, a smaller --stride, or a longer clip",
        )
    return frames[start : last + 1 : stride].copy()


def _crop_box(w: int, h: int, width: int, height: int) -> tuple[float, float, float, float]:
    """The centered region of a w×h image with the aspect ratio of width×height."""
    target = width / height
    if w / h > target:  # too wide: keep full height
        cw, ch = h * target, float(h)
    else:  # too tall: keep full width
        cw, ch = float(w), w / target
    left, top = (w - cw) / 2, (h - ch) / 2
    return (left, top, left + cw, top + ch)


def resize_center_crop(frames: np.ndarray, width: int, height: int) -> np.ndarray:
    """Scale to cover width×height keeping the aspect ratio, then keep the center (Lanczos).

    Accepts T×H×W×3 or H×W×3 uint8 and returns the same rank. The crop box is computed in
    source pixels and resampled in one step, so there is no double rounding; a frame already
    width×height is returned unchanged.
    """
    from PIL import Image

    if width < 1 or height < 1:
        raise InvalidInput(f"bad target size {width}x{height}")
    arr = np.asarray(frames)
    if arr.dtype != np.uint8 or arr.ndim not in (3, 4) or arr.shape[-1] != 3:
        raise InvalidInput(f"expected uint8 frames H×W×3 or T×H×W×3, got {arr.dtype} {arr.shape}")
    single = arr.ndim == 3
    stack = arr[None] if single else arr
    h, w = stack.shape[1:3]
    if (w, h) == (width, height):
        return arr.copy()
    left, top, right, bottom = _crop_box(w, h, width, height)
    # Cut whole pixels first so the filter never reads outside the crop, then resample the
    # (possibly fractional) remainder of the box.
    x0, y0, x1, y1 = math.floor(left), math.floor(top), math.ceil(right), math.ceil(bottom)
    box = (left - x0, top - y0, right - x0, bottom - y0)
    out = np.empty((stack.shape[0], height, width, 3), dtype=np.uint8)
    for i, frame in enumerate(stack):
        cut = Image.fromarray(frame[y0:y1, x0:x1])
        out[i] = np.asarray(cut.resize((width, height), Image.Resampling.LANCZOS, box=box))
    return out[0] if single else out


def _to_rgb(im) -> np.ndarray:
    """A Pillow image of any mode as H×W×3 uint8: alpha composited on white, 16-bit scaled."""
    from PIL import Image

    mode = im.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        a = np.asarray(im).astype(np.uint32)
        return np.repeat(((a * 255 + 32767) // 65535).astype(np.uint8)[..., None], 3, axis=2)
    if mode == "I":  # 32-bit ints; Pillow uses it for 16-bit PNGs
        a = np.asarray(im).astype(np.int64)
        top = 65535 if a.max(initial=0) > 255 else 255
        a = (np.clip(a, 0, top) * 255 + top // 2) // top
        return np.repeat(a.astype(np.uint8)[..., None], 3, axis=2)
    if mode == "F":
        a = np.asarray(im).astype(np.float64)
        scale = 255.0 if a.max(initial=0.0) <= 1.0 else 1.0
        a = np.clip(np.round(a * scale), 0, 255)
        return np.repeat(a.astype(np.uint8)[..., None], 3, axis=2)
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        mode in ("P", "L", "RGB") and "transparency" in im.info
    )
    if has_alpha:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    return np.asarray(im.convert("RGB"))


def load_image(path: str | Path) -> np.ndarray:
    """An image file as H×W×3 uint8 RGB (EXIF rotation applied; alpha on white; gray/16-bit/palette converted)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if not path.exists():
        raise NotFound(f"no such image: {path}")
    if path.is_dir():
        raise InvalidInput(f"{path} is a folder, not an image")
    try:
        with Image.open(path) as im:  # reads the header only
            check_image_size(*im.size, f"image {path}")
            im.load()
            im = ImageOps.exif_transpose(im) or im
            return np.ascontiguousarray(_to_rgb(im))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise _image_error(path, e) from None


def _image_error(path: Path, e: BaseException) -> InvalidInput:
    from PIL import Image

    if isinstance(e, Image.DecompressionBombError):  # Pillow's own limit, hit before ours
        limit = Image.MAX_IMAGE_PIXELS
        try:  # read the size from the header alone (no pixels are decoded), to say it lamp's way
            Image.MAX_IMAGE_PIXELS = None
            with Image.open(path) as im:
                check_image_size(*im.size, f"image {path}")
        except InvalidInput as ours:
            return ours
        except Exception:  # noqa: BLE001 - unreadable after all: Pillow's words below
            pass
        finally:
            Image.MAX_IMAGE_PIXELS = limit
        return InvalidInput(
            f"image {path} is too large to read (Pillow: {e})".replace(", could be decompression bomb DOS attack", ""),
            hint="scale it down first; lamp works at 512x320 anyway",
        )
    return InvalidInput(f"cannot read image {path}: {e}", hint=f"lamp reads {', '.join(IMAGE_EXTENSIONS)} images")


def probe_image(path: str | Path) -> tuple[int, int]:
    """(width, height) of an image from its header (no pixels decoded); InvalidInput if unreadable
    or too large."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.exists():
        raise NotFound(f"no such image: {path}")
    try:
        with Image.open(path) as im:
            w, h = im.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise _image_error(path, e) from None
    check_image_size(w, h, f"image {path}")
    return w, h


# ---------------------------------------------------------------------------------------
# writing


def gif_delays_ms(num_frames: int, fps: float) -> list[int]:
    """Per-frame GIF delays (multiples of 10 ms) whose running sum stays on the exact 1000/fps clock."""
    # frame i starts at i*1000/fps ms; round each start to centiseconds and take differences
    starts = [
        int(Fraction(100 * i) / Fraction(fps).limit_denominator(10_000) + Fraction(1, 2))
        for i in range(num_frames + 1)
    ]
    return [10 * (b - a) for a, b in zip(starts, starts[1:], strict=False)]


def _format_for(path: Path, format: str | None) -> str:
    if format is not None:
        fmt = format.lower().lstrip(".")
        if fmt == "png":
            fmt = "frames"
        if fmt not in WRITE_FORMATS:
            raise InvalidInput(
                f"unknown video format '{format}'", hint=f"choose one of {', '.join(WRITE_FORMATS)}"
            )
        return fmt
    suffix = path.suffix.lower()
    if suffix in (".mp4", ".gif", ".webm"):
        return suffix[1:]
    if suffix == "":
        return "frames"
    raise InvalidInput(
        f"cannot tell the video format from '{path.name}'",
        hint="use a .mp4, .gif or .webm name, a folder name without extension for png frames, or pass format=",
    )


def _check_frames(frames: np.ndarray) -> np.ndarray:
    arr = np.asarray(frames)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3 or arr.shape[0] < 1:
        raise InvalidInput(f"expected uint8 frames T×H×W×3 with T>=1, got {arr.dtype} {arr.shape}")
    return np.ascontiguousarray(arr)


def _pad_even(frames: np.ndarray, what: str) -> np.ndarray:
    _t, h, w, _ = frames.shape
    ph, pw = h % 2, w % 2
    if ph or pw:
        log.warning(f"{what} needs even sizes: padding {w}x{h} to {w + pw}x{h + ph} (edge pixels repeated)")
        frames = np.pad(frames, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge")
    return frames


def _write_ffmpeg(frames: np.ndarray, path: Path, fps: float, codec: str, output_params: list[str]) -> None:
    import imageio_ffmpeg

    frames = _pad_even(frames, "H.264" if codec == "libx264" else "VP9")
    _t, h, w, _ = frames.shape
    # the temp name ends in the format's extension: ffmpeg picks the container from it
    tmp = temp_sibling(path, ".mp4" if codec == "libx264" else ".webm")
    try:
        gen = imageio_ffmpeg.write_frames(
            str(tmp),
            (w, h),
            fps=Fraction(fps).limit_denominator(1001),
            codec=codec,
            pix_fmt_in="rgb24",
            pix_fmt_out="yuv420p",
            quality=None,
            macro_block_size=1,  # we padded to even sizes ourselves; never let imageio rescale
            ffmpeg_log_level="error",
            output_params=output_params,
        )
        gen.send(None)
        for frame in frames:
            gen.send(frame.tobytes())
        gen.close()
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:
        raise InvalidInput(f"ffmpeg could not write {path}: {e}") from e
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def _write_gif(frames: np.ndarray, path: Path, fps: float) -> None:
    from PIL import GifImagePlugin, Image

    delays = gif_delays_ms(len(frames), fps)
    if min(delays) < GIF_MIN_DELAY_MS:
        log.warning(
            f"GIF cannot play {fps:g} fps reliably (frame delay {min(delays)} ms < {GIF_MIN_DELAY_MS} ms); browsers slow it down"
        )
    # Each frame gets its own adaptive palette; written frame by frame (see module doc).
    paletted = [
        Image.fromarray(f).quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        for f in frames
    ]
    header, _ = GifImagePlugin.getheader(paletted[0], info={"loop": 0})
    with atomic_writer(path) as f:
        for chunk in header:
            f.write(chunk)
        for im, delay in zip(paletted, delays, strict=True):
            # disposal 1: leave the frame in place (every frame covers the whole canvas)
            for chunk in GifImagePlugin.getdata(im, duration=delay, disposal=1, include_color_table=True):
                f.write(chunk)
        f.write(b";")  # GIF trailer


def _write_frames(frames: np.ndarray, folder: Path) -> None:
    from PIL import Image

    if folder.exists() and not folder.is_dir():
        raise InvalidInput(f"{folder} exists and is not a folder", hint="choose another output path")
    tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{folder.name}.{os.getpid()}.", dir=folder.parent))
    tmp.chmod(0o777 & ~umask())  # mkdtemp's folders are 0700; outputs should be readable like any other
    try:
        for i, frame in enumerate(frames):
            Image.fromarray(frame).save(tmp / f"frame_{i:04d}.png")
        if folder.exists():
            # swap: move the old folder aside, the new one in, then delete the old one
            old = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{folder.name}.old.", dir=folder.parent))
            os.replace(folder, old / "x")
            os.replace(tmp, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_video(frames: np.ndarray, path: str | Path, fps: float, format: str | None = None) -> Path:
    """Write T×H×W×3 uint8 frames as mp4 (H.264), gif, webm (VP9) or a folder of PNGs; atomic.

    `format` defaults to the path's extension (no extension: a folder of frames).
    Returns the path written.
    """
    path = Path(path)
    fmt = _format_for(path, format)
    arr = _check_frames(frames)
    if not (fps > 0 and math.isfinite(fps)):
        raise InvalidInput(f"fps must be a positive finite number, got {fps}")
    make_output_folder(path.parent)
    if fmt == "mp4":
        _write_ffmpeg(
            arr, path, fps, "libx264", ["-crf", "18", "-preset", "medium", "-movflags", "+faststart"]
        )
    elif fmt == "webm":
        _write_ffmpeg(arr, path, fps, "libvpx-vp9", ["-crf", "30", "-b:v", "0", "-row-mt", "1"])
    elif fmt == "gif":
        _write_gif(arr, path, fps)
    else:
        _write_frames(arr, path)
    return path
