"""First frames: text-to-image (the paper uses SDXL) and image-to-image edits of a frame.

The configured model (`first_frame_model`, default SDXL base 1.0) is loaded from the local cache
only. When it is not there, the first frame comes from the video's own base model (a plain DDIM
text-to-image loop) and a warning says so: a worse first frame is never produced silently.
`image_to_image` (SDEdit: noise an image's latent to a strength, denoise with the base) is what
`lamp edit` uses to restyle a video's first frame. Everything here takes the base's components
and a `Placement` (where they run), not an engine.
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from . import settings
from .errors import BaseModelMissing, InvalidInput
from .models.base import quiet_hf_progress, resolve_base_path
from .progress import Reporter, reporter_or_null
from .sampling import decode_latents, encode_first_frame, guided_noise
from .video import resize_center_crop

if TYPE_CHECKING:
    import torch

    from .devices import Placement
    from .models.base import BaseComponents

log = logging.getLogger("lamp")

# Guidance for still images: the usual SD/SDXL value. The video's 12.5 (the reference's) is
# tuned for the motion model and over-saturates single images.
FIRST_FRAME_GUIDANCE = 7.5
# A large T2I model (SDXL) is sampled near its native ~1 megapixel, then cropped and resized.
NATIVE_PIXELS = 1024 * 1024


def first_frame_seed(seed: int) -> int:
    """The text-to-image seed derived from the video's seed.

    Not the seed itself: the image's initial noise would then equal the shared noise component
    of the video's frames (both are the generator's first draws), coupling the two.
    """
    digest = hashlib.sha256(f"lamp-first-frame:{int(seed)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % 2**63


def native_size(width: int, height: int, pixels: int = NATIVE_PIXELS) -> tuple[int, int]:
    """`width`×`height` scaled to about `pixels` pixels, multiples of 64 (SDXL's native scale)."""
    s = math.sqrt(pixels / (width * height))
    return max(64, int(round(width * s / 64)) * 64), max(64, int(round(height * s / 64)) * 64)


def denoise_2d(
    unet: Any,
    latents: torch.Tensor,
    scheduler: Any,
    timesteps: Any,
    embeds: torch.Tensor,
    guidance: float,
    progress: Reporter | None = None,
) -> torch.Tensor:
    """DDIM (eta 0) with classifier-free guidance on 1×4×h×w latents; `embeds` = [uncond, cond]."""
    import torch

    progress = reporter_or_null(progress)
    dtype = next(unet.parameters()).dtype
    for t in timesteps:
        model_in = torch.cat([latents, latents]).to(dtype)  # (2,4,h,w): [uncond, cond]
        with torch.no_grad():
            noise_pred = unet(model_in, t, encoder_hidden_states=embeds.to(dtype)).sample.float()
        latents = scheduler.step(guided_noise(noise_pred, guidance), t, latents, eta=0.0).prev_sample
        progress.advance(1, t=int(t))
    return latents


@dataclass
class FirstFrame:
    """A text-to-image first frame: the image, how it was made, and, when the video's own base
    drew it, its clean latent (1×4×h×w). The engine starts the video from that latent as it is:
    decoding and encoding it again would put frame 1 through a lossy VAE round trip (on the toy
    base it turns small stars into discs, docs/method.md)."""

    image: np.ndarray
    info: dict[str, Any]
    latent: torch.Tensor | None = None

    @property
    def for_sampling(self) -> Any:
        """What `Engine.sample` takes as this first frame: the base's latent, else the image."""
        return self.image if self.latent is None else self.latent


def base_text_to_latent(
    base: BaseComponents,
    place: Placement,
    prompt: str,
    *,
    width: int,
    height: int,
    steps: int,
    seed: int,
    negative: str = "",
    guidance: float = FIRST_FRAME_GUIDANCE,
    progress: Reporter | None = None,
) -> torch.Tensor:
    """A clean 1×4×h×w latent from the base model: plain DDIM text-to-image."""
    import torch

    h, w = height // base.vae_scale_factor, width // base.vae_scale_factor
    generator = torch.Generator("cpu").manual_seed(int(seed))
    scheduler = base.ddim()
    scheduler.set_timesteps(steps)
    latents = torch.randn((1, 4, h, w), generator=generator).to(place.device) * scheduler.init_noise_sigma
    with place.on_device(base.text_encoder):
        embeds = base.encode_prompt([negative, prompt]).to(place.device)
    progress = reporter_or_null(progress)
    progress.start("first frame", steps)
    with place.unet2d(base.unet) as unet:
        latents = denoise_2d(unet, latents, scheduler, scheduler.timesteps, embeds, guidance, progress)
    progress.finish()
    return latents


def decode_first_frame(base: BaseComponents, place: Placement, latent: torch.Tensor) -> np.ndarray:
    """A 1×4×h×w latent as a W×H×3 uint8 image."""
    with place.on_device(base.vae):
        return decode_latents(base.vae, latent[:, :, None], base.latent_scale)[0]  # (1,4,1,h,w) -> frame 0


def base_text_to_image(base: BaseComponents, place: Placement, prompt: str, **kw: Any) -> np.ndarray:
    """A W×H×3 uint8 image from the base model (`base_text_to_latent`'s keywords)."""
    return decode_first_frame(base, place, base_text_to_latent(base, place, prompt, **kw))


def image_to_image(
    base: BaseComponents,
    place: Placement,
    image: np.ndarray,
    prompt: str,
    *,
    strength: float = 0.6,
    steps: int = 50,
    guidance: float = FIRST_FRAME_GUIDANCE,
    negative: str = "",
    seed: int = 0,
    width: int | None = None,
    height: int | None = None,
    progress: Reporter | None = None,
) -> np.ndarray:
    """SDEdit with the base model: the image's latent noised to `strength` (0 = unchanged,
    1 = pure noise) and denoised toward `prompt`. Returns W×H×3 uint8 (default: the image's size
    rounded down to multiples of 8; center-cropped when the aspect differs).
    """
    import torch

    if not 0.0 <= strength <= 1.0:
        raise InvalidInput(f"strength must be in [0, 1] (got {strength})")
    f = base.vae_scale_factor
    width = width or (image.shape[1] // f) * f
    height = height or (image.shape[0] // f) * f
    if width < f or height < f or width % f or height % f:
        raise InvalidInput(f"image edit size must be positive multiples of {f} (got {width}×{height})")
    with place.on_device(base.vae):
        z = encode_first_frame(base.vae, image, width, height, base.latent_scale).to(place.device)
    scheduler = base.ddim()
    scheduler.set_timesteps(steps)
    # As diffusers' img2img: skip the first (1 - strength) of the schedule.
    n = min(int(round(steps * strength)), steps)
    timesteps = scheduler.timesteps[steps - n :]
    if n > 0:
        generator = torch.Generator("cpu").manual_seed(int(seed))
        noise = torch.randn(tuple(z.shape), generator=generator).to(place.device)
        z = scheduler.add_noise(z, noise, timesteps[:1].to(place.device))
        with place.on_device(base.text_encoder):
            embeds = base.encode_prompt([negative, prompt]).to(place.device)
        progress = reporter_or_null(progress)
        progress.start("edit frame", n)
        with place.unet2d(base.unet) as unet:
            z = denoise_2d(unet, z, scheduler, timesteps, embeds, guidance, progress)
        progress.finish()
    return decode_first_frame(base, place, z)


class FirstFrameGenerator:
    """Text-to-image first frames with the configured model, or the base as a visible fallback."""

    def __init__(self, base: BaseComponents, place: Placement, model: str | None = None, *, round_trip: bool = False):
        """`round_trip`: return no latent even where the base drew the frame, so that the video
        starts from the image encoded again (as earlier versions did: replays of their sidecars)."""
        self.base = base
        self.place = place
        self.round_trip = round_trip
        chosen = settings.resolve("first_frame_model", model)
        self.model = chosen.value
        extra = getattr(base, "extra", None) or {}
        styled = bool(extra.get("sha256")) or any(x.get("weight") for x in extra.get("loras") or [])
        if chosen.source == "default" and styled:
            # A fine-tune or LoRA-styled base draws its own first frames, in its own style (SDXL
            # would not know it); setting first_frame_model explicitly overrides this.
            self.model = "base"
        self._pipe: Any = None
        self._fallback_reason: str | None = None

    def uses_base(self) -> bool:
        return self.model in ("", "base", self.base.spec)

    def _pipeline(self) -> Any:
        """The configured pipeline, or None (with a warning, once) when it cannot be loaded locally."""
        if self._pipe is not None or self._fallback_reason is not None or self.uses_base():
            return self._pipe

        try:
            folder = resolve_base_path(self.model)
            from diffusers import AutoPipelineForText2Image

            quiet_hf_progress()
            pipe = AutoPipelineForText2Image.from_pretrained(
                folder, torch_dtype=self.place.dtype, local_files_only=True
            )
        except BaseModelMissing:
            self._fallback_reason = f"first-frame model '{self.model}' is not in the local cache"
        except Exception as e:  # a broken or unsupported pipeline folder
            self._fallback_reason = f"cannot load first-frame model '{self.model}': {e}"
        else:
            pipe.set_progress_bar_config(disable=True)
            if self.place.offload:
                pipe.enable_model_cpu_offload(device=self.place.device)
            else:
                pipe.to(self.place.device)
            self._pipe = pipe
            return pipe
        log.warning(
            "%s; making the first frame with the base model '%s' instead (lower quality). "
            "Download the model once with `hf download %s`, set first_frame_model, or pass --first-frame IMG.",
            self._fallback_reason, self.base.spec, self.model,
        )
        return None

    def __call__(
        self,
        prompt: str,
        *,
        width: int,
        height: int,
        steps: int,
        seed: int,
        negative: str = "",
        progress: Reporter | None = None,
    ) -> FirstFrame:
        """A W×H×3 uint8 first frame, a record of how it was made, and the base's latent when the
        base drew it."""
        import torch

        image_seed = first_frame_seed(seed)
        info: dict[str, Any] = {"prompt": prompt, "seed": image_seed, "steps": steps, "guidance": FIRST_FRAME_GUIDANCE}
        pipe = self._pipeline()
        if pipe is None:
            latent = base_text_to_latent(
                self.base, self.place, prompt, width=width, height=height, steps=steps, seed=image_seed,
                negative=negative, progress=progress,
            )
            info["model"] = self.base.spec
            info["fallback"] = not self.uses_base()
            return FirstFrame(decode_first_frame(self.base, self.place, latent), info, None if self.round_trip else latent)
        progress = reporter_or_null(progress)
        progress.start("first frame", steps)
        gw, gh = native_size(width, height)

        def _advance(_pipe: Any, _i: int, _t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
            progress.advance(1)
            return kwargs

        out = pipe(
            prompt=prompt,
            negative_prompt=negative or None,
            width=gw,
            height=gh,
            num_inference_steps=steps,
            guidance_scale=FIRST_FRAME_GUIDANCE,
            generator=torch.Generator("cpu").manual_seed(image_seed),
            output_type="np",
            callback_on_step_end=_advance,
        )
        progress.finish()
        image = (np.clip(out.images[0], 0, 1) * 255).round().astype(np.uint8)
        info.update({"model": self.model, "fallback": False, "size": [gw, gh]})
        return FirstFrame(resize_center_crop(image, width, height), info)
