"""Single-file SD-1.x checkpoints (`.safetensors`, `.ckpt`): the form community fine-tunes and
DreamBooth runs are shared in.

A file is converted once, fully offline, into a diffusers folder in lamp's cache
(`<LAMP_HOME>/bases/single-file/<sha256>/`), keyed by the file's content hash, and then loaded
like any other base folder. What the conversion needs beyond the file:

- the component configs: SD-1.x's ship with lamp (`lamp_cli/models/sd1/`); a checkpoint written
  from the built-in `tiny` or `toy` base takes that base's configs;
- the CLIP tokenizer: SD-1.x's (1.7 MB of vocabulary) comes from the local Hugging Face cache
  (any SD-1.x repo, or openai/clip-vit-large-patch14), never from the network.

The file's hash is cached by (path, size, mtime), so a second run neither hashes nor converts.
Key names follow the original Stable Diffusion (LDM) layout; diffusers' conversion functions
map them to diffusers names, and `save_single_file` writes the reverse (for tests and export).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import BaseModelMissing, InvalidInput, NotFound
from ..fsutil import TMP_PREFIX, atomic_write_text, writer_alive
from ..tensorfile import file_sha256 as sha256_of
from ..tensorfile import read_state_dict
from .names import SD_PIPELINE_INDEX

log = logging.getLogger("lamp")

SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_PREFIX = "cond_stage_model.transformer."
SD1_CONFIGS = Path(__file__).resolve().parent / "sd1"
# Where SD-1.x's CLIP tokenizer may already be in the local Hugging Face cache.
TOKENIZER_REPOS = (
    ("openai/clip-vit-large-patch14", ""),
    ("CompVis/stable-diffusion-v1-4", "tokenizer/"),
    ("stable-diffusion-v1-5/stable-diffusion-v1-5", "tokenizer/"),
    ("runwayml/stable-diffusion-v1-5", "tokenizer/"),
)
TOKENIZER_FILES = ("vocab.json", "merges.txt")
TOKENIZER_OPTIONAL = ("tokenizer_config.json", "special_tokens_map.json")  # and tokenizer.json, if there

# Incremented by every conversion (tests check that a cache hit does not convert again).
CONVERSIONS = 0


def is_single_file(spec: str | os.PathLike) -> bool:
    """True when a `--base` value names a checkpoint file (by its suffix), existing or not."""
    return str(spec).lower().endswith(SUFFIXES)


def cache_root() -> Path:
    from ..settings import lamp_home

    return lamp_home() / "bases" / "single-file"


# --------------------------------------------------------------------------------------------
# Content hash, cached by (path, size, mtime)
# --------------------------------------------------------------------------------------------
def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes; remembered in the cache by (resolved path, size, mtime_ns)."""
    path = Path(path).resolve()
    st = path.stat()
    index_file = cache_root() / "hashes.json"
    try:
        index = json.loads(index_file.read_text())
    except (OSError, ValueError):
        index = {}
    entry = index.get(str(path))
    if isinstance(entry, dict) and entry.get("size") == st.st_size and entry.get("mtime_ns") == st.st_mtime_ns:
        return str(entry["sha256"])
    digest = sha256_of(path)
    index[str(path)] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
    try:
        atomic_write_text(index_file, json.dumps(index, indent=1, sort_keys=True))
    except OSError as e:  # a read-only cache still loads; it just hashes again next time
        log.debug("could not update %s: %s", index_file, e)
    return digest


def known_conversion(path: str | Path) -> Path | None:
    """The converted folder of `path` if the cache already has it, found without hashing the
    file (by the hash index's path, size and mtime); None otherwise."""
    path = Path(path).expanduser().resolve()
    try:
        st = path.stat()
        entry = json.loads((cache_root() / "hashes.json").read_text()).get(str(path))
    except (OSError, ValueError):
        return None
    if not isinstance(entry, dict) or (entry.get("size"), entry.get("mtime_ns")) != (st.st_size, st.st_mtime_ns):
        return None
    folder = cache_root() / str(entry.get("sha256"))
    return folder if _current(folder) else None


# --------------------------------------------------------------------------------------------
# Reading a checkpoint and telling what it is
# --------------------------------------------------------------------------------------------
def read_shapes(path: Path) -> dict[str, tuple[int, ...]] | None:
    """Key -> shape of a .safetensors file without reading its tensors (None for other files)."""
    if path.suffix.lower() != ".safetensors":
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as e:  # SafetensorError, OSError: not a safetensors file at all
        raise InvalidInput(f"{path} is not a readable .safetensors file ({e})",
                           hint="pass an SD-1.x checkpoint (.safetensors or .ckpt)") from None


