"""A motion adapter: exactly what a learned motion adds to or changes in its base UNet.

One safetensors file. Tensors are keyed by module path in the inflated UNet (DESIGN §3):
the added modules' tensors (`...conv1d.*`, `...conv_gate.*`, `...attn_temp.*`, `...norm_temp.*`)
and, for tuned base weights, the difference tuned − base under the base key with a `.delta`
suffix (`...attn1.to_q.weight.delta`). The header's `__metadata__` holds strings only:
`format=pt` and the `lamp.*` fields below (JSON where structured).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import __version__
from .errors import InvalidInput

FORMAT_VERSION = "1"
DELTA_SUFFIX = ".delta"

# Header fields every lamp adapter carries (DESIGN §4).
REQUIRED_METADATA = (
    "lamp.format_version",
    "lamp.name",
    "lamp.base",
    "lamp.architecture",
    "lamp.frames",
    "lamp.size",
    "lamp.train",
    "lamp.created",
    "lamp.version",
    "lamp.weights_sha256",
)


def tensor_bytes(t: Any) -> bytes:
    """The raw little-endian bytes of a tensor, whatever its dtype (bf16 included)."""
    import torch

    t = t.detach().contiguous().cpu()
    return t.reshape(-1).view(torch.uint8).numpy().tobytes()


def weights_sha256(tensors: dict[str, Any]) -> str:
    """Hash over tensor names, dtypes, shapes and bytes (metadata changes do not affect it)."""
    h = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key]
        h.update(key.encode())
        h.update(str(t.dtype).encode())
        h.update(json.dumps(list(t.shape)).encode())
        h.update(tensor_bytes(t))
    return h.hexdigest()


@dataclass
class MotionAdapter:
    tensors: dict[str, Any]  # name -> torch.Tensor (CPU)
    metadata: dict[str, str] = field(default_factory=dict)  # the header's __metadata__

    # --- header fields -------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.metadata.get("lamp.name", "")

    @property
    def architecture(self) -> str:
        return self.metadata.get("lamp.architecture", "")

    @property
    def base(self) -> dict[str, Any]:
        return json.loads(self.metadata.get("lamp.base", "{}"))

    @property
    def frames(self) -> int:
        return int(self.metadata.get("lamp.frames", "0"))

    @property
    def size(self) -> tuple[int, int]:
        w, h = json.loads(self.metadata.get("lamp.size", "[0, 0]"))
        return int(w), int(h)

    @property
    def train_config(self) -> dict[str, Any]:
        return json.loads(self.metadata.get("lamp.train", "{}"))

    def weights_sha256(self) -> str:
        return weights_sha256(self.tensors)

    def num_parameters(self) -> int:
        return sum(int(t.numel()) for t in self.tensors.values())

    def nbytes(self) -> int:
        return sum(int(t.numel()) * t.element_size() for t in self.tensors.values())

    # --- (de)serialisation -----------------------------------------------------------------
    def finalized_metadata(self) -> dict[str, str]:
        """The header to write: given fields plus format, version, created and weights hash."""
        md = {k: str(v) for k, v in self.metadata.items()}
        md["format"] = "pt"
        md.setdefault("lamp.format_version", FORMAT_VERSION)
        md.setdefault("lamp.created", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
        md.setdefault("lamp.version", __version__)
        md["lamp.weights_sha256"] = self.weights_sha256()
        return md

    def to_bytes(self) -> bytes:
        from safetensors.torch import save

        tensors = {k: v.detach().contiguous().cpu() for k, v in self.tensors.items()}
        return save(tensors, metadata=self.finalized_metadata())

    def save(self, path: str | Path) -> Path:
        """Write the adapter to one safetensors file, atomically."""
        from .fsutil import atomic_write_bytes

        atomic_write_bytes(path, self.to_bytes())
        return Path(path)

    @classmethod
    def from_bytes(cls, data: bytes) -> MotionAdapter:
        from safetensors.torch import load

        md = read_header_bytes(data)["__metadata__"]
        return cls(tensors=load(data), metadata=md)

    @classmethod
    def load(cls, path: str | Path) -> MotionAdapter:
        return cls.from_bytes(Path(path).read_bytes())


def make_metadata(
    *,
    name: str,
    base_spec: str,
    base_fingerprint: str,
    architecture: str,
    frames: int,
    width: int,
    height: int,
    train: dict[str, Any],
    **extra: str,
) -> dict[str, str]:
    """The `lamp.*` header of a new adapter (format, created, version, hash are added on save)."""
    md = {
        "lamp.name": name,
        "lamp.base": json.dumps({"spec": base_spec, "fingerprint": base_fingerprint}),
        "lamp.architecture": architecture,
        "lamp.frames": str(int(frames)),
        "lamp.size": json.dumps([int(width), int(height)]),
        "lamp.train": json.dumps(train, sort_keys=True, default=str),
    }
    md.update({k if k.startswith("lamp.") else f"lamp.{k}": str(v) for k, v in extra.items()})
    return md


# Sanity limit for a safetensors header: real adapters have a few thousand tensors (< 1 MB).
MAX_HEADER_BYTES = 16 * 1024 * 1024


def read_header_bytes(data: bytes, *, what: str = "file", total: int | None = None) -> dict[str, Any]:
    """Parse and check a safetensors header without torch; raises InvalidInput naming the problem.

    `data` holds at least the first 8 + header-length bytes; `total` is the file's full length
    (default: len(data)).
    """
    total = len(data) if total is None else total
    if total < 8:
        raise InvalidInput(f"{what} is not a safetensors file (only {total} bytes)")
    n = int.from_bytes(data[:8], "little")
    if n > MAX_HEADER_BYTES or n > total - 8:
        raise InvalidInput(
            f"{what} is not a valid safetensors file (header claims {n} bytes, file has {total - 8})"
        )
    try:
        header = json.loads(data[8 : 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InvalidInput(f"{what} is not a safetensors file (header is not JSON: {e})") from e
    if not isinstance(header, dict):
        raise InvalidInput(f"{what} is not a safetensors file (header is not a JSON object)")
    md = header.get("__metadata__") or {}
    if not isinstance(md, dict) or not all(isinstance(v, str) for v in md.values()):
        raise InvalidInput(f"{what} has a malformed __metadata__ (must map strings to strings)")
    header["__metadata__"] = md
    end = 0
    for key, info in header.items():
        if key == "__metadata__":
            continue
        if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= set(info):
            raise InvalidInput(f"{what}: tensor entry '{key}' is malformed")
        start, stop = info["data_offsets"]
        end = max(end, stop)
    if 8 + n + end > total:
        raise InvalidInput(f"{what} is truncated (tensor data ends at byte {8 + n + end}, file has {total})")
    return header


def read_header(path: str | Path) -> dict[str, Any]:
    """The parsed, checked header of a safetensors file on disk (reads only the header)."""
    path = Path(path)
    total = path.stat().st_size
    with path.open("rb") as f:
        prefix = f.read(8)
        n = int.from_bytes(prefix, "little") if len(prefix) == 8 else 0
        if len(prefix) == 8 and n <= min(MAX_HEADER_BYTES, total - 8):
            prefix += f.read(n)
    return read_header_bytes(prefix, what=str(path), total=total)
