"""The one reader of prompt files (`lamp gen --prompts-file`, `lamp eval --prompts-file`,
`lamp train --eval-prompts-file`): one prompt per line; blank lines and lines starting with `#`
are skipped."""

from __future__ import annotations

from pathlib import Path

from .errors import InvalidInput


def read_prompts_file(path: str | Path) -> list[str]:
    """The prompts of a prompts file, in order (InvalidInput when missing, unreadable or empty)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidInput(f"no such prompts file: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidInput(f"cannot read prompts file {path}: {e}") from None
    prompts = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not prompts:
        raise InvalidInput(f"prompts file {path} has no prompts", hint="write one prompt per line (# starts a comment)")
    return prompts