def classify(shapes: dict[str, tuple[int, ...]], what: str) -> None:
    """Raise InvalidInput naming what a checkpoint is when it is not an SD-1.x-style model."""
    keys = list(shapes)
    hint = "lamp's bases are SD-1.x models: pass an SD-1.x checkpoint, a diffusers folder or a repo id"
    if not keys:
        raise InvalidInput(f"{what} holds no tensors", hint=hint)
    if any(("lora_" in k or ".lora." in k or "lora_A" in k or "hada_" in k or "lokr_" in k) for k in keys):
        raise InvalidInput(f"{what} is a LoRA, not a base model", hint=f"apply it to a base with --lora {what}")
    if any(".motion_modules." in k or k.startswith("motion_modules") for k in keys):
        raise InvalidInput(f"{what} is an AnimateDiff motion module, not a base model", hint=hint)
    if any(k.startswith("conditioner.embedders.") for k in keys) or f"{UNET_PREFIX}label_emb.0.0.weight" in shapes:
        raise InvalidInput(f"{what} is an SDXL checkpoint (SDXL bases are not supported)", hint=hint)
    if not any(k.startswith(UNET_PREFIX) for k in keys):
        if any(k.startswith(("down_blocks.", "mid_block.", "encoder.down_blocks.")) for k in keys):
            raise InvalidInput(f"{what} holds one diffusers component, not a whole model",
                               hint="pass the diffusers folder that holds unet/, vae/, text_encoder/, tokenizer/")
        if any(k.startswith(("encoder.down.", "decoder.up.")) for k in keys):
            raise InvalidInput(f"{what} is a VAE alone, not a whole model", hint=hint)
        raise InvalidInput(f"{what} is not a Stable Diffusion checkpoint (no {UNET_PREFIX}* weights)", hint=hint)
    conv_in = shapes.get(f"{UNET_PREFIX}input_blocks.0.0.weight", ())
    if len(conv_in) == 4 and conv_in[1] != 4:
        kind = {9: "an inpainting model", 8: "an InstructPix2Pix model", 5: "a depth-to-image model"}
        raise InvalidInput(f"{what} is {kind.get(conv_in[1], 'a model')} ({conv_in[1]} input channels, not 4)",
                           hint="use the plain text-to-image release of this model")
    cross = [s for k, s in shapes.items() if k.endswith("attn2.to_k.weight") and len(s) == 2]
    if any(k.startswith("cond_stage_model.model.") for k in keys) or (cross and cross[0][1] == 1024):
        raise InvalidInput(f"{what} is an SD-2.x checkpoint (OpenCLIP text encoder, 1024-wide cross-attention)",
                           hint=hint)
    missing = [name for name, prefix in (("VAE", VAE_PREFIX), ("text encoder", TEXT_PREFIX))
               if not any(k.startswith(prefix) for k in keys)]
    if missing:
        raise InvalidInput(f"{what} has no {' and no '.join(missing)} weights (a UNet-only checkpoint)",
                           hint="use the full checkpoint (UNet, VAE and text encoder in one file)")


