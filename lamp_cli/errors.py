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
