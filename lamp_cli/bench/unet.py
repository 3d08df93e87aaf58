"""`lamp bench unet`: the 2-D UNet, lamp's VideoUNet and diffusers' AnimateDiff `UNetMotionModel`
built from one SD-1.x-architecture base, compared by FLOPs and by time (a measurement, not a test).

- FLOPs: `torch.utils.flop_counter` on the meta device (no memory, no time), attention through
  SDPA's math path so that it is counted.
- Time: one call of each model in turn (2-D, lamp, AnimateDiff, 2-D, lamp, ...), `repeats` rounds
  after a warm-up round, so that a load change on a shared machine hits all three alike; the
  median and the minimum per model are reported, and the ratios use the minimum.
- Shares: one more, untimed-for-the-ratio lamp call with timers around each added operation
  (temporal conv, gate, frame GroupNorm, temporal attention, first-frame attention), as shares of
  that call's time.

The three models share the base's weights (the VideoUNet and the AnimateDiff model hold the 2-D
UNet's parameter tensors), so memory is one base plus the added layers.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ..errors import InvalidInput

MODELS = ("unet2d", "lamp", "animatediff")
SHARE_KEYS = ("temporal_conv", "gate", "frame_groupnorm", "temporal_attention", "first_frame_attention")


def _torch() -> Any:
    import torch

    return torch


def base_unet(base: str | None, device: Any, dtype: Any, seed: int = 0) -> tuple[Any, str]:
    """The 2-D UNet (frozen, eval) and its name: SD-1.x with random weights when `base` is None."""
    if base is None:
        from .sd1 import SD1_RANDOM_SPEC, random_sd1_unet

        unet = random_sd1_unet(device, seed)
        unet = unet if dtype == unet.dtype else unet.to(dtype)
        spec = SD1_RANDOM_SPEC
    else:
        from ..models.base import load_base

        components = load_base(base, device=device, dtype=dtype)
        unet, spec = components.unet, components.spec
    unet.requires_grad_(False)
    unet.eval()
    return unet, spec


def lamp_unet(unet: Any) -> Any:
    """lamp's VideoUNet on a structural copy of `unet` that shares its parameters and buffers."""
    from ..models.video_unet import VideoUNet

    shared = {id(t): t for t in (*unet.parameters(), *unet.buffers())}
    video = VideoUNet.from_unet2d(copy.deepcopy(unet, memo=shared))
    video.requires_grad_(False)
    return video.eval()


def motion_adapter_config(unet_config: Any, frames: int) -> dict[str, Any]:
    """An AnimateDiff `MotionAdapter` config for this UNet (SD-1.x: AnimateDiff v1.5's shape)."""
    return {
        "block_out_channels": tuple(unet_config.block_out_channels),
        "motion_layers_per_block": unet_config.layers_per_block,
        "motion_norm_num_groups": unet_config.norm_num_groups,
        "motion_max_seq_length": max(32, frames),
        "use_motion_mid_block": True,
    }


def animatediff_unet(unet: Any, frames: int) -> Any:
    """diffusers' `UNetMotionModel` from `unet` and a random `MotionAdapter`; the 2-D parts hold
    `unet`'s parameter tensors (tied by name, checked), the motion modules their own."""
    import torch
    from diffusers import MotionAdapter, UNetMotionModel

    device, dtype = unet.device, unet.dtype
    with torch.device(device):
        adapter = MotionAdapter(**motion_adapter_config(unet.config, frames))
        model = UNetMotionModel.from_unet2d(unet, adapter, load_weights=False)
    base = dict(unet.named_parameters())
    tied = 0
    for name, p in list(model.named_parameters()):
        if name in base and base[name].shape == p.shape:
            module_name, _, attr = name.rpartition(".")
            setattr(model.get_submodule(module_name), attr, base[name])
            tied += 1
    if tied != len(base):
        raise RuntimeError(f"AnimateDiff model: {tied} of {len(base)} base parameters matched by name")
    if model.dtype != dtype:  # the motion modules are built in float32
        model.to(dtype=dtype)
    model.requires_grad_(False)
    return model.eval()


