"""The sampling step functions (pure: tensors in, tensors out) that `Engine.sample`, first frames,
inversion and editing share: first-frame encoding, shared noise, latent AdaIN, guidance, DDIM on
frames, chunked decoding, histogram matching and the window plan of long videos.

torch is imported inside the functions so that importing this module stays cheap.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import InvalidInput
from .video import resize_center_crop

if TYPE_CHECKING:
    import torch

ADAIN_EPS = 1e-8  # added to the (unbiased) variance, as the reference does
DEFAULT_DECODE_CHUNK = 8  # frames per VAE decode call: bounds decoder activation memory


@dataclass(frozen=True)
class Window:
    """One chunk of a long video, sampled as one pass of the video UNet."""

    start: int  # index in the output video of this window's frame 0
    length: int  # frames in the window, frame 0 included
    context: int  # leading frames already known (frame 0 clean; 1..context-1 re-noised each step)


def new_seed() -> int:
    """A fresh random seed (recorded with every video, so any video can be made again)."""
    return secrets.randbelow(2**31)


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


