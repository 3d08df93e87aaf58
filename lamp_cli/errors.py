"""The errors lamp raises: a message that says what is wrong and a hint that says what to do.

The CLI turns every `LampError` into `Error: ...` / `Hint: ...` on stderr and its exit code.
"""

from __future__ import annotations


class LampError(Exception):
    """Base of every error lamp reports to a user."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(LampError):
    """The command line itself is wrong (bad option value, conflicting options)."""

    exit_code = 2


class InvalidInput(LampError):
    """A file, image, video or value given by the user cannot be used."""


class NotFound(LampError):
    """A named thing (motion, recipe, file) does not exist."""


class MotionNotFound(NotFound):
    def __init__(self, name: str):
        super().__init__(f"no motion named '{name}' in the registry", hint="`lamp list` shows the motions you have")
        self.name = name


class RegistryError(LampError):
    """The registry refused an operation or found itself damaged."""


class NameTaken(RegistryError):
    def __init__(self, name: str):
        super().__init__(f"a motion named '{name}' already exists", hint="pass --force to replace it, or choose another --name")
        self.name = name


class IncompatibleAdapter(LampError):
    """An adapter does not fit the model it is applied to."""


class BaseModelMissing(LampError):
    """A base model is not available locally."""

    def __init__(self, spec: str, detail: str | None = None):
        msg = f"base model '{spec}' is not available locally"
        if detail:
            msg += f" ({detail})"
        super().__init__(
            msg,
            hint=f"download it once with `hf download {spec}`, pass a local folder with --base, "
            "or try `--base tiny` / `--base toy`",
        )
        self.spec = spec


class Interrupted(LampError):
    """Work was interrupted by the user (Ctrl-C) after saving what could be saved."""

    exit_code = 130


class FileSystemError(LampError):
    """The operating system refused a file operation (full disk, read-only, permissions, ...)."""


def _under(path: str, root: str | None) -> bool:
    if not root:
        return False
    import os

    try:
        return os.path.commonpath([os.path.abspath(path), os.path.abspath(root)]) == os.path.abspath(root)
    except ValueError:
        return False


def from_os_error(e: OSError, path: str | None = None, *, home: str | None = None) -> FileSystemError:
    """The one translation of an OSError into a message naming the path and what to do.

    `home`: the registry root (`settings.lamp_home()`; default: `LAMP_HOME` if set), so a failure
    inside it says to point LAMP_HOME elsewhere. The whole message fits on one `Error:` line (no
    hint), so a script sees one line per failure.
    """
    import errno
    import os

    path = path or e.filename or ""
    if e.filename2:
        path = f"{path} -> {e.filename2}"
    shown = f" {path}" if path else ""
    home = home or os.environ.get("LAMP_HOME") or ""
    in_home = bool(path) and _under(str(e.filename or ""), home)
    where = "LAMP_HOME" if in_home else "the folder"
    code = e.errno
    if code in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        what = "no space left on the device" + (f" holding{shown}" if path else "")
        todo = "free some space (`lamp gc` removes leftovers) and run the command again"
    elif code == errno.EROFS:
        what = f"cannot write{shown}: the file system is read-only"
        todo = (
            "point LAMP_HOME at a writable folder (read-only commands like `lamp list` still work)"
            if in_home
            else "choose a writable location"
        )
    elif code in (errno.EACCES, errno.EPERM):
        what = f"permission denied:{shown}" if path else "permission denied"
        todo = f"check the permissions of {where}, or point LAMP_HOME at a folder you own" if in_home else (
            "check its permissions, or choose another location"
        )
    elif code == errno.ENOTDIR:
        what = f"{path or 'a path'}: a part of this path is a file, not a folder"
        todo = "set LAMP_HOME to a folder (or move the file away)" if in_home else "fix the path"
    elif code == errno.EISDIR:
        what = f"{path or 'the path'} is a folder, expected a file"
        todo = "pass a file"
    elif code == errno.ENOENT:
        what = f"no such file or folder:{shown}"
        todo = "check the path"
    elif code == errno.EEXIST:
        what = f"{path or 'the path'} already exists"
        todo = "remove it or choose another name"
    elif code in (errno.EMFILE, errno.ENFILE):
        what = "too many open files"
        todo = "close other programs or raise the limit (`ulimit -n`)"
    elif code == errno.ENAMETOOLONG:
        what = f"file name too long:{shown[:200]}"
        todo = "use a shorter path"
    elif code == errno.EIO:
        what = f"input/output error on{shown}"
        todo = "the disk or network share may be failing; check it and retry"
    else:
        what = f"{e.strerror or type(e).__name__}:{shown}" if path else str(e) or type(e).__name__
        todo = "check the path and retry"
    err = FileSystemError(f"{what}; {todo}")
    err.errno = code  # type: ignore[attr-defined]
    return err
