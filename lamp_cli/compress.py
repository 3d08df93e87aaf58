"""Low-rank motion adapters (`lamp compress`): SVD factors in place of the big dense tensors.

A motion's big tensors are the temporal convs' kernels (`...conv1d.weight`, C×C×3), the temporal
attention projections (`...attn_temp.to_{q,k,v,out.0}.weight`, C×C) and the tuned `attn1.to_q`
deltas (C×C). Each is read as a matrix M (m×n), factored by SVD (fp32) and truncated to rank r:
M ≈ up @ down with up = U·√S (m×r) and down = √S·Vᵀ (r×n). The file stores `<key>.lora_up` and
`<key>.lora_down` in place of `<key>`; everything else (biases, norms, the 1×C×3×3 gates, small
tensors, and any tensor whose factors would not be smaller than it: r·(m+n) ≥ m·n) stays dense.

The temporal conv's kernel W (C_out×C_in×3) can be read as a matrix two ways, both C×3C-sized,
so a rank costs 4C values either way and the largest rank is C in both:

- `out`:  W.reshape(C_out, 3·C_in): one r-dimensional output subspace shared by the three taps
  (a 3-tap conv down to r channels, then a 1×1 conv back up; LoCon's reshape);
- `taps`: W.permute(2, 0, 1).reshape(3·C_out, C_in): one r-dimensional input subspace shared by
  the taps (a 1×1 conv down to r channels, then the 3-tap conv; how `MotionConv.temporal` runs).

Which one holds more energy in its leading singular values depends on the trained kernel, so
`compress_adapter` factors both and keeps, per tensor, the one whose truncation error summed over
every rank is smaller (docs/compression.md has the measurement). 2-D tensors use `matrix`.

The header field `lamp.compressed` (JSON) records the source motion, the method, the target, and
per factored tensor its dense shape, layout, rank and relative error; `expand_adapter` (called by
`adapter.apply`, the one place adapter tensors are applied) turns the factors back into dense
tensors, so every command that applies motions reads compressed ones unchanged.

This module imports torch only inside functions (the registry's import checks use it).
"""

from __future__ import annotations

import heapq
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from .adapter import MotionAdapter, check_adapter_dtype, expand_adapter
from .errors import InvalidInput
from .lowrank import (
    _ELEMENT_BYTES,
    _TORCH_DTYPES,
    DOWN_SUFFIX,
    FIELD,
    METHOD,
    MIN_FACTOR_NUMEL,
    UP_SUFFIX,
    FactorSpec,
    is_factor_key,
    layouts_for,
    matrix_dims,
    max_paying_rank,
    to_matrix,
)
from .progress import Reporter, reporter_or_null

# the file format of factors lives in lowrank.py (below adapter.py, which applies them)


# --- compressing (torch) -----------------------------------------------------------------------


@dataclass
class Spectrum:
    """One factorable tensor's SVD in its chosen layout (fp32, on the CPU)."""

    key: str
    shape: tuple[int, ...]
    layout: str
    u: Any  # m×k
    s: Any  # k singular values, descending
    vh: Any  # k×n
    alternatives: dict[str, float] = field(default_factory=dict)  # layout -> summed truncation error

    @property
    def dims(self) -> tuple[int, int]:
        return matrix_dims(self.shape, self.layout)

    @property
    def max_rank(self) -> int:
        """The largest rank worth storing as factors."""
        m, n = self.dims
        return min(max_paying_rank(m, n), len(self.s))

    def residuals(self) -> list[float]:
        """residuals()[r] = ‖M − M_r‖²_F, for r = 0 … len(s)."""
        sq = [float(v) ** 2 for v in self.s.tolist()]
        tail, out = 0.0, [0.0] * (len(sq) + 1)
        for i in range(len(sq) - 1, -1, -1):
            tail += sq[i]
            out[i] = tail
        return out


