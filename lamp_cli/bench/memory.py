"""Peak memory of a training step or a sampling step, estimated without a GPU.

The model and its inputs are built under `torch._subclasses.fake_tensor.FakeTensorMode` (tensors
with shapes, dtypes and a device but no data; CPU autocast applies to them as to real ones), and
`PeakMemory`, a dispatch mode, adds up the bytes of every storage an operation creates and
subtracts them when the storage dies. The peak is what the allocator would have to hold at once
if it had no fragmentation or cache: a lower bound on `torch.cuda.max_memory_allocated`, which
adds its rounding to 512-byte blocks and, in fp16/bf16, the kernels' workspaces.

`measure_training_rss` runs the same step for real on the CPU and reports the growth of the
process's peak resident memory, the check of the estimate at a small size (tests/test_memory.py).
"""

from __future__ import annotations

import weakref
from typing import Any

from torch.utils._python_dispatch import TorchDispatchMode

PRECISIONS = ("no", "bf16", "fp16")
VAE_SCALE = 8  # latents are 1/8 of the pixels (SD-1.x and the tiny base alike)


class PeakMemory(TorchDispatchMode):
    """Live and peak bytes of the tensor storages created while the mode is active (plus those
    registered with `track`: weights, inputs)."""

    def __init__(self) -> None:
        super().__init__()
        self._live: dict[int, Any] = {}
        self.current = 0
        self.peak = 0

    def track(self, t: Any) -> None:
        storage = t.untyped_storage()
        key = storage._cdata
        if key in self._live:
            return
        nbytes = int(storage.nbytes())
        self.current += nbytes
        self.peak = max(self.peak, self.current)
        self._live[key] = weakref.ref(storage, lambda _, k=key, n=nbytes: self._free(k, n))

    def _free(self, key: int, nbytes: int) -> None:
        if self._live.pop(key, None) is not None:
            self.current -= nbytes

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        import torch
        from torch.utils._pytree import tree_leaves

        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.track(t)
        return out


def _unet_config(unet_config: dict[str, Any] | None) -> dict[str, Any]:
    from .sd1 import SD1_UNET_CONFIG

    return dict(SD1_UNET_CONFIG if unet_config is None else unet_config)


def _training_step(config: dict[str, Any], frames: int, h: int, w: int, mixed_precision: str, ckpt: bool, mode: Any) -> dict[str, int]:
    """One cached-latent training step (the loss of lamp's trainer, AdamW) under `mode`."""
    import torch
    from diffusers import UNet2DConditionModel

    from ..models.video_unet import VideoUNet

    unet = UNet2DConditionModel(**config)
    vu = VideoUNet.from_unet2d(unet).freeze_base().train()
    vu.set_gradient_checkpointing(ckpt)
    params = [p for _, p in vu.trainable_parameters()]
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    latents = torch.randn(1, int(config["in_channels"]), frames, h, w)
    text = torch.randn(1, 77, int(config["cross_attention_dim"]))
    with mode:
        if isinstance(mode, PeakMemory):
            for t in (*vu.parameters(), *vu.buffers(), latents, text):
                mode.track(t)
        before = mode.current if isinstance(mode, PeakMemory) else 0
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mixed_precision == "bf16"):
            pred = vu(latents, torch.tensor([500]), text)
        loss = (pred.float() - latents).square().mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if not isinstance(mode, PeakMemory):
        return {}
    return {"weights_and_inputs_bytes": before, "peak_bytes": mode.peak, "after_step_bytes": mode.current}


def estimate_training_memory(
    unet_config: dict[str, Any] | None = None,
    *,
    frames: int = 16,
    width: int = 512,
    height: int = 320,
    mixed_precision: str = "bf16",
    gradient_checkpointing: bool = True,
) -> dict[str, Any]:
    """Estimated peak bytes of one training step (VideoUNet of `unet_config`, SD-1.x by default;
    fp32 weights; `mixed_precision` "bf16" autocast or "no"; batch 1, cached latents).

    fp16 autocast has CPU kernels for too few ops to be traced here; on CUDA it holds about what
    bf16 holds (both 2-byte activations).
    """
    from torch._subclasses.fake_tensor import FakeTensorMode

    if mixed_precision not in ("no", "bf16"):
        raise ValueError("training estimates are for mixed precision 'no' or 'bf16'")
    config = _unet_config(unet_config)
    scale = VAE_SCALE
    with FakeTensorMode():
        r = _training_step(config, frames, height // scale, width // scale, mixed_precision, gradient_checkpointing, PeakMemory())
    return {
        "kind": "training step",
        "frames": frames, "width": width, "height": height,
        "mixed_precision": mixed_precision, "gradient_checkpointing": gradient_checkpointing, **r,
    }


def estimate_sampling_memory(
    unet_config: dict[str, Any] | None = None,
    *,
    frames: int = 16,
    width: int = 512,
    height: int = 320,
    dtype: str = "fp16",
    cfg: bool = True,
) -> dict[str, Any]:
    """Estimated peak bytes of one denoising step of `lamp gen` (video UNet weights in `dtype`,
    the CFG batch of 2 videos, no gradients). VAE, text encoder and decoding are not included."""
    import torch
    from diffusers import UNet2DConditionModel
    from torch._subclasses.fake_tensor import FakeTensorMode

    from ..models.video_unet import VideoUNet

    dt = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype]
    config = _unet_config(unet_config)
    scale = VAE_SCALE
    batch = 2 if cfg else 1
    # Fake CPU tensors, so that attention takes SDPA's fused CPU kernel (no F·N×N score matrix,
    # as flash/memory-efficient attention on CUDA); built in `dtype` (a cast would copy).
    default = torch.get_default_dtype()
    with FakeTensorMode():
        torch.set_default_dtype(dt)
        try:
            vu = VideoUNet.from_unet2d(UNet2DConditionModel(**config)).eval().requires_grad_(False)
        finally:
            torch.set_default_dtype(default)
        x = torch.randn(batch, int(config["in_channels"]), frames, height // scale, width // scale, dtype=dt)
        text = torch.randn(batch, 77, int(config["cross_attention_dim"]), dtype=dt)
        mode = PeakMemory()
        with mode, torch.no_grad():
            for t in (*vu.parameters(), *vu.buffers(), x, text):
                mode.track(t)
            before = mode.current
            vu(x, torch.tensor(500), text)
    return {
        "kind": "sampling step", "frames": frames, "width": width, "height": height, "dtype": dtype,
        "cfg": cfg, "weights_and_inputs_bytes": before, "peak_bytes": mode.peak,
    }


def measure_training_rss(
    unet_config: dict[str, Any], *, frames: int, width: int, height: int, mixed_precision: str = "no"
) -> dict[str, int]:
    """Run the estimated training step for real on the CPU: bytes the process's peak RSS grew by
    during the step, from its resident size just before (run it in a fresh process)."""
    import contextlib
    import resource

    config = dict(unet_config)
    scale = VAE_SCALE

    def rss_now() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize()

    class _Before(contextlib.AbstractContextManager):
        current = 0

        def __enter__(self) -> _Before:
            self.rss = rss_now()
            return self

        def __exit__(self, *exc: Any) -> None:
            return None

    mode = _Before()
    _training_step(config, frames, height // scale, width // scale, mixed_precision, False, mode)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"rss_before_bytes": mode.rss, "peak_rss_bytes": peak, "step_growth_bytes": peak - mode.rss}


__all__ = ["PeakMemory", "estimate_sampling_memory", "estimate_training_memory", "measure_training_rss"]
