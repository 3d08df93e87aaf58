"""The low-rank form of a motion adapter's tensors (what `lamp compress` writes): factor keys,
the `lamp.compressed` header record, their checks (no torch) and their expansion to dense tensors.

The adapter file format (docs/registry.md) reads and applies these through `adapter.py`, which is
why this module sits below it; making factors is `lamp_cli/compress.py`'s work (docs/compression.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, BinaryIO

from .errors import InvalidInput
from .models.names import DELTA_SUFFIX

UP_SUFFIX = ".lora_up"
DOWN_SUFFIX = ".lora_down"
FIELD = "lamp.compressed"
METHOD = "svd"
LAYOUTS = ("matrix", "out", "taps")
# Tensors with fewer values than this stay dense: their factors would save a few kB at most.
MIN_FACTOR_NUMEL = 1024
_TORCH_DTYPES = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32"}
_ELEMENT_BYTES = {"fp16": 2, "bf16": 2, "fp32": 4}


# --- shapes and layouts (no torch) -------------------------------------------------------------


def layouts_for(key: str, shape: list[int] | tuple[int, ...]) -> tuple[str, ...]:
    """The matrix layouts a tensor may be factored in: () for those that always stay dense."""
    shape = tuple(shape)
    if key.endswith(".conv1d.weight") and len(shape) == 3 and shape[0] == shape[1] and shape[2] == 3:
        return ("out", "taps")
    if len(shape) == 2 and (key.endswith(DELTA_SUFFIX) or (".attn_temp." in f".{key}" and key.endswith(".weight"))):
        return ("matrix",)
    return ()


def matrix_dims(shape: list[int] | tuple[int, ...], layout: str) -> tuple[int, int]:
    """(m, n) of the matrix a tensor of `shape` is read as in `layout`."""
    if layout == "matrix":
        return int(shape[0]), int(shape[1])
    c_out, c_in, k = (int(d) for d in shape)
    return (c_out, c_in * k) if layout == "out" else (k * c_out, c_in)


def max_paying_rank(m: int, n: int) -> int:
    """The largest rank whose factors are smaller than the dense matrix: r·(m+n) < m·n."""
    return (m * n - 1) // (m + n)


def to_matrix(t: Any, layout: str) -> Any:
    if layout == "matrix":
        return t
    if layout == "out":
        return t.reshape(t.shape[0], -1)
    return t.permute(2, 0, 1).reshape(-1, t.shape[1])


def from_matrix(mat: Any, shape: tuple[int, ...], layout: str) -> Any:
    if layout == "matrix":
        return mat.reshape(shape)
    if layout == "out":
        return mat.reshape(shape)
    c_out, c_in, k = shape
    return mat.reshape(k, c_out, c_in).permute(1, 2, 0).contiguous()


# --- the header record and its checks (no torch) --------------------------------------------------


@dataclass
class FactorSpec:
    """One factored tensor as `lamp.compressed` records it."""

    key: str  # the dense tensor's key (`...conv1d.weight`, `...attn1.to_q.weight.delta`)
    shape: tuple[int, ...]
    layout: str
    rank: int
    error: float | None = None  # relative Frobenius error of up @ down against the source

    @property
    def dims(self) -> tuple[int, int]:
        return matrix_dims(self.shape, self.layout)

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"shape": list(self.shape), "layout": self.layout, "rank": self.rank}
        if self.error is not None:
            d["error"] = round(self.error, 6)
        return d


def is_factor_key(key: str) -> bool:
    return key.endswith(UP_SUFFIX) or key.endswith(DOWN_SUFFIX)


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def read_record(md: dict[str, str], *, what: str = "adapter") -> dict[str, Any] | None:
    """The parsed `lamp.compressed` field (None when absent); InvalidInput if malformed."""
    raw = md.get(FIELD)
    if raw is None:
        return None
    try:
        record = json.loads(raw)
    except json.JSONDecodeError as e:
        raise InvalidInput(f"{what}: header field {FIELD} is not valid JSON ({e})") from e
    if not isinstance(record, dict) or not isinstance(record.get("factors"), dict):
        raise InvalidInput(f"{what}: header field {FIELD} must be a JSON object with a 'factors' object")
    return record


def read_specs(md: dict[str, str], *, what: str = "adapter") -> dict[str, FactorSpec]:
    """The factored tensors a header declares, each checked for a sane shape, layout and rank."""
    record = read_record(md, what=what)
    if record is None:
        return {}
    specs = {}
    for key, d in record["factors"].items():
        if not isinstance(d, dict):
            raise InvalidInput(f"{what}: {FIELD} entry '{key}' is not an object")
        shape, layout, rank = d.get("shape"), d.get("layout"), d.get("rank")
        if not (isinstance(shape, list) and shape and all(_int(s) and s > 0 for s in shape)):
            raise InvalidInput(f"{what}: {FIELD} entry '{key}' has a malformed shape {shape!r}")
        if layout not in layouts_for(key, shape):
            raise InvalidInput(
                f"{what}: {FIELD} entry '{key}' (shape {shape}) cannot be factored in layout {layout!r}",
                hint="only conv1d kernels, attn_temp projections and attn1.to_q deltas are stored as factors",
            )
        m, n = matrix_dims(shape, layout)
        if not (_int(rank) and 1 <= rank <= min(m, n)):
            raise InvalidInput(
                f"{what}: {FIELD} entry '{key}' has rank {rank!r}; a {m}×{n} matrix takes 1 to {min(m, n)}"
            )
        specs[key] = FactorSpec(key, tuple(shape), layout, rank)
    return specs


def factor_plan(header: dict[str, Any], *, what: str = "adapter") -> dict[str, tuple[str, list[int]]]:
    """Check a (parsed safetensors) header's factor tensors against its `lamp.compressed` record.

    Returns {factor key: (dense key, dense shape)}, so the caller can check the dense tensor's
    role and shape as for any adapter; {} for an uncompressed adapter. InvalidInput names the
    first problem: factors without a record, a record entry without both factors, a stray
    factor, a dense tensor stored both ways, or factor shapes that do not multiply to the shape.
    """
    md = header.get("__metadata__") or {}
    keys = {k for k in header if k != "__metadata__"}
    specs = read_specs(md, what=what)
    factor_keys = {k for k in keys if is_factor_key(k)}
    if not specs:
        if factor_keys:
            raise InvalidInput(
                f"{what}: tensor '{min(factor_keys)}' is a low-rank factor, but the header has no {FIELD} record"
            )
        return {}
    plan: dict[str, tuple[str, list[int]]] = {}
    for key, spec in specs.items():
        if key in keys:
            raise InvalidInput(f"{what}: tensor '{key}' is stored both dense and as low-rank factors")
        m, n = spec.dims
        for suffix, want in ((UP_SUFFIX, [m, spec.rank]), (DOWN_SUFFIX, [spec.rank, n])):
            fkey = key + suffix
            if fkey not in keys:
                raise InvalidInput(
                    f"{what}: low-rank tensor '{key}' lacks its factor '{fkey}'",
                    hint="the file is incomplete; export it again from the registry it came from",
                )
            info = header[fkey]
            got = info.get("shape") if isinstance(info, dict) else None
            if got != want:
                raise InvalidInput(
                    f"{what}: factor '{fkey}' has shape {got}, expected {want} "
                    f"(rank {spec.rank} of the {m}×{n} '{spec.layout}' matrix of a {list(spec.shape)} tensor)"
                )
            plan[fkey] = (key, list(spec.shape))
    stray = sorted(factor_keys - set(plan))
    if stray:
        raise InvalidInput(f"{what}: factor tensor '{stray[0]}' has no entry in {FIELD}")
    return plan


# Exponent bits of each safetensors dtype: all set means inf or NaN.
_EXPONENT_MASKS = {"F16": ("<u2", 0x7C00), "BF16": ("<u2", 0x7F80), "F32": ("<u4", 0x7F800000)}


def check_factor_values(header: dict[str, Any], f: BinaryIO, data_start: int, *, what: str = "adapter") -> None:
    """Every factor tensor's values are finite (read from the file, without torch)."""
    import numpy as np

    for key in sorted(k for k in header if k != "__metadata__" and is_factor_key(k)):
        info = header[key]
        code, mask = _EXPONENT_MASKS.get(info.get("dtype"), (None, 0))
        if code is None:
            continue  # the dtype check reports it
        start, stop = info["data_offsets"]
        f.seek(data_start + start)
        bits = np.frombuffer(f.read(stop - start), dtype=code)
        if np.any((bits & mask) == mask):
            raise InvalidInput(f"{what}: factor '{key}' holds non-finite values (inf or NaN)")


