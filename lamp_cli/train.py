"""Few-shot motion training (LAMP §4): learn a motion from a handful of clips, publish an adapter.

One video follows this path (`train_motion`):

1. check the inputs (name, options, every clip's length) before any model loads;
2. encode every frame of every clip once with the frozen VAE (mean and std of its posterior, for the
   frames and their mirror images) and every prompt once with the frozen text encoder;
3. inflate the base UNet to a `VideoUNet` and train its motion layers: each step draws a clip, a
   window of F frames at `stride`, a flip, a VAE sample, noise and a timestep; frame 0 stays clean;
   the loss is the MSE of the predicted noise on frames 2..F;
4. checkpoint (adapter tensors + optimizer state) every `checkpoint_every` steps and on Ctrl-C;
5. extract the adapter (only the deltas) and publish it to the registry.

Every random draw of step k comes from a generator seeded with (seed, process rank, k), so a resumed
run makes exactly the draws the uninterrupted run would have made.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import random
import shlex
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import settings
from .adapter import check_adapter_dtype
from .engine import resolve_device, resolve_dtype
from .errors import Interrupted, InvalidInput, LampError, NotFound
from .progress import Reporter, reporter_or_null

log = logging.getLogger("lamp")

MIXED_PRECISION_CHOICES = ("auto", "no", "fp16", "bf16")
CHECKPOINT_FILE = "checkpoint.safetensors"
CHECKPOINT_FORMAT = "1"
DEFAULT_CHECKPOINT_EVERY = 1000
LOSS_EMA_BETA = 0.98  # the progress bar's smoothed loss averages over ~50 steps

# The reference recipe (LAMP_REFERENCE §4): AdamW, constant lr, no warm-up, batch 1.
ADAM_BETAS = (0.9, 0.999)
WEIGHT_DECAY = 1e-2
ADAM_EPS = 1e-8
MAX_GRAD_NORM = 1.0
FLIP_PROBABILITY = 0.5

# Options that fix the training schedule: a resumed run must use the checkpoint's values.
SCHEDULE_KEYS = (
    "base_fingerprint",
    "frames",
    "stride",
    "width",
    "height",
    "lr",
    "seed",
    "prompts",
    "clip_files",
    "mixed_precision",
)


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
    from .video import VIDEO_EXTENSIONS

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
    from .video import probe_video

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

    from .video import read_video, resize_center_crop

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


# --------------------------------------------------------------------------------------------
# checkpoints: adapter tensors + optimizer state, safetensors, written atomically


def run_dir(name: str) -> Path:
    return settings.lamp_home() / "runs" / name


def checkpoint_path(name: str) -> Path:
    return run_dir(name) / CHECKPOINT_FILE


def _checkpoint_tensors(video_unet: Any, optimizer: Any, names: list[str]) -> dict[str, Any]:
    import numpy as np
    import torch

    params = dict(video_unet.added_parameters()) | dict(video_unet.trainable_parameters())
    tensors = {f"model.{n}": p.detach().float().cpu().contiguous() for n, p in params.items()}
    state = optimizer.state_dict()["state"]
    for i, n in enumerate(names):
        for key, value in state.get(i, {}).items():
            if torch.is_tensor(value):
                tensors[f"optim.{n}.{key}"] = value.detach().cpu().contiguous()
            else:
                tensors[f"optim.{n}.{key}"] = torch.tensor(value)
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    tensors["rng.numpy"] = torch.from_numpy(np.random.get_state()[1].astype(np.int64))
    return tensors


def save_checkpoint(path: Path, tensors: dict[str, Any], meta: dict[str, Any]) -> Path:
    """Write a checkpoint atomically: a temp file beside it, fsync, rename (never a pickle)."""
    from safetensors.torch import save_file

    from .fsutil import replace_durably, temp_sibling

    tmp = temp_sibling(path)
    try:
        save_file(tensors, tmp, metadata={"format": "pt", "lamp.checkpoint": json.dumps(meta, default=str)})
        replace_durably(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_checkpoint_meta(path: Path) -> dict[str, Any]:
    """The JSON header of a checkpoint (reads the header only)."""
    from .adapter import read_header

    try:
        md = read_header(path)["__metadata__"]
        meta = json.loads(md["lamp.checkpoint"])
    except (LampError, KeyError, json.JSONDecodeError) as e:
        raise InvalidInput(
            f"{path} is not a usable lamp checkpoint ({e})", hint="start over with --force (discards it)"
        ) from None
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise InvalidInput(f"{path} has checkpoint format {meta.get('format')!r}; expected {CHECKPOINT_FORMAT}")
    return meta


def _restore_checkpoint(path: Path, video_unet: Any, optimizer: Any, names: list[str], meta: dict[str, Any]) -> None:
    import numpy as np
    import torch
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    params = dict(video_unet.added_parameters()) | dict(video_unet.trainable_parameters())
    missing = [n for n in params if f"model.{n}" not in tensors]
    if missing:
        raise InvalidInput(f"{path} lacks tensor model.{missing[0]}", hint="start over with --force (discards it)")
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(tensors[f"model.{n}"])
    state: dict[int, dict[str, Any]] = {}
    for i, n in enumerate(names):
        prefix = f"optim.{n}."
        entry = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        if entry:
            state[i] = entry
    groups = [{**g, "params": list(range(len(names)))} for g in meta["param_groups"]]
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    np_state = meta["numpy_rng"]
    np.random.set_state((np_state[0], tensors["rng.numpy"].numpy().astype(np.uint32), *np_state[1:]))
    py = meta["python_rng"]
    random.setstate((py[0], tuple(py[1]), py[2]))


# --------------------------------------------------------------------------------------------
# results


@dataclass
class StepInfo:
    """Passed to `on_step` after every completed step."""

    step: int  # steps done so far (1-based)
    loss: float
    smoothed_loss: float
    batch: Batch


@dataclass
class TrainResult:
    name: str
    manifest: Any  # registry.Manifest, or None when not published (publish=False, non-main process)
    adapter: Any  # MotionAdapter
    losses: list[float]
    steps: int
    seconds: float
    seed: int
    final_loss: float  # smoothed (EMA) loss at the last step
    config: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    resumed_from: int = 0
    video_unet: Any = None  # the trained model (e.g. for DDIM inversion right after training)
    is_main_process: bool = True
    eval: dict[str, Any] | None = None  # train_eval's summary: settings, history, best step
    best_adapter: Any = None  # MotionAdapter of the best evaluated step (published as NAME-best)
    best_manifest: Any = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "digest": self.manifest.digest if self.manifest else None,
            "id": self.manifest.id if self.manifest else None,
            "steps": self.steps,
            "resumed_from": self.resumed_from,
            "final_loss": self.final_loss,
            "seconds": round(self.seconds, 3),
            "seed": self.seed,
            "adapter_bytes": self.manifest.size if self.manifest else self.adapter.nbytes(),
            "adapter_parameters": self.adapter.num_parameters(),
            "adapter_dtype": self.config.get("adapter_dtype"),
            "prompts": self.data.get("prompts"),
            "clips": len(self.data.get("clips", [])),
            "manifest": self.manifest.to_json() if self.manifest else None,
            "num_processes": self.config.get("num_processes", 1),
            "ranks_in_sync": self.config.get("ranks_in_sync"),
            "eval": self._eval_json(),
        }

    def _eval_json(self) -> dict[str, Any] | None:
        if self.eval is None:
            return None
        doc = {k: v for k, v in self.eval.items() if k != "first_frames"}
        if doc.get("best") is not None:
            m = self.best_manifest
            doc["best"] = {
                **doc["best"],
                "name": m.name if m else None,
                "digest": m.digest if m else None,
                "id": m.id if m else None,
            }
        return doc


# --------------------------------------------------------------------------------------------
# devices, precision, accelerate


def resolve_mixed_precision(mixed_precision: str | None, device: str) -> str:
    import torch

    mp = (mixed_precision or "auto").lower()
    if mp not in MIXED_PRECISION_CHOICES:
        raise InvalidInput(f"--mixed-precision must be one of {', '.join(MIXED_PRECISION_CHOICES)}, got '{mp}'")
    kind = device.split(":")[0]
    if mp == "auto":
        if kind == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "no"
    if mp == "fp16" and kind == "cpu":
        raise InvalidInput("fp16 mixed precision needs a GPU", hint="use --mixed-precision bf16 or no on CPU")
    return mp


def _distributed_launch() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def make_accelerator(mixed_precision: str, device: str) -> Any:
    """An `accelerate.Accelerator`; single process unless started by `accelerate launch`."""
    import torch
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    if not _distributed_launch():
        # accelerate keeps one process-wide state; lamp may train several times in one process
        # (tests, benchmarks) with different settings, so start from a clean one.
        AcceleratorState._reset_state(True)
        GradientState._reset_state()
        if device.startswith("cuda:"):
            torch.cuda.set_device(torch.device(device))
    return Accelerator(mixed_precision=mixed_precision, cpu=device == "cpu")


def _ranks_in_sync(accelerator: Any, params: list[Any]) -> bool:
    """Whether every process holds the same trained weights (gradients were synchronised):
    per-tensor float64 sums and sums of squares, gathered from all ranks and compared exactly."""
    import torch

    with torch.no_grad():
        local = torch.stack([t for p in params for t in (p.double().sum(), p.double().square().sum())])
    everyone = accelerator.gather(local.to(accelerator.device)).view(accelerator.num_processes, -1)
    same = bool((everyone == everyone[0]).all())
    if not same:
        log.warning("the processes' trained weights differ: gradients were not synchronised")
    return same


def make_optimizer(params: list[Any], lr: float, device: Any) -> Any:
    """The reference's AdamW; the fused CUDA kernel on GPU (one launch instead of one per tensor)."""
    import torch

    fused = torch.device(device).type == "cuda"
    return torch.optim.AdamW(params, lr=lr, betas=ADAM_BETAS, weight_decay=WEIGHT_DECAY, eps=ADAM_EPS, fused=fused)


