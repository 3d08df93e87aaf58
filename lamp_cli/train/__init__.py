"""Few-shot motion training: data (clips, prompts, latents, batches), the loop, checkpoints and
resume, and evaluation during training. `train_motion` is the entry point."""

from .data import (
    ClipInfo,
    ClipLatents,
    caption_file,
    check_clips,
    diffusion_loss,
    draw_batch,
    encode_clips,
    find_clips,
    prompt_from_path,
    resolve_prompts,
    step_generator,
    window_span,
)
from .loop import (
    MIXED_PRECISION_CHOICES,
    StepInfo,
    TrainResult,
    make_accelerator,
    make_optimizer,
    resolve_mixed_precision,
    train_motion,
)
from .resume import checkpoint_path, read_checkpoint_meta, run_dir

__all__ = [
    "MIXED_PRECISION_CHOICES", "ClipInfo", "ClipLatents", "StepInfo", "TrainResult", "caption_file", "check_clips",
    "checkpoint_path", "diffusion_loss", "draw_batch", "encode_clips", "find_clips", "make_accelerator",
    "make_optimizer", "prompt_from_path", "read_checkpoint_meta", "resolve_mixed_precision", "resolve_prompts",
    "run_dir", "step_generator", "train_motion", "window_span",
]
