"""From sampled frames to files: output names that never overwrite, the video beside its JSON
sidecar, and reading a sidecar back to make the same video again (`lamp gen --from-sidecar`).

No torch here: the CLI validates every path before any model loads.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from . import __version__
from .errors import InvalidInput, UsageError
from .fsutil import atomic_write_text
from .registry import validate_name
from .video import write_video

FORMATS = ("mp4", "gif", "webm", "frames")
EXTENSIONS = {"mp4": ".mp4", "gif": ".gif", "webm": ".webm", "frames": ""}
SIDECAR_VERSION = 1


def parse_motion(spec: str) -> tuple[str, float]:
    """`name` or `name:weight` -> (name, weight); the weight defaults to 1."""

    name, sep, weight = spec.rpartition(":")
    if not sep:
        name, weight = spec, "1"
    try:
        w = float(weight)
    except ValueError:
        raise UsageError(f"bad motion '{spec}'", hint="write a motion as NAME or NAME:WEIGHT, e.g. guitar:0.7") from None
    return validate_name(name), w


def slugify(text: str, max_len: int = 60, empty: str = "video") -> str:
    """A file-name stem from a prompt: `A bear, plays!` -> `a_bear_plays` (`empty` when nothing
    is left). Every file lamp names after a prompt (gen, eval, train --eval-out) uses this."""
    slug = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    return slug[:max_len].rstrip("_") or empty


def output_format(output: Path | None, fmt: str | None) -> str:
    """The video format from --format, else from -o's extension (none: png frames), else mp4."""
    if fmt is not None:
        fmt = fmt.lower().lstrip(".")
        if fmt not in FORMATS:
            raise UsageError(f"unknown --format '{fmt}'", hint=f"choose one of {', '.join(FORMATS)}")
    if output is None:
        return fmt or "mp4"
    suffix = output.suffix.lower()
    implied = {".mp4": "mp4", ".gif": "gif", ".webm": "webm", "": "frames"}.get(suffix)
    if implied is None:
        raise UsageError(
            f"cannot tell the video format from '{output.name}'",
            hint="name the output .mp4, .gif or .webm, or a folder (no extension) for png frames",
        )
    if fmt is not None and fmt != implied:
        raise UsageError(f"--format {fmt} does not match the output name '{output.name}'")
    return implied


def sidecar_path(video: Path) -> Path:
    """`clip.mp4` -> `clip.mp4.json`; a frames folder `clip` -> `clip.json`."""
    return video.with_name(video.name + ".json")


def unique_path(folder: Path, stem: str, fmt: str) -> Path:
    """`folder/stem.ext`, or `stem-1.ext`, `stem-2.ext`, ... : the first name not taken (sidecar included)."""
    ext = EXTENSIONS[fmt]
    n = 0
    while True:
        candidate = folder / (f"{stem}{ext}" if n == 0 else f"{stem}-{n}{ext}")
        if not candidate.exists() and not sidecar_path(candidate).exists():
            return candidate
        n += 1


def check_writable(path: Path) -> None:
    """InvalidInput unless `path` can be created: its nearest existing ancestor is a writable folder."""
    folder = path.parent
    while not folder.exists():
        if folder.parent == folder:
            break
        folder = folder.parent
    if not folder.is_dir():
        raise InvalidInput(f"cannot write {path}: {folder} is not a folder", hint="choose another -o/--output")
    try:
        fd, probe = tempfile.mkstemp(prefix=".lamp-write-test-", dir=folder)
    except OSError as e:
        raise InvalidInput(
            f"cannot write {path}: folder {folder} is not writable ({e.strerror})",
            hint="choose another -o/--output",
        ) from None
    os.close(fd)
    os.unlink(probe)


def plan_output(
    prompt: str,
    output: Path | None,
    fmt: str,
    *,
    folder: Path | None = None,
    prefix: str = "",
    overwrite: bool = False,
) -> Path:
    """Where one video goes: `output` as given, else a fresh name from the prompt in `folder` (CWD)."""
    if output is None:
        path = unique_path(folder or Path.cwd(), prefix + slugify(prompt), fmt)
    else:
        path = output
        if (path.exists() or sidecar_path(path).exists()) and not overwrite:
            raise InvalidInput(f"{path} already exists", hint="pass --overwrite, or choose another -o/--output")
    check_writable(path)
    return path


def save_video(
    frames: Any,
    path: Path,
    *,
    fps: float,
    fmt: str,
    record: dict[str, Any],
    overwrite: bool = False,
) -> tuple[Path, Path]:
    """Write the video and its sidecar (`<video>.json`); both or neither.

    A default-named output taken since it was planned moves on to the next free number.
    """

    if not overwrite and (path.exists() or sidecar_path(path).exists()):
        path = unique_path(path.parent, path.name.removesuffix(EXTENSIONS[fmt]), fmt)
    sidecar = sidecar_path(path)
    doc = {"sidecar_version": SIDECAR_VERSION, "lamp_version": __version__, **record}
    doc["output"] = {"path": str(path.resolve()), "format": fmt, "fps": fps}
    created = not path.parent.exists()
    top = path.parent
    while not top.parent.exists():
        top = top.parent
    try:
        write_video(frames, path, fps=fps, format=fmt)
        atomic_write_text(sidecar, json.dumps(doc, indent=2, sort_keys=True, default=str, allow_nan=False) + "\n")
    except BaseException:
        with contextlib.suppress(OSError):
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
        if created:  # the folders made for this video, if they are still empty
            with contextlib.suppress(OSError):
                for d in [path.parent, *path.parent.parents]:
                    d.rmdir()
                    if d == top:
                        break
        raise
    return path, sidecar


# Fields of a sidecar that `--from-sidecar` needs to make the video again.
SIDECAR_REQUIRED = ("prompt", "motions", "base", "frames", "width", "height", "steps", "guidance", "seed")


def read_sidecar(path: Path) -> dict[str, Any]:
    """A sidecar's document, checked for the fields a reproduction needs."""
    try:
        doc = json.loads(Path(path).read_text("utf-8"))
    except FileNotFoundError:
        raise InvalidInput(f"no such sidecar: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InvalidInput(f"cannot read sidecar {path}: {e}", hint="pass the .json file written beside a video") from e
    if not isinstance(doc, dict):
        raise InvalidInput(f"{path} is not a lamp sidecar (not a JSON object)")
    missing = [k for k in SIDECAR_REQUIRED if k not in doc]
    if missing:
        raise InvalidInput(
            f"{path} is not a lamp sidecar (missing {', '.join(missing)})",
            hint="pass the .json file written beside a video by `lamp gen` or `lamp animate`",
        )
    return doc
