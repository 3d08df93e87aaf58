"""The tiny base built in code: SD-1.x-shaped components for `--base tiny` and the tests, the
offline CLIP tokenizer the toy base shares, and a tiny CLIP for `lamp eval` tests.

Nothing here downloads anything: the UNet, VAE and CLIP text encoder are random (seeded) and
the CLIP tokenizer is built from a byte-level vocabulary constructed in code. `save_tiny_base`
writes them as a diffusers-format folder, which is then loaded through the ordinary loader
(`lamp_cli.models.base.load_base`) exactly as a real Stable Diffusion checkpoint would be.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .names import SD_PIPELINE_INDEX

# The tiny UNet keeps SD-1.x's structure (cross-attention down/up blocks, a mid block with
# attention, conv_shortcut where channels change, down/up samplers) at a fraction of its size.
TINY_UNET_CONFIG: dict[str, Any] = {
    "sample_size": 8,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": (32, 64),
    "layers_per_block": 1,
    "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
    "cross_attention_dim": 32,
    "attention_head_dim": 4,  # diffusers' legacy name: the number of heads, as in SD-1.x's 8
    "norm_num_groups": 8,
}

# Four levels, like SD's VAE, so the latent is 1/8 of the image, as for real models.
TINY_VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (8, 8, 16, 16),
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 4,
    "sample_size": 64,
    "scaling_factor": 0.18215,
}

TINY_TEXT_CONFIG: dict[str, Any] = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": 77,
    "projection_dim": 32,
}

# SD-1.4's scheduler, as DDIM (the sampler lamp uses; training noise uses the same betas).
SD_SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "prediction_type": "epsilon",
}

# Words that become single tokens in the offline tokenizer (others split into characters).
DEFAULT_WORDS = (
    "a an the of on in and with plays runs flies fly rain waterfall horse bird birds guitar "
    "red green blue yellow white black orange purple cyan magenta gray pink brown "
    "circle square triangle star cross diamond ring background moves right left up down"
).split()


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


def _bpe(word: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Apply byte-pair merges by rank, as the CLIP tokenizer does."""
    while len(word) > 1:
        pairs = [(ranks.get((a, b), 1 << 30), i) for i, (a, b) in enumerate(zip(word, word[1:], strict=False))]
        rank, i = min(pairs)
        if rank == 1 << 30:
            break
        word = word[:i] + [word[i] + word[i + 1]] + word[i + 2 :]
    return word


def build_vocab(words: Iterable[str] = DEFAULT_WORDS) -> tuple[dict[str, int], list[str]]:
    """A CLIP-style byte-level BPE vocabulary in which each of `words` is one token."""
    chars = list(_bytes_to_unicode().values())
    vocab_tokens = chars + [c + "</w>" for c in chars]
    merges: list[str] = []
    ranks: dict[tuple[str, str], int] = {}
    for w in dict.fromkeys(w.lower() for w in words):
        symbols = list(w[:-1]) + [w[-1] + "</w>"]
        symbols = _bpe(symbols, ranks)
        while len(symbols) > 1:  # merge left to right until the word is one token
            pair = (symbols[0], symbols[1])
            ranks[pair] = len(merges)
            merges.append(f"{pair[0]} {pair[1]}")
            vocab_tokens.append(pair[0] + pair[1])
            symbols = [pair[0] + pair[1]] + symbols[2:]
    vocab_tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(vocab_tokens))}
    return vocab, merges


def tiny_tokenizer(words: Iterable[str] = DEFAULT_WORDS):
    import tempfile

    from transformers import CLIPTokenizer

    vocab, merges = build_vocab(words)
    # Files, passed positionally: the one form both transformers 4 and 5 accept.
    with tempfile.TemporaryDirectory() as tmp:
        vocab_file, merges_file = Path(tmp, "vocab.json"), Path(tmp, "merges.txt")
        vocab_file.write_text(json.dumps(vocab), encoding="utf-8")
        merges_file.write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
        return CLIPTokenizer(str(vocab_file), str(merges_file), model_max_length=77)


def tiny_text_encoder(tokenizer: Any, seed: int):
    """A seeded random CLIPTextModel (TINY_TEXT_CONFIG) sized to `tokenizer`'s vocabulary."""
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    config = CLIPTextConfig(
        vocab_size=len(tokenizer.get_vocab()),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **TINY_TEXT_CONFIG,
    )
    return CLIPTextModel(config)


def tiny_components(seed: int = 0, words: Iterable[str] = DEFAULT_WORDS) -> dict[str, Any]:
    """Seeded random UNet, VAE, text encoder, tokenizer and DDIM scheduler."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

    tokenizer = tiny_tokenizer(words)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**TINY_UNET_CONFIG)
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(**TINY_VAE_CONFIG)
    text_encoder = tiny_text_encoder(tokenizer, seed + 2)
    scheduler = DDIMScheduler(**SD_SCHEDULER_CONFIG)
    return {"unet": unet, "vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer, "scheduler": scheduler}


def save_components(components: dict[str, Any], folder: str | Path) -> Path:
    """Write components as a diffusers pipeline folder (safetensors weights)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for sub in ("unet", "vae", "text_encoder"):
        components[sub].save_pretrained(folder / sub, safe_serialization=True)
    components["tokenizer"].save_pretrained(folder / "tokenizer")
    components["scheduler"].save_pretrained(folder / "scheduler")
    index = SD_PIPELINE_INDEX
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    return folder


def save_tiny_base(folder: str | Path, seed: int = 0) -> Path:
    """Build the tiny base and save it in diffusers layout; returns the folder."""
    return save_components(tiny_components(seed), folder)


# A tiny CLIP (text + vision towers) for `lamp eval` tests: same tokenizer, 32×32 images.
TINY_CLIP_VISION_CONFIG: dict[str, Any] = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "image_size": 32,
    "patch_size": 8,
}


def save_tiny_clip(folder: str | Path, seed: int = 0) -> Path:
    """A seeded random CLIPModel + tokenizer + image processor saved as a transformers folder."""
    import torch
    from transformers import AutoImageProcessor, CLIPConfig, CLIPModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = tiny_tokenizer()
    text_config = {
        "vocab_size": len(tokenizer.get_vocab()),
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        **TINY_TEXT_CONFIG,
    }
    text_config.pop("projection_dim")
    config = CLIPConfig(text_config=text_config, vision_config=TINY_CLIP_VISION_CONFIG, projection_dim=16)
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    # Built from a config dict so that no hub lookup happens; shortest edge 32, 32×32 center crop.
    processor_config = {
        "image_processor_type": "CLIPImageProcessor",
        "do_resize": True,
        "size": {"shortest_edge": 32},
        "resample": 3,
        "do_center_crop": True,
        "crop_size": {"height": 32, "width": 32},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "do_convert_rgb": True,
    }
    (folder / "preprocessor_config.json").write_text(json.dumps(processor_config, indent=2))
    AutoImageProcessor.from_pretrained(folder, local_files_only=True)  # fail here, not in a test, if unreadable
    return folder