# --------------------------------------------------------------------------------------------
# Configs: which known architecture a checkpoint is
# --------------------------------------------------------------------------------------------
# The architectures lamp can convert, SD-1.x first: (name, config folder). The built-in bases'
# folders (None here) come from the caller's `builtin(name)` only when needed: `tiny` is built on
# first use, and this module does not import `models.base`, which imports it.
FAMILIES: tuple[tuple[str, Path | None], ...] = (("sd1", SD1_CONFIGS), ("tiny", None), ("toy", None))
Builtin = Callable[[str], "Path | None"]


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _expected_shapes(folder: Path) -> dict[str, dict[str, tuple[int, ...]]]:
    """Every component's key -> shape, from its config alone (models built on the meta device)."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(_read_json(folder / "unet" / "config.json"))
        vae = AutoencoderKL.from_config(_read_json(folder / "vae" / "config.json"))
        text = CLIPTextModel(CLIPTextConfig.from_pretrained(folder / "text_encoder", local_files_only=True))
    return {name: {k: tuple(v.shape) for k, v in m.state_dict().items()}
            for name, m in (("unet", unet), ("vae", vae), ("text_encoder", text))}


def _convert(sd: dict[str, Any], folder: Path) -> dict[str, dict[str, Any]]:
    """LDM state dict -> diffusers state dicts of unet, vae and text_encoder (no shape checks)."""
    from diffusers.loaders.single_file_utils import (
        convert_ldm_clip_checkpoint,
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
    )

    unet = convert_ldm_unet_checkpoint(sd, _read_json(folder / "unet" / "config.json"))
    vae = convert_ldm_vae_checkpoint(sd, _read_json(folder / "vae" / "config.json"))
    text = convert_ldm_clip_checkpoint(sd)
    return {"unet": unet, "vae": vae, "text_encoder": text}


def _fit_text_keys(text: dict[str, Any], expected: dict[str, tuple[int, ...]]) -> dict[str, Any]:
    """Text-encoder keys in the form the installed transformers names them (with or without
    `text_model.`); buffers the model does not keep (position_ids) are dropped."""
    out = {}
    for k, v in text.items():
        for cand in (k, k.removeprefix("text_model."), f"text_model.{k}"):
            if cand in expected:
                out[cand] = v
                break
    return out


def _mismatch(converted: dict[str, dict[str, Any]], expected: dict[str, dict[str, tuple[int, ...]]]) -> str:
    """'' when every component's keys and shapes are exactly the expected ones, else the first problem."""
    for name, want in expected.items():
        have = converted[name]
        missing = sorted(set(want) - set(have))
        if missing:
            return f"{name}: {len(missing)} weights missing (e.g. {missing[0]})"
        for k, shape in want.items():
            if tuple(have[k].shape) != shape:
                return f"{name}: {k} has shape {tuple(have[k].shape)}, expected {shape}"
        extra = sorted(set(have) - set(want))
        if extra:
            return f"{name}: {len(extra)} unexpected weights (e.g. {extra[0]})"
    return ""


def match_family(sd: dict[str, Any], what: str, builtin: Builtin | None = None) -> tuple[str, Path, dict[str, dict[str, Any]]]:
    """(family, its config folder, converted state dicts) of the first architecture that fits
    exactly; InvalidInput naming the SD-1.x mismatch when none does. `builtin(name)`: the folder
    of built-in base `name` (tiny, toy), or None."""
    problems = []
    for name, folder in FAMILIES:
        if folder is None and builtin is not None:
            folder = builtin(name)
        if folder is None:
            continue
        conv_in = sd.get(f"{UNET_PREFIX}input_blocks.0.0.weight")
        width = _read_json(folder / "unet" / "config.json")["block_out_channels"][0]
        if conv_in is None or conv_in.shape[0] != width:  # cheap first look before converting
            problems.append(f"unet: {conv_in.shape[0] if conv_in is not None else 'no'} first-block channels, SD-1.x has 320")
            continue
        expected = _expected_shapes(folder)
        converted = _convert(sd, folder)
        converted["text_encoder"] = _fit_text_keys(converted["text_encoder"], expected["text_encoder"])
        problem = _mismatch(converted, expected)
        if not problem:
            return name, folder, converted
        problems.append(problem)
    raise InvalidInput(f"{what} is not an SD-1.x checkpoint ({problems[0]})",
                       hint="lamp's bases are SD-1.x models: pass an SD-1.x checkpoint, a diffusers folder or a repo id")


def sd1_tokenizer_dir() -> Path:
    """A local folder with SD-1.x's CLIP tokenizer files, from the Hugging Face cache only."""
    from huggingface_hub import try_to_load_from_cache

    for repo, sub in TOKENIZER_REPOS:
        for names in (TOKENIZER_FILES, ("tokenizer.json",)):  # the slow files, else the fast one
            found = [try_to_load_from_cache(repo, sub + name) for name in names]
            if all(isinstance(p, str) for p in found):
                return Path(found[0]).parent
    raise BaseModelMissing(
        "openai/clip-vit-large-patch14",
        "converting an SD-1.x single-file checkpoint needs SD-1.x's CLIP tokenizer, which is not in the "
        "local Hugging Face cache: `hf download openai/clip-vit-large-patch14 vocab.json merges.txt "
        "tokenizer_config.json special_tokens_map.json` fetches it (2 MB)",
    )


