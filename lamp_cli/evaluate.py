"""The paper's metrics (LAMP, Table 1), measured with CLIP.

- text alignment: mean over a video's frames of 100·cos(frame, prompt);
- frame consistency: mean over all frame pairs i<j of 100·cos(frame_i, frame_j);
- diversity (lower is more diverse): for the videos of one motion, each video's mean of its
  unit-normalised frame embeddings, then the mean over video pairs k<l of 100·dot(m_k, m_l).

The metric functions work on embeddings only (numpy or torch, N×D) and are exact; `Scorer`
turns frames and prompts into CLIP embeddings (batched, prompts once) and `evaluate_videos`
scores a list of video files. Any video lamp can read can be scored, so other tools' outputs
are judged by the same code.

CLIP comes from transformers (`CLIPModel` + tokenizer + image processor), loaded from the local
Hugging Face cache only (default `openai/clip-vit-large-patch14`, setting `clip_model`), or from
a local folder in the same layout.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import settings
from .devices import resolve_device
from .errors import InvalidInput, LampError
from .fsutil import atomic_write_text
from .generate import slugify
from .models.base import quiet_hf_progress
from .progress import Reporter, reporter_or_null
from .settings import DEFAULTS
from .video import FRAME_EXTENSIONS, VIDEO_EXTENSIONS, probe_video, read_video, write_video

log = logging.getLogger("lamp")

DEFAULT_BATCH_SIZE = 32


# ---------------------------------------------------------------------------------------
# metrics on embeddings


def _as_matrix(x: Any, what: str) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor; metrics are computed in float64 numpy
        x = x.detach().float().cpu().numpy()
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] < 1:
        raise InvalidInput(f"{what} must be an N×D matrix of embeddings, got shape {arr.shape}")
    return arr


def unit(x: Any) -> np.ndarray:
    """Rows scaled to length 1."""
    arr = _as_matrix(x, "embeddings")
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    if (norms == 0).any():
        raise InvalidInput("an embedding is all zeros; its direction (and cosine) is undefined")
    return arr / norms


def alignment(frame_embeds: Any, text_embed: Any) -> float:
    """Mean over frames of 100·cos(frame, prompt). frame_embeds F×D, text_embed D (or 1×D)."""
    frames = unit(frame_embeds)
    if hasattr(text_embed, "detach"):
        text_embed = text_embed.detach().float().cpu().numpy()
    text = unit(np.asarray(text_embed, dtype=np.float64).reshape(1, -1))  # D -> 1×D
    if text.shape[1] != frames.shape[1]:
        raise InvalidInput(f"frame embeddings are {frames.shape[1]}-d but the prompt's is {text.shape[1]}-d")
    return float(100.0 * (frames @ text[0]).mean())


def consistency(frame_embeds: Any) -> float:
    """Mean over all frame pairs i<j of 100·cos(frame_i, frame_j). Needs at least 2 frames."""
    frames = unit(frame_embeds)
    n = frames.shape[0]
    if n < 2:
        raise InvalidInput("frame consistency needs a video of at least 2 frames")
    sims = frames @ frames.T  # F×F cosines
    i, j = np.triu_indices(n, k=1)
    return float(100.0 * sims[i, j].mean())


def video_embedding(frame_embeds: Any) -> np.ndarray:
    """A video's mean of unit-normalised frame embeddings (not renormalised, as the paper defines)."""
    return unit(frame_embeds).mean(axis=0)


def diversity(videos: Sequence[Any]) -> float:
    """Mean over video pairs k<l of 100·dot(m_k, m_l), m = video_embedding. Lower is more diverse."""
    if len(videos) < 2:
        raise InvalidInput("diversity needs at least 2 videos")
    means = np.stack([video_embedding(v) for v in videos])  # V×D
    sims = means @ means.T
    i, j = np.triu_indices(len(videos), k=1)
    return float(100.0 * sims[i, j].mean())


# ---------------------------------------------------------------------------------------
# CLIP


def clip_missing(spec: str, detail: str) -> LampError:
    """The error for a CLIP model that cannot be loaded offline, with the command that fixes it."""

    default = DEFAULTS["clip_model"]
    also = "" if spec == default else f" (the paper's CLIP: `hf download {default}`)"
    return LampError(
        f"CLIP model '{spec}' is not available locally ({detail})",
        hint=f"download it once with `hf download {spec}`{also}, or pass a local folder with --clip-model",
    )


@dataclass
class ClipComponents:
    spec: str
    model: Any  # transformers CLIPModel, eval mode
    tokenizer: Any
    image_processor: Any
    device: Any


