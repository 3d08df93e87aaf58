"""A motion adapter: exactly what a learned motion adds to or changes in its base UNet.

One safetensors file. Tensors are keyed by module path in the inflated UNet (docs/method.md):
the added modules' tensors (`...conv1d.*`, `...conv_gate.*`, `...attn_temp.*`, `...norm_temp.*`)
and, for tuned base weights, the difference tuned − base under the base key with a `.delta`
suffix (`...attn1.to_q.weight.delta`). The header's `__metadata__` holds strings only:
`format=pt` and the `lamp.*` fields below (JSON where structured).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from . import __version__, schema
from .errors import IncompatibleAdapter, InvalidInput
from .fsutil import atomic_write_bytes
from .jsonio import dumps_strict, loads_strict
from .lowrank import check_factor_values, expand_tensors, factor_plan, is_compressed
from .models.base import architecture_of
from .models.names import DELTA_SUFFIX

log = logging.getLogger("lamp")

FORMAT_VERSION = "1"
# The precisions an adapter's tensors may be stored in (`--adapter-dtype`, `import --dtype`).
ADAPTER_DTYPES = ("fp16", "bf16", "fp32")


def check_adapter_dtype(dtype: str) -> str:
    """`dtype` if it is one of ADAPTER_DTYPES, else InvalidInput listing them."""
    if dtype not in ADAPTER_DTYPES:
        raise InvalidInput(f"adapter dtype must be one of {', '.join(ADAPTER_DTYPES)}, got {dtype!r}")
    return dtype

# Header fields every lamp adapter carries, with their types and ranges: lamp_cli/schema.py.
REQUIRED_METADATA = schema.REQUIRED_METADATA

# safetensors dtype code -> (the torch dtype name the weights hash uses, bytes per element)
_DTYPES = {"F16": ("torch.float16", 2), "BF16": ("torch.bfloat16", 2), "F32": ("torch.float32", 4)}
_DTYPE_NAMES = {"F16": "float16", "BF16": "bfloat16", "F32": "float32"}
_CHUNK = 1 << 20


def tensor_bytes(t: Any) -> bytes:
    """The raw little-endian bytes of a tensor, whatever its dtype (bf16 included)."""
    import torch

    t = t.detach().contiguous().cpu()
    return t.reshape(-1).view(torch.uint8).numpy().tobytes()


def _weights_digest(entries: Iterable[tuple[str, str, list[int], Iterable[bytes]]]) -> str:
    """The one definition of `lamp.weights_sha256`: over (name, torch dtype name, shape, bytes)
    of every tensor, sorted by name. Metadata changes do not affect it."""
    h = hashlib.sha256()
    for key, dtype_name, shape, chunks in entries:
        h.update(key.encode())
        h.update(dtype_name.encode())
        h.update(json.dumps(list(shape)).encode())
        for chunk in chunks:
            h.update(chunk)
    return h.hexdigest()


def weights_sha256(tensors: dict[str, Any]) -> str:
    """`lamp.weights_sha256` of in-memory tensors."""
    return _weights_digest(
        (k, str(tensors[k].dtype), list(tensors[k].shape), (tensor_bytes(tensors[k]),)) for k in sorted(tensors)
    )


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

    def _field(self, key: str, default: Any) -> Any:
        """A header field, checked against its schema (absent: `default`)."""
        if key not in self.metadata:
            return default
        what = f"motion '{self.name}'" if self.name else "the motion adapter"
        fields = tuple(f for f in schema.ADAPTER_HEADER if f.key == key)
        return schema.check_fields(fields, self.metadata, what=what, kind="header field")[key]

    @property
    def base(self) -> dict[str, Any]:
        return self._field("lamp.base", {})

    @property
    def frames(self) -> int:
        return self._field("lamp.frames", 0)

    @property
    def size(self) -> tuple[int, int]:
        w, h = self._field("lamp.size", [0, 0])
        return int(w), int(h)

    @property
    def train_config(self) -> dict[str, Any]:
        return self._field("lamp.train", {})

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

        atomic_write_bytes(path, self.to_bytes())
        return Path(path)

    @classmethod
    def from_bytes(cls, data: bytes) -> MotionAdapter:
        from safetensors.torch import load

        header = read_header_bytes(data, what="adapter")
        md = header["__metadata__"]
        if any(k.startswith("lamp.") for k in md):  # a lamp adapter: its fields are checked on every read
            check_adapter_metadata(md, what=f"motion '{md.get('lamp.name', '?')}'")
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
        "lamp.base": dumps_strict({"spec": base_spec, "fingerprint": base_fingerprint}, what="lamp.base"),
        "lamp.architecture": architecture,
        "lamp.frames": str(int(frames)),
        "lamp.size": json.dumps([int(width), int(height)]),
        "lamp.train": dumps_strict(train, what="the training record (lamp.train)", sort_keys=True, default=str),
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
        text = data[8 : 8 + n].decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidInput(f"{what} is not a safetensors file (header is not UTF-8: {e})") from None
    # safetensors headers are flat: {name: {dtype, shape, data_offsets}} plus __metadata__
    header = loads_strict(text, what=f"{what}: the safetensors header", max_depth=4)
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
            raise InvalidInput(f"{what}: tensor entry {schema.shown(key)} is malformed")
        offsets = info["data_offsets"]
        if not (
            isinstance(offsets, list)
            and len(offsets) == 2
            and all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
            and 0 <= offsets[0] <= offsets[1]
        ):
            raise InvalidInput(f"{what}: tensor {schema.shown(key)} has malformed data_offsets {schema.shown(offsets)}")
        end = max(end, offsets[1])
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


# --- the adapter format, checked from the header and bytes (no torch) ---------------------------

# Channel counts where an SD-1.x UNet has motion layers: conv_out (4) and the three block widths.
_SD1_CONV_CHANNELS = {4, 320, 640, 1280}
_SD1_ATTN_CHANNELS = {320, 640, 1280}
_KEY_RE = re.compile(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)+")
MAX_TENSORS = schema.MAX_TENSORS


@dataclass
class HeaderSummary:
    """What an adapter header says about its tensors (computed without loading them)."""

    tensors: int
    parameters: int
    nbytes: int
    dtype: str  # "float16", or "mixed(float16,float32)"
    groups: dict[str, int]  # conv1d / conv_gate / attn_temp / norm_temp / delta -> tensor count


def _shape_of(key: str, info: dict[str, Any], what: str) -> list[int]:
    shape = info.get("shape")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise InvalidInput(f"{what}: tensor '{key}' has a malformed shape {shape!r}")
    return shape


def _check_role(key: str, shape: list[int], what: str) -> tuple[str, int | None]:
    """Which motion-layer tensor `key` is, and its channel count; InvalidInput if implausible."""

    def bad(expected: str) -> InvalidInput:
        return InvalidInput(f"{what}: tensor '{key}' has shape {shape}, expected {expected}")

    if key.endswith(DELTA_SUFFIX):
        if not 1 <= len(shape) <= 4:
            raise bad("a weight delta of rank 1 to 4")
        return "delta", None
    parts = key.split(".")
    param = parts[-1]
    if param not in ("weight", "bias"):
        raise InvalidInput(f"{what}: unexpected tensor '{key}' (not a weight or bias)")
    if parts[-2] == "conv1d":
        # Conv1d(C, C, 3): dense channel mixing over frames (docs/method.md)
        if param == "weight" and not (len(shape) == 3 and shape[0] == shape[1] and shape[2] == 3):
            raise bad("C×C×3 (a kernel-3 conv over frames)")
        if param == "bias" and len(shape) != 1:
            raise bad("C")
        return "conv1d", shape[0]
    if parts[-2] == "conv_gate":
        # Conv2d(C, 1, 3×3): one gate value per pixel and frame
        if param == "weight" and not (len(shape) == 4 and shape[0] == 1 and shape[2:] == [3, 3]):
            raise bad("1×C×3×3 (a 3×3 conv to one channel)")
        if param == "bias" and shape != [1]:
            raise bad("[1]")
        return "conv_gate", shape[1] if param == "weight" else None
    if "attn_temp" in parts[:-1]:
        if param == "weight" and len(shape) != 2:
            raise bad("a 2-D projection weight")
        if param == "bias" and len(shape) != 1:
            raise bad("a 1-D bias")
        return "attn_temp", shape[-1]
    if parts[-2] == "norm_temp":
        if len(shape) != 1:
            raise bad("C (a LayerNorm parameter)")
        return "norm_temp", shape[0]
    raise InvalidInput(
        f"{what}: unexpected tensor '{key}'",
        hint="a motion adapter holds only conv1d, conv_gate, attn_temp, norm_temp tensors and `.delta` weights",
    )


def check_adapter_tensors(header: dict[str, Any], *, what: str = "file") -> HeaderSummary:
    """Check, from a parsed safetensors header alone, that its tensors are plausible for a lamp
    motion adapter of its declared architecture; raise InvalidInput naming the first problem.
    """
    md = header.get("__metadata__") or {}
    arch = md.get("lamp.architecture", "")
    entries = [(k, v) for k, v in header.items() if k != "__metadata__"]
    if not entries:
        raise InvalidInput(f"{what} holds no tensors")
    if len(entries) > MAX_TENSORS:
        raise InvalidInput(f"{what} holds {len(entries)} tensors, more than any adapter ({MAX_TENSORS})")
    plan = factor_plan(header, what=what)  # low-rank factors -> the dense key and shape they stand for
    spans: list[tuple[int, int, str]] = []
    groups: dict[str, int] = {}
    dtypes: set[str] = set()
    params = nbytes = 0
    channels: dict[str, int] = {}  # parent module -> C, so conv1d and conv_gate of one site agree
    for key, info in entries:
        if len(key) > 512 or not _KEY_RE.fullmatch(key):
            raise InvalidInput(f"{what}: tensor name {key[:80]!r} is not a module path")
        dtype = info.get("dtype")
        if dtype not in _DTYPES:
            raise InvalidInput(f"{what}: tensor '{key}' has dtype {dtype!r}; adapters use F16, BF16 or F32")
        shape = _shape_of(key, info, what)
        offsets = info.get("data_offsets")
        if not (
            isinstance(offsets, list)
            and len(offsets) == 2
            and all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
            and 0 <= offsets[0] <= offsets[1]
        ):
            raise InvalidInput(f"{what}: tensor '{key}' has malformed data_offsets {offsets!r}")
        numel = math.prod(shape)
        size = numel * _DTYPES[dtype][1]
        if offsets[1] - offsets[0] != size:
            raise InvalidInput(
                f"{what}: tensor '{key}' claims {offsets[1] - offsets[0]} bytes, its shape needs {size}"
            )
        target, target_shape = plan.get(key, (key, shape))  # a low-rank factor's dense tensor
        role, c = _check_role(target, target_shape, what)
        if role in ("conv1d", "conv_gate") and c is not None:
            parent = target.rsplit(".", 2)[0]
            if channels.setdefault(parent, c) != c:
                raise InvalidInput(
                    f"{what}: conv1d and conv_gate of '{parent}' disagree on channels ({channels[parent]} vs {c})"
                )
        if arch == "sd1-unet" and c is not None:
            allowed = _SD1_CONV_CHANNELS if role in ("conv1d", "conv_gate") else _SD1_ATTN_CHANNELS
            if c not in allowed:
                raise InvalidInput(
                    f"{what}: tensor '{key}' has {c} channels, which an sd1-unet motion layer never has",
                    hint="the file's lamp.architecture does not match its tensors",
                )
        groups[role] = groups.get(role, 0) + 1
        dtypes.add(dtype)
        params += numel
        nbytes += size
        spans.append((offsets[0], offsets[1], key))
    # safetensors packs tensors back to back with no gaps or overlaps
    spans.sort()
    pos = 0
    for start, stop, key in spans:
        if start != pos:
            raise InvalidInput(
                f"{what}: tensor '{key}' starts at byte {start} of the data, expected {pos} (gap or overlap)"
            )
        pos = stop
    names = sorted(_DTYPE_NAMES[d] for d in dtypes)
    dtype_desc = names[0] if len(names) == 1 else f"mixed({','.join(names)})"
    return HeaderSummary(
        tensors=len(entries), parameters=params, nbytes=nbytes, dtype=dtype_desc, groups=groups
    )


_IMPORT_HINT = "`lamp import` takes a motion adapter written by `lamp export` or `lamp train` (.safetensors)"


def check_adapter_metadata(md: dict[str, str], *, what: str = "file") -> dict[str, Any]:
    """The header fields, checked against `schema.ADAPTER_HEADER`; their parsed values.

    InvalidInput names the first missing or malformed field and its expected form.
    """
    missing = [k for k in REQUIRED_METADATA if k not in md]
    if missing and not any(k.startswith("lamp.") for k in md):
        raise InvalidInput(
            f"{what} is a safetensors file but not a lamp motion adapter (no lamp.* header fields)",
            hint="an official LAMP checkpoint is imported with `lamp import --official PATH --name NAME`",
        )
    version = md.get("lamp.format_version")
    if isinstance(version, str) and version != FORMAT_VERSION and version.isdigit():
        raise InvalidInput(
            f"{what} has adapter format version {schema.shown(version)}; this lamp reads version {FORMAT_VERSION}",
            hint="upgrade lamp (`pip install -U lamp-cli`)",
        )
    values = schema.check_fields(schema.ADAPTER_HEADER, md, what=what, kind="header field")
    schema.check_header_extras(md, what=what)
    return values


def header_weights_sha256(header: dict[str, Any], f: BinaryIO, data_start: int) -> str:
    """`lamp.weights_sha256` computed from a file, without torch (same definition as for tensors)."""

    def chunks(key: str, start: int, stop: int) -> Iterable[bytes]:
        f.seek(data_start + start)
        left = stop - start
        while left:
            chunk = f.read(min(left, _CHUNK))
            if not chunk:
                raise InvalidInput(f"{getattr(f, 'name', 'file')} is truncated inside tensor '{key}'")
            yield chunk
            left -= len(chunk)

    return _weights_digest(
        (key, _DTYPES[header[key]["dtype"]][0], list(header[key]["shape"]), chunks(key, *header[key]["data_offsets"]))
        for key in sorted(k for k in header if k != "__metadata__")
    )


def check_adapter_file(path: Path) -> tuple[dict[str, Any], HeaderSummary, int]:
    """Every check `import` makes on a file, reading only its header and tensor bytes.

    Returns (header, summary, offset of the tensor data); InvalidInput names the first problem.
    """
    what = str(path)
    try:
        header = read_header(path)
        md = header["__metadata__"]
        check_adapter_metadata(md, what=what)
        summary = check_adapter_tensors(header, what=what)
        total = path.stat().st_size
        with path.open("rb") as f:
            data_start = 8 + int.from_bytes(f.read(8), "little")
            if data_start + summary.nbytes != total:
                raise InvalidInput(
                    f"{what} has {total - data_start - summary.nbytes} unexpected trailing bytes after its tensors"
                )
            if header_weights_sha256(header, f, data_start) != md["lamp.weights_sha256"]:
                raise InvalidInput(
                    f"{what}: the tensor data does not match its lamp.weights_sha256 (the file is damaged or was edited)"
                )
            check_factor_values(header, f, data_start, what=what)
    except InvalidInput as e:
        raise InvalidInput(e.message, hint=e.hint or _IMPORT_HINT) from e
    return header, summary, data_start


def encode_header(header: dict[str, Any]) -> bytes:
    """The 8-byte length + JSON header of a safetensors file, space-padded to 8-byte alignment."""
    raw = dumps_strict(header, what="an adapter header", separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    return len(raw).to_bytes(8, "little") + raw


def check_adapter_bytes(data: bytes, *, what: str = "adapter") -> tuple[dict[str, Any], dict[str, Any], HeaderSummary]:
    """Every check `import` makes, on an adapter file held in memory.

    Returns (header, its checked field values, summary); InvalidInput names the first problem.
    """
    header = read_header_bytes(data, what=what)
    fields = check_adapter_metadata(header["__metadata__"], what=what)
    summary = check_adapter_tensors(header, what=what)
    data_start = 8 + int.from_bytes(data[:8], "little")
    if data_start + summary.nbytes != len(data):
        raise InvalidInput(f"{what} has {len(data) - data_start - summary.nbytes} unexpected trailing bytes after its tensors")
    import io

    with io.BytesIO(data) as f:
        if header_weights_sha256(header, f, data_start) != fields["lamp.weights_sha256"]:
            raise InvalidInput(f"{what}: the tensor data does not match its lamp.weights_sha256")
        check_factor_values(header, f, data_start, what=what)
    return header, fields, summary


def summarize_header(header: dict[str, Any]) -> dict[str, Any]:
    """A JSON-able summary of an adapter header for `lamp show`: tensors, params, dtype, config."""
    md = header.get("__metadata__") or {}
    s = check_adapter_tensors(header)
    v = check_adapter_metadata(md, what=f"motion '{md.get('lamp.name', '?')}'")
    return {
        "tensors": s.tensors,
        "parameters": s.parameters,
        "nbytes": s.nbytes,
        "dtype": s.dtype,
        "groups": s.groups,
        "name": v["lamp.name"],
        "architecture": v["lamp.architecture"],
        "base": v["lamp.base"],
        "frames": v["lamp.frames"],
        "size": v["lamp.size"],
        "train": v["lamp.train"],
        "created": v["lamp.created"],
        "lamp_version": v["lamp.version"],
        "format_version": v["lamp.format_version"],
        "weights_sha256": v["lamp.weights_sha256"],
        "extra": {k: val for k, val in md.items() if k.startswith("lamp.") and k not in REQUIRED_METADATA},
    }


# --- a motion adapter and the video UNet: extract, apply, blend ---------------------------------
#
# What an adapter holds (docs/registry.md): the tensors of every module the inflation added (conv1d,
# conv_gate, attn_temp, norm_temp) as they are, and for the pretrained weights LAMP tunes
# (attn1.to_q) the difference tuned − base under `<key>.delta`. Applying sets the added modules to
# the adapter's tensors and attn1.to_q to base + delta. Blending several adapters with weights wᵢ
# is task arithmetic: deltas and added weights add linearly (Σ wᵢ·tensorᵢ, attn1.to_q = base +
# Σ wᵢ·deltaᵢ), except norm_temp, which takes the weighted average (Σ |wᵢ|·tᵢ / Σ |wᵢ|) so a
# LayerNorm's scale is never shrunk by a weight; LAMP keeps norm_temp frozen at the identity, so
# in practice it is the identity whatever the weights.


def _video_parts(video_unet: Any) -> Any:
    """The inflated diffusers UNet inside a VideoUNet (or the inflated UNet itself)."""
    return getattr(video_unet, "unet", video_unet)


def adapter_keys(video_unet: Any) -> list[str]:
    """The tensor keys an adapter for this video UNet holds, sorted."""
    from .models.video_unet import is_added_key, is_tuned_base_key

    keys = []
    for name, _ in _video_parts(video_unet).named_parameters():
        if is_added_key(name):
            keys.append(name)
        elif is_tuned_base_key(name):
            keys.append(name + DELTA_SUFFIX)
    return sorted(keys)


def extract(
    video_unet: Any,
    base_unet: Any = None,
    *,
    dtype: Any = None,
    metadata: dict[str, str] | None = None,
) -> MotionAdapter:
    """The motion adapter of a (trained) video UNet: added modules' tensors plus tuned − base.

    `base_unet`: the 2-D base UNet the video UNet was inflated from (or None: the copy of the base
    attn1.to_q weights the VideoUNet kept when it was inflated). `dtype`: of the stored tensors
    (default fp16; differences are computed in fp32 first). `metadata`: a `make_metadata(...)` header.
    """
    import torch

    from .models.video_unet import is_added_key, is_tuned_base_key

    dtype = torch.float16 if dtype is None else dtype
    unet = _video_parts(video_unet)
    if base_unet is None:
        base = getattr(video_unet, "base_to_q", None)
        if base is None:
            raise ValueError("extract needs the base UNet (or a VideoUNet, which keeps its base attn1.to_q)")
    else:
        base = dict(_video_parts(base_unet).named_parameters())
    tensors = {}
    for name, p in unet.named_parameters():
        if is_added_key(name):
            tensors[name] = p.detach().to("cpu", dtype, copy=True)
        elif is_tuned_base_key(name):
            if name not in base or tuple(base[name].shape) != tuple(p.shape):
                raise IncompatibleAdapter(
                    f"the base UNet has no tensor '{name}' of shape {tuple(p.shape)}",
                    hint="pass the 2-D base UNet this video UNet was inflated from",
                )
            ref = base[name].detach().to("cpu", torch.float32)
            tensors[name + DELTA_SUFFIX] = (p.detach().to("cpu", torch.float32) - ref).to(dtype)
    md = dict(metadata or {})
    md.setdefault("lamp.architecture", architecture_of(dict(unet.config)))
    return MotionAdapter(tensors=tensors, metadata=md)


def _check_fits(adapter: MotionAdapter, expected: dict[str, tuple[int, ...]], architecture: str) -> None:
    what = f"motion '{adapter.name}'" if adapter.name else "the motion adapter"
    if adapter.architecture and adapter.architecture != architecture:
        raise IncompatibleAdapter(
            f"{what} was trained for a '{adapter.architecture}' UNet; this base is '{architecture}'",
            hint="use a base of the architecture the motion was trained on, or retrain it on this base",
        )
    missing = sorted(set(expected) - set(adapter.tensors))
    extra = sorted(set(adapter.tensors) - set(expected))
    if missing or extra:
        key, problem = (missing[0], "lacks") if missing else (extra[0], "has an unexpected")
        more = len(missing) + len(extra) - 1
        raise IncompatibleAdapter(
            f"{what} {problem} tensor '{key}'" + (f" (and {more} more mismatched keys)" if more else ""),
            hint="the adapter was made for another model layout; retrain it on this base",
        )
    for key, shape in expected.items():
        got = tuple(adapter.tensors[key].shape)
        if got != shape:
            raise IncompatibleAdapter(
                f"{what}: tensor '{key}' has shape {list(got)}, this model needs {list(shape)}",
                hint="the adapter was made for another model size; retrain it on this base",
            )


def _blend_list(adapters: Any, weight: float) -> list[tuple[MotionAdapter, float]]:
    if isinstance(adapters, MotionAdapter):
        return [(adapters, float(weight))]
    items = [(a, float(w) * float(weight)) for a, w in adapters]
    if not items:
        raise InvalidInput("no motion adapters to apply")
    return items


def expand_adapter(adapter: MotionAdapter) -> MotionAdapter:
    """The dense form of a compressed adapter (docs/compression.md); others are returned as they are."""
    if not is_compressed(adapter.metadata, adapter.tensors):
        return adapter
    what = f"motion '{adapter.name}'" if adapter.name else "the motion adapter"
    tensors, metadata = expand_tensors(adapter.tensors, adapter.metadata, what=what)
    return MotionAdapter(tensors=tensors, metadata=metadata)


def apply(
    adapters: MotionAdapter | list[tuple[MotionAdapter, float]],
    video_unet: Any,
    weight: float = 1.0,
    *,
    base_fingerprint: str | None = None,
) -> None:
    """Set a VideoUNet's motion to one adapter (scaled by `weight`) or a weighted blend.

    Every call starts from the base (the attn1.to_q weights kept at inflation), so applying again,
    or another adapter, replaces the previous motion. With a list of (adapter, wᵢ), `weight`
    scales every wᵢ. Raises IncompatibleAdapter (naming the key) when an adapter's architecture,
    keys or shapes do not fit; notes (log level info) when it was trained on a base with other weights.
    """
    import torch


    # compressed adapters (docs/compression.md) are expanded to dense tensors here, the one hook
    items = [(expand_adapter(a), w) for a, w in _blend_list(adapters, weight)]
    unet = _video_parts(video_unet)
    params = dict(unet.named_parameters())
    expected = {k: tuple(params[k.removesuffix(DELTA_SUFFIX)].shape) for k in adapter_keys(unet)}
    architecture = architecture_of(dict(unet.config))
    for adapter, _ in items:
        _check_fits(adapter, expected, architecture)
        trained_on = adapter.base.get("fingerprint")
        if base_fingerprint and trained_on and trained_on != base_fingerprint:
            # Same architecture (checked above), other weights: a fine-tune of the base or a
            # LoRA-styled base, which is what motions are for. Worth a note, not a warning.
            log.info(
                "note: motion '%s' was trained on base %s (fingerprint %s); this base (fingerprint %s) "
                "has the same architecture and other weights",
                adapter.name or "?",
                adapter.base.get("spec", "?"),
                trained_on,
                base_fingerprint,
            )
    base_to_q = getattr(video_unet, "base_to_q", None)
    if base_to_q is None:
        raise ValueError("apply needs a VideoUNet (it keeps the base attn1.to_q weights)")
    total_abs = sum(abs(w) for _, w in items)
    with torch.no_grad():
        for key in expected:
            p = params[key.removesuffix(DELTA_SUFFIX)]
            acc = torch.zeros(p.shape, dtype=torch.float32, device=p.device)
            if key.endswith(DELTA_SUFFIX):
                acc += base_to_q[key.removesuffix(DELTA_SUFFIX)].to(p.device, torch.float32)
                for adapter, w in items:
                    acc += w * adapter.tensors[key].to(p.device, torch.float32)
            elif ".norm_temp." in f".{key}":
                if total_abs == 0:
                    acc += 1.0 if key.endswith(".weight") else 0.0  # the identity LayerNorm
                for adapter, w in items:
                    acc += (abs(w) / (total_abs or 1.0)) * adapter.tensors[key].to(p.device, torch.float32)
            else:
                for adapter, w in items:
                    acc += w * adapter.tensors[key].to(p.device, torch.float32)
            p.copy_(acc)
    if hasattr(video_unet, "motions"):
        video_unet.motions = [(a.name, w) for a, w in items]


def reset_motion(video_unet: Any) -> None:
    """Return a VideoUNet to no motion: every added layer the identity, attn1.to_q the base.

    conv1d, conv_gate and attn_temp's output projection are zeroed and norm_temp is the identity
    LayerNorm; attn_temp's q/k/v are left as they are (the zero output makes them irrelevant, and
    zeroing them too would leave no gradient to train from).
    """
    import torch

    unet = _video_parts(video_unet)
    with torch.no_grad():
        for name, p in unet.named_parameters():
            path = f".{name}"
            if ".conv1d." in path or ".conv_gate." in path or ".attn_temp.to_out." in path:
                p.zero_()
            elif ".norm_temp." in path:
                p.fill_(1.0 if name.endswith(".weight") else 0.0)
            elif name in video_unet.base_to_q:
                p.copy_(video_unet.base_to_q[name])
    video_unet.motions = []