def analyse(adapter: MotionAdapter, *, progress: Reporter | None = None) -> tuple[list[Spectrum], list[str]]:
    """SVD every factorable tensor (both layouts for conv kernels, keeping the better one).

    Returns (spectra, keys that stay dense).
    """
    import torch

    progress = reporter_or_null(progress)
    todo, dense = [], []
    for key, t in sorted(adapter.tensors.items()):
        layouts = layouts_for(key, tuple(t.shape))
        ok = [lay for lay in layouts if max_paying_rank(*matrix_dims(tuple(t.shape), lay)) >= 1]
        if ok and t.numel() >= MIN_FACTOR_NUMEL:
            todo.append((key, ok))
        else:
            dense.append(key)
    progress.start("compress: SVD", len(todo))
    spectra = []
    for key, layouts in todo:
        w = adapter.tensors[key].detach().to("cpu", torch.float32)
        best = None
        scores = {}
        for layout in layouts:
            u, s, vh = torch.linalg.svd(to_matrix(w, layout), full_matrices=False)
            cand = Spectrum(key, tuple(w.shape), layout, u, s, vh)
            # truncation error summed over every rank worth storing: the layout that keeps more
            # energy at most ranks wins
            scores[layout] = float(sum(cand.residuals()[1 : cand.max_rank + 1]))
            if best is None or scores[layout] < scores[best.layout]:
                best = cand
        assert best is not None
        best.alternatives = scores
        spectra.append(best)
        progress.advance(1)
    progress.finish()
    return spectra, dense


def ranks_for_rank(spectra: list[Spectrum], rank: int) -> dict[str, int | None]:
    """`--rank R`: rank R everywhere (None = dense where rank R would not be smaller)."""
    return {s.key: (min(rank, len(s.s)) if min(rank, len(s.s)) <= s.max_rank else None) for s in spectra}


def ranks_for_error(spectra: list[Spectrum], max_error: float) -> dict[str, int | None]:
    """`--max-error E`: per tensor the smallest rank whose relative Frobenius error is ≤ E."""
    out: dict[str, int | None] = {}
    for s in spectra:
        res = s.residuals()
        limit = (max_error**2) * res[0]
        r = next((r for r in range(1, len(res)) if res[r] <= limit), len(s.s))
        out[s.key] = r if r <= s.max_rank else None
    return out


def ranks_for_budget(spectra: list[Spectrum], budget_bytes: float, element_bytes: int) -> dict[str, int | None]:
    """Greedy global allocation: every factored tensor starts at rank 1, then the step with the
    most singular-value energy per byte is taken while it fits: σ²_{r+1} / ‖M‖²_F per (m+n)
    values, or, at the largest paying rank, switching to dense: the rest of the energy for the
    extra bytes. Energy counts as a fraction of the tensor's own (‖M‖²_F), so what is minimised
    is Σ (relative error)²: with absolute energy, the temporal attention's q/k/v (a random
    full-rank initialisation plus training, the largest norms) took the budget from the conv
    kernels and deltas that carry the motion (docs/compression.md, measured).
    `budget_bytes` is for the factored tensors alone. None = dense.
    """
    ranks: dict[str, int | None] = {s.key: 1 for s in spectra}
    used = sum((sum(s.dims)) * element_bytes for s in spectra)
    if used > budget_bytes:
        raise InvalidInput("budget below rank 1 everywhere")  # the caller words it for the user
    heap: list[tuple[float, int, int]] = []
    residuals = [[v / (r[0] or 1.0) for v in r] for r in (s.residuals() for s in spectra)]

    def push(i: int) -> None:
        s, r = spectra[i], ranks[spectra[i].key]
        if r is None:
            return
        m, n = s.dims
        if r < s.max_rank:
            gain, cost = residuals[i][r] - residuals[i][r + 1], (m + n) * element_bytes
        else:
            gain, cost = residuals[i][r], (m * n - r * (m + n)) * element_bytes
            if gain <= 0:
                return
        heapq.heappush(heap, (-gain / cost, i, cost))

    for i in range(len(spectra)):
        push(i)
    while heap:
        _, i, cost = heapq.heappop(heap)
        if used + cost > budget_bytes:
            continue  # this tensor's next step does not fit; its later ones cost as much or more
        used += cost
        key = spectra[i].key
        r = ranks[key]
        assert r is not None
        ranks[key] = r + 1 if r < spectra[i].max_rank else None
        push(i)
    return ranks