# --- expanding (torch) -------------------------------------------------------------------------


def is_compressed(metadata: dict[str, str], keys: Any) -> bool:
    return FIELD in metadata or any(is_factor_key(k) for k in keys)


def expand_tensors(tensors: dict[str, Any], metadata: dict[str, str], *, what: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The dense tensors and header of a compressed adapter.

    Each factored tensor becomes (up @ down) in fp32, reshaped by its layout and stored in the
    factors' dtype. The factors are checked first (record, pairs, shapes, finite values):
    InvalidInput names what is wrong. The returned header drops `lamp.compressed`.
    """
    import torch

    header: dict[str, Any] = {k: {"shape": list(t.shape)} for k, t in tensors.items()}
    header["__metadata__"] = metadata
    plan = factor_plan(header, what=what)
    specs = read_specs(metadata, what=what)
    dense_tensors = {k: t for k, t in tensors.items() if k not in plan}
    for key, spec in specs.items():
        up, down = tensors[key + UP_SUFFIX], tensors[key + DOWN_SUFFIX]
        for name, t in ((UP_SUFFIX, up), (DOWN_SUFFIX, down)):
            if not bool(torch.isfinite(t).all()):
                raise InvalidInput(f"{what}: factor '{key}{name}' holds non-finite values (inf or NaN)")
        dense = up.to(torch.float32) @ down.to(torch.float32)
        dense_tensors[key] = from_matrix(dense, spec.shape, spec.layout).to(up.dtype)
    return dense_tensors, {k: v for k, v in metadata.items() if k != FIELD}


