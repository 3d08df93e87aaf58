"""`lamp bench train`: the real training step on cached-style latents (no data, no VAE), timed,
with peak memory."""

from __future__ import annotations

import resource
import sys
import time
from typing import Any

from .. import settings
from ..devices import resolve_device
from ..models.base import architecture_of, load_base
from ..models.tiny import SD_SCHEDULER_CONFIG
from ..progress import Reporter, reporter_or_null
from ..requests import check_positive, check_size
from ..train.data import diffusion_loss, step_generator
from ..train.loop import MAX_GRAD_NORM, make_accelerator, make_optimizer, resolve_mixed_precision
from .sd1 import SD1_RANDOM_SPEC, SD1_UNET_CONFIG, random_sd1_unet


def peak_rss_bytes() -> int:
    """The process's peak resident memory in bytes."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)  # bytes on macOS, KiB on Linux


def benchmark_training(
    *,
    base: str = "tiny",
    full_sd: bool = False,
    steps: int = 10,
    warmup: int = 2,
    frames: int = 16,
    width: int = 512,
    height: int = 320,
    mixed_precision: str | None = None,
    gradient_checkpointing: bool | None = None,
    device: str | None = "auto",
    seed: int = 0,
    progress: Reporter | None = None,
) -> dict[str, Any]:
    """Time `steps` training steps (after `warmup`) and report peak memory.

    `full_sd`: the SD-1.x UNet architecture with random weights (nothing to download); otherwise
    the UNet of `base`. Latents and text embeddings are random tensors of the real shapes: with
    cached latents a training step never touches the VAE or the text encoder. Peak memory is
    `torch.cuda.max_memory_allocated` on CUDA, the process's peak RSS elsewhere.
    """
    import torch
    from diffusers import DDPMScheduler

    from ..models.video_unet import VideoUNet

    flags = {"width": "--width", "height": "--height", "steps": "--steps", "frames": "--frames"}
    check_size("width", width, flags)
    check_size("height", height, flags)
    steps, frames = check_positive("steps", steps, flags), check_positive("frames", frames, flags)
    dev = str(resolve_device(device or settings.get("device")))  # "cpu", "cuda", "cuda:1", "mps"
    mp = resolve_mixed_precision(mixed_precision, dev)
    accelerator = make_accelerator(mp, dev)
    device_t = accelerator.device
    torch.manual_seed(seed)
    if full_sd:
        unet = random_sd1_unet(device_t, seed)  # random init directly on the accelerator
        scheduler = DDPMScheduler.from_config(SD_SCHEDULER_CONFIG)
        spec, vae_scale, text_dim = SD1_RANDOM_SPEC, 8, SD1_UNET_CONFIG["cross_attention_dim"]
    else:
        b = load_base(base, device="cpu")
        unet, scheduler, spec = b.unet, b.ddpm(), base
        vae_scale, text_dim = b.vae_scale_factor, int(b.unet.config.cross_attention_dim)
    unet_params = sum(p.numel() for p in unet.parameters())
    video_unet = VideoUNet.from_unet2d(unet.to(device_t)).freeze_base()
    use_ckpt = device_t.type == "cuda" if gradient_checkpointing is None else bool(gradient_checkpointing)
    video_unet.set_gradient_checkpointing(use_ckpt)
    video_unet.train()
    trainable = [p for _, p in video_unet.trainable_parameters()]
    optimizer = make_optimizer(trainable, 3e-5, device_t)
    model, optimizer = accelerator.prepare(video_unet, optimizer)
    h, w = height // vae_scale, width // vae_scale
    gen = torch.Generator().manual_seed(seed)
    latents = torch.randn(1, 4, frames, h, w, generator=gen).to(device_t)
    text = torch.randn(1, 77, text_dim, generator=gen).to(device_t)

    def one_step(k: int) -> float:
        g = step_generator(seed, 0, k)
        noise = torch.randn(latents.shape, generator=g).to(device_t)
        t = torch.randint(int(scheduler.config.num_train_timesteps), (1,), generator=g).to(device_t)
        loss = diffusion_loss(model, scheduler, latents, noise, t, text)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(trainable, MAX_GRAD_NORM)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())  # the real loop reads the loss every step too

    def sync() -> None:
        if device_t.type == "cuda":
            torch.cuda.synchronize()

    rep = reporter_or_null(progress)
    rep.start("warm-up", warmup)
    for k in range(warmup):
        one_step(k)
        rep.advance(1)
    sync()
    if device_t.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    rep.start("bench train", steps)
    t0 = time.perf_counter()
    for k in range(steps):
        loss = one_step(warmup + k)
        rep.advance(1, loss=loss)
    sync()
    seconds = time.perf_counter() - t0
    rep.finish()
    if device_t.type == "cuda":
        peak, peak_kind = int(torch.cuda.max_memory_allocated()), "cuda max_memory_allocated"
        device_name = torch.cuda.get_device_name(device_t)
    else:
        peak, peak_kind = peak_rss_bytes(), "process peak RSS"
        device_name = str(device_t)
    return {
        "base": spec,
        "architecture": architecture_of(dict(unet.config)),
        "device": str(device_t),
        "device_name": device_name,
        "mixed_precision": mp,
        "gradient_checkpointing": use_ckpt,
        "frames": frames,
        "width": width,
        "height": height,
        "latent": [4, frames, h, w],
        "warmup": warmup,
        "steps": steps,
        "seconds": seconds,
        "ms_per_step": 1000 * seconds / steps,
        "steps_per_second": steps / seconds,
        "peak_memory_bytes": peak,
        "peak_memory_kind": peak_kind,
        "unet_parameters": int(unet_params),
        "trainable_parameters": int(sum(p.numel() for p in trainable)),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