def _tokenizer_source(family: str, folder: Path) -> Path:
    if family == "sd1":
        return sd1_tokenizer_dir()
    return folder / "tokenizer"


# --------------------------------------------------------------------------------------------
# Conversion into the cache
# --------------------------------------------------------------------------------------------
TOKENIZER_CONFIG = {
    "model_max_length": 77,
    "tokenizer_class": "CLIPTokenizer",
    "bos_token": "<|startoftext|>",
    "eos_token": "<|endoftext|>",
    "unk_token": "<|endoftext|>",
    "pad_token": "<|endoftext|>",
}


def _save_tensors(tensors: dict[str, Any], path: Path) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata={"format": "pt"})


def _write_tokenizer(source: Path, dest: Path) -> None:
    """Copy a CLIP tokenizer's files (slow `vocab.json` + `merges.txt` and/or fast `tokenizer.json`)
    and make sure its config says 77 tokens; check that it loads with its whole vocabulary."""
    from transformers import CLIPTokenizer

    dest.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES + TOKENIZER_OPTIONAL + ("tokenizer.json",):
        if (source / name).is_file():
            shutil.copyfile(source / name, dest / name)
    config = dict(TOKENIZER_CONFIG)
    if (dest / "tokenizer_config.json").is_file():
        config.update(_read_json(dest / "tokenizer_config.json"))
    config["model_max_length"] = min(int(config.get("model_max_length") or 77), 77)
    (dest / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    vocab = len(CLIPTokenizer.from_pretrained(dest, local_files_only=True).get_vocab())
    if vocab <= 256:  # no vocabulary file was found: every word would become <unk>
        raise InvalidInput(f"the CLIP tokenizer in {source} is incomplete ({vocab} tokens)",
                           hint="download it again: `hf download openai/clip-vit-large-patch14`")


def write_diffusers_folder(converted: dict[str, dict[str, Any]], family: str, configs: Path, dest: Path,
                           source: dict[str, Any]) -> None:
    """Write converted state dicts as a diffusers folder: the family's configs, the weights in the
    dtype the file stored them in, the tokenizer, and `lamp_source.json` (what it came from)."""
    tokenizer = _tokenizer_source(family, configs)  # BaseModelMissing before anything is written
    for name, weights_file in (("unet", "diffusion_pytorch_model.safetensors"),
                               ("vae", "diffusion_pytorch_model.safetensors"),
                               ("text_encoder", "model.safetensors")):
        (dest / name).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(configs / name / "config.json", dest / name / "config.json")
        _save_tensors(converted[name], dest / name / weights_file)
    (dest / "scheduler").mkdir(parents=True, exist_ok=True)
    sched = configs / "scheduler" / "scheduler_config.json"
    shutil.copyfile(sched if sched.is_file() else SD1_CONFIGS / "scheduler" / "scheduler_config.json",
                    dest / "scheduler" / "scheduler_config.json")
    _write_tokenizer(tokenizer, dest / "tokenizer")
    index = SD_PIPELINE_INDEX
    (dest / "model_index.json").write_text(json.dumps(index, indent=2))
    (dest / "lamp_source.json").write_text(json.dumps({**source, "family": family, "format": CACHE_FORMAT}, indent=2))


CACHE_FORMAT = 1  # bump when the converted layout changes: older folders are converted again


def _current(folder: Path) -> bool:
    """A complete converted folder written by this cache format."""
    try:
        return _read_json(folder / "lamp_source.json").get("format") == CACHE_FORMAT and (
            folder / "model_index.json").is_file()
    except (OSError, ValueError):
        return False


def converted_folder(path: str | Path, builtin: Builtin | None = None) -> tuple[Path, str]:
    """(the cached diffusers folder, the file's sha256) for a single-file checkpoint, converting
    it on first use. The folder appears atomically (built under a temp name, then renamed).
    `builtin`: as for `match_family` (`models.base` passes its resolver)."""
    global CONVERSIONS
    path = Path(path).expanduser()
    what = str(path)
    if not path.is_file():
        raise NotFound(f"base checkpoint {what}: no such file",
                       hint="pass an existing .safetensors/.ckpt file, a diffusers folder or a repo id")
    sha = file_sha256(path)
    dest = cache_root() / sha
    if _current(dest):
        return dest, sha
    shapes = read_shapes(path)
    if shapes is not None:  # a safetensors file is classified from its header alone
        classify(shapes, what)
    sd = read_state_dict(path)
    if shapes is None:
        classify({k: tuple(v.shape) for k, v in sd.items()}, what)
    family, configs, converted = match_family(sd, what, builtin)
    del sd
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{sha[:16]}.{os.getpid()}.", dir=dest.parent))
    try:
        write_diffusers_folder(converted, family, configs, tmp,
                               {"path": str(path.resolve()), "sha256": sha, "size": path.stat().st_size})
        if dest.exists() and not _current(dest):  # written by an older lamp: set it aside for gc
            with contextlib.suppress(OSError):
                os.replace(dest, dest.with_name(f"{TMP_PREFIX}old-{sha[:16]}.{os.getpid()}"))
        try:
            os.replace(tmp, dest)
        except OSError:  # another process converted the same file first; theirs is identical
            pass
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    CONVERSIONS += 1
    log.info("converted %s (%s) into %s", path, family, dest)
    return dest, sha


def cached_conversions() -> list[dict[str, Any]]:
    """Every converted base in the cache: folder, source file, whether that file still exists, bytes."""
    root = cache_root()
    out = []
    if not root.is_dir():
        return out
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(TMP_PREFIX)):
        try:
            source = _read_json(folder / "lamp_source.json")
        except (OSError, ValueError):
            source = {}
        src = source.get("path")
        size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        out.append({"folder": str(folder), "source": src, "source_exists": bool(src) and Path(src).is_file(),
                    "bytes": size})
    return out


