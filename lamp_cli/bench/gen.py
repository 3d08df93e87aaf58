"""`lamp bench gen`: one whole video and the UNet step timed, with peak memory."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ..devices import resolve_device, resolve_dtype
from ..engine import Engine, check_sample_args
from ..errors import InvalidInput
from ..progress import Reporter
from .sd1 import random_sd1_base
from .train import peak_rss_bytes


def benchmark_sampling(
    *,
    base: str = "tiny",
    full_sd: bool = False,
    frames: int = 16,
    width: int = 512,
    height: int = 320,
    steps: int = 50,
    guidance: float = 12.5,
    dtype: str | None = "auto",
    device: str | None = "auto",
    compile: bool = False,
    repeats: int = 5,
    progress: Reporter | None = None,
) -> dict[str, Any]:
    """Time one whole video and the UNet step, and measure peak memory.

    Whole video: `Engine.sample` from a given first frame (encode, `steps` DDIM steps with CFG,
    decode, histogram matching) after one short warm-up video. UNet step: the video UNet on the
    CFG batch 2×4×F×h×w against the plain 2-D base UNet on the same 2F frames, `repeats` timed
    calls each. Peak memory is `torch.cuda.max_memory_allocated` during the video on CUDA (the
    2-D base waits on the CPU then, as in `lamp gen`), the process's peak RSS elsewhere.
    """
    import torch

    check_sample_args(frames=frames, width=width, height=height, steps=steps, guidance=guidance, shared_noise=0.2)
    if repeats < 1:
        raise InvalidInput(f"--repeats must be at least 1 (got {repeats})")
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    t0 = time.perf_counter()
    if full_sd:
        engine = Engine(random_sd1_base(dev, dt), compile=compile)
    else:
        engine = Engine(base, device=dev, dtype=dt, compile=compile)
    engine.park_base_unet()
    load_s = time.perf_counter() - t0
    cuda = dev.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(dev)

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    kw = {"frames": frames, "width": width, "height": height, "guidance": guidance, "seed": 0}
    engine.sample([], "a horse runs", image, steps=min(2, steps), **kw)  # warm-up (and compile)
    sync()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
    result = engine.sample([], "a horse runs", image, steps=steps, progress=progress, **kw)
    sync()
    if cuda:
        peak, peak_kind = int(torch.cuda.max_memory_allocated(dev)), "cuda max_memory_allocated"
        device_name = torch.cuda.get_device_name(dev)
    else:
        peak = peak_rss_bytes()
        peak_kind, device_name = "process peak RSS", str(dev)

    # The UNet step alone: video UNet on the CFG batch vs the 2-D base UNet on the same frames.
    h, w = height // engine.base.vae_scale_factor, width // engine.base.vae_scale_factor
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, frames, h, w, generator=g).to(dev, dt)
    text_dim = int(engine.base.unet.config.cross_attention_dim)
    text = torch.randn(2, 77, text_dim, generator=g).to(dev, dt)
    t = torch.tensor(500, device=dev)

    def timed(fn: Callable[[], Any]) -> float:
        with torch.no_grad():
            fn()  # warm-up
            sync()
            start = time.perf_counter()
            for _ in range(repeats):
                fn()
            sync()
        return (time.perf_counter() - start) / repeats

    video_step = timed(lambda: engine._unet_call(x, t, text))
    with engine.unet2d() as unet2d:
        flat = x.permute(0, 2, 1, 3, 4).reshape(2 * frames, 4, h, w)  # (2,4,F,h,w) -> (2F,4,h,w)
        text_flat = text.repeat_interleave(frames, dim=0)  # (2,77,D) -> (2F,77,D)
        plain_step = timed(lambda: unet2d(flat, t, encoder_hidden_states=text_flat).sample)
    timings = result.record["timings"]
    return {
        "base": engine.base.spec,
        "device": str(dev),
        "device_name": device_name,
        "dtype": str(dt).replace("torch.", ""),
        "compile": compile,
        "frames": frames,
        "width": width,
        "height": height,
        "steps": steps,
        "guidance": guidance,
        "latent": [4, frames, h, w],
        "load_s": load_s,
        "video_s": timings["total_s"],
        "denoise_s": timings["denoise_s"],
        "decode_s": timings["decode_s"],
        "sample_step_s": timings["unet_step_s"],
        "video_unet_step_s": video_step,
        "unet2d_step_s": plain_step,
        "video_over_2d": video_step / plain_step,
        "repeats": repeats,
        "peak_memory_bytes": peak,
        "peak_memory_kind": peak_kind,
        "video_unet_parameters": int(sum(p.numel() for p in engine.video_unet.parameters())),
        "unet2d_parameters": int(sum(p.numel() for p in engine.base.unet.parameters())),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
