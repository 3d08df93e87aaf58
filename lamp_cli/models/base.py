"""Load a base text-to-image model's components: an HF repo id (from the local cache only),
a local diffusers folder, a single-file SD-1.x checkpoint (`.safetensors`/`.ckpt`, converted once
into lamp's cache, see `models/single_file.py`), or a built-in (`tiny`, `toy`); optionally with
image LoRAs fused into its UNet and text encoder (`lamp_cli/lora.py`).

lamp never downloads weights at run time: a base that is not on disk raises `BaseModelMissing`
with the `hf download ...` command that fetches it once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BaseModelMissing, InvalidInput
from ..lora import apply_loras, lora_fingerprint, parse_loras
from ..settings import lamp_home
from .names import ADDED_MODULES
from .single_file import converted_folder, is_single_file
from .tiny import SD_SCHEDULER_CONFIG, save_tiny_base

log = logging.getLogger("lamp")

BUILTIN_BASES = ("tiny", "toy")


@dataclass
class BaseComponents:
    """Everything lamp needs from a base model; loaded once per process and shared."""

    spec: str  # what the user asked for: repo id, folder, "tiny" or "toy"
    path: Path  # the diffusers folder it was loaded from
    unet: Any  # diffusers UNet2DConditionModel (2-D, frozen)
    vae: Any  # diffusers AutoencoderKL
    text_encoder: Any  # transformers CLIPTextModel
    tokenizer: Any  # transformers CLIPTokenizer
    scheduler_config: dict[str, Any]  # the base's scheduler config (DDIM/DDPM are built from it)
    fingerprint: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """What sidecars and caches record of the base: spec and fingerprint, plus a single file's
        sha256 and every LoRA (path, sha256, weight) when there are any."""
        out: dict[str, Any] = {"spec": self.spec, "fingerprint": self.fingerprint}
        if self.extra.get("sha256"):
            out["sha256"] = self.extra["sha256"]
        if self.extra.get("loras"):
            out["loras"] = list(self.extra["loras"])
        return out

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def latent_scale(self) -> float:
        return float(self.vae.config.scaling_factor)

    def ddim(self):
        from diffusers import DDIMScheduler

        return DDIMScheduler.from_config(self.scheduler_config)

    def ddpm(self):
        from diffusers import DDPMScheduler

        return DDPMScheduler.from_config(self.scheduler_config)

    def encode_prompt(self, prompts: list[str]):
        """Text embeddings (N×77×D) from the frozen encoder, padded to the tokenizer's length."""
        import torch

        tok = self.tokenizer(
            prompts,
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        )
        device = next(self.text_encoder.parameters()).device
        with torch.no_grad():
            return self.text_encoder(tok.input_ids.to(device))[0]


def builtin_dir(name: str) -> Path:
    """Where a built-in base lives on disk (`tiny` is created on first use)."""
    if name == "toy":
        return Path(__file__).resolve().parent.parent / "toy" / "base"
    if name == "tiny":
        return lamp_home() / "bases" / "tiny"
    raise KeyError(name)


def _ensure_tiny(folder: Path) -> Path:
    if (folder / "model_index.json").exists():
        return folder
    import shutil
    import tempfile

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tiny-", dir=folder.parent))
    try:
        save_tiny_base(tmp)
        try:
            os.replace(tmp, folder)
        except OSError:  # another process won the race; theirs is identical
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def resolve_base_path(spec: str) -> Path:
    """The local diffusers folder for a base spec, or `BaseModelMissing`."""
    if spec == "tiny":
        return _ensure_tiny(builtin_dir("tiny"))
    if spec == "toy":
        folder = builtin_dir("toy")
        if not (folder / "unet").exists():
            raise BaseModelMissing("toy", "the toy base is not part of this installation")
        return folder
    p = Path(spec).expanduser()
    if is_single_file(spec) or p.is_file():
        return converted_folder(p, _builtin_or_none)[0]
    if p.exists():
        if not (p / "unet").is_dir():
            raise InvalidInput(
                f"{p} is not a diffusers model folder (no unet/ inside)",
                hint="pass the folder that holds unet/, vae/, text_encoder/, tokenizer/",
            )
        return p
    if spec.count("/") != 1 or spec.startswith((".", "/", "~")):
        raise BaseModelMissing(spec, "no such folder, and not a Hugging Face repo id")
    try:
        from huggingface_hub import snapshot_download

        local = snapshot_download(spec, local_files_only=True)
    except Exception as e:  # LocalEntryNotFoundError and friends
        raise BaseModelMissing(spec, "not in the local Hugging Face cache") from e
    return Path(local)


