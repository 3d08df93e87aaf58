"""Training data: which clips, how long, which prompt; their latents, encoded once; the random
batch of one step and the diffusion loss.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InvalidInput, LampError, NotFound
from ..progress import Reporter, reporter_or_null
from ..video import VIDEO_EXTENSIONS, probe_video, read_video, resize_center_crop

log = logging.getLogger("lamp")

FLIP_PROBABILITY = 0.5


# --------------------------------------------------------------------------------------------
# data: which clips, how long, which prompt


@dataclass
class ClipInfo:
    """One training video as found on disk (before any decoding)."""

    path: Path
    num_frames: int
    fps: float
    width: int
    height: int
    caption: str | None = None  # from `<video>.txt` beside it

    def summary(self) -> dict[str, Any]:
        return {
            "file": self.path.name,
            "frames": self.num_frames,
            "fps": round(self.fps, 3),
            "size": [self.width, self.height],
        }


def window_span(frames: int, stride: int) -> int:
    """How many consecutive source frames a window of `frames` at `stride` covers."""
    return (frames - 1) * stride + 1


def find_clips(clips: str | Path) -> tuple[list[Path], list[Path]]:
    """The video files of a folder (sorted by name) and what was skipped; or one video file."""
    path = Path(clips).expanduser()
    if not path.exists():
        raise NotFound(
            f"no such file or folder: {path}",
            hint="pass a folder of training videos (mp4, mov, webm, mkv, gif) or one video file",
        )
    if path.is_file():
        if path.suffix.lower() not in VIDEO_EXTENSIONS:
            raise InvalidInput(
                f"{path} is not a video file (extension '{path.suffix or '(none)'}')",
                hint=f"training videos end in {', '.join(VIDEO_EXTENSIONS)}",
            )
        return [path], []
    videos, skipped = [], []
    for p in sorted(path.iterdir(), key=lambda p: p.name):
        if p.name.startswith("."):
            continue  # hidden files (.DS_Store, editor temp files) are not training data
        if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS:
            videos.append(p)
        elif not (p.is_file() and p.suffix.lower() == ".txt"):  # captions are used, not skipped
            skipped.append(p)
    if not videos:
        raise InvalidInput(
            f"no videos in {path}" + (f" ({len(skipped)} other file(s) ignored)" if skipped else ""),
            hint=f"put the training clips ({', '.join(VIDEO_EXTENSIONS)}) in the folder",
        )
    return videos, skipped


def caption_file(video: Path) -> Path | None:
    """The caption beside a video: `clip.txt`, or `clip.mp4.txt`."""
    for candidate in (video.with_suffix(".txt"), video.with_name(video.name + ".txt")):
        if candidate.is_file():
            return candidate
    return None


def _read_caption(video: Path) -> str | None:
    path = caption_file(video)
    if path is None:
        return None
    try:
        text = " ".join(path.read_text(encoding="utf-8").split())
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidInput(f"cannot read caption {path}: {e}", hint="captions are UTF-8 text files") from e
    if not text:
        raise InvalidInput(f"caption {path} is empty", hint="write the clip's prompt in it, or delete it")
    return text


def check_clips(clips: str | Path, frames: int, stride: int) -> list[ClipInfo]:
    """Find the training videos and check each is readable and long enough; loads no model.

    A folder: every mp4/mov/webm/mkv/gif in it (other files are skipped, with a log line naming
    them); or a single video. Raises InvalidInput/NotFound with one line naming the problem: a
    missing path, no videos, an unreadable file, or a clip shorter than `(frames-1)*stride+1`.
    """
    if frames < 2:
        raise InvalidInput(f"--frames must be at least 2, got {frames}", hint="frame 1 conditions, frames 2.. are learned")
    if stride < 1:
        raise InvalidInput(f"--stride must be at least 1, got {stride}")
    videos, skipped = find_clips(clips)
    if skipped:
        names = ", ".join(p.name for p in skipped[:5]) + (f" and {len(skipped) - 5} more" if len(skipped) > 5 else "")
        log.info("skipped %d file(s) that are not videos: %s", len(skipped), names)
    need = window_span(frames, stride)
    infos = []
    for path in videos:
        try:
            info = probe_video(path)
        except LampError as e:
            # the reader's message names the file already; keep the hint focused on training
            raise InvalidInput(e.message, hint="remove or re-encode that file; lamp reads what ffmpeg can decode") from None
        if info.num_frames < need:
            longest = (info.num_frames - 1) // stride + 1
            raise InvalidInput(
                f"clip {path} has {info.num_frames} frames; {frames} frames at stride {stride} need {need}",
                hint=f"use --frames {longest} or less" + (" or a smaller --stride" if stride > 1 else "")
                + ", or remove the clip",
            )
        infos.append(ClipInfo(path, info.num_frames, info.fps, info.width, info.height, _read_caption(path)))
    return infos


def prompt_from_path(clips: str | Path) -> str:
    """The reference's prompt: the folder name (or a single video's stem) with `_` -> space."""
    path = Path(clips).expanduser().resolve()
    stem = path.stem if path.is_file() else path.name
    return " ".join(stem.replace("_", " ").split())


def resolve_prompts(
    clips: str | Path, infos: list[ClipInfo], prompt: str | None = None, recipe_prompt: str | None = None
) -> list[str]:
    """One prompt per clip: --prompt, else the recipe's, else each clip's caption, else the folder name."""
    for given, what in ((prompt, "--prompt"), (recipe_prompt, "the recipe's prompt")):
        if given is not None:
            text = " ".join(given.split())
            if not text:
                raise InvalidInput(f"{what} is empty", hint="describe the motion, e.g. --prompt \"a horse runs\"")
            return [text] * len(infos)
    fallback: str | None = None
    prompts = []
    for info in infos:
        if info.caption is not None:
            prompts.append(info.caption)
            continue
        if fallback is None:
            fallback = prompt_from_path(clips)
            if not fallback:
                raise InvalidInput(
                    f"cannot make a prompt from the name of {clips}",
                    hint="pass --prompt \"...\", a --recipe, or put a <video>.txt caption beside each clip",
                )
        prompts.append(fallback)
    return prompts


# --------------------------------------------------------------------------------------------
# the latent cache


@dataclass
class ClipLatents:
    """The VAE posterior of every frame of one clip, resized and center-cropped to W×H.

    `mean`, `std`: 2×T×4×h×w float32 on CPU, already multiplied by the latent scale; index 0 holds
    the frames as they are, index 1 their mirror images (encoded, not flipped in latent space:
    the VAE is not exactly equivariant to flips).
    """

    mean: Any
    std: Any
    prompt_index: int

    @property
    def num_frames(self) -> int:
        return int(self.mean.shape[1])


def encode_frames(vae: Any, frames: Any, *, latent_scale: float, chunk: int = 8) -> tuple[Any, Any]:
    """VAE posterior mean and std of uint8 frames T×H×W×3 -> two T×4×h×w float32 CPU tensors."""
    import torch

    device, dtype = next(vae.parameters()).device, next(vae.parameters()).dtype
    means, stds = [], []
    with torch.no_grad():
        for i in range(0, len(frames), chunk):
            x = torch.from_numpy(frames[i : i + chunk].copy()).to(device)
            x = x.permute(0, 3, 1, 2).to(dtype) / 127.5 - 1.0  # T×H×W×3 uint8 -> T×3×H×W in [-1, 1]
            dist = vae.encode(x).latent_dist
            means.append(dist.mean.float().cpu() * latent_scale)
            stds.append(dist.std.float().cpu() * latent_scale)
    return torch.cat(means), torch.cat(stds)


def encode_clips(
    base: Any,
    infos: list[ClipInfo],
    prompts: list[str],
    *,
    width: int,
    height: int,
    need: int,
    progress: Reporter | None = None,
) -> list[ClipLatents]:
    """Read, center-crop and VAE-encode every clip once (and its mirror image)."""
    import torch

    unique = list(dict.fromkeys(prompts))
    cache = []
    for info, prompt in zip(infos, prompts, strict=True):
        clip = read_video(info.path)
        if clip.num_frames < need:  # probing counts packets; decoding is the truth
            raise InvalidInput(
                f"clip {info.path} decodes to {clip.num_frames} frames; the window needs {need}",
                hint="use fewer --frames or a smaller --stride, or remove the clip",
            )
        info.num_frames = clip.num_frames
        frames = resize_center_crop(clip.frames, width, height)  # T×H×W×3 uint8
        mean, std = zip(
            encode_frames(base.vae, frames, latent_scale=base.latent_scale),
            encode_frames(base.vae, frames[:, :, ::-1], latent_scale=base.latent_scale),
            strict=True,
        )
        cache.append(ClipLatents(torch.stack(mean), torch.stack(std), unique.index(prompt)))
        reporter_or_null(progress).advance(1)
    return cache


# --------------------------------------------------------------------------------------------
# one training step


def step_generator(seed: int, rank: int, step: int) -> Any:
    """The torch.Generator (CPU) that makes every random draw of one step of one process."""
    import numpy as np
    import torch

    state = np.random.SeedSequence([seed, rank, step]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


@dataclass
class Batch:
    """What one step trains on: one clip window, its flip, a VAE sample, noise and a timestep."""

    clip: int
    start: int
    flip: bool
    timestep: int
    latents: Any  # 1×4×F×h×w (scaled)
    noise: Any  # 1×4×F×h×w
    prompt_index: int


def draw_batch(
    gen: Any, cache: list[ClipLatents], *, frames: int, stride: int, num_train_timesteps: int,
    window_start: int | None = None, flip_probability: float = FLIP_PROBABILITY, min_timestep: int = 0,
) -> Batch:
    """All random draws of a step, in a fixed order, from `gen`: clip, window start, flip, t, noise.

    `window_start` fixes the window (lamp edit tunes on exactly the window it edits); the start is
    still drawn so the other draws are the same as without it. t is uniform in
    [min_timestep, num_train_timesteps); 0 (every level) is the reference's."""
    import torch

    clip = int(torch.randint(len(cache), (1,), generator=gen))
    c = cache[clip]
    starts = c.num_frames - window_span(frames, stride) + 1  # every valid start is equally likely
    start = int(torch.randint(starts, (1,), generator=gen))
    start = start if window_start is None else int(window_start)
    flip = bool(torch.rand((), generator=gen) < flip_probability)
    timestep = int(torch.randint(min_timestep, num_train_timesteps, (1,), generator=gen))
    idx = torch.arange(frames) * stride + start
    mean, std = c.mean[int(flip), idx], c.std[int(flip), idx]  # F×4×h×w
    latents = mean + std * torch.randn(mean.shape, generator=gen)  # a sample of the VAE posterior
    noise = torch.randn(latents.shape, generator=gen)
    to_video = lambda x: x.permute(1, 0, 2, 3).unsqueeze(0)  # noqa: E731  F×4×h×w -> 1×4×F×h×w
    return Batch(clip, start, flip, timestep, to_video(latents), to_video(noise), c.prompt_index)


def diffusion_loss(model: Any, scheduler: Any, latents: Any, noise: Any, timestep: Any, text: Any) -> Any:
    """LAMP's loss: noise every frame, put frame 0's clean latent back, MSE on frames 2..F only."""
    import torch.nn.functional as F

    noisy = scheduler.add_noise(latents, noise, timestep)
    noisy[:, :, 0] = latents[:, :, 0]  # the first frame conditions; it is never noised
    pred = model(noisy, timestep, text)
    return F.mse_loss(pred[:, :, 1:].float(), noise[:, :, 1:].float())