def gc_conversions(*, dry_run: bool = False, stale_seconds: float = 60.0) -> tuple[list[str], int]:
    """Remove converted bases whose source file is gone, their hash-index entries, and old temp
    folders (an interrupted conversion, a folder of an older cache format); (removed, bytes)."""
    import time

    removed, freed = [], 0
    root = cache_root()
    if not root.is_dir():
        return removed, freed
    for entry in cached_conversions():
        if not entry["source_exists"]:
            removed.append(entry["folder"])
            freed += entry["bytes"]
            if not dry_run:
                shutil.rmtree(entry["folder"], ignore_errors=True)
    index_file = root / "hashes.json"
    try:
        index = json.loads(index_file.read_text())
        kept = {k: v for k, v in index.items() if Path(k).is_file()}
        if len(kept) != len(index) and not dry_run:
            atomic_write_text(index_file, json.dumps(kept, indent=1, sort_keys=True))
    except (OSError, ValueError, AttributeError):
        pass
    now = time.time()
    for p in root.glob(f"{TMP_PREFIX}*"):
        try:
            age = now - p.stat().st_mtime
            # a conversion in progress keeps its folder (its pid is in the name), up to a day
            if age <= stale_seconds or (age <= 86400 and writer_alive(p)):
                continue
        except FileNotFoundError:
            continue
        removed.append(str(p))
        if p.is_dir():
            freed += sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
            if not dry_run:
                shutil.rmtree(p, ignore_errors=True)
        else:
            freed += p.stat().st_size
            if not dry_run:
                p.unlink(missing_ok=True)
    return removed, freed