def canonical_spec(spec: str) -> str:
    """A base spec as recorded: a checkpoint file by its absolute path, anything else as given."""
    if spec not in BUILTIN_BASES and (is_single_file(spec) or Path(spec).expanduser().is_file()):
        return str(Path(spec).expanduser().resolve())
    return spec


def _builtin_or_none(name: str) -> Path | None:
    """A built-in base's folder for single-file conversion, or None (e.g. toy not installed)."""
    try:
        return resolve_base_path(name)
    except BaseModelMissing:
        return None


def _subfolder_files(folder: Path) -> dict[str, Path]:
    return {sub: folder / sub for sub in ("unet", "vae", "text_encoder", "tokenizer", "scheduler")}


def load_base(spec: str = "tiny", device: str | Any = "cpu", dtype: Any = None, loras: Any = None) -> BaseComponents:
    """Load a base model's UNet, VAE, text encoder, tokenizer and scheduler config.

    `spec`: "tiny", "toy", a local diffusers folder, a single-file SD-1.x checkpoint, or an HF repo
    id present in the local cache. `loras`: LoRA specs (`FILE[:WEIGHT]`, (path, weight) pairs or
    `lora.LoraSpec`s) fused into the UNet and text encoder, in float32, before the cast.
    All modules are frozen (eval mode, no grad) and moved to `device`/`dtype`.
    """
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    quiet_hf_progress()
    lora_specs = parse_loras(loras)
    extra: dict[str, Any] = {}
    if spec not in BUILTIN_BASES and (is_single_file(spec) or Path(spec).expanduser().is_file()):
        folder, extra["sha256"] = converted_folder(spec, _builtin_or_none)
        spec = canonical_spec(spec)  # sidecars and manifests name the file itself
    else:
        folder = resolve_base_path(spec)
    subs = _subfolder_files(folder)
    missing = [name for name, p in subs.items() if name != "scheduler" and not p.exists()]
    if missing:
        raise BaseModelMissing(spec, f"missing {', '.join(missing)} in {folder}")
    dtype = dtype or torch.float32
    kw = {"local_files_only": True}
    # The UNet loads in float32 first so its fingerprint does not depend on the dtype asked for
    # (a bf16 load must match the fp32 fingerprint recorded in adapters); then it is cast.
    unet = UNet2DConditionModel.from_pretrained(subs["unet"], torch_dtype=torch.float32, **kw)
    unet_fingerprint = fingerprint(unet)
    vae = AutoencoderKL.from_pretrained(subs["vae"], torch_dtype=dtype, **kw)
    # With LoRAs the text encoder, like the UNet, is fused in float32 and cast after.
    text_dtype = torch.float32 if lora_specs else dtype
    text_encoder = CLIPTextModel.from_pretrained(subs["text_encoder"], torch_dtype=text_dtype, **kw)
    tokenizer = CLIPTokenizer.from_pretrained(subs["tokenizer"], **kw)
    sched_file = subs["scheduler"] / "scheduler_config.json"
    if sched_file.exists():
        scheduler_config = json.loads(sched_file.read_text())
    else:
        log.warning("no scheduler config in %s; using SD-1.4's", folder)
        scheduler_config = dict(SD_SCHEDULER_CONFIG)
    base = BaseComponents(
        spec=spec, path=folder, unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
        scheduler_config=scheduler_config, fingerprint=unet_fingerprint, extra=extra,
    )
    if lora_specs:
        lora_specs = apply_loras(base, lora_specs)
        extra["loras"] = [s.record() for s in lora_specs]
        extra["base_fingerprint"] = unet_fingerprint  # the base's own, before the LoRAs
        base.fingerprint = lora_fingerprint(unet_fingerprint, lora_specs)
    unet.to(dtype=dtype)
    text_encoder.to(dtype=dtype)
    for m in (unet, vae, text_encoder):
        m.requires_grad_(False)
        m.eval()
        m.to(device)
    return base


