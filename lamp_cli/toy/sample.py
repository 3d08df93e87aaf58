"""Plain text-to-image with a base's own components (DDIM + classifier-free guidance).

Used to check the toy base's image quality (tests, the training script's final report). It is
deliberately the textbook loop, independent of the video engine, so a failure here points at
the base model and not at lamp's inference code.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def text_to_image(
    base: Any,
    prompts: list[str],
    *,
    steps: int = 25,
    guidance: float = 5.0,
    seed: int = 0,
    height: int = 64,
    width: int = 64,
) -> np.ndarray:
    """Images for `prompts` (N×H×W×3 uint8) from a BaseComponents-like object.

    `base` needs .unet .vae .encode_prompt() .ddim() .vae_scale_factor .latent_scale.
    """
    import torch

    unet, vae = base.unet, base.vae
    device = next(unet.parameters()).device
    dtype = next(unet.parameters()).dtype
    n = len(prompts)
    # 1. text embeddings, conditional and empty (for guidance), computed once
    cond = base.encode_prompt(list(prompts)).to(device, dtype)
    uncond = base.encode_prompt([""] * n).to(device, dtype)
    # 2. initial noise, seeded on the CPU so the same seed gives the same image on any device
    f = base.vae_scale_factor
    shape = (n, unet.config.in_channels, height // f, width // f)
    latents = torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(device, dtype)
    scheduler = base.ddim()
    scheduler.set_timesteps(steps)
    latents = latents * scheduler.init_noise_sigma
    # 3. DDIM loop with classifier-free guidance
    with torch.no_grad():
        for t in scheduler.timesteps:
            eps = unet(torch.cat([latents, latents]), t, torch.cat([uncond, cond])).sample
            eps_u, eps_c = eps.chunk(2)
            latents = scheduler.step(eps_u + guidance * (eps_c - eps_u), t, latents).prev_sample
        # 4. decode: N×3×H×W in [-1, 1] -> N×H×W×3 uint8
        images = vae.decode(latents / base.latent_scale).sample
    images = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return images.permute(0, 2, 3, 1).cpu().numpy()