def load_clip(spec: str | None = None, device: str | Any = "auto") -> ClipComponents:
    """CLIP from a local folder or the local HF cache (never the network)."""
    from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel


    spec = str(settings.get("clip_model", spec))
    path = Path(spec).expanduser()
    looks_local = path.exists() or spec.startswith((".", "/", "~")) or spec.count("/") > 1
    if looks_local and not path.is_dir():
        raise LampError(
            f"CLIP model folder {path} does not exist",
            hint="pass a folder saved by transformers (config.json, model weights, tokenizer, "
            "preprocessor_config.json), or a Hugging Face repo id such as openai/clip-vit-large-patch14",
        )
    dev = resolve_device(device)
    quiet_hf_progress()
    source = str(path) if looks_local else spec
    try:
        model = CLIPModel.from_pretrained(source, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
        processor = AutoImageProcessor.from_pretrained(source, local_files_only=True)
    except (OSError, ValueError, KeyError) as e:
        if looks_local:
            reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise LampError(
                f"cannot load a CLIP model from {path}: {reason}",
                hint="the folder must hold what CLIPModel/tokenizer/image processor save_pretrained write",
            ) from e
        raise clip_missing(spec, "not in the local Hugging Face cache") from e
    model = model.to(dev).eval()
    model.requires_grad_(False)
    return ClipComponents(spec, model, tokenizer, processor, dev)


class Scorer:
    """CLIP embeddings for frames (in batches) and prompts, and the paper's scores from them."""

    def __init__(
        self,
        clip: ClipComponents | str | None = None,
        *,
        device: str | Any = "auto",
        batch_size: int = DEFAULT_BATCH_SIZE,
    ):
        self.clip = clip if isinstance(clip, ClipComponents) else load_clip(clip, device)
        self.batch_size = int(batch_size)

    @property
    def model_name(self) -> str:
        return self.clip.spec

    def embed_frames(self, frames: np.ndarray) -> np.ndarray:
        """T×H×W×3 uint8 -> T×D CLIP image embeddings (projected, not normalised)."""
        import torch

        frames = np.asarray(frames)
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise InvalidInput(f"expected uint8 frames T×H×W×3, got {frames.dtype} {frames.shape}")
        model, out = self.clip.model, []
        with torch.inference_mode():
            for start in range(0, len(frames), self.batch_size):
                chunk = list(frames[start : start + self.batch_size])
                pixels = self.clip.image_processor(images=chunk, return_tensors="pt")["pixel_values"]
                pixels = pixels.to(self.clip.device, model.dtype)  # B×3×S×S
                pooled = model.vision_model(pixel_values=pixels).pooler_output  # B×hidden
                out.append(model.visual_projection(pooled).float().cpu().numpy())  # B×D
        return np.concatenate(out)

    def embed_prompts(self, prompts: Sequence[str]) -> np.ndarray:
        """N prompts -> N×D CLIP text embeddings, in one batch (truncated to CLIP's 77 tokens)."""
        import torch

        model = self.clip.model
        max_len = int(getattr(model.config.text_config, "max_position_embeddings", 77))
        tokens = self.clip.tokenizer(
            list(prompts), padding=True, truncation=True, max_length=max_len, return_tensors="pt"
        )
        tokens = {
            k: v.to(self.clip.device) for k, v in tokens.items() if k in ("input_ids", "attention_mask")
        }
        with torch.inference_mode():
            pooled = model.text_model(**tokens).pooler_output  # N×hidden (the EOS token's state)
            return model.text_projection(pooled).float().cpu().numpy()  # N×D


# ---------------------------------------------------------------------------------------
# scoring videos


@dataclass
class VideoScore:
    file: str
    prompt: str
    alignment: float
    consistency: float
    frames: int


@dataclass
class EvalReport:
    clip_model: str
    videos: list[VideoScore] = field(default_factory=list)
    mean_alignment: float = float("nan")
    mean_consistency: float = float("nan")
    diversity: float | None = None  # None with fewer than 2 videos

    def to_dict(self) -> dict[str, Any]:
        return {
            "clip_model": self.clip_model,
            "count": len(self.videos),
            "videos": [asdict(v) for v in self.videos],
            "mean": {"alignment": self.mean_alignment, "consistency": self.mean_consistency},
            "diversity": self.diversity,
        }


def _natural_key(name: str) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def find_videos(folder: str | Path) -> list[Path]:
    """The videos in `folder`, sorted by name (naturally: 2 before 10): video files of the
    extensions lamp reads, and sub-folders of png/jpg frames. Hidden entries are skipped."""

    folder = Path(folder)
    if not folder.is_dir():
        raise InvalidInput(
            f"{folder} is not a folder", hint="--videos takes a folder holding one video per prompt"
        )
    found = []
    for p in folder.iterdir():
        if p.name.startswith("."):
            continue
        if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS:
            found.append(p)
        elif p.is_dir() and any(c.suffix.lower() in FRAME_EXTENSIONS for c in p.iterdir()):
            found.append(p)
    if not found:
        raise InvalidInput(
            f"no videos in {folder}",
            hint=f"put one video ({', '.join(VIDEO_EXTENSIONS)} or a folder of frames) per prompt there",
        )
    return sorted(found, key=lambda p: _natural_key(p.name))


def pair_videos_with_prompts(videos: Sequence[Path], prompts: Sequence[str], where: str = "") -> None:
    """One prompt per video, in order; any other count is an error (it would misalign the pairs)."""
    if len(prompts) != len(videos):
        few = "fewer" if len(prompts) < len(videos) else "more"
        raise InvalidInput(
            f"{len(videos)} videos{where} but {len(prompts)} prompts ({few} prompts than videos)",
            hint="give exactly one prompt per line for each video, in the videos' name order",
        )


def _score(
    scorer: Scorer,
    items: Sequence[tuple[str, str, Callable[[], np.ndarray]]],
    progress: Reporter | None,
) -> EvalReport:
    """items: (name, prompt, load_frames). Frames are loaded one video at a time, so memory
    holds one video's frames, not all of them; each distinct prompt is embedded once."""
    progress = reporter_or_null(progress)
    unique = list(dict.fromkeys(prompt for _, prompt, _ in items))
    text = dict(zip(unique, scorer.embed_prompts(unique), strict=True))
    report = EvalReport(clip_model=scorer.model_name)
    embeds = []
    progress.start("score", len(items))
    for name, prompt, load in items:
        frames = load()
        if len(frames) < 2:
            raise InvalidInput(f"{name} has {len(frames)} frame; scoring needs at least 2")
        e = scorer.embed_frames(frames)  # T×D
        embeds.append(e)
        report.videos.append(
            VideoScore(name, prompt, alignment(e, text[prompt]), consistency(e), len(frames))
        )
        progress.advance(1)
    progress.finish()
    report.mean_alignment = float(np.mean([v.alignment for v in report.videos]))
    report.mean_consistency = float(np.mean([v.consistency for v in report.videos]))
    report.diversity = diversity(embeds) if len(embeds) >= 2 else None
    return report


def score_clips(
    scorer: Scorer,
    clips: Sequence[np.ndarray],
    prompts: Sequence[str],
    names: Sequence[str],
    *,
    progress: Reporter | None = None,
) -> EvalReport:
    """Score in-memory videos (T×H×W×3 uint8 each) against their prompts."""
    if not (len(clips) == len(prompts) == len(names)) or not clips:
        raise InvalidInput(
            f"{len(clips)} videos, {len(prompts)} prompts and {len(names)} names: need the same, >= 1"
        )
    items = [(n, p, lambda c=c: np.asarray(c)) for c, p, n in zip(clips, prompts, names, strict=True)]
    return _score(scorer, items, progress)


def evaluate_videos(
    videos: Sequence[str | Path],
    prompts: Sequence[str],
    *,
    scorer: Scorer | None = None,
    clip_model: str | None = None,
    device: str | Any = "auto",
    progress: Reporter | None = None,
) -> EvalReport:
    """Read each video (any format lamp reads) and score it against its prompt.

    The inputs are checked (readable, at least 2 frames, one prompt each) before CLIP loads.
    """

    paths = [Path(v) for v in videos]
    if not paths:
        raise InvalidInput("no videos to score")
    pair_videos_with_prompts(paths, prompts)
    for p in paths:
        info = probe_video(p)
        if info.num_frames < 2:
            raise InvalidInput(f"{p} has {info.num_frames} frame; scoring needs at least 2")
    scorer = scorer or Scorer(clip_model, device=device)
    items = [
        (str(p), prompt, lambda p=p: read_video(p).frames) for p, prompt in zip(paths, prompts, strict=True)
    ]
    return _score(scorer, items, progress)


# ---------------------------------------------------------------------------------------
# generating the videos to score


def slug(text: str) -> str:
    """A prompt as the file-name part of an eval video: 'a horse runs, on Mars' -> 'a_horse_runs_on_mars'."""

    return slugify(text, max_len=48, empty="prompt")


@dataclass
class GeneratedVideo:
    path: Path
    prompt: str
    seed: int
    record: dict[str, Any]


def generate_videos(
    engine: Any,
    motion: str,
    prompts: Sequence[str],
    out: str | Path,
    *,
    seeds: Sequence[int] = (0,),
    format: str = "mp4",
    fps: float = 8.0,
    progress: Reporter | None = None,
    **sample_kwargs: Any,
) -> list[GeneratedVideo]:
    """One video per (prompt, seed) with `engine.sample` (text-to-image first frame), written to
    `out` as `<prompt#>_<prompt>_seed<seed>.<ext>`, plus `prompts.txt` listing each video's
    prompt in name order, so `lamp eval --videos OUT --prompts-file OUT/prompts.txt` re-scores them."""

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ext = "" if format == "frames" else f".{format}"
    made: list[GeneratedVideo] = []
    for i, prompt in enumerate(prompts):
        for seed in seeds:
            log.info(f"generating {len(made) + 1}/{len(prompts) * len(seeds)}: {prompt!r} (seed {seed})")
            result = engine.sample(
                [(motion, 1.0)], prompt, first_frame=None, seed=seed, progress=progress, **sample_kwargs
            )
            path = out / f"{i:02d}_{slug(prompt)}_seed{seed}{ext}"
            write_video(result.frames, path, fps=fps, format=format)
            made.append(GeneratedVideo(path, prompt, seed, result.record))
    atomic_write_text(out / "prompts.txt", "".join(v.prompt + "\n" for v in made))
    return made
