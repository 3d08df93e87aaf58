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
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import __version__
from .errors import IncompatibleAdapter, InvalidInput

log = logging.getLogger("lamp")

FORMAT_VERSION = "1"
DELTA_SUFFIX = ".delta"
# The precisions an adapter's tensors may be stored in (`--adapter-dtype`, `import --dtype`).
ADAPTER_DTYPES = ("fp16", "bf16", "fp32")


def check_adapter_dtype(dtype: str) -> str:
    """`dtype` if it is one of ADAPTER_DTYPES, else InvalidInput listing them."""
    if dtype not in ADAPTER_DTYPES:
        raise InvalidInput(f"adapter dtype must be one of {', '.join(ADAPTER_DTYPES)}, got {dtype!r}")
    return dtype

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


# --- a motion adapter and the video UNet: extract, apply, blend ---------------------------------
#
# What an adapter holds (DESIGN §4): the tensors of every module the inflation added (conv1d,
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

    from .models.base import architecture_of
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
    keys or shapes do not fit; warns when it was trained on a base with another fingerprint.
    """
    import torch

    from .compress import expand_adapter
    from .models.base import architecture_of

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
            log.warning(
                "motion '%s' was trained on base %s (fingerprint %s); applying it to base fingerprint %s",
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
