"""Architecture of the toy base (what scripts/train_toy_base.py builds and lamp_cli/toy/base holds).

Same classes as Stable Diffusion 1.x, scaled to 64×64 images: the VAE downsamples by 4 (three
levels), so a 64×64 frame is a 4×16×16 latent — big enough that a 2 px/frame slide is visible
as half a latent pixel per frame. The UNet keeps SD's layout (cross-attention down/up blocks, a
mid block with attention) at two levels.
"""

from __future__ import annotations

from typing import Any

from ..models.tiny import TINY_UNET_CONFIG

TOY_VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 3,
    "up_block_types": ("UpDecoderBlock2D",) * 3,
    "block_out_channels": (16, 32, 32),
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 8,
    "sample_size": 64,
    "scaling_factor": 1.0,  # replaced by 1/std of the trained VAE's latents
}

# The tiny test UNet's widths (cross-attention dim = the tiny text encoder's width) on 16×16
# latents, with cross-attention (and so LAMP's first-frame and temporal attention) at both levels.
TOY_UNET_CONFIG: dict[str, Any] = {
    **TINY_UNET_CONFIG,
    "sample_size": 16,
    "down_block_types": ("CrossAttnDownBlock2D",) * 2,
    "up_block_types": ("CrossAttnUpBlock2D",) * 2,
}