_SIZE_RE = re.compile(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?i?b?)\s*", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}


def parse_size(text: str) -> int:
    """'60MB' -> 60_000_000 (kB/MB/GB are powers of 1000, KiB/MiB/GiB of 1024; a bare number is bytes)."""
    match = _SIZE_RE.fullmatch(str(text))
    if not match:
        raise InvalidInput(f"cannot read the size {text!r}", hint="e.g. 60MB, 74MB, 1.5GB, 500kB or 64MiB")
    value, unit = float(match.group(1)), match.group(2).lower()
    prefix = unit[:1] if unit[:1] in "kmgt" else ""
    scale = 1024 ** ("kmgt".index(prefix) + 1) if prefix and "i" in unit else _UNITS[prefix]
    if value <= 0:
        raise InvalidInput(f"the size must be positive, got {text!r}")
    return int(value * scale)


# --- building the compressed adapter -------------------------------------------------------------


@dataclass
class Compressed:
    """A compressed adapter and what was done to make it."""

    adapter: MotionAdapter
    record: dict[str, Any]  # the `lamp.compressed` header field, parsed

    @property
    def factors(self) -> dict[str, dict[str, Any]]:
        return self.record["factors"]


def _rank_summary(ranks: list[int]) -> dict[str, Any]:
    if not ranks:
        return {"factored": 0}
    ordered = sorted(ranks)
    return {"factored": len(ranks), "min": ordered[0], "median": ordered[len(ordered) // 2], "max": ordered[-1]}


def build(
    adapter: MotionAdapter,
    spectra: list[Spectrum],
    ranks: dict[str, int | None],
    *,
    dtype: str = "fp16",
    record: dict[str, Any] | None = None,
) -> Compressed:
    """The adapter with each tensor of `ranks` stored as rank-r factors (None: dense), every
    tensor in `dtype`; `record` (source, target) goes into the `lamp.compressed` field."""
    import torch

    tdtype = getattr(torch, _TORCH_DTYPES[check_adapter_dtype(dtype)])
    by_key = {s.key: s for s in spectra}
    tensors: dict[str, Any] = {}
    factors: dict[str, dict[str, Any]] = {}
    err_sq = norm_sq = 0.0
    worst = (0.0, "")
    for key, t in sorted(adapter.tensors.items()):
        spec, r = by_key.get(key), ranks.get(key)
        if spec is None or r is None:
            tensors[key] = t.detach().to("cpu", tdtype, copy=True)
            if spec is not None:  # a factorable tensor kept dense: only dtype rounding
                ref = t.detach().to("cpu", torch.float32)
                err_sq += float((ref - tensors[key].float()).square().sum())
                norm_sq += float(ref.square().sum())
            continue
        root = spec.s[:r].sqrt()
        up = (spec.u[:, :r] * root).to(tdtype).contiguous()
        down = (root[:, None] * spec.vh[:r]).to(tdtype).contiguous()
        ref = to_matrix(t.detach().to("cpu", torch.float32), spec.layout)
        e_sq = float((ref - up.float() @ down.float()).square().sum())
        n_sq = float(ref.square().sum())
        err = math.sqrt(e_sq / n_sq) if n_sq > 0 else 0.0
        err_sq, norm_sq = err_sq + e_sq, norm_sq + n_sq
        worst = max(worst, (err, key))
        tensors[key + UP_SUFFIX], tensors[key + DOWN_SUFFIX] = up, down
        factors[key] = FactorSpec(key, spec.shape, spec.layout, r, err).to_json()
    full = {
        "method": METHOD,
        **(record or {}),
        "dtype": _TORCH_DTYPES[dtype],
        "ranks": _rank_summary([f["rank"] for f in factors.values()]),
        "dense_tensors": sum(1 for k in tensors if not is_factor_key(k)),
        "error": {
            "overall": round(math.sqrt(err_sq / norm_sq), 6) if norm_sq > 0 else 0.0,
            "max": round(worst[0], 6),
            "max_tensor": worst[1],
        },
        "factors": factors,
    }
    md = {k: v for k, v in adapter.metadata.items()
          if k not in (FIELD, "format", "lamp.weights_sha256", "lamp.created", "lamp.version")}
    md[FIELD] = json.dumps(full, sort_keys=True)
    for v in tensors.values():
        if not bool(torch.isfinite(v).all()):
            raise InvalidInput(
                "the compressed motion would hold non-finite values (a value overflows the dtype)",
                hint="pass --dtype fp32 or bf16",
            )
    return Compressed(MotionAdapter(tensors=tensors, metadata=md), full)


def check_target(rank: int | None, size: int | str | None, max_error: float | None) -> None:
    """Exactly one target, each in range; InvalidInput otherwise."""
    given = [n for n, v in (("--rank", rank), ("--size", size), ("--max-error", max_error)) if v is not None]
    if len(given) != 1:
        raise InvalidInput(
            "give exactly one target: --rank R, --size SIZE or --max-error E"
            + (f" (got {', '.join(given)})" if given else ""),
            hint="e.g. lamp compress guitar --name guitar-small --size 60MB",
        )
    if rank is not None and rank < 1:
        raise InvalidInput(f"--rank must be at least 1, got {rank}")
    if max_error is not None and not 0 < max_error < 1:
        raise InvalidInput(f"--max-error is a relative error between 0 and 1 (e.g. 0.1), got {max_error}")


def compress_adapter(
    adapter: MotionAdapter,
    *,
    rank: int | None = None,
    size: int | str | None = None,
    max_error: float | None = None,
    dtype: str = "fp16",
    source: dict[str, Any] | None = None,
    spectra: tuple[list[Spectrum], list[str]] | None = None,
    progress: Reporter | None = None,
) -> Compressed:
    """Factor `adapter` to meet one target (see `check_target`); `source` is recorded.

    `size` (bytes, or text like '60MB') is for the whole file, header included. `spectra`: the
    result of `analyse(adapter)` when several targets are tried on one adapter.
    """
    check_target(rank, size, max_error)
    check_adapter_dtype(dtype)
    adapter = expand_adapter(adapter)
    spectra_, dense = spectra if spectra is not None else analyse(adapter, progress=progress)
    record: dict[str, Any] = {"source": source or {}}
    if rank is not None:
        record["target"] = {"rank": int(rank)}
        return build(adapter, spectra_, ranks_for_rank(spectra_, rank), dtype=dtype, record=record)
    if max_error is not None:
        record["target"] = {"max_error": float(max_error)}
        return build(adapter, spectra_, ranks_for_error(spectra_, max_error), dtype=dtype, record=record)
    target = parse_size(size) if isinstance(size, str) else int(size)  # type: ignore[arg-type]
    record["target"] = {"size": target}
    eb = _ELEMENT_BYTES[dtype]
    fixed = sum(int(adapter.tensors[k].numel()) * eb for k in dense)
    smallest = fixed + sum(sum(s.dims) * eb for s in spectra_)
    # the header's size, measured at rank 1 everywhere, plus room for longer numbers in it
    lowest = build(adapter, spectra_, {s.key: 1 for s in spectra_}, dtype=dtype, record=record)
    slack = len(lowest.adapter.to_bytes()) - smallest + 16 * len(spectra_) + 256
    for _ in range(6):
        budget = target - fixed - slack
        if budget < smallest - fixed:
            raise InvalidInput(
                f"{target / 1e6:.2f} MB is too small: at rank 1 everywhere this motion takes "
                f"{(smallest + slack) / 1e6:.2f} MB ({fixed / 1e6:.2f} MB of it in tensors that stay dense)",
                hint="pass a larger --size, or --dtype fp16 / bf16 if you chose fp32",
            )
        out = build(adapter, spectra_, ranks_for_budget(spectra_, budget, eb), dtype=dtype, record=record)
        got = len(out.adapter.to_bytes())
        if got <= target:
            return out
        slack += got - target + 1024  # the header came out bigger than allowed for: retry tighter
    raise AssertionError("size allocation did not converge")  # pragma: no cover


def compress_motion(
    name: str,
    new_name: str,
    *,
    rank: int | None = None,
    size: int | str | None = None,
    max_error: float | None = None,
    dtype: str = "fp16",
    force: bool = False,
    registry: Any = None,
    progress: Reporter | None = None,
) -> tuple[Any, Compressed]:
    """`lamp compress`: factor the registry motion `name` and publish it as `new_name`.

    Returns (the new manifest, the compressed adapter). Trained, imported and official motions
    alike; a compressed one is expanded first (its record then names it as the source).
    """
    from .errors import NameTaken
    from .registry import Registry, validate_name

    validate_name(name)
    validate_name(new_name)
    check_target(rank, size, max_error)
    check_adapter_dtype(dtype)
    if isinstance(size, str):
        size = parse_size(size)
    if new_name == name:
        raise InvalidInput("--name must differ from the motion compressed", hint="e.g. --name NAME-small")
    registry = registry if registry is not None else Registry()
    if not force and registry.exists(new_name):
        raise NameTaken(new_name)
    manifest = registry.get(name)  # hash-checked; MotionNotFound with its hint
    adapter = registry.load_adapter(name)
    source = {
        "name": name,
        "digest": manifest.digest,
        "weights_sha256": manifest.weights_sha256,
        "size": manifest.size,
        "parameters": manifest.parameters,
    }
    out = compress_adapter(
        adapter, rank=rank, size=size, max_error=max_error, dtype=dtype, source=source, progress=progress
    )
    m = registry.publish_adapter(out.adapter, name=new_name, force=force, source=f"compress:{name}")
    return m, out


def describe(record: dict[str, Any]) -> dict[str, str]:
    """Short human lines about a `lamp.compressed` record, for `lamp show` and `lamp compress`."""
    src = record.get("source") or {}
    digest = str(src.get("digest") or "")
    ranks = record.get("ranks") or {}
    err = record.get("error") or {}
    target = record.get("target") or {}
    tgt = ", ".join(f"{k.replace('_', '-')} {v}" for k, v in target.items()) or "-"
    rank_line = (
        f"{ranks.get('factored', 0)} tensors factored, rank "
        + (f"{ranks.get('min')}" if ranks.get("min") == ranks.get("max")
           else f"{ranks.get('min')}–{ranks.get('max')} (median {ranks.get('median')})")
        + f"; {record.get('dense_tensors', '?')} tensors dense"
        if ranks.get("factored") else f"no tensor factored; {record.get('dense_tensors', '?')} tensors dense"
    )

    def pct(v: Any) -> str:
        return f"{100 * v:.2f} %" if isinstance(v, (int, float)) else "?"

    return {
        "compressed from": f"{src.get('name') or '?'} ({digest.split(':')[-1][:12] or '?'}"
        + (f", {src['size']:,} bytes)" if isinstance(src.get("size"), int) else ")"),
        "compression": f"{record.get('method', '?')} ({record.get('dtype', '?')}), target {tgt}",
        "ranks": rank_line,
        "error": f"{pct(err.get('overall'))} overall, {pct(err.get('max'))} at most "
        f"(relative Frobenius, factored tensors)",
    }