def quiet_hf_progress() -> None:
    """Turn off diffusers'/transformers' own tqdm bars: lamp draws one bar of its own."""
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.set_verbosity_error()


def fingerprint(unet: Any) -> str:
    """A stable short hash of a 2-D UNet: its architecture config and a sample of its weights.

    Two loads of the same checkpoint give the same fingerprint on any device and dtype
    (weights are sampled in float32 and rounded to fp16 precision); another fine-tune differs.
    """
    import torch

    config = {k: v for k, v in dict(unet.config).items() if not k.startswith("_")}
    h = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    for name, tensor in sorted(unet.state_dict().items()):
        # Only base tensors: keys the inflation adds would change the fingerprint of the same base.
        if any(part in name for part in ADDED_MODULES):
            continue
        name = name.replace(".conv2d.", ".")
        flat = tensor.detach().reshape(-1)
        # float32 linspace rounds n-1 up to n for tensors of more than 2^24 elements (SD-1.x's
        # 1280×2560×3×3 convolutions): clamp, which leaves every index that was in range as it was.
        idx = torch.linspace(0, flat.numel() - 1, steps=min(16, flat.numel())).long().clamp_(max=flat.numel() - 1)
        sample = flat[idx.to(flat.device)].float().cpu().to(torch.float16)
        h.update(name.encode())
        h.update(sample.numpy().tobytes())
    return h.hexdigest()[:16]


def architecture_of(unet_config: dict[str, Any]) -> str:
    """lamp's name for a UNet architecture family (adapters only apply within one)."""
    cross = unet_config.get("cross_attention_dim")
    blocks = tuple(unet_config.get("block_out_channels", ()))
    if cross == 768 and blocks == (320, 640, 1280, 1280):
        return "sd1-unet"
    return "unet2d-" + hashlib.sha256(
        json.dumps({"blocks": list(blocks), "cross": cross, "layers": unet_config.get("layers_per_block")}).encode()
    ).hexdigest()[:8]


def replay_base_record(record: dict[str, Any]) -> tuple[str, list[Any]]:
    """(base spec, LoRA specs) that make a recorded base again (`--from-sidecar`).

    Refuses (InvalidInput) when the recorded single-file checkpoint or a recorded LoRA is missing
    or no longer has the recorded sha256: the video could not be made again.
    """
    from ..lora import LoraSpec
    from ..tensorfile import file_sha256 as lora_sha256

    spec = str(record["spec"])
    want = record.get("sha256")
    if want:
        path = Path(spec)
        if not path.is_file():
            raise InvalidInput(f"the video's base checkpoint {spec} is missing",
                               hint="put the file back where it was to make the video again")
        from .single_file import file_sha256

        if file_sha256(path) != want:
            raise InvalidInput(f"the base checkpoint {spec} changed since the video was made (sha256 differs)",
                               hint="restore the original file to make the video again")
    loras = []
    for item in record.get("loras") or []:
        path = Path(item["path"])
        if not path.is_file():
            raise InvalidInput(f"the video's LoRA {path} is missing",
                               hint="put the file back where it was to make the video again")
        if item.get("sha256") and lora_sha256(path) != item["sha256"]:
            raise InvalidInput(f"the LoRA {path} changed since the video was made (sha256 differs)",
                               hint="restore the original file to make the video again")
        loras.append(LoraSpec(path, float(item["weight"])))
    return spec, loras