def unet_calls(
    models: dict[str, Any], *, batch: int, frames: int, h: int, w: int, device: Any, dtype: Any, seed: int = 0
) -> dict[str, Callable[[], Any]]:
    """One no-grad forward per model on the same B videos of F frames (h×w latents)."""
    torch = _torch()
    g = torch.Generator().manual_seed(seed)
    unet = models["unet2d"]
    c = int(unet.config.in_channels)
    video = torch.randn(batch, c, frames, h, w, generator=g).to(device, dtype)
    text = torch.randn(batch, 77, int(unet.config.cross_attention_dim), generator=g).to(device, dtype)
    t = torch.tensor(500, device=device)
    flat = video.transpose(1, 2).reshape(batch * frames, c, h, w)  # (B·F)×C×h×w
    text_flat = text.repeat_interleave(frames, dim=0)
    calls = {
        "unet2d": lambda: unet(flat, t, text_flat, return_dict=False)[0],
        "lamp": lambda: models["lamp"](video, t, text),
        # UNetMotionModel takes the text per frame (its pipeline repeats it), the latents as B×C×F×h×w
        "animatediff": lambda: models["animatediff"](video, t, text_flat, return_dict=False)[0],
    }
    return {k: v for k, v in calls.items() if k in models}


def count_flops(unet_config: Any, *, batch: int, frames: int, h: int, w: int) -> dict[str, int]:
    """FLOPs of one forward of each model, counted on the meta device."""
    torch = _torch()
    from diffusers import UNet2DConditionModel
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        unet = UNet2DConditionModel(**dict(unet_config))
    unet.requires_grad_(False)
    models = {"unet2d": unet.eval(), "lamp": lamp_unet(unet), "animatediff": animatediff_unet(unet, frames)}
    calls = unet_calls(models, batch=batch, frames=frames, h=h, w=w, device="meta", dtype=torch.float32)
    flops = {}
    for name, call in calls.items():
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), counter:
            call()
        flops[name] = int(counter.get_total_flops())
    return flops


def time_interleaved(
    calls: dict[str, Callable[[], Any]], repeats: int, sync: Callable[[], None]
) -> dict[str, list[float]]:
    """Seconds per call: a warm-up round, then `repeats` rounds of one call per model in turn."""
    torch = _torch()
    times: dict[str, list[float]] = {k: [] for k in calls}
    with torch.no_grad():
        for rnd in range(repeats + 1):
            for name, call in calls.items():
                sync()
                start = time.perf_counter()
                call()
                sync()
                if rnd:
                    times[name].append(time.perf_counter() - start)
    return times


@contextmanager
def _timed_methods(targets: list[tuple[Any, str, str]], acc: dict[str, float], sync: Callable[[], None]) -> Iterator[None]:
    """Wrap `obj.method` (instance or class attribute) so its wall time adds to `acc[key]`."""
    saved = []
    for obj, method, key in targets:
        original = getattr(obj, method)

        def wrapper(*args: Any, _f: Callable[..., Any] = original, _k: str = key, **kwargs: Any) -> Any:
            sync()
            start = time.perf_counter()
            out = _f(*args, **kwargs)
            sync()
            acc[_k] += time.perf_counter() - start
            return out

        had_own = method in vars(obj) if not isinstance(obj, type) else True
        saved.append((obj, method, original if had_own else None))
        setattr(obj, method, wrapper)
    try:
        yield
    finally:
        for obj, method, original in reversed(saved):
            if original is None:
                delattr(obj, method)
            else:
                setattr(obj, method, original)


