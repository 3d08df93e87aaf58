"""The inference engine: one path from (motion, prompt, first frame) to video frames.

`lamp gen`, `lamp animate`, `lamp edit` and `lamp eval` all sample through `Engine.sample`,
which follows the reference pipeline (LAMP_REFERENCE §5) step by step:

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
import hashlib
import logging
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from . import __version__
from .errors import InvalidInput
from .progress import Reporter, reporter_or_null

if TYPE_CHECKING:  # torch is imported lazily so that `import lamp_cli.engine` stays cheap
    import torch

    from .adapter import MotionAdapter
    from .models.base import BaseComponents

log = logging.getLogger("lamp")

ADAIN_EPS = 1e-8  # added to the (unbiased) variance, as the reference does
# The reference switches the AdaIN target after step index 30 of 50: 31 early steps = 0.62.
DEFAULT_ADAIN_SWITCH = 0.62
DEFAULT_DECODE_CHUNK = 8  # frames per VAE decode call: bounds decoder activation memory
MAX_SEED = 2**63 - 1

MotionLike = Union[str, "MotionAdapter"]


@dataclass
class SampleResult:
    frames: np.ndarray  # F×H×W×3 uint8
    latents: Any  # torch.Tensor 1×4×F×h×w (float32, CPU), after the final AdaIN pass
    record: dict[str, Any] = field(default_factory=dict)  # every parameter, the seed, digests, timings


@dataclass(frozen=True)
class Window:
    """One chunk of a long video, sampled as one pass of the video UNet."""

    start: int  # index in the output video of this window's frame 0
    length: int  # frames in the window, frame 0 included
    context: int  # leading frames already known (frame 0 clean; 1..context-1 re-noised each step)


# --------------------------------------------------------------------------------------------
# Device and dtype
# --------------------------------------------------------------------------------------------
DTYPES = {"fp32": "float32", "float32": "float32", "fp16": "float16", "float16": "float16",
          "half": "float16", "bf16": "bfloat16", "bfloat16": "bfloat16"}


DEVICE_KINDS = ("cpu", "cuda", "mps")


def resolve_device(device: str | Any = "auto") -> torch.device:
    """`auto` (or None) -> cuda, else mps, else cpu; an explicit cpu, cuda, cuda:N or mps must
    exist here. The one device resolver: engine, training, eval and benchmarks all use it."""
    import torch

    if isinstance(device, torch.device):
        return device
    device = str(device or "auto").strip().lower()
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if mps else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise InvalidInput(f"unknown device '{device}'", hint="use auto, cpu, cuda, cuda:N or mps") from e
    if dev.type not in DEVICE_KINDS:
        raise InvalidInput(f"unknown device '{device}'", hint="use auto, cpu, cuda, cuda:N or mps")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInput(f"device '{device}' requested but CUDA is not available", hint="use --device cpu or auto")
    if dev.type == "mps" and not mps:
        raise InvalidInput(f"device '{device}' requested but Apple MPS is not available", hint="use --device cpu or auto")
    return dev


def resolve_dtype(dtype: str | Any, device: torch.device | None = None) -> torch.dtype:
    """`auto` -> float16 on CUDA/MPS (the reference runs SD in fp16), float32 on CPU (or when no
    device is given); fp32/fp16/bf16 and their long names otherwise. The one dtype resolver."""
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "", "auto"):
        return torch.float32 if device is None or device.type == "cpu" else torch.float16
    name = DTYPES.get(str(dtype).lower())
    if name is None:
        raise InvalidInput(f"unknown dtype '{dtype}'", hint="use auto, fp32, fp16 or bf16")
    return getattr(torch, name)


def new_seed() -> int:
    """A fresh random seed (recorded with every video, so any video can be made again)."""
    return secrets.randbelow(2**31)


# --------------------------------------------------------------------------------------------
# Input checks (cheap; the CLI runs them before any model loads)
# --------------------------------------------------------------------------------------------
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
    """Raise InvalidInput for values the engine cannot sample with."""
    if frames < 2:
        raise InvalidInput(f"--frames must be at least 2 (got {frames})", hint="a video needs a first frame and at least one more")
    for what, v in (("width", width), ("height", height)):
        if v < 8 or v % 8:
            raise InvalidInput(f"--{what} must be a positive multiple of 8 (got {v})", hint="the VAE works on 8×8 pixel blocks; try 512×320")
    if steps < 1:
        raise InvalidInput(f"--steps must be at least 1 (got {steps})")
    if not np.isfinite(guidance) or guidance < 0:
        raise InvalidInput(f"--guidance must be a number >= 0 (got {guidance})")
    if not 0.0 <= shared_noise <= 1.0:
        raise InvalidInput(f"--shared-noise must be in [0, 1] (got {shared_noise})")
    if not 0.0 <= adain_switch <= 1.0:
        raise InvalidInput(f"adain_switch must be a fraction in [0, 1] (got {adain_switch})")
    if seed is not None and not 0 <= int(seed) <= MAX_SEED:
        raise InvalidInput(f"--seed must be in [0, 2^63-1] (got {seed})")


# --------------------------------------------------------------------------------------------
# Step functions (pure: tensors in, tensors out)
# --------------------------------------------------------------------------------------------
def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """H×W×3 uint8 -> 1×3×H×W float32 in [-1, 1] (the VAE's input range)."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None]  # (H,W,3) -> (1,3,H,W)
    return x.float() / 127.5 - 1.0


def encode_first_frame(vae: Any, image: np.ndarray, width: int, height: int, latent_scale: float) -> torch.Tensor:
    """The first frame's clean latent, 1×4×(H/8)×(W/8) float32 on the VAE's device.

    Center-crop to the output aspect and resize to W×H, then the VAE posterior *mean* times the
    latent scale. (The reference draws a sample with the unseeded global RNG; the mean makes the
    first frame deterministic.)
    """
    import torch

    from .video import resize_center_crop

    image = resize_center_crop(image, width, height)
    param = next(vae.parameters())
    x = image_to_tensor(image).to(param.device, param.dtype)
    with torch.no_grad():
        z = vae.encode(x).latent_dist.mean
    return z.float() * latent_scale


def shared_noise_latents(
    shape: Sequence[int], shared: float, generator: torch.Generator, device: Any = "cpu"
) -> torch.Tensor:
    """Initial noise B×C×F×h×w with `eps_f = a*eps_0 + (1-a)*eps_f` for frames f >= 1.

    Drawn on the CPU from `generator` (the same seed gives the same noise on any device).
    Not renormalised, as in the reference: with a = 0.2 each frame has std sqrt(0.04 + 0.64)
    = 0.825 and two frames correlate by 0.04 / 0.68 = 0.059. Frame 0 keeps eps_0; the caller
    replaces it with the clean first-frame latent. a = 0 gives independent frames.
    """
    import torch

    eps = torch.randn(tuple(shape), generator=generator, dtype=torch.float32)
    if shared > 0:
        eps[:, :, 1:] = shared * eps[:, :, :1] + (1.0 - shared) * eps[:, :, 1:]
    return eps.to(device)


def frame_stats(x: torch.Tensor, eps: float = ADAIN_EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-frame, per-channel mean and std over H×W of B×C×F×h×w latents (unbiased var + eps)."""
    mean = x.mean(dim=(-2, -1), keepdim=True)
    std = (x.var(dim=(-2, -1), keepdim=True, unbiased=True) + eps).sqrt()
    return mean, std


def adain(x: torch.Tensor, ref: torch.Tensor, eps: float = ADAIN_EPS) -> torch.Tensor:
    """Give every frame of `x` (B×C×F×h×w) the per-channel mean/std of `ref` (B×C×1×h×w)."""
    mean_x, std_x = frame_stats(x, eps)
    mean_r, std_r = frame_stats(ref, eps)
    return (x - mean_x) / std_x * std_r + mean_r


def adain_step(latents: torch.Tensor, late: bool) -> torch.Tensor:
    """The reference's AdaIN after one denoising step (in place on B×C×F×h×w; frame 0 untouched).

    Early steps: frames 2.. take frame 1's statistics (frame 1 itself is left alone). Late steps:
    frame 1 takes frame 0's (the clean first frame) and frames 2.. the new frame 1's, so every
    frame ends up with the clean latent's statistics, noisy as they still are.
    """
    if latents.shape[2] < 2:
        return latents
    if late:
        latents[:, :, 1:2] = adain(latents[:, :, 1:2], latents[:, :, 0:1])
    if latents.shape[2] > 2:
        latents[:, :, 2:] = adain(latents[:, :, 2:], latents[:, :, 1:2])
    return latents


def adain_final(latents: torch.Tensor) -> torch.Tensor:
    """After the loop: every frame 1.. takes frame 0's statistics (in place)."""
    latents[:, :, 1:] = adain(latents[:, :, 1:], latents[:, :, 0:1])
    return latents


def adain_switch_index(steps: int, switch: float) -> int:
    """First step index of the late AdaIN phase: round(0.62 * 50) = 31, as the reference (i > 30)."""
    return int(round(switch * steps))


def guided_noise(noise_pred: torch.Tensor, guidance: float) -> torch.Tensor:
    """Classifier-free guidance on a [uncond, cond] batch: eps_u + s * (eps_c - eps_u)."""
    eps_u, eps_c = noise_pred.chunk(2)
    return eps_u + guidance * (eps_c - eps_u)


def ddim_step_frames(
    scheduler: Any, noise_pred: torch.Tensor, t: Any, latents: torch.Tensor, first: int = 1
) -> torch.Tensor:
    """One DDIM update (eta 0) of frames `first`.. (in place). The default leaves frame 0, the
    clean first frame, untouched; first=0 (the no-first-frame ablation) updates every frame."""
    latents[:, :, first:] = scheduler.step(noise_pred[:, :, first:], t, latents[:, :, first:], eta=0.0).prev_sample
    return latents


def noised(scheduler: Any, clean: torch.Tensor, noise: torch.Tensor, t: int) -> torch.Tensor:
    """q(x_t | x_0): clean latents at noise level t (t < 0 is the DDIM final level, alpha_0)."""
    acp = scheduler.alphas_cumprod
    alpha = float(acp[t]) if t >= 0 else float(scheduler.final_alpha_cumprod)
    return alpha**0.5 * clean + (1.0 - alpha) ** 0.5 * noise


def decode_latents(
    vae: Any, latents: torch.Tensor, latent_scale: float, chunk: int = DEFAULT_DECODE_CHUNK
) -> np.ndarray:
    """1×4×F×h×w latents -> F×H×W×3 uint8 frames, decoding `chunk` frames per VAE call."""
    import torch

    param = next(vae.parameters())
    b, c, f, h, w = latents.shape
    flat = latents.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)  # (B,C,F,h,w) -> (B*F,C,h,w)
    out = []
    with torch.no_grad():
        for i in range(0, b * f, chunk):
            z = (flat[i : i + chunk] / latent_scale).to(param.device, param.dtype)
            x = vae.decode(z).sample.float()
            x = ((x / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
            out.append(x.permute(0, 2, 3, 1).cpu().numpy())  # (N,3,H,W) -> (N,H,W,3)
    return np.concatenate(out, axis=0)


def histogram_lut(src: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """The 256-entry table that maps `src`'s uint8 values onto `ref`'s distribution.

    lut[v] = the smallest r with CDF_ref(r) >= CDF_src(v), the reference's searchsorted rule.
    CDFs are compared as exact integers (count_ref(<=r) * n_src vs count_src(<=v) * n_ref), so
    there is no float rounding at bin edges.
    """
    cs_src = np.cumsum(np.bincount(src.reshape(-1), minlength=256)).astype(np.int64)
    cs_ref = np.cumsum(np.bincount(ref.reshape(-1), minlength=256)).astype(np.int64)
    n_src, n_ref = int(cs_src[-1]), int(cs_ref[-1])
    lut = np.searchsorted(cs_ref * n_src, cs_src * n_ref, side="left")
    return np.clip(lut, 0, 255).astype(np.uint8)


def histogram_match(frames: np.ndarray, reference: int = 0) -> np.ndarray:
    """Match every frame's per-channel (RGB) histogram to frame `reference` (F×H×W×3 uint8)."""
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise InvalidInput(f"histogram matching needs F×H×W×3 uint8 frames, got {frames.dtype} {frames.shape}")
    out = frames.copy()
    ref = frames[reference]
    for f in range(frames.shape[0]):
        if f == reference:
            continue
        for ch in range(3):
            out[f, :, :, ch] = histogram_lut(frames[f, :, :, ch], ref[:, :, ch])[frames[f, :, :, ch]]
    return out


def plan_windows(frames: int, window: int, overlap: int) -> list[Window]:
    """Split a video of `frames` frames into windows of at most `window` frames.

    Each window after the first starts `overlap` frames before the end of the one before it:
    its frame 0 is the previous window's last-but-(overlap-1) frame, held clean, and its frames
    1..overlap-1 are the following known frames, re-noised at every step (so the model sees the
    motion's velocity across the seam); only the frames after them are new.
    """
    if window < 2:
        raise InvalidInput(f"a sampling window needs at least 2 frames (got {window})")
    if not 1 <= overlap < window:
        raise InvalidInput(f"window overlap must be in 1..{window - 1} (got {overlap})")
    plans = [Window(0, min(frames, window), 1)]
    while plans[-1].start + plans[-1].length < frames:
        start = plans[-1].start + plans[-1].length - overlap
        plans.append(Window(start, min(window, frames - start), overlap))
    return plans


def default_overlap(window: int) -> int:
    """A quarter of the window (4 of 16 frames), at least the one clean frame."""
    return max(1, window // 4)


def image_digest(image: np.ndarray) -> str:
    """sha256 of an image's pixels and shape (identifies a first frame in the sidecar)."""
    h = hashlib.sha256(str(image.shape).encode())
    h.update(np.ascontiguousarray(image).tobytes())
    return h.hexdigest()


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
    ):
        import torch

        from .models.base import BaseComponents, load_base, quiet_hf_progress
        from .models.video_unet import VideoUNet

        t0 = time.perf_counter()
        quiet_hf_progress()
        self.offload = offload
        if isinstance(base, BaseComponents):  # shared components: used where they are, never moved
            if loras:
                raise ValueError("loras apply when the engine loads the base; pass them to load_base instead")
            param = next(base.unet.parameters())
            self.device = param.device if device in (None, "", "auto") else resolve_device(device)
            self.dtype = param.dtype if dtype in (None, "", "auto") else resolve_dtype(dtype, self.device)
            self.base = base
            self._park_unet2d = False
        else:
            self.device = resolve_device(device)
            self.dtype = resolve_dtype(dtype, self.device)
            self.base = load_base(str(base), device="cpu", dtype=self.dtype, loras=loras)
            if not offload:
                self.base.text_encoder.to(self.device)
                self.base.vae.to(self.device)
            # The 2-D UNet is only needed for first frames: on an accelerator it waits on the CPU
            # so that the video UNet alone occupies the device's memory while sampling.
            self._park_unet2d = self.device.type != "cpu"
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
        self._first_frames: Any = None  # models.first_frame.FirstFrameGenerator, built on first use
        self._motion_cache: dict[str, _Motion] = {}
        self._applied: tuple[tuple[str, float], ...] = ()
        self.load_seconds = time.perf_counter() - t0

    # ---- models on the device -----------------------------------------------------------
    @contextlib.contextmanager
    def on_device(self, *modules: Any) -> Iterator[None]:
        """With offload on, move `modules` to the device for the block and back to the CPU after."""
        if not self.offload:
            yield
            return
        import torch

        for m in modules:
            m.to(self.device)
        try:
            yield
        finally:
            for m in modules:
                m.to("cpu")
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

    @contextlib.contextmanager
    def unet2d(self) -> Iterator[Any]:
        """The 2-D base UNet on the device for the block (first frames, image edits)."""
        if not (self.offload or self._park_unet2d):
            yield self.base.unet
            return
        import torch

        self.base.unet.to(self.device)
        try:
            yield self.base.unet
        finally:
            self.base.unet.to("cpu")
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

    def park_base_unet(self) -> None:
        """Keep the 2-D base UNet on the CPU until a first frame needs it (frees device memory)."""
        if self.device.type != "cpu" and not self.offload:
            self.base.unet.to("cpu")
            self._park_unet2d = True

    # ---- motions --------------------------------------------------------------------------
    def resolve_motions(self, motions: Sequence[tuple[MotionLike, float]]) -> list[_Motion]:
        """Registry names -> adapters (hash-checked, cached for the engine's lifetime)."""
        from .adapter import MotionAdapter

        resolved = []
        for item, weight in motions:
            if isinstance(item, MotionAdapter):
                m = _Motion(item, item.name or "adapter", item.weights_sha256(), float(weight))
            else:
                name = str(item)
                if name not in self._motion_cache:
                    from .registry import Registry

                    registry = Registry()
                    manifest = registry.manifest(name)  # MotionNotFound with its hint
                    adapter = MotionAdapter.from_bytes(registry.read_bytes(name))  # hash-checked
                    self._motion_cache[name] = _Motion(adapter, name, manifest.digest, 1.0)
                cached = self._motion_cache[name]
                m = _Motion(cached.adapter, cached.name, cached.digest, float(weight))
            resolved.append(m)
        return resolved

    def use_motions(self, motions: list[_Motion]) -> None:
        """Apply `motions` to the video UNet unless exactly this set is already applied.

        `adapter.apply` starts from the base every time, so a new set replaces the old one.
        """
        from .adapter import apply, reset_motion

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
            from .models.first_frame import FirstFrameGenerator

            self._first_frames = FirstFrameGenerator(self, model=self.first_frame_model)
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
            image, info = self.first_frames()(
                prompt, width=width, height=height, steps=steps, negative=negative, seed=seed, progress=progress
            )
            info = {"source": "text-to-image", **info}
        elif isinstance(first_frame, (str, Path)):
            from .video import load_image

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
        frames: int = 16,
        width: int = 512,
        height: int = 320,
        steps: int = 50,
        guidance: float = 12.5,
        negative: str = "",
        seed: int | None = None,
        shared_noise: float = 0.2,
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
        """
        import torch

        t_total = time.perf_counter()
        # 1. Check inputs and pick the seed.
        check_sample_args(
            frames=frames, width=width, height=height, steps=steps, guidance=guidance,
            shared_noise=shared_noise, adain_switch=adain_switch, seed=seed,
        )
        seed = new_seed() if seed is None else int(seed)
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
            pixels = histogram_match_frames(pixels)
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


def histogram_match_frames(frames: np.ndarray) -> np.ndarray:
    """Frames 1.. matched per RGB channel to frame 0 (the decoded first frame)."""
    return histogram_match(frames, reference=0)


# --------------------------------------------------------------------------------------------
# Benchmark (`lamp bench gen`): a measurement, not a test
# --------------------------------------------------------------------------------------------
def benchmark_sampling(
    *,
    base: str = "tiny",
    full_sd: bool = False,
    frames: int = 16,
    width: int = 512,
    height: int = 320,
    steps: int = 50,
    guidance: float = 12.5,
    dtype: str | None = "auto",
    device: str | None = "auto",
    compile: bool = False,
    repeats: int = 5,
    progress: Reporter | None = None,
) -> dict[str, Any]:
    """Time one whole video and the UNet step, and measure peak memory.

    Whole video: `Engine.sample` from a given first frame (encode, `steps` DDIM steps with CFG,
    decode, histogram matching) after one short warm-up video. UNet step: the video UNet on the
    CFG batch 2×4×F×h×w against the plain 2-D base UNet on the same 2F frames, `repeats` timed
    calls each. Peak memory is `torch.cuda.max_memory_allocated` during the video on CUDA (the
    2-D base waits on the CPU then, as in `lamp gen`), the process's peak RSS elsewhere.
    """
    import torch

    check_sample_args(frames=frames, width=width, height=height, steps=steps, guidance=guidance, shared_noise=0.2)
    if repeats < 1:
        raise InvalidInput(f"--repeats must be at least 1 (got {repeats})")
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    t0 = time.perf_counter()
    if full_sd:
        from .testing import random_sd1_base

        engine = Engine(random_sd1_base(dev, dt), compile=compile)
    else:
        engine = Engine(base, device=dev, dtype=dt, compile=compile)
    engine.park_base_unet()
    load_s = time.perf_counter() - t0
    cuda = dev.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(dev)

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    kw = {"frames": frames, "width": width, "height": height, "guidance": guidance, "seed": 0}
    engine.sample([], "a horse runs", image, steps=min(2, steps), **kw)  # warm-up (and compile)
    sync()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
    result = engine.sample([], "a horse runs", image, steps=steps, progress=progress, **kw)
    sync()
    if cuda:
        peak, peak_kind = int(torch.cuda.max_memory_allocated(dev)), "cuda max_memory_allocated"
        device_name = torch.cuda.get_device_name(dev)
    else:
        import resource
        import sys

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak = int(rss if sys.platform == "darwin" else rss * 1024)
        peak_kind, device_name = "process peak RSS", str(dev)

    # The UNet step alone: video UNet on the CFG batch vs the 2-D base UNet on the same frames.
    h, w = height // engine.base.vae_scale_factor, width // engine.base.vae_scale_factor
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, frames, h, w, generator=g).to(dev, dt)
    text_dim = int(engine.base.unet.config.cross_attention_dim)
    text = torch.randn(2, 77, text_dim, generator=g).to(dev, dt)
    t = torch.tensor(500, device=dev)

    def timed(fn: Callable[[], Any]) -> float:
        with torch.no_grad():
            fn()  # warm-up
            sync()
            start = time.perf_counter()
            for _ in range(repeats):
                fn()
            sync()
        return (time.perf_counter() - start) / repeats

    video_step = timed(lambda: engine._unet_call(x, t, text))
    with engine.unet2d() as unet2d:
        flat = x.permute(0, 2, 1, 3, 4).reshape(2 * frames, 4, h, w)  # (2,4,F,h,w) -> (2F,4,h,w)
        text_flat = text.repeat_interleave(frames, dim=0)  # (2,77,D) -> (2F,77,D)
        plain_step = timed(lambda: unet2d(flat, t, encoder_hidden_states=text_flat).sample)
    timings = result.record["timings"]
    return {
        "base": engine.base.spec,
        "device": str(dev),
        "device_name": device_name,
        "dtype": str(dt).replace("torch.", ""),
        "compile": compile,
        "frames": frames,
        "width": width,
        "height": height,
        "steps": steps,
        "guidance": guidance,
        "latent": [4, frames, h, w],
        "load_s": load_s,
        "video_s": timings["total_s"],
        "denoise_s": timings["denoise_s"],
        "decode_s": timings["decode_s"],
        "sample_step_s": timings["unet_step_s"],
        "video_unet_step_s": video_step,
        "unet2d_step_s": plain_step,
        "video_over_2d": video_step / plain_step,
        "repeats": repeats,
        "peak_memory_bytes": peak,
        "peak_memory_kind": peak_kind,
        "video_unet_parameters": int(sum(p.numel() for p in engine.video_unet.parameters())),
        "unet2d_parameters": int(sum(p.numel() for p in engine.base.unet.parameters())),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
