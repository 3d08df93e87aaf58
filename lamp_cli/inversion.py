"""DDIM inversion of a video's latents with a video UNet: the x_T that DDIM sampling maps back
to the video (LAMP §5.2 editing; docs/editing.md).

Deterministic DDIM (eta 0) sampling takes, at each timestep t with previous level t_prev,
    x0 = (x_t - sqrt(1 - a_t) * eps) / sqrt(a_t);   x_t_prev = sqrt(a_prev) * x0 + sqrt(1 - a_prev) * eps
where eps = UNet(x_t, t). Inversion runs the same update backwards, from the clean latents up to
the last timestep of the schedule. Plain DDIM inversion (the reference's) predicts eps at level t
from the latent one level below, since x_t is what it is computing; `refine` re-predicts it from
the current estimate of x_t a few times (a fixed-point iteration), which makes each step the
inverse of the sampling step it undoes.

Frame 0 stays the clean latent at every step, exactly as during training and sampling (the
reference code noised it too, a train/test mismatch: its frames take their attention keys and
values from frame 0, which the model had only ever seen clean).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .progress import Reporter, reporter_or_null

# A video UNet: (B×C×F×h×w latents, timestep, B×L×D text) -> B×C×F×h×w predicted noise.
NoisePredictor = Callable[[Any, Any, Any], Any]


def inversion_timesteps(scheduler: Any, steps: int) -> list[int]:
    """The timesteps of a `steps`-step DDIM schedule in the order inversion visits them (ascending).

    They are the sampling timesteps reversed, so that an inverted latent lands at the timestep
    sampling starts from (981 for SD's 50-step schedule).
    """
    scheduler.set_timesteps(steps)
    return [int(t) for t in reversed(scheduler.timesteps.tolist())]


def ddim_invert(
    unet: NoisePredictor,
    latents: Any,
    scheduler: Any,
    text_embeddings: Any,
    *,
    steps: int = 50,
    clean_first_frame: bool = True,
    refine: int = 0,
    refine_tol: float = 1e-3,
    stats: dict[str, Any] | None = None,
    progress: Reporter | None = None,
) -> Any:
    """Invert clean video latents to the noise DDIM sampling starts from.

    `unet`: a video UNet (`VideoUNet` or any callable with its signature), already carrying the
    tuned motion. `latents`: B×C×F×h×w clean latents (already multiplied by the VAE's scale).
    `scheduler`: a DDIM scheduler of the base (only its alphas and timestep spacing are used;
    `set_timesteps` is called on it). `text_embeddings`: B×L×D, in the reference the empty
    prompt's embedding, used without classifier-free guidance.
    `refine`: fixed-point iterations per step. Plain DDIM inversion (0, the reference) predicts
    the noise at level t from the latent one level below; each iteration re-predicts it from the
    current estimate of x_t, so the step becomes the exact inverse of the sampling step when the
    iteration converges (it contracts: the step's sensitivity to the noise estimate is small).
    A step stops iterating early once an iteration moves x_t by less than `refine_tol` of its
    norm. `stats`, if given, receives the UNet calls made and the last relative change.
    Returns float32 latents B×C×F×h×w at the last timestep of the `steps`-step schedule; with
    `clean_first_frame` frame 0 is returned (and was kept at every step) as the clean latent.
    """
    import torch

    if latents.ndim != 5:
        raise ValueError(f"latents must be B×C×F×h×w, got shape {tuple(latents.shape)}")
    if steps < 1:
        raise ValueError("steps must be >= 1")
    timesteps = inversion_timesteps(scheduler, steps)
    alphas = scheduler.alphas_cumprod.to(torch.float64)
    final_alpha = float(scheduler.final_alpha_cumprod)
    model_dtype = getattr(unet, "dtype", latents.dtype)

    # The arithmetic runs in float32 whatever the model's dtype: the error of each step adds up.
    x = latents.detach().to(torch.float32).clone()
    first = x[:, :, :1].clone()
    text = text_embeddings.to(device=x.device, dtype=model_dtype)
    report = reporter_or_null(progress)
    report.start("invert", len(timesteps))
    calls, change = 0, 0.0
    try:
        for i, t in enumerate(timesteps):
            # Inversion goes from level t_prev (where x is) to level t.
            a_prev = float(alphas[timesteps[i - 1]]) if i > 0 else final_alpha
            a_t = float(alphas[t])
            t_in = torch.tensor(t, device=x.device, dtype=torch.long)
            x_next = x
            for k in range(1 + max(0, refine)):
                with torch.no_grad():
                    eps = unet(x_next.to(model_dtype), t_in, text)
                calls += 1
                eps = getattr(eps, "sample", eps).to(torch.float32)
                x_new = ddim_move(x, eps, a_prev, a_t)
                if clean_first_frame:
                    x_new[:, :, :1] = first
                if k > 0:
                    change = float((x_new - x_next).norm() / x_new.norm().clamp_min(1e-12))
                x_next = x_new
                if k > 0 and change < refine_tol:
                    break
            x = x_next
            report.advance(1, t=t)
    finally:
        report.finish()
    if stats is not None:
        stats.update({"unet_calls": calls, "last_change": change})
    return x


def ddim_move(x: Any, eps: Any, alpha_from: float, alpha_to: float) -> Any:
    """One deterministic DDIM step (eta 0) between noise levels, either way: predict x0 from `x`
    at cumulative alpha `alpha_from` and noise `eps`, then re-noise it to `alpha_to` with the
    same `eps`. Sampling moves to a larger alpha, inversion to a smaller one."""
    x0 = (x - (1.0 - alpha_from) ** 0.5 * eps) / alpha_from**0.5
    return alpha_to**0.5 * x0 + (1.0 - alpha_to) ** 0.5 * eps


def ddim_sample_from(
    unet: NoisePredictor,
    noisy: Any,
    scheduler: Any,
    text_embeddings: Any,
    *,
    steps: int = 50,
    clean_first_frame: bool = True,
) -> Any:
    """Plain deterministic DDIM sampling (no guidance, no AdaIN) from `noisy`, the exact forward
    counterpart of `ddim_invert`; used to check an inversion, not to make videos (the engine does).

    Frame 0 of `noisy` is held fixed at every step when `clean_first_frame`.
    """
    import torch

    timesteps = list(reversed(inversion_timesteps(scheduler, steps)))
    alphas = scheduler.alphas_cumprod.to(torch.float64)
    final_alpha = float(scheduler.final_alpha_cumprod)
    model_dtype = getattr(unet, "dtype", noisy.dtype)
    x = noisy.detach().to(torch.float32).clone()
    first = x[:, :, :1].clone()
    text = text_embeddings.to(device=x.device, dtype=model_dtype)
    for i, t in enumerate(timesteps):
        a_t = float(alphas[t])
        a_prev = float(alphas[timesteps[i + 1]]) if i + 1 < len(timesteps) else final_alpha
        t_in = torch.tensor(t, device=x.device, dtype=torch.long)
        with torch.no_grad():
            eps = unet(x.to(model_dtype), t_in, text)
        eps = getattr(eps, "sample", eps).to(torch.float32)
        x = ddim_move(x, eps, a_t, a_prev)
        if clean_first_frame:
            x[:, :, :1] = first
    return x
