"""Whether a model is on this machine (built-in, a local folder, or the local Hugging Face cache),
without torch and without downloading. `lamp doctor` reports it; requests check the base with it
before any model loads (fail fast)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import BaseModelMissing
from .base import BUILTIN_BASES, builtin_dir
from .single_file import is_single_file, known_conversion

# Which files mark a model as usable in a local folder or snapshot.
WEIGHT_GLOBS = ("*.safetensors", "*.bin")


@dataclass(frozen=True)
class Located:
    spec: str
    available: bool
    path: Path | None
    detail: str


def has_weights(folder: Path, sub: str | None) -> bool:
    where = folder / sub if sub else folder
    return where.is_dir() and any(any(where.glob(g)) for g in WEIGHT_GLOBS)


def locate(spec: str, *, sub: str | None = "unet", cache_dir: str | Path | None = None) -> Located:
    """Where model `spec` is on disk. `sub`: the subfolder that must hold weights (a diffusers
    pipeline's `unet`; None for a transformers model such as CLIP)."""
    if spec in BUILTIN_BASES:
        folder = builtin_dir(spec)
        if spec == "tiny":  # built on first use
            return Located(spec, True, folder, "built-in (random weights, for tests and smoke runs)")
        return Located(spec, (folder / "unet").is_dir(), folder, "built-in toy base")
    p = Path(spec).expanduser()
    if p.is_file():  # a single-file checkpoint: converted into lamp's cache on first use
        done = known_conversion(p)
        return Located(spec, True, p, f"single-file checkpoint, converted in {done}" if done else
                       "single-file checkpoint (converted into lamp's cache on first use)")
    if is_single_file(spec):
        return Located(spec, False, None, "no such checkpoint file")
    if p.exists():
        if has_weights(p, sub):
            return Located(spec, True, p, "local folder")
        return Located(spec, False, p, f"local folder without weights{' in ' + sub + '/' if sub else ''}")
    if spec.count("/") != 1 or spec.startswith((".", "/", "~")):
        return Located(spec, False, None, "no such folder, and not a Hugging Face repo id")
    try:
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(spec, local_files_only=True, cache_dir=cache_dir))
    except Exception:  # LocalEntryNotFoundError, bad repo id, ...
        return Located(spec, False, None, f"not in the local Hugging Face cache; `hf download {spec}` fetches it")
    if has_weights(folder, sub):
        return Located(spec, True, folder, "in the Hugging Face cache")
    return Located(spec, False, folder, "in the cache, but without weights")


def require_base(spec: str) -> Path | None:
    """BaseModelMissing (with the download hint) unless base `spec` is on disk; its folder."""
    found = locate(spec)
    if not found.available:
        reason = found.detail.split(";")[0]
        raise BaseModelMissing(spec, reason)
    return found.path
