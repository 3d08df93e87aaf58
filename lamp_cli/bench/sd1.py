"""Full-size SD-1.x shapes with random weights, for the benchmarks (`lamp bench ... --full-sd`):
timing and memory, not quality. Nothing is downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..models.base import BaseComponents
from ..models.single_file import SD1_CONFIGS
from ..models.tiny import SD_SCHEDULER_CONFIG, tiny_tokenizer


def _shipped_config(component: str, drop: tuple[str, ...] = ()) -> dict[str, Any]:
    """The SD-1.x component config lamp ships for single-file bases (`models/sd1/`), as keyword
    arguments: one description of the architecture for conversion and benchmarks alike."""
    doc = json.loads((SD1_CONFIGS / component / "config.json").read_text("utf-8"))
    return {k: v for k, v in doc.items() if not k.startswith("_") and k not in drop}


SD1_UNET_CONFIG: dict[str, Any] = _shipped_config("unet")
SD1_VAE_CONFIG: dict[str, Any] = _shipped_config("vae")
# CLIP ViT-L/14's text encoder; the vocabulary and special tokens come from the tokenizer in use.
SD1_TEXT_CONFIG: dict[str, Any] = _shipped_config(
    "text_encoder", drop=("architectures", "model_type", "vocab_size", "bos_token_id", "eos_token_id", "pad_token_id")
)
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
