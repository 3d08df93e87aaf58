"""Full-size SD-1.x shapes with random weights, for the benchmarks (`lamp bench ... --full-sd`):
timing and memory, not quality. Nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..models.base import BaseComponents
from ..models.tiny import SD_SCHEDULER_CONFIG, tiny_tokenizer

# SD-1.x's UNet (diffusers' defaults are SD's except the text width).
SD1_UNET_CONFIG: dict[str, Any] = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": (320, 640, 1280, 1280),
    "layers_per_block": 2,
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
}
# SD-1.x's VAE and CLIP ViT-L/14 text encoder.
SD1_VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "latent_channels": 4,
    "sample_size": 512,
    "scaling_factor": 0.18215,
}
SD1_TEXT_CONFIG: dict[str, Any] = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": 77,
    "projection_dim": 768,
}
SD1_RANDOM_SPEC = "sd1 (random weights)"


def random_sd1_unet(device: Any, seed: int = 0) -> Any:
    """SD-1.x's UNet with random fp32 weights, initialised directly on `device`."""
    import torch
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    with torch.device(device):
        return UNet2DConditionModel(**SD1_UNET_CONFIG)


def random_sd1_components(device: Any, dtype: Any, seed: int = 0) -> dict[str, Any]:
    """SD-1.x-shaped UNet, VAE and text encoder with random weights (frozen, eval mode, on
    `device` in `dtype`), the tiny offline tokenizer and SD's DDIM scheduler: the keys of
    `tiny_components`. Only the encoder's width and depth matter for timing, not its vocabulary.
    """
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = tiny_tokenizer()
    torch.manual_seed(seed)
    with torch.device(device):  # initialise directly on the accelerator
        unet = UNet2DConditionModel(**SD1_UNET_CONFIG).to(dtype)
        vae = AutoencoderKL(**SD1_VAE_CONFIG).to(dtype)
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(tokenizer.get_vocab()), bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **SD1_TEXT_CONFIG,
            )
        ).to(dtype)
    for m in (unet, vae, text_encoder):
        m.requires_grad_(False)
        m.eval()
    scheduler = DDIMScheduler(**SD_SCHEDULER_CONFIG)
    return {"unet": unet, "vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer, "scheduler": scheduler}


def random_sd1_base(device: Any, dtype: Any, seed: int = 0) -> Any:
    """`random_sd1_components` as a `BaseComponents` for the engine (nothing to download)."""
    c = random_sd1_components(device, dtype, seed)
    return BaseComponents(
        spec=SD1_RANDOM_SPEC, path=Path("."), unet=c["unet"], vae=c["vae"], text_encoder=c["text_encoder"],
        tokenizer=c["tokenizer"], scheduler_config=dict(SD_SCHEDULER_CONFIG), fingerprint="random",
    )