def lamp_module_shares(video_unet: Any, call: Callable[[], Any], sync: Callable[[], None]) -> dict[str, float]:
    """Share of one VideoUNet call's time spent in each added operation (one instrumented call)."""
    torch = _torch()
    from ..models.motion import FirstFrameAttnProcessor, FrameGroupNorm, MotionConv, VideoTransformerBlock

    acc = dict.fromkeys(SHARE_KEYS, 0.0)
    targets = [
        (MotionConv, "temporal_video", "temporal_conv"),
        (MotionConv, "gate_logits", "gate"),
        (FrameGroupNorm, "forward", "frame_groupnorm"),
        (VideoTransformerBlock, "temporal_attention", "temporal_attention"),
        (FirstFrameAttnProcessor, "__call__", "first_frame_attention"),
    ]
    with torch.no_grad():
        call()
        with _timed_methods(targets, acc, sync):
            sync()
            start = time.perf_counter()
            call()
            sync()
            total = time.perf_counter() - start
    shares = {k: v / total for k, v in acc.items()}
    shares["pretrained_and_rest"] = max(0.0, 1.0 - sum(shares.values()))
    return shares


def benchmark_unet(
    *,
    base: str | None = None,
    frames: int = 16,
    width: int = 128,
    height: int = 128,
    batch: int = 2,
    repeats: int = 5,
    device: str | None = "cpu",
    dtype: str | None = "fp32",
    seed: int = 0,
    shares: bool = True,
) -> dict[str, Any]:
    """FLOPs and interleaved time of the 2-D UNet, lamp's VideoUNet and AnimateDiff on one base."""
    torch = _torch()
    from ..devices import resolve_device, resolve_dtype

    for name, value, low in (("--frames", frames, 1), ("--batch", batch, 1), ("--repeats", repeats, 1)):
        if value < low:
            raise InvalidInput(f"{name} must be at least {low} (got {value})")
    if width % 8 or height % 8 or width < 8 or height < 8:
        raise InvalidInput(f"--width and --height must be positive multiples of 8 (got {width}×{height})")
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    unet, spec = base_unet(base, dev, dt, seed)
    scale = 2 ** (len(unet.config.block_out_channels) - 1)
    if (height // 8) % scale or (width // 8) % scale:
        raise InvalidInput(f"the latent {height // 8}×{width // 8} must be a multiple of {scale} for this UNet")
    h, w = height // 8, width // 8
    flops = count_flops(unet.config, batch=batch, frames=frames, h=h, w=w)
    models = {"unet2d": unet, "lamp": lamp_unet(unet), "animatediff": animatediff_unet(unet, frames)}
    cuda = dev.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(dev)

    calls = unet_calls(models, batch=batch, frames=frames, h=h, w=w, device=dev, dtype=dt, seed=seed)
    times = time_interleaved(calls, repeats, sync)
    best = {k: min(v) for k, v in times.items()}
    result: dict[str, Any] = {
        "base": spec,
        "device": str(dev),
        "dtype": str(dt).replace("torch.", ""),
        "frames": frames,
        "width": width,
        "height": height,
        "latent": [h, w],
        "batch": batch,
        "repeats": repeats,
        "flops": flops,
        "time_s": {k: {"min": best[k], "median": statistics.median(v), "all": v} for k, v in times.items()},
        "lamp_time_ratio": best["lamp"] / best["unet2d"],
        "lamp_flop_ratio": flops["lamp"] / flops["unet2d"],
        "animatediff_time_ratio": best["animatediff"] / best["unet2d"],
        "animatediff_flop_ratio": flops["animatediff"] / flops["unet2d"],
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    result["lamp_time_over_flop"] = result["lamp_time_ratio"] / result["lamp_flop_ratio"]
    result["animatediff_time_over_flop"] = result["animatediff_time_ratio"] / result["animatediff_flop_ratio"]
    if shares:
        result["lamp_shares"] = lamp_module_shares(models["lamp"], calls["lamp"], sync)
    return result


__all__ = ["MODELS", "SHARE_KEYS", "benchmark_unet", "count_flops", "lamp_module_shares", "time_interleaved"]
