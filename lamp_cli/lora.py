"""Image (style) LoRAs on a base: `--lora FILE[:WEIGHT]`.

A LoRA changes the base's 2-D layers (UNet and text encoder) before any motion is added, so the
video UNet is inflated from the styled UNet and the first frame is drawn with the same style.
Files are read in the formats people share, as diffusers reads them (diffusers/peft
`pytorch_lora_weights.safetensors`, kohya/A1111 `lora_unet_*` / `lora_te_*` keys), through
diffusers' LoRA loader, and then *fused* into the weights: W <- W + sum_i w_i * scale_i * B_i A_i.
Fusing keeps the UNet a plain UNet (no adapter layers at sampling time, no per-step cost) and makes
the result depend only on the files and weights, which the base's fingerprint records.
A LoRA of weight 0 is skipped, so it gives exactly the video of no LoRA.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import InvalidInput, NotFound, UsageError
from .tensorfile import file_sha256, read_state_dict

log = logging.getLogger("lamp")

LORA_SUFFIXES = (".safetensors", ".bin", ".pt", ".ckpt")


@dataclass(frozen=True)
class LoraSpec:
    """One LoRA asked for: its file and weight (the hash is filled in when it is read)."""

    path: Path
    weight: float = 1.0
    sha256: str = ""

    def record(self) -> dict[str, Any]:
        return {"path": str(self.path), "sha256": self.sha256, "weight": self.weight}


def parse_lora(spec: str | LoraSpec | tuple[Any, float]) -> LoraSpec:
    """`FILE`, `FILE:WEIGHT` (the weight after the last colon, if it is a number), a
    (path, weight) pair or a LoraSpec -> LoraSpec. The file is not opened here."""
    if isinstance(spec, LoraSpec):
        return spec
    if isinstance(spec, tuple):
        path, weight = spec
        return LoraSpec(Path(path).expanduser(), float(weight))
    text = str(spec).strip()
    if not text:
        raise UsageError("--lora needs a file: --lora FILE[:WEIGHT]")
    path, weight = text, 1.0
    head, sep, tail = text.rpartition(":")
    if sep and head:
        try:
            weight = float(tail)
            path = head
        except ValueError:  # a colon inside the path (C:\\...), no weight
            pass
    if weight != weight or weight in (float("inf"), float("-inf")):
        raise UsageError(f"--lora weight must be a finite number (got {tail})")
    return LoraSpec(Path(path).expanduser(), weight)


def parse_loras(specs: Any) -> list[LoraSpec]:
    """A list of specs (or None) -> LoraSpecs, in order."""
    if not specs:
        return []
    if isinstance(specs, (str, LoraSpec)):
        specs = [specs]
    return [parse_lora(s) for s in specs]


def resolve_loras(cli: list[str] | None) -> list[LoraSpec]:
    """The LoRAs of a command: `--lora` values, else `LAMP_LORA` (comma-separated), else config.toml's
    `lora` list (relative paths there are relative to the file's folder); `none` means no LoRA (it
    overrides the config). Each file must exist (checked now,
    before any model loads); it is read and hashed when the base loads."""
    from . import settings

    resolved = settings.resolve("lora", list(cli) if cli else None)
    out = parse_loras([s for s in resolved.value or [] if str(s).strip().lower() != "none"])
    if resolved.source == "config":  # relative paths in config.toml are relative to its folder
        folder = settings.config_path().parent
        out = [s if s.path.is_absolute() else LoraSpec(folder / s.path, s.weight) for s in out]
    for spec in out:
        if not spec.path.is_file():
            raise NotFound(f"LoRA file {spec.path} not found", hint="--lora takes FILE[:WEIGHT] of an existing file")
    return out


def read_lora(spec: LoraSpec) -> tuple[dict[str, Any], LoraSpec]:
    """The LoRA's tensors (safetensors, or a pickle through weights_only=True) and its spec with
    the file's sha256 filled in."""

    path = spec.path
    if not path.is_file():
        raise NotFound(f"LoRA file {path} not found", hint="pass an existing .safetensors file to --lora")
    if path.suffix.lower() not in LORA_SUFFIXES:
        raise InvalidInput(f"{path} is not a LoRA file (expected {', '.join(LORA_SUFFIXES)})")
    sd = read_state_dict(path, hint="use a .safetensors LoRA")
    if not any(("lora" in k.lower() or "hada_" in k or "lokr_" in k) for k in sd):
        raise InvalidInput(f"{path} is not a LoRA (no lora weights among its {len(sd)} tensors)",
                           hint="a full model checkpoint goes to --base, not --lora")
    return sd, LoraSpec(spec.path.resolve(), spec.weight, file_sha256(path))


def _lora_layers(module: Any, adapter: str) -> int:
    """How many layers of `module` carry the peft adapter `adapter`."""
    count = 0
    for m in module.modules():
        names = getattr(m, "lora_A", None)
        if names is not None and hasattr(names, "keys") and adapter in names.keys():
            count += 1
    return count


