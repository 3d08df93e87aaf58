"""Where the models run: device and dtype resolution, and placement (offload) of modules.

The one device resolver and the one dtype resolver: the engine, training, evaluation, official
imports, benchmarks and `lamp doctor` all use these. torch is imported inside the functions so
that importing this module stays cheap.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .errors import InvalidInput

if TYPE_CHECKING:
    import torch

DTYPES = {"fp32": "float32", "float32": "float32", "fp16": "float16", "float16": "float16",
          "half": "float16", "bf16": "bfloat16", "bfloat16": "bfloat16"}

DEVICE_KINDS = ("cpu", "cuda", "mps")
DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
DTYPE_CHOICES = ("auto", "fp32", "fp16", "bf16")


def resolve_device(device: str | Any = "auto") -> torch.device:
    """`auto` (or None) -> cuda, else mps, else cpu; an explicit cpu, cuda, cuda:N or mps must
    exist here."""
    import torch

    if isinstance(device, torch.device):
        return device
    device = str(device or "auto").strip().lower()
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if mps else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise InvalidInput(f"unknown device '{device}'", hint="use auto, cpu, cuda, cuda:N or mps") from e
    if dev.type not in DEVICE_KINDS:
        raise InvalidInput(f"unknown device '{device}'", hint="use auto, cpu, cuda, cuda:N or mps")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInput(f"device '{device}' requested but CUDA is not available", hint="use --device cpu or auto")
    if dev.type == "mps" and not mps:
        raise InvalidInput(f"device '{device}' requested but Apple MPS is not available", hint="use --device cpu or auto")
    return dev


def resolve_dtype(dtype: str | Any, device: torch.device | None = None) -> torch.dtype:
    """`auto` -> float16 on CUDA/MPS (the reference runs SD in fp16), float32 on CPU (or when no
    device is given); fp32/fp16/bf16 and their long names otherwise."""
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "", "auto"):
        return torch.float32 if device is None or device.type == "cpu" else torch.float16
    name = DTYPES.get(str(dtype).lower())
    if name is None:
        raise InvalidInput(f"unknown dtype '{dtype}'", hint="use auto, fp32, fp16 or bf16")
    return getattr(torch, name)


def check_device_name(device: str) -> str:
    """A device name's spelling (no torch): auto, cpu, cuda, cuda:N or mps."""
    d = str(device).strip().lower()
    kind, _, index = d.partition(":")
    if d == "auto" or (kind in DEVICE_KINDS and (not index or (kind == "cuda" and index.isdigit()))):
        return d
    raise InvalidInput(f"unknown device '{device}'", hint="use auto, cpu, cuda, cuda:N or mps")


def check_dtype_name(dtype: str) -> str:
    """A dtype name's spelling (no torch): auto or one of DTYPES."""
    d = str(dtype).strip().lower()
    if d == "auto" or d in DTYPES:
        return d
    raise InvalidInput(f"unknown dtype '{dtype}'", hint="use auto, fp32, fp16 or bf16")


class Placement:
    """Where modules live while they run: on `device`, or (offload) on the CPU and moved to the
    device only for the block that uses them. `park_unet2d`: the 2-D base UNet waits on the CPU
    and visits the device only for first frames (the video UNet alone fills the device)."""

    def __init__(self, device: torch.device, dtype: torch.dtype, *, offload: bool = False, park_unet2d: bool = False):
        self.device = device
        self.dtype = dtype
        self.offload = offload
        self.park_unet2d = park_unet2d

    def _empty_cache(self) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    @contextlib.contextmanager
    def on_device(self, *modules: Any) -> Iterator[None]:
        """With offload on, move `modules` to the device for the block and back to the CPU after."""
        if not self.offload:
            yield
            return
        for m in modules:
            m.to(self.device)
        try:
            yield
        finally:
            for m in modules:
                m.to("cpu")
            self._empty_cache()

    @contextlib.contextmanager
    def unet2d(self, unet: Any) -> Iterator[Any]:
        """The 2-D base UNet on the device for the block (first frames, image edits)."""
        if not (self.offload or self.park_unet2d):
            yield unet
            return
        unet.to(self.device)
        try:
            yield unet
        finally:
            unet.to("cpu")
            self._empty_cache()
