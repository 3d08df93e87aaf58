"""Atomic file writes: a process-unique temp file in the target's folder, fsync, os.replace.

A reader sees either the old file or the new one, never half of one; a crash or exception
mid-write leaves only a `.tmp-*` file that `lamp gc` removes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

TMP_PREFIX = ".tmp-"


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not supported on this platform/filesystem
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def umask() -> int:
    """The process's current umask (read without changing it for longer than a call)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def temp_sibling(path: str | Path, suffix: str = "") -> Path:
    """A new, empty, process-unique temp file beside `path` (same filesystem, so `os.replace`
    is atomic), with the permissions an ordinary new file would get (mkstemp's are 0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{path.name}.{os.getpid()}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~umask())
    return Path(tmp)


def replace_durably(tmp: str | Path, path: str | Path) -> None:
    """fsync `tmp`, rename it over `path`, fsync the folder."""
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(Path(path).parent)


@contextlib.contextmanager
def atomic_writer(path: str | Path) -> Iterator[BinaryIO]:
    """Yield a binary file; on clean exit it replaces `path` atomically, on error it vanishes."""
    path = Path(path)
    tmp = temp_sibling(path)
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_writer(path) as f:
        f.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def make_output_folder(folder: str | Path) -> Path:
    """Create the folder an output (`-o`) goes into, with any missing parents, saying so.

    lamp's rule for `-o` (docs/cli.md): a missing folder is created, and a line on stderr names
    it, so a typo in a path is visible rather than silent. A file in the way is an error.
    """
    folder = Path(folder)
    if folder.is_dir():
        return folder
    top = folder
    while not top.parent.exists() and top.parent != top:
        top = top.parent
    folder.mkdir(parents=True, exist_ok=True)  # an OSError here names the path (NotADirectoryError, ...)
    logging.getLogger("lamp").info("created folder %s", top if top == folder else f"{top} (and {folder})")
    return folder


def writer_alive(tmp: Path) -> bool:
    """Whether the process that named this temp file (`.tmp-<file>.<pid>.<random>`) still runs."""
    m = re.match(rf"{re.escape(TMP_PREFIX)}.*\.(\d+)\.[^.]*$", tmp.name)
    if not m:
        return False
    pid = int(m.group(1))
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # exists, owned by someone else (or unknowable): keep it
    return True