# --------------------------------------------------------------------------------------------
# Writing a single file (diffusers names -> original SD names): tests and export
# --------------------------------------------------------------------------------------------
_RESNET_TO_LDM = (("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("time_emb_proj", "emb_layers.1"),
                  ("norm2", "out_layers.0"), ("conv2", "out_layers.3"), ("conv_shortcut", "skip_connection"))
_UNET_FIXED = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
               "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}


def _unet_key_to_ldm(key: str, config: dict[str, Any]) -> str:
    """One diffusers UNet2DConditionModel key -> its name in an original SD checkpoint."""
    per = int(config["layers_per_block"]) + 1  # resnets per level, plus the downsampler slot
    parts = key.split(".")
    module, rest = ".".join(parts[:-1]), parts[-1]
    for old, new in _UNET_FIXED.items():
        if module == old:
            return f"{new}.{rest}"

    def resnet(tail: list[str]) -> str:
        return ".".join([dict(_RESNET_TO_LDM).get(tail[0], tail[0])] + tail[1:])

    if parts[0] == "down_blocks":
        b, kind = int(parts[1]), parts[2]
        if kind == "downsamplers":  # down_blocks.b.downsamplers.0.conv.* -> input_blocks.n.0.op.*
            return f"input_blocks.{1 + b * per + per - 1}.0.op.{parts[-1]}"
        n = 1 + b * per + int(parts[3])
        tail = parts[4:]
        return f"input_blocks.{n}.0.{resnet(tail)}" if kind == "resnets" else f"input_blocks.{n}.1.{'.'.join(tail)}"
    if parts[0] == "mid_block":
        i, tail = int(parts[2]), parts[3:]
        if parts[1] == "resnets":
            return f"middle_block.{2 * i}.{resnet(tail)}"
        return f"middle_block.1.{'.'.join(tail)}"
    if parts[0] == "up_blocks":
        b, kind = int(parts[1]), parts[2]
        has_attn = "CrossAttn" in config["up_block_types"][b]
        if kind == "upsamplers":  # after the block's last resnet (and its attention, if any)
            return f"output_blocks.{b * per + per - 1}.{2 if has_attn else 1}.conv.{parts[-1]}"
        n = b * per + int(parts[3])
        tail = parts[4:]
        return f"output_blocks.{n}.0.{resnet(tail)}" if kind == "resnets" else f"output_blocks.{n}.1.{'.'.join(tail)}"
    raise ValueError(f"no original-SD name for UNet key {key}")


def _vae_key_to_ldm(key: str, config: dict[str, Any]) -> tuple[str, bool]:
    """One diffusers AutoencoderKL key -> (its original SD name, whether it is a mid-attention
    linear weight that the original stores as a 1×1 convolution)."""
    n_up = len(config["up_block_types"])
    parts = key.split(".")
    fixed = {"conv_norm_out": "norm_out"}
    if parts[0] in ("quant_conv", "post_quant_conv"):
        return key, False
    side, rest = parts[0], parts[1:]
    if rest[0] in ("conv_in", "conv_out", "conv_norm_out"):
        return f"{side}.{fixed.get(rest[0], rest[0])}.{rest[-1]}", False
    if rest[0] in ("down_blocks", "up_blocks"):
        i = int(rest[1])
        level = f"down.{i}" if rest[0] == "down_blocks" else f"up.{n_up - 1 - i}"
        if rest[2] in ("downsamplers", "upsamplers"):
            return f"{side}.{level}.{'downsample' if rest[2] == 'downsamplers' else 'upsample'}.conv.{rest[-1]}", False
        tail = ".".join(rest[4:]).replace("conv_shortcut", "nin_shortcut")
        return f"{side}.{level}.block.{rest[3]}.{tail}", False
    if rest[0] == "mid_block":
        if rest[1] == "resnets":
            tail = ".".join(rest[3:]).replace("conv_shortcut", "nin_shortcut")
            return f"{side}.mid.block_{int(rest[2]) + 1}.{tail}", False
        names = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out": "proj_out"}
        layer = names[rest[3]]
        return f"{side}.mid.attn_1.{layer}.{rest[-1]}", layer != "norm" and rest[-1] == "weight"
    raise ValueError(f"no original-SD name for VAE key {key}")


def to_ldm_state_dict(unet: Any, vae: Any, text_encoder: Any) -> dict[str, Any]:
    """A base's components as one original-SD (LDM) state dict."""
    out: dict[str, Any] = {}
    ucfg = dict(unet.config)
    for k, v in unet.state_dict().items():
        out[UNET_PREFIX + _unet_key_to_ldm(k, ucfg)] = v
    vcfg = dict(vae.config)
    for k, v in vae.state_dict().items():
        name, conv = _vae_key_to_ldm(k, vcfg)
        out[VAE_PREFIX + name] = v[:, :, None, None] if conv else v
    for k, v in text_encoder.state_dict().items():
        out[TEXT_PREFIX + "text_model." + k.removeprefix("text_model.")] = v
    return out


def save_single_file(base_folder: str | Path, path: str | Path) -> Path:
    """Write a diffusers base folder as one original-SD `.safetensors` checkpoint (atomically)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextModel

    from ..fsutil import replace_durably, temp_sibling

    folder, path = Path(base_folder), Path(path)
    kw = {"local_files_only": True}
    sd = to_ldm_state_dict(UNet2DConditionModel.from_pretrained(folder / "unet", **kw),
                           AutoencoderKL.from_pretrained(folder / "vae", **kw),
                           CLIPTextModel.from_pretrained(folder / "text_encoder", **kw))
    tmp = temp_sibling(path, suffix=".safetensors")
    try:
        save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp), metadata={"format": "pt"})
        replace_durably(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
