"""The inference engine: one path from (motion, prompt, first frame) to video frames.

`lamp gen`, `lamp animate`, `lamp edit` and `lamp eval` all sample through `Engine.sample`,
which follows the reference pipeline (docs/method.md "Sampling") step by step:

1. the first frame becomes a clean latent (center-crop, resize, VAE mean) that is never updated;
2. the other frames start from shared noise `eps_i = a*eps_0 + (1-a)*eps_i` (or given latents);
3. DDIM (eta 0) with classifier-free guidance, [uncond, cond] in one batched UNet call;
4. latent AdaIN after every step (frames 2.. -> frame 1 early, every frame -> frame 0 late) and
   once more after the loop;
5. chunked VAE decode, then per-channel pixel histogram matching of every frame to frame 0.

Videos longer than a motion's trained length are sampled as overlapping windows (see
`plan_windows` and docs/method.md "Sampling"). Frames are counted from 0 in this module.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from . import __version__
from .adapter import apply, reset_motion
from .devices import Placement, resolve_device, resolve_dtype
from .errors import InvalidInput
from .first_frame import FirstFrameGenerator
from .models.base import BaseComponents, load_base, quiet_hf_progress
from .progress import Reporter, reporter_or_null
from .requests import DEFAULT_ADAIN_SWITCH, ResolvedMotion, SampleRequest, as_resolved
from .sampling import (
    DEFAULT_DECODE_CHUNK,
    adain_final,
    adain_step,
    adain_switch_index,
    ddim_step_frames,
    decode_latents,
    default_overlap,
    encode_first_frame,
    guided_noise,
    image_digest,
    new_seed,
    noised,
    plan_windows,
    shared_noise_latents,
)
from .sampling import (
    histogram_match as match_histograms,
)
from .settings import DEFAULTS
from .video import load_image

if TYPE_CHECKING:  # torch is imported lazily so that `import lamp_cli.engine` stays cheap
    import torch

    from .adapter import MotionAdapter
    from .models.base import BaseComponents

log = logging.getLogger("lamp")

MotionLike = Union["ResolvedMotion", "MotionAdapter"]


@dataclass
class SampleResult:
    frames: np.ndarray  # F×H×W×3 uint8
    latents: Any  # torch.Tensor 1×4×F×h×w (float32, CPU), after the final AdaIN pass
    record: dict[str, Any] = field(default_factory=dict)  # every parameter, the seed, digests, timings


def check_sample_args(
    *,
    frames: int,
    width: int,
    height: int,
    steps: int,
    guidance: float,
    shared_noise: float,
    adain_switch: float = DEFAULT_ADAIN_SWITCH,
    seed: int | None = None,
) -> None:
    """Raise InvalidInput for values the engine cannot sample with (the checks of SampleRequest)."""
    SampleRequest(prompt="", frames=frames, width=width, height=height, steps=steps, guidance=guidance,
                  shared_noise=shared_noise, adain_switch=adain_switch, seed=seed)


# --------------------------------------------------------------------------------------------
# The engine
# --------------------------------------------------------------------------------------------
@dataclass
class _Motion:
    adapter: Any  # MotionAdapter
    name: str
    digest: str
    weight: float


class Engine:
    """Base components loaded once, one video UNet, adapters applied when the motion set changes.

    `Engine("tiny")`, `Engine("CompVis/stable-diffusion-v1-4", device="cuda", dtype="fp16")`, or
    `Engine(load_base(...))` to share already-loaded components (they are not moved or changed).
    `compile=True` wraps the video UNet in torch.compile; `offload=True` keeps every model on the
    CPU and moves each to the device only while it runs (for GPUs with little memory).
    `loras`: image LoRAs (`FILE[:WEIGHT]` or (path, weight)) fused into a base loaded here.
    """

    def __init__(
        self,
        base: str | BaseComponents = "tiny",
        device: str | Any = "auto",
        dtype: str | Any = "auto",
        *,
        compile: bool = False,
        offload: bool = False,
        first_frame_model: str | None = None,
        loras: Any = None,
        first_frame_round_trip: bool = False,
    ):
        import torch

        from .models.video_unet import VideoUNet

        t0 = time.perf_counter()
        quiet_hf_progress()
        if isinstance(base, BaseComponents):  # shared components: used where they are, never moved
            if loras:
                raise ValueError("loras apply when the engine loads the base; pass them to load_base instead")
            param = next(base.unet.parameters())
            dev = param.device if device in (None, "", "auto") else resolve_device(device)
            dt = param.dtype if dtype in (None, "", "auto") else resolve_dtype(dtype, dev)
            self.place = Placement(dev, dt, offload=offload)
            self.base = base
        else:
            dev = resolve_device(device)
            dt = resolve_dtype(dtype, dev)
            # The 2-D UNet is only needed for first frames: on an accelerator it waits on the CPU
            # so that the video UNet alone occupies the device's memory while sampling.
            self.place = Placement(dev, dt, offload=offload, park_unet2d=dev.type != "cpu")
            self.base = load_base(str(base), device="cpu", dtype=self.dtype, loras=loras)
            if not offload:
                self.base.text_encoder.to(self.device)
                self.base.vae.to(self.device)
        # The 2-D base stays as it is for first frames (text-to-image, image edits); the video
        # UNet is inflated from a copy of it.
        unet = copy.deepcopy(self.base.unet).to(dtype=self.dtype)
        self.video_unet = VideoUNet.from_unet2d(unet).eval()
        self.video_unet.requires_grad_(False)
        if not offload:
            self.video_unet.to(self.device)
        self._unet_call: Callable[..., Any] = self.video_unet
        if compile:
            self._unet_call = torch.compile(self.video_unet)
        self.compiled = compile
        self.first_frame_model = first_frame_model
        # True only to replay a video made before the base's own first-frame latent was kept
        self.first_frame_round_trip = first_frame_round_trip
        self._first_frames: Any = None  # first_frame.FirstFrameGenerator, built on first use
        self._applied: tuple[tuple[str, float], ...] = ()
        self.load_seconds = time.perf_counter() - t0

    # ---- models on the device -----------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.place.device

    @property
    def dtype(self) -> torch.dtype:
        return self.place.dtype

    @property
    def offload(self) -> bool:
        return self.place.offload

    def on_device(self, *modules: Any) -> contextlib.AbstractContextManager[None]:
        """With offload on, move `modules` to the device for the block and back to the CPU after."""
        return self.place.on_device(*modules)

    def unet2d(self) -> contextlib.AbstractContextManager[Any]:
        """The 2-D base UNet on the device for the block (first frames, image edits)."""
        return self.place.unet2d(self.base.unet)

    def park_base_unet(self) -> None:
        """Keep the 2-D base UNet on the CPU until a first frame needs it (frees device memory)."""
        if self.device.type != "cpu" and not self.offload:
            self.base.unet.to("cpu")
            self.place.park_unet2d = True

    # ---- motions --------------------------------------------------------------------------
    def resolve_motions(self, motions: Sequence[tuple[MotionLike, float]]) -> list[_Motion]:
        """(adapter, weight) pairs -> the engine's motions. Registry names are resolved before the
        engine (`lamp_cli.motions.load_motion`): the engine does not know the registry."""
        resolved = []
        for item, weight in motions:
            if isinstance(item, str):
                raise InvalidInput(
                    f"the engine takes adapters, not names ('{item}')",
                    hint="load it first: lamp_cli.motions.load_motion(name)",
                )
            r = as_resolved(item)
            resolved.append(_Motion(r.adapter, r.name, r.digest, float(weight)))
        return resolved

    def use_motions(self, motions: list[_Motion]) -> None:
        """Apply `motions` to the video UNet unless exactly this set is already applied.

        `adapter.apply` starts from the base every time, so a new set replaces the old one.
        """

        key = tuple((m.digest, m.weight) for m in motions)
        if key == self._applied:
            return
        self._applied = ()  # if apply fails half-way, the next call must not trust the cache
        if motions:
            apply([(m.adapter, m.weight) for m in motions], self.video_unet, base_fingerprint=self.base.fingerprint)
        else:
            reset_motion(self.video_unet)
        self._applied = key

    # ---- first frames -----------------------------------------------------------------------
    def first_frames(self) -> Any:
        """The text-to-image first-frame generator (SDXL by default, else this base), cached."""
        if self._first_frames is None:
            self._first_frames = FirstFrameGenerator(
                self.base, self.place, model=self.first_frame_model, round_trip=self.first_frame_round_trip
            )
        return self._first_frames

    def _first_frame_latent(
        self,
        first_frame: Any,
        prompt: str,
        *,
        width: int,
        height: int,
        steps: int,
        negative: str,
        seed: int,
        progress: Reporter | None,
    ) -> tuple[torch.Tensor, np.ndarray | None, dict[str, Any]]:
        """Any first-frame input -> (clean latent 1×4×h×w, its image if known, a record)."""
        import torch

        info: dict[str, Any]
        if isinstance(first_frame, torch.Tensor):
            z = first_frame.detach().float()
            if z.dim() == 3:  # 4×h×w -> 1×4×h×w
                z = z[None]
            elif z.dim() == 5:  # 1×4×F×h×w: the last frame, as the reference takes latents[:, :, -1:]
                z = z[:, :, -1]
            expected = (1, 4, height // self.base.vae_scale_factor, width // self.base.vae_scale_factor)
            if tuple(z.shape) != expected:
                raise InvalidInput(f"first-frame latent has shape {tuple(z.shape)}, expected {expected}")
            return z.to(self.device), None, {"source": "latent"}
        if first_frame is None:
            made = self.first_frames()(
                prompt, width=width, height=height, steps=steps, negative=negative, seed=seed, progress=progress
            )
            image, info = made.image, {"source": "text-to-image", **made.info, "vae_round_trip": made.latent is None}
            if made.latent is not None:  # drawn by this base: its latent as it is, no VAE round trip
                info["sha256"] = image_digest(image)
                return made.latent.to(self.device), image, info
        elif isinstance(first_frame, (str, Path)):
            image = load_image(first_frame)
            info = {"source": "image", "path": str(Path(first_frame).resolve())}
        else:
            image = np.asarray(first_frame)
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
                raise InvalidInput(f"first frame must be an H×W×3 uint8 image, got {image.dtype} {image.shape}")
            info = {"source": "array"}
        info["sha256"] = image_digest(image)
        with self.on_device(self.base.vae):
            z = encode_first_frame(self.base.vae, image, width, height, self.base.latent_scale)
        return z.to(self.device), image, info

    # ---- sampling ---------------------------------------------------------------------------
    def sample(
        self,
        motions: Sequence[tuple[MotionLike, float]],
        prompt: str,
        first_frame: Any = None,
        *,
        frames: int = DEFAULTS["frames"],
        width: int = DEFAULTS["width"],
        height: int = DEFAULTS["height"],
        steps: int = DEFAULTS["steps"],
        guidance: float = DEFAULTS["guidance"],
        negative: str = "",
        seed: int | None = None,
        shared_noise: float = DEFAULTS["shared_noise"],
        adain: bool = True,
        adain_switch: float = DEFAULT_ADAIN_SWITCH,
        histogram_match: bool = True,
        init_latents: torch.Tensor | None = None,
        overlap: int | None = None,
        first_frame_prompt: str | None = None,
        decode_chunk: int = DEFAULT_DECODE_CHUNK,
        clean_first_frame: bool = True,
        progress: Reporter | None = None,
        callback: Callable[[int, int, torch.Tensor], None] | None = None,
    ) -> SampleResult:
        """Sample one video. `first_frame`: an image (H×W×3 uint8 or a path), a clean latent
        (4×h×w), or None for a text-to-image first frame from `first_frame_prompt or prompt`.

        `init_latents` (1×4×F×h×w) replace shared noise as the starting point (editing from
        inverted latents); frame 0 is still the first frame's clean latent. `callback(i, t, latents)`
        runs after every step. Same inputs and seed give the same frames on the same device.
        `clean_first_frame=False` is the ablation of LAMP's first-frame conditioning: no first
        frame is made, and frame 0 is denoised from noise with the others (one window only).
        The values are checked once, as a `SampleRequest`; `run` takes one directly.
        """
        request = SampleRequest(
            prompt=prompt, negative=negative, first_frame_prompt=first_frame_prompt, frames=frames, width=width,
            height=height, steps=steps, guidance=guidance, shared_noise=shared_noise, seed=seed, adain=adain,
            adain_switch=adain_switch, histogram_match=histogram_match, overlap=overlap,
        )
        return self.run(request, motions, first_frame, init_latents=init_latents, decode_chunk=decode_chunk,
                        clean_first_frame=clean_first_frame, progress=progress, callback=callback)

    def run(
        self,
        request: SampleRequest,
        motions: Sequence[tuple[MotionLike, float]],
        first_frame: Any = None,
        *,
        init_latents: torch.Tensor | None = None,
        decode_chunk: int = DEFAULT_DECODE_CHUNK,
        clean_first_frame: bool = True,
        progress: Reporter | None = None,
        callback: Callable[[int, int, torch.Tensor], None] | None = None,
    ) -> SampleResult:
        """Sample the video `request` describes (already checked) with `motions` (adapters with
        weights; `lamp_cli.resolve.load_motions` turns names into them). See `sample`."""
        import torch

        t_total = time.perf_counter()
        r = request
        prompt, negative, first_frame_prompt = r.prompt, r.negative, r.first_frame_prompt
        frames, width, height, steps, guidance = r.frames, r.width, r.height, r.steps, r.guidance
        shared_noise, adain, adain_switch, histogram_match = r.shared_noise, r.adain, r.adain_switch, r.histogram_match
        overlap = r.overlap
        # 1. Pick the seed.
        seed = new_seed() if r.seed is None else int(r.seed)
        progress = reporter_or_null(progress)
        h, w = height // self.base.vae_scale_factor, width // self.base.vae_scale_factor

        # 2. Motions -> adapters on the video UNet; a long video is sampled in trained-length windows.
        resolved = self.resolve_motions(motions)
        self.use_motions(resolved)
        trained = min((m.adapter.frames for m in resolved if m.adapter.frames >= 2), default=frames)
        if init_latents is not None:
            if tuple(init_latents.shape) != (1, 4, frames, h, w):
                raise InvalidInput(
                    f"init_latents have shape {tuple(init_latents.shape)}, expected {(1, 4, frames, h, w)}"
                )
            trained = frames  # inverted latents are one window by construction
        window = min(trained, frames)
        overlap = default_overlap(window) if overlap is None else int(overlap)
        windows = plan_windows(frames, window, overlap)
        if not clean_first_frame and (len(windows) > 1 or init_latents is not None):
            raise InvalidInput("clean_first_frame=False works on one window from noise",
                               hint=f"ask for at most {window} frames and no init_latents")

        # 3. Text embeddings, once: [uncond (negative prompt), cond].
        with self.on_device(self.base.text_encoder):
            embeds = self.base.encode_prompt([negative, prompt]).to(self.device, self.dtype)

        # 4. The first frame's clean latent.
        t0 = time.perf_counter()
        if clean_first_frame:
            z0, _, first_info = self._first_frame_latent(
                first_frame, first_frame_prompt or prompt, width=width, height=height, steps=steps,
                negative=negative, seed=seed, progress=progress,
            )
        else:
            z0, first_info = None, {"source": "none (denoised with the other frames)"}
        first_frame_s = time.perf_counter() - t0

        # 5. Denoise window by window; each window's leading frames come from the previous one.
        generator = torch.Generator("cpu").manual_seed(seed)
        scheduler = self.base.ddim()
        scheduler.set_timesteps(steps)
        switch = adain_switch_index(steps, adain_switch)
        video = torch.zeros(1, 4, frames, h, w, device=self.device)
        if z0 is not None:
            video[:, :, 0] = z0
        step_times: list[float] = []
        progress.start("sample", steps * len(windows))
        t0 = time.perf_counter()
        with self.on_device(self.video_unet):
            for win in windows:
                known = video[:, :, win.start : win.start + win.context].clone()  # 1×4×context×h×w
                if init_latents is not None:
                    latents = init_latents.detach().float().to(self.device).clone()
                else:
                    latents = shared_noise_latents((1, 4, win.length, h, w), shared_noise, generator, self.device)
                latents = self._denoise_window(
                    latents, known, generator, scheduler, embeds, guidance=guidance, adain=adain,
                    switch=switch, progress=progress, callback=callback, step_times=step_times,
                    clean_first=clean_first_frame,
                )
                video[:, :, win.start : win.start + win.length] = latents
        progress.finish()
        denoise_s = time.perf_counter() - t0

        # 6. Decode in chunks; give every frame the first frame's colour histogram.
        t0 = time.perf_counter()
        with self.on_device(self.base.vae):
            pixels = decode_latents(self.base.vae, video, self.base.latent_scale, chunk=decode_chunk)
        if histogram_match:
            pixels = match_histograms(pixels, reference=0)  # frames 1.. to the decoded first frame
        decode_s = time.perf_counter() - t0

        # 7. The record: enough to make the same video again.
        record = {
            "lamp_version": __version__,
            "prompt": prompt,
            "negative": negative,
            "first_frame_prompt": first_frame_prompt,
            "first_frame": first_info,
            "motions": [{"name": m.name, "weight": m.weight, "digest": m.digest, "frames": m.adapter.frames} for m in resolved],
            "base": self.base.record(),
            "frames": frames,
            "width": width,
            "height": height,
            "steps": steps,
            "guidance": guidance,
            "seed": seed,
            "shared_noise": shared_noise if init_latents is None else None,
            "init_latents": init_latents is not None,
            "adain": adain,
            "adain_switch": adain_switch,
            "histogram_match": histogram_match,
            **({} if clean_first_frame else {"clean_first_frame": False}),
            "scheduler": "ddim, eta 0",
            "window": window,
            "overlap": overlap if len(windows) > 1 else 0,
            "windows": len(windows),
            "device": str(self.device),
            "dtype": str(self.dtype).replace("torch.", ""),
            "compile": self.compiled,
            "offload": self.offload,
            "timings": {
                "load_s": round(self.load_seconds, 4),
                "first_frame_s": round(first_frame_s, 4),
                "denoise_s": round(denoise_s, 4),
                "unet_step_s": round(float(np.mean(step_times)), 5) if step_times else None,
                "decode_s": round(decode_s, 4),
                "total_s": round(time.perf_counter() - t_total, 4),
            },
        }
        return SampleResult(frames=pixels, latents=video.cpu(), record=record)

    def _denoise_window(
        self,
        latents: torch.Tensor,
        known: torch.Tensor,
        generator: torch.Generator,
        scheduler: Any,
        embeds: torch.Tensor,
        *,
        guidance: float,
        adain: bool,
        switch: int,
        progress: Reporter,
        callback: Callable[[int, int, torch.Tensor], None] | None,
        step_times: list[float],
        clean_first: bool = True,
    ) -> torch.Tensor:
        """The DDIM loop over one window (latents 1×4×L×h×w; `known`: its first `context` frames).

        clean_first=False (ablation): frame 0 is noise denoised like the others.
        """
        import torch

        context = known.shape[2]
        if clean_first:
            latents[:, :, :1] = known[:, :, :1]  # the clean first frame, never updated
        ctx_noise = None
        if context > 1:
            # Known frames after the first one re-enter at each step's noise level (fixed noise).
            ctx_noise = torch.randn(tuple(known[:, :, 1:].shape), generator=generator).to(self.device)
            latents[:, :, 1:context] = noised(scheduler, known[:, :, 1:], ctx_noise, int(scheduler.timesteps[0]))
        cfg = guidance != 1.0
        text = embeds if cfg else embeds[1:]
        step_ratio = scheduler.config.num_train_timesteps // scheduler.num_inference_steps
        for i, t in enumerate(scheduler.timesteps):
            t_step = time.perf_counter()
            model_in = torch.cat([latents, latents]) if cfg else latents  # (2,4,L,h,w): [uncond, cond]
            with torch.no_grad():
                noise_pred = self._unet_call(model_in.to(self.dtype), t, text).float()
            noise_pred = guided_noise(noise_pred, guidance) if cfg else noise_pred
            ddim_step_frames(scheduler, noise_pred, t, latents, first=1 if clean_first else 0)
            if adain:
                adain_step(latents, late=i >= switch)
            if ctx_noise is not None:
                latents[:, :, 1:context] = noised(scheduler, known[:, :, 1:], ctx_noise, int(t) - step_ratio)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            step_times.append(time.perf_counter() - t_step)
            if callback is not None:
                callback(i, int(t), latents)
            progress.advance(1, t=int(t))
        if adain:
            adain_final(latents)
        if context > 1:  # the known frames are the previous window's output, exactly
            latents[:, :, 1:context] = known[:, :, 1:]
        return latents
