"""Files of tensors a user brings, and file hashes: one reader and one hash for all of lamp.

lamp writes safetensors only; a pickle-era file (`.bin`, `.ckpt`, `.pt`) is read only through
`torch.load(weights_only=True)`, which refuses any pickle that would run code. Used by single-file
bases, LoRAs and official LAMP checkpoints alike.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from .errors import InvalidInput

_CHUNK = 1 << 22


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, streamed."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def load_weights_only(path: str | Path) -> Any:
    """`torch.load` restricted to tensors and plain containers; memory-mapped when the file is in
    torch's zip format (a 4.4 GB checkpoint then costs page cache, not a second copy in RAM).
    torch's warnings about pickle protocols are silenced: a refusal is reported by the caller."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        try:
            return torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e) and "zipfile" not in str(e):
                raise
        return torch.load(str(path), map_location="cpu", weights_only=True)  # the legacy (non-zip) format


def read_state_dict(path: Path, *, hint: str = "use the model's .safetensors release") -> dict[str, Any]:
    """All tensors of a checkpoint (safetensors, or a pickle through `load_weights_only`); a
    `state_dict` entry is unwrapped. InvalidInput, with `hint`, for anything unreadable."""
    import torch

    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as e:
            raise InvalidInput(f"{path} is not a readable .safetensors file ({e})") from None
    try:
        data = load_weights_only(path)
    except Exception as e:  # UnpicklingError (code in the pickle), zip errors, truncation
        raise InvalidInput(
            f"{path} cannot be read as a plain tensor checkpoint ({type(e).__name__})",
            hint=f"lamp loads pickled files only with weights_only=True; {hint}",
        ) from None
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict):
        raise InvalidInput(f"{path} does not hold a state dict (found {type(data).__name__})")
    return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