# --------------------------------------------------------------------------------------------
# Ctrl-C: finish the step, checkpoint, exit 130


class _AbortNow(KeyboardInterrupt):
    """A second Ctrl-C: stop at once, without writing a checkpoint."""


class _StopRequest:
    """First Ctrl-C asks the loop to stop after the current step; a second one aborts."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> _StopRequest:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise _AbortNow()
        self.requested = True
        log.warning("stopping after this step to save a checkpoint (Ctrl-C again to abort without saving)")

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


# --------------------------------------------------------------------------------------------
# the training run


@dataclass
class _Options:
    """The resolved options of one run (what lamp.train records, with the data summary)."""

    base: str
    base_fingerprint: str
    clips: str
    clip_files: list[str]
    prompts: list[str]
    recipe: str | None
    steps: int
    frames: int
    stride: int
    width: int
    height: int
    lr: float
    seed: int
    mixed_precision: str
    gradient_checkpointing: bool | None
    checkpoint_every: int
    adapter_dtype: str
    device: str
    min_timestep: int = 0
    flip: bool = True


def _positive(value: Any, what: str, kind: type = int) -> Any:
    try:
        value = kind(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"{what} must be a number, got {value!r}") from None
    if value <= 0 or (kind is float and not math.isfinite(value)):
        raise InvalidInput(f"{what} must be positive, got {value}")
    return value


def _check_size(width: int, height: int) -> None:
    for v, what in ((width, "--width"), (height, "--height")):
        if v % 8:
            lo, hi = v // 8 * 8, v // 8 * 8 + 8
            raise InvalidInput(
                f"{what} {v} is not a multiple of 8 (the VAE works on 8×8 pixel blocks)",
                hint=f"use {hi}" + (f" or {lo}" if lo else ""),
            )


def _resume_command(clips: str | Path, name: str, base: str) -> str:
    cmd = ["lamp", "train", str(clips), "--name", name]
    if base != settings.get("base"):
        cmd += ["--base", base]
    return shlex.join(cmd + ["--resume"])


def _evaluate_safely(evaluator: Any, step: int, video_unet: Any, loss: float) -> None:
    """Score the motion at `step`; a failed evaluation is reported, and training goes on."""
    try:
        evaluator.evaluate(step, video_unet, loss)
    except KeyboardInterrupt:
        raise
    except Exception as e:  # e.g. out of memory while sampling: the run is worth more than one score
        log.warning("evaluation at step %d failed (%s: %s); training goes on", step, type(e).__name__, e)
        evaluator.history.append({"step": step, "error": f"{type(e).__name__}: {e}"})


def _best_adapter(evaluator: Any, train_record: dict[str, Any], md: dict[str, str]) -> Any:
    """NAME-best: the best step's tensors with the run's header, its own name and step count."""
    from .adapter import MotionAdapter
    from .train_eval import best_name

    point = evaluator.best_point
    record = {
        **train_record,
        "steps": point["step"],  # the steps this adapter was trained for (the manifest shows them)
        "final_loss": point["loss"],
        "selected": {"by": evaluator.plan.score, "step": point["step"], "run_steps": train_record["steps"], "last": evaluator.name},
    }
    header = {**md, "lamp.name": best_name(evaluator.name), "lamp.train": json.dumps(record, sort_keys=True, default=str)}
    return MotionAdapter(evaluator.best.tensors, header)


def train_motion(
    clips: str | Path,
    name: str,
    *,
    base: Any = None,
    prompt: str | None = None,
    recipe: str | None = None,
    steps: int | None = None,
    frames: int | None = None,
    stride: int | None = None,
    width: int | None = None,
    height: int | None = None,
    lr: float | None = None,
    seed: int | None = None,
    mixed_precision: str | None = None,
    gradient_checkpointing: bool | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    force: bool = False,
    registry: Any = None,
    device: str | None = "auto",
    progress: Reporter | None = None,
    adapter_dtype: str | None = None,
    publish: bool = True,
    eval_every: int | None = None,
    eval_prompts: list[str] | None = None,
    eval_steps: int | None = None,
    eval_seed: int | None = None,
    clip_model: str | None = None,
    eval_out: str | Path | None = None,
    on_step: Callable[[StepInfo], None] | None = None,
    window_start: int | None = None,
    flip: bool | None = None,
    seed_note: str | None = None,
    min_timestep: int | None = None,
) -> TrainResult:
    """Learn a motion from `clips` (a folder of videos, or one video) and publish it as `name`.

    Options left as None come from, in order: the checkpoint (with `resume`), the `recipe`, the
    settings (`lamp doctor` shows them: base, frames, width, height, stride, lr, train_steps).
    `mixed_precision`: "auto" (bf16/fp16 on CUDA, none elsewhere), "no", "fp16", "bf16".
    `gradient_checkpointing`: None = on for CUDA, off elsewhere. `checkpoint_every`: None =
    every 1000 steps, 0 = only on Ctrl-C. `adapter_dtype`: fp16 (default), bf16 or fp32.
    `force` replaces a motion of that name and discards an unfinished run's checkpoint.
    `on_step(StepInfo)` is called after every step. `window_start` fixes every step's window
    start and `flip=False` turns off the random horizontal flip (default on, as the reference):
    needed for one-video tuning (`lamp edit`) and for motions with a left/right direction, which a
    mirror image reverses.
    `min_timestep`: train only on noise levels t >= this (default 0: all, as the reference); the
    motion of frames 2.. is decided at high noise, where ε-prediction's loss is weakest.
    `seed_note`: the line logged about the seed, `{seed}` replaced (default: `lamp train`'s
    "seed N (--seed N repeats this run)"; `lamp edit` says its tuning seed is not its --seed).
    The checkpoint is deleted once the adapter is published (or returned, with `publish=False`).
    `eval_every` N with `eval_prompts` (else the recipe's): every N steps and at the end, sample
    the prompts with the engine as `lamp gen` does (`eval_steps` DDIM steps, default setting
    'steps'; seed `eval_seed`, default 0) and score them with CLIP (`clip_model`); the best step
    by mean text alignment is published as NAME-best beside NAME (see train_eval.py). `eval_out`:
    a folder for each evaluation's videos (`step-000500/00_<prompt>.mp4`, with sidecars).
    """
    from .registry import Registry, validate_name

    # 1. check everything that needs no model
    validate_name(name)
    registry = registry if registry is not None else Registry()
    if publish and registry.exists(name) and not force:
        from .errors import NameTaken

        raise NameTaken(name)
    if adapter_dtype is not None:
        check_adapter_dtype(adapter_dtype)
    ckpt = checkpoint_path(name)
    meta: dict[str, Any] | None = None
    if resume:
        if not ckpt.exists():
            raise NotFound(f"no checkpoint to resume for '{name}' (looked for {ckpt})", hint="run without --resume")
        meta = read_checkpoint_meta(ckpt)
    elif ckpt.exists():
        if not force:
            step_done = read_checkpoint_meta(ckpt).get("step", "?")
            raise InvalidInput(
                f"an unfinished run of '{name}' has a checkpoint at step {step_done} ({ckpt})",
                hint="pass --resume to continue it, or --force to start over (discards it)",
            )
        ckpt.unlink()
    saved = (meta or {}).get("options", {})
    rec = None
    if recipe is not None:
        from .recipes import load_recipe

        rec = load_recipe(recipe)

    def pick(key: str, given: Any, setting: str | None = None) -> Any:
        if given is not None:
            if meta is not None and key in SCHEDULE_KEYS and key in saved and given != saved[key]:
                raise InvalidInput(
                    f"--{key.replace('_', '-')} {given} differs from the checkpoint's {saved[key]}",
                    hint="resume with the same options (or leave them out), or start over with --force",
                )
            return given
        if key in saved:
            return saved[key]
        if rec is not None and getattr(rec, key, None) is not None:
            return getattr(rec, key)
        return settings.get(setting or key)

    from .models.base import BaseComponents

    base_spec = base.spec if isinstance(base, BaseComponents) else pick("base", base)
    steps = _positive(pick("steps", steps, "train_steps"), "--steps")
    frames = _positive(pick("frames", frames), "--frames")
    stride = _positive(pick("stride", stride), "--stride")
    width = _positive(pick("width", width), "--width")
    height = _positive(pick("height", height), "--height")
    lr = _positive(pick("lr", lr), "--lr", float)
    if meta is not None and min_timestep is not None and min_timestep != saved.get("min_timestep", 0):
        raise InvalidInput(
            f"--min-timestep {min_timestep} differs from the checkpoint's {saved.get('min_timestep', 0)}",
            hint="resume without --min-timestep, or start over with --force",
        )
    min_timestep = int(saved.get("min_timestep", 0) if min_timestep is None else min_timestep)
    if meta is not None and flip is not None and flip != saved.get("flip", True):
        raise InvalidInput(
            f"{'--flip' if flip else '--no-flip'} differs from the checkpoint's run",
            hint="resume without it, or start over with --force",
        )
    flip = bool(saved.get("flip", True) if flip is None else flip)
    if not 0 <= min_timestep < 1000:
        raise InvalidInput(f"--min-timestep must be in [0, 1000), got {min_timestep}")
    _check_size(width, height)
    if seed is None:
        seed = saved.get("seed", random.SystemRandom().randrange(2**31))
    elif meta is not None and seed != saved.get("seed"):
        raise InvalidInput(
            f"--seed {seed} differs from the checkpoint's {saved.get('seed')}",
            hint="resume without --seed, or start over with --force",
        )
    adapter_dtype = adapter_dtype or saved.get("adapter_dtype", "fp16")
    if checkpoint_every is None:
        checkpoint_every = saved.get("checkpoint_every", DEFAULT_CHECKPOINT_EVERY)
    if checkpoint_every < 0:
        raise InvalidInput(f"--checkpoint-every must be 0 (only on Ctrl-C) or positive, got {checkpoint_every}")
    if meta is not None and meta["step"] >= steps:
        raise InvalidInput(
            f"the checkpoint of '{name}' is at step {meta['step']}, not before --steps {steps}",
            hint=f"pass --steps larger than {meta['step']}",
        )

    dev = str(resolve_device(device or settings.get("device")))  # "cpu", "cuda", "cuda:1", "mps"
    mp = resolve_mixed_precision(mixed_precision if mixed_precision is not None else saved.get("mixed_precision"), dev)
    if meta is not None and mixed_precision is not None and mp != saved.get("mixed_precision"):
        raise InvalidInput(
            f"--mixed-precision {mp} differs from the checkpoint's {saved.get('mixed_precision')}",
            hint="resume without --mixed-precision, or start over with --force",
        )
    from . import train_eval

    eval_plan = train_eval.resolve_eval_plan(
        eval_every, eval_prompts, frames=frames, width=width, height=height, total_steps=steps,
        eval_steps=eval_steps, eval_seed=eval_seed, clip_model=clip_model,
        recipe_prompts=rec.eval_prompts if rec is not None else None, saved=((meta or {}).get("eval") or {}).get("plan"),
    )
    if eval_plan is not None:
        train_eval.check_best_name(name, registry, publish=publish, force=force)
        if eval_out is not None:
            eval_out = train_eval.check_out(eval_out)
    elif eval_out is not None:
        raise InvalidInput("--eval-out needs --eval-every N", hint="e.g. --eval-every 500")
    infos = check_clips(clips, frames, stride)
    for info in infos if window_start is not None else []:
        if window_start < 0 or window_start + window_span(frames, stride) > info.num_frames:
            raise InvalidInput(f"clip {info.path} has no window of {frames} frames at stride {stride} from frame {window_start}")
    prompts = resolve_prompts(clips, infos, prompt, rec.prompt if rec is not None else None)
    if meta is not None:
        if prompt is None and rec is None:
            prompts = list(saved.get("prompts", prompts))  # as trained, whatever the folder holds now
        elif prompts != saved.get("prompts"):
            raise InvalidInput(
                "the prompt differs from the one the checkpoint was trained with",
                hint="resume without --prompt/--recipe, or start over with --force",
            )
    clip_files = [str(i.path.name) for i in infos]
    if meta is not None and clip_files != saved.get("clip_files"):
        raise InvalidInput(
            f"the clips in {clips} are not the ones the checkpoint was trained on",
            hint="resume with the same clips, or start over with --force",
        )

    # 2. models, accelerator, caches
    import numpy as np
    import torch

    from .adapter import extract, make_metadata
    from .models.base import architecture_of, load_base
    from .models.video_unet import VideoUNet

    accelerator = make_accelerator(mp, dev)
    is_main = accelerator.is_main_process
    rank = accelerator.process_index
    progress = reporter_or_null(progress if is_main else None)
    if is_main:
        log.info("%s", (seed_note or "seed {seed} (--seed {seed} repeats this run)").format(seed=seed))
    scorer = None
    if eval_plan is not None and is_main:  # a missing CLIP model fails here, before any training
        scorer = train_eval.load_scorer(eval_plan, accelerator.device)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)

    own_base = not isinstance(base, BaseComponents)
    if own_base:
        base = load_base(base_spec, device="cpu")
    if meta is not None and base.fingerprint != saved.get("base_fingerprint"):
        raise InvalidInput(
            f"base '{base_spec}' is not the base the checkpoint was trained on (fingerprint "
            f"{base.fingerprint} vs {saved.get('base_fingerprint')})",
            hint="resume with the same --base, or start over with --force",
        )
    device_t = accelerator.device
    if own_base:  # the frozen encoders run once on the accelerator, then go back to the CPU
        base.vae.to(device_t)
        base.text_encoder.to(device_t)
    progress.start("encode clips", len(infos))
    cache = encode_clips(
        base, infos, prompts, width=width, height=height, need=window_span(frames, stride), progress=progress
    )
    progress.finish()
    unique_prompts = list(dict.fromkeys(prompts))
    text = base.encode_prompt(unique_prompts).float().to(device_t)  # P×77×D
    if own_base:
        base.vae.to("cpu")
        base.text_encoder.to("cpu")

    opts = _Options(
        base=base_spec,
        base_fingerprint=base.fingerprint,
        clips=str(Path(clips).expanduser().resolve()),
        clip_files=clip_files,
        prompts=prompts,
        recipe=recipe,
        steps=steps,
        frames=frames,
        stride=stride,
        width=width,
        height=height,
        lr=lr,
        seed=seed,
        mixed_precision=mp,
        gradient_checkpointing=gradient_checkpointing,
        checkpoint_every=checkpoint_every,
        adapter_dtype=adapter_dtype,
        device=str(device_t),
        min_timestep=min_timestep,
        flip=flip,
    )
    dtype = resolve_dtype(adapter_dtype)
    evaluator = None
    if meta is None and is_main:
        train_eval.discard_stale_best(run_dir(name))
    if scorer is not None:  # built before the base UNet is inflated: its engine needs the 2-D UNet
        evaluator = train_eval.TrainingEvaluator.start(
            eval_plan, scorer, base, own_base=own_base, base_spec=base_spec, device=device_t,
            name=name, folder=run_dir(name), adapter_dtype=dtype, out=eval_out,
        )
        evaluator.restore((meta or {}).get("eval"))
    # A passed-in base is shared (e.g. by an Engine): inflate a copy, never the caller's UNet.
    unet2d = base.unet if own_base else copy.deepcopy(base.unet)
    video_unet = VideoUNet.from_unet2d(unet2d.to(device_t)).freeze_base()
    use_ckpt = device_t.type == "cuda" if gradient_checkpointing is None else bool(gradient_checkpointing)
    opts.gradient_checkpointing = use_ckpt
    video_unet.set_gradient_checkpointing(use_ckpt)
    video_unet.train()
    trainable = video_unet.trainable_parameters()
    names = [n for n, _ in trainable]
    optimizer = make_optimizer([p for _, p in trainable], lr, device_t)
    losses: list[float] = []
    start_step, elapsed_before = 0, 0.0
    if meta is not None:
        _restore_checkpoint(ckpt, video_unet, optimizer, names, meta)
        start_step, losses, elapsed_before = int(meta["step"]), list(meta["losses"]), float(meta["seconds"])
        if is_main:
            log.info("resuming '%s' at step %d of %d", name, start_step, steps)
    model, optimizer = accelerator.prepare(video_unet, optimizer)
    if meta is not None and meta.get("scaler") and accelerator.scaler is not None:
        accelerator.scaler.load_state_dict(meta["scaler"])
    scheduler = base.ddpm()
    num_t = int(scheduler.config.num_train_timesteps)
    params = [p for _, p in trainable]

    ema = 0.0
    for value in losses:
        ema = LOSS_EMA_BETA * ema + (1 - LOSS_EMA_BETA) * value

    def smoothed(n: int) -> float:
        return ema / (1 - LOSS_EMA_BETA**n) if n else float("nan")

    def write_checkpoint(step_done: int) -> None:
        accelerator.wait_for_everyone()
        if is_main:
            unwrapped = accelerator.unwrap_model(model)
            py = random.getstate()
            np_state = np.random.get_state()
            meta_out = {
                "format": CHECKPOINT_FORMAT,
                "name": name,
                "step": step_done,
                "seconds": elapsed_before + time.perf_counter() - t_loop,
                "losses": losses,
                "options": asdict(opts),
                "param_groups": [
                    {k: v for k, v in g.items() if k != "params"} for g in optimizer.state_dict()["param_groups"]
                ],
                "scaler": accelerator.scaler.state_dict() if accelerator.scaler is not None else None,
                "python_rng": [py[0], list(py[1]), py[2]],
                "numpy_rng": [np_state[0], *np_state[2:]],
                "eval": evaluator.state() if evaluator is not None else None,
            }
            save_checkpoint(ckpt, _checkpoint_tensors(unwrapped, optimizer, names), meta_out)
        accelerator.wait_for_everyone()

    # 3. the loop
    t_loop = time.perf_counter()
    progress.start("train", steps - start_step)
    step_done = start_step
    in_update = False
    try:
        with _StopRequest() as stop:
            for step in range(start_step, steps):
                batch = draw_batch(
                    step_generator(seed, rank, step), cache, frames=frames, stride=stride, num_train_timesteps=num_t,
                    window_start=window_start, flip_probability=FLIP_PROBABILITY if flip else 0.0,
                    min_timestep=min_timestep,
                )
                timestep = torch.tensor([batch.timestep], device=device_t)
                loss = diffusion_loss(
                    model,
                    scheduler,
                    batch.latents.to(device_t),
                    batch.noise.to(device_t),
                    timestep,
                    text[batch.prompt_index : batch.prompt_index + 1],
                )
                accelerator.backward(loss)
                accelerator.clip_grad_norm_(params, MAX_GRAD_NORM)
                in_update = True  # a raw interrupt from here on may leave parameters half-updated
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                in_update = False
                if accelerator.num_processes > 1:
                    loss = accelerator.reduce(loss.detach(), reduction="mean")
                value = float(loss.detach())
                losses.append(value)
                step_done = step + 1
                ema = LOSS_EMA_BETA * ema + (1 - LOSS_EMA_BETA) * value
                progress.advance(1, step=f"{step_done}/{steps}", loss=smoothed(len(losses)))
                if on_step is not None:
                    on_step(StepInfo(step_done, value, smoothed(len(losses)), batch))
                if stop.requested:
                    raise KeyboardInterrupt
                if eval_plan is not None and eval_plan.due(step_done, steps):
                    accelerator.wait_for_everyone()
                    if evaluator is not None:
                        _evaluate_safely(evaluator, step_done, accelerator.unwrap_model(model), smoothed(len(losses)))
                    accelerator.wait_for_everyone()
                    if stop.requested:  # Ctrl-C while sampling: stop now, with the score kept
                        raise KeyboardInterrupt
                if checkpoint_every and step_done % checkpoint_every == 0 and step_done < steps:
                    write_checkpoint(step_done)
    except _AbortNow:
        progress.finish()
        raise
    except KeyboardInterrupt:
        progress.finish()
        if in_update:
            log.warning("interrupted inside an optimizer update; not saving a checkpoint")
            raise
        write_checkpoint(step_done)
        raise Interrupted(
            f"training of '{name}' interrupted after step {step_done} of {steps}; checkpoint saved to {ckpt}",
            hint=f"resume with: {_resume_command(clips, name, base_spec)}",
        ) from None
    progress.finish()
    seconds = elapsed_before + time.perf_counter() - t_loop
    final_loss = smoothed(len(losses))

    # 4. extract and publish
    trained = accelerator.unwrap_model(model, keep_fp32_wrapper=False)
    ranks_in_sync = _ranks_in_sync(accelerator, params) if accelerator.num_processes > 1 else None
    data = {
        "clips": [dict(i.summary(), prompt=p) for i, p in zip(infos, prompts, strict=True)],
        "total_frames": sum(i.num_frames for i in infos),
        "prompts": unique_prompts,
    }
    train_record = {
        **{k: v for k, v in asdict(opts).items() if k not in ("clip_files", "device")},
        "prompt": unique_prompts[0] if len(unique_prompts) == 1 else None,
        "optimizer": {
            "name": "AdamW",
            "betas": list(ADAM_BETAS),
            "weight_decay": WEIGHT_DECAY,
            "eps": ADAM_EPS,
            "max_grad_norm": MAX_GRAD_NORM,
            "batch_size": 1,
        },
        "flip_probability": FLIP_PROBABILITY if flip else 0.0,
        "window_start": window_start,
        "first_frame": "clean latent, excluded from the loss",
        "noise_scheduler": {k: scheduler.config[k] for k in ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "prediction_type") if k in scheduler.config},
        "trainable_parameters": int(sum(p.numel() for p in params)),
        "num_processes": accelerator.num_processes,
        "ranks_in_sync": ranks_in_sync,
        "data": data,
        "final_loss": final_loss,
        "seconds": round(seconds, 3),
        "started_from_step": start_step,
    }
    if evaluator is not None:
        train_record["eval"] = evaluator.summary()
    md = make_metadata(
        name=name,
        base_spec=base_spec,
        base_fingerprint=base.fingerprint,
        architecture=architecture_of(dict(trained.config)),
        frames=frames,
        width=width,
        height=height,
        train=train_record,
    )
    adapter = extract(trained, None, dtype=dtype, metadata=md)
    manifest = best_adapter = best_manifest = None
    if evaluator is not None and evaluator.best is not None:
        best_adapter = _best_adapter(evaluator, train_record, md)
    if is_main:
        if publish:
            manifest = registry.publish_adapter(adapter, force=force, source=f"lamp train {opts.clips}")
            if best_adapter is not None:
                best_manifest = registry.publish_adapter(
                    best_adapter, force=force, source=f"lamp train {opts.clips} (best of '{name}')"
                )
        if evaluator is not None:
            evaluator.cleanup()
        ckpt.unlink(missing_ok=True)
        try:
            ckpt.parent.rmdir()
        except OSError:
            pass
    accelerator.wait_for_everyone()
    return TrainResult(
        name=name,
        manifest=manifest,
        adapter=adapter,
        losses=losses,
        steps=steps,
        seconds=seconds,
        seed=seed,
        final_loss=final_loss,
        config=train_record,
        data=data,
        resumed_from=start_step,
        video_unet=trained,
        is_main_process=is_main,
        eval=train_record.get("eval"),
        best_adapter=best_adapter,
        best_manifest=best_manifest,
    )


# --------------------------------------------------------------------------------------------
# benchmark (`lamp bench train`): the real step on cached-style latents, no data, no VAE

def _peak_rss_bytes() -> int:
    import resource
    import sys

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)  # bytes on macOS, KiB on Linux


def benchmark_training(
    *,
    base: str = "tiny",
    full_sd: bool = False,
    steps: int = 10,
    warmup: int = 2,
    frames: int = 16,
    width: int = 512,
    height: int = 320,
    mixed_precision: str | None = None,
    gradient_checkpointing: bool | None = None,
    device: str | None = "auto",
    seed: int = 0,
    progress: Reporter | None = None,
) -> dict[str, Any]:
    """Time `steps` training steps (after `warmup`) and report peak memory.

    `full_sd`: the SD-1.x UNet architecture with random weights (nothing to download); otherwise
    the UNet of `base`. Latents and text embeddings are random tensors of the real shapes: with
    cached latents a training step never touches the VAE or the text encoder. Peak memory is
    `torch.cuda.max_memory_allocated` on CUDA, the process's peak RSS elsewhere.
    """
    import torch
    from diffusers import DDPMScheduler

    from .models.base import architecture_of
    from .models.video_unet import VideoUNet
    from .testing import SD1_RANDOM_SPEC, SD1_UNET_CONFIG, SD_SCHEDULER_CONFIG, random_sd1_unet

    _check_size(width, height)
    steps, frames = _positive(steps, "--steps"), _positive(frames, "--frames")
    dev = str(resolve_device(device or settings.get("device")))  # "cpu", "cuda", "cuda:1", "mps"
    mp = resolve_mixed_precision(mixed_precision, dev)
    accelerator = make_accelerator(mp, dev)
    device_t = accelerator.device
    torch.manual_seed(seed)
    if full_sd:
        unet = random_sd1_unet(device_t, seed)  # random init directly on the accelerator
        scheduler = DDPMScheduler.from_config(SD_SCHEDULER_CONFIG)
        spec, vae_scale, text_dim = SD1_RANDOM_SPEC, 8, SD1_UNET_CONFIG["cross_attention_dim"]
    else:
        from .models.base import load_base

        b = load_base(base, device="cpu")
        unet, scheduler, spec = b.unet, b.ddpm(), base
        vae_scale, text_dim = b.vae_scale_factor, int(b.unet.config.cross_attention_dim)
    unet_params = sum(p.numel() for p in unet.parameters())
    video_unet = VideoUNet.from_unet2d(unet.to(device_t)).freeze_base()
    use_ckpt = device_t.type == "cuda" if gradient_checkpointing is None else bool(gradient_checkpointing)
    video_unet.set_gradient_checkpointing(use_ckpt)
    video_unet.train()
    trainable = [p for _, p in video_unet.trainable_parameters()]
    optimizer = make_optimizer(trainable, 3e-5, device_t)
    model, optimizer = accelerator.prepare(video_unet, optimizer)
    h, w = height // vae_scale, width // vae_scale
    gen = torch.Generator().manual_seed(seed)
    latents = torch.randn(1, 4, frames, h, w, generator=gen).to(device_t)
    text = torch.randn(1, 77, text_dim, generator=gen).to(device_t)

    def one_step(k: int) -> float:
        g = step_generator(seed, 0, k)
        noise = torch.randn(latents.shape, generator=g).to(device_t)
        t = torch.randint(int(scheduler.config.num_train_timesteps), (1,), generator=g).to(device_t)
        loss = diffusion_loss(model, scheduler, latents, noise, t, text)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(trainable, MAX_GRAD_NORM)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())  # the real loop reads the loss every step too

    def sync() -> None:
        if device_t.type == "cuda":
            torch.cuda.synchronize()

    rep = reporter_or_null(progress)
    rep.start("warm-up", warmup)
    for k in range(warmup):
        one_step(k)
        rep.advance(1)
    sync()
    if device_t.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    rep.start("bench train", steps)
    t0 = time.perf_counter()
    for k in range(steps):
        loss = one_step(warmup + k)
        rep.advance(1, loss=loss)
    sync()
    seconds = time.perf_counter() - t0
    rep.finish()
    if device_t.type == "cuda":
        peak, peak_kind = int(torch.cuda.max_memory_allocated()), "cuda max_memory_allocated"
        device_name = torch.cuda.get_device_name(device_t)
    else:
        peak, peak_kind = _peak_rss_bytes(), "process peak RSS"
        device_name = str(device_t)
    return {
        "base": spec,
        "architecture": architecture_of(dict(unet.config)),
        "device": str(device_t),
        "device_name": device_name,
        "mixed_precision": mp,
        "gradient_checkpointing": use_ckpt,
        "frames": frames,
        "width": width,
        "height": height,
        "latent": [4, frames, h, w],
        "warmup": warmup,
        "steps": steps,
        "seconds": seconds,
        "ms_per_step": 1000 * seconds / steps,
        "steps_per_second": steps / seconds,
        "peak_memory_bytes": peak,
        "peak_memory_kind": peak_kind,
        "unet_parameters": int(unet_params),
        "trainable_parameters": int(sum(p.numel() for p in trainable)),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