def _load_adapter(pipe: Any, sd: dict[str, Any], spec: LoraSpec, name: str) -> None:
    """Load one LoRA as peft adapter `name`, as `load_lora_weights` does, with text-encoder keys
    fitted to the installed transformers (which may name CLIP's layers without `text_model.`)."""
    kw: dict[str, Any] = {"return_lora_metadata": True}
    if spec.path.suffix.lower() == ".safetensors":  # by file: diffusers also reads its adapter metadata
        source: Any = str(spec.path.parent)
        kw.update(weight_name=spec.path.name, local_files_only=True)
    else:
        source = dict(sd)
    state_dict, alphas, metadata = pipe.lora_state_dict(source, **kw)
    if not all("lora" in k for k in state_dict):
        raise ValueError("some keys are not LoRA weights")
    if not hasattr(pipe.text_encoder, "text_model"):

        def fit(key: str) -> str:
            return key.replace("text_encoder.text_model.", "text_encoder.", 1)

        state_dict = {fit(k): v for k, v in state_dict.items()}
        alphas = {fit(k): v for k, v in alphas.items()} if alphas else alphas
    pipe.load_lora_into_unet(state_dict, network_alphas=alphas, unet=pipe.unet, adapter_name=name,
                             metadata=metadata, _pipeline=pipe)
    pipe.load_lora_into_text_encoder(state_dict, network_alphas=alphas, text_encoder=pipe.text_encoder,
                                     adapter_name=name, metadata=metadata, _pipeline=pipe)


@contextlib.contextmanager
def _quiet_diffusers() -> Iterator[None]:
    import diffusers

    level = diffusers.utils.logging.get_verbosity()
    diffusers.utils.logging.set_verbosity(logging.CRITICAL)
    try:
        with warnings.catch_warnings():  # a second LoRA is a second adapter, on purpose
            warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
            yield
    finally:
        diffusers.utils.logging.set_verbosity(level)


def _first_reason(e: Exception) -> str:
    """The informative line of a loader's error (a size mismatch, a missing module)."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    for line in lines:
        if "size mismatch" in line or "not found" in line:
            return line[:300]
    return (lines[0] if lines else type(e).__name__)[:300]


def apply_loras(base: Any, loras: list[LoraSpec]) -> list[LoraSpec]:
    """Fuse `loras` (weight-0 ones skipped) into `base.unet` and `base.text_encoder` in place;
    returns every spec with its sha256 (weight-0 ones included, for the record).

    InvalidInput when a file is not a LoRA, does not fit this base, or matches no layer.
    """
    import torch
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    read = [read_lora(s) for s in loras]  # every file is checked (and hashed) before any change
    active = [(sd, s) for sd, s in read if s.weight != 0]
    if active:
        from diffusers.utils import USE_PEFT_BACKEND

        if not USE_PEFT_BACKEND:
            raise InvalidInput("applying a LoRA needs the peft package (diffusers' LoRA backend)",
                               hint="pip install 'peft>=0.17'")
        pipe = StableDiffusionPipeline(
            vae=base.vae, text_encoder=base.text_encoder, tokenizer=base.tokenizer, unet=base.unet,
            scheduler=DDIMScheduler.from_config(base.scheduler_config), safety_checker=None,
            feature_extractor=None, requires_safety_checker=False,
        )
        names, weights = [], []
        try:
            for i, (sd, spec) in enumerate(active):
                name = f"lamp_lora_{i}"
                try:
                    with _quiet_diffusers():  # its own report of the failure would repeat ours
                        _load_adapter(pipe, sd, spec, name)
                except (ValueError, KeyError, RuntimeError, TypeError) as e:
                    raise InvalidInput(f"LoRA {spec.path} does not fit this base ({_first_reason(e)})",
                                       hint="use a LoRA trained for this base's architecture (SD-1.x)") from None
                if _lora_layers(base.unet, name) + _lora_layers(base.text_encoder, name) == 0:
                    raise InvalidInput(f"LoRA {spec.path} matches no layer of this base",
                                       hint="use a LoRA trained for this base's architecture (SD-1.x)")
                names.append(name)
                weights.append(float(spec.weight))
            pipe.set_adapters(names, adapter_weights=weights)
            with torch.no_grad():
                pipe.fuse_lora(components=["unet", "text_encoder"], lora_scale=1.0, adapter_names=names)
        finally:
            pipe.unload_lora_weights()  # the fused weights stay; the adapter layers go
    return [s for _, s in read]


def lora_fingerprint(base_fingerprint: str, loras: list[LoraSpec]) -> str:
    """The fingerprint of a base with LoRAs fused: the base's, plus every active LoRA's hash and
    weight, in order (no LoRA of nonzero weight: the base's own fingerprint)."""
    active = [(s.sha256, s.weight) for s in loras if s.weight != 0]
    if not active:
        return base_fingerprint
    doc = json.dumps({"base": base_fingerprint, "loras": active})
    return hashlib.sha256(doc.encode()).hexdigest()[:16]
