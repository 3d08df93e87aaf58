"""`lamp train CLIPS --name NAME`: learn a motion from a handful of clips and publish it.

Thin: parse, call `lamp_cli.train.train_motion`, render. torch is imported by the library
only when the command runs.
"""

from __future__ import annotations

from enum import Enum

import typer

from ..errors import UsageError
from ..lora import parse_loras
from ..prompts import read_prompts_file
from .options import BASE_CHOICES, DEVICE_CHOICES, setting_option
from .render import RichReporter, emit_json, out_console, setup_logging


class MixedPrecision(str, Enum):
    auto = "auto"
    no = "no"
    fp16 = "fp16"
    bf16 = "bf16"


class AdapterDtype(str, Enum):
    fp16 = "fp16"
    bf16 = "bf16"
    fp32 = "fp32"


def cmd_train(
    clips: str = typer.Argument(..., metavar="CLIPS", help="A folder of training videos (mp4, mov, webm, mkv, gif), or one video."),
    name: str = typer.Option(..., "--name", "-n", help="Name of the motion in the registry."),
    prompt: str | None = typer.Option(
        None, "--prompt", "-p", help="Prompt for every clip (default: the recipe's, <video>.txt captions, or the folder name)."
    ),
    recipe: str | None = typer.Option(None, "--recipe", help="A built-in recipe (`lamp recipes`) or a .toml file: prompt and defaults."),
    base: str | None = setting_option("base", "--base", help=f"Base model: {BASE_CHOICES}."),
    lora: list[str] | None = typer.Option(None, "--lora", help="Image LoRA FILE[:WEIGHT] fused into the base: learn the motion on a styled base; repeatable (only from the command line)."),
    steps: int | None = setting_option("train_steps", "--steps", help="Training steps (default: the recipe's, else {default})."),
    frames: int | None = setting_option("frames", "--frames", help="Frames per training window (default: the recipe's, else {default})."),
    stride: int | None = setting_option("stride", "--stride", help="Take every STRIDE-th frame (default: the recipe's, else {default})."),
    width: int | None = setting_option("width", "--width", help="Width in pixels, a multiple of 8 (default: the recipe's, else {default})."),
    height: int | None = setting_option("height", "--height", help="Height in pixels, a multiple of 8 (default: the recipe's, else {default})."),
    lr: float | None = setting_option("lr", "--lr", help="AdamW learning rate (default: the recipe's, else {default})."),
    seed: int | None = typer.Option(None, "--seed", help="Random seed (default: a random one, printed and recorded)."),
    mixed_precision: MixedPrecision | None = typer.Option(
        None, "--mixed-precision", help="auto | no | fp16 | bf16; auto = bf16 (or fp16) on CUDA, none elsewhere (default: auto)."
    ),
    gradient_checkpointing: bool | None = typer.Option(
        None,
        "--gradient-checkpointing/--no-gradient-checkpointing",
        help="Recompute activations to save memory (default: on for CUDA, off elsewhere).",
    ),
    checkpoint_every: int | None = typer.Option(
        None, "--checkpoint-every", help="Save a resumable checkpoint every N steps; 0 = only on Ctrl-C (default: 1000)."
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue the interrupted run of NAME from its checkpoint."),
    force: bool = typer.Option(False, "--force", help="Replace a motion named NAME; discard an unfinished run's checkpoint."),
    device: str | None = setting_option("device", "--device", help=f"{DEVICE_CHOICES}."),
    adapter_dtype: AdapterDtype | None = typer.Option(
        None, "--adapter-dtype", help="fp16 | bf16 | fp32: dtype of the published adapter (default: fp16, about half the size of fp32)."
    ),
    eval_every: int | None = typer.Option(
        None, "--eval-every", help="Every N steps and at the end, sample the eval prompts as `lamp gen` does and score them with CLIP; the best step is also published as NAME-best."
    ),
    eval_prompts: list[str] | None = typer.Option(
        None, "--eval-prompts", "--eval-prompt", metavar="PROMPT", help="An eval prompt; repeat for several (default: the recipe's eval prompts)."
    ),
    eval_prompts_file: str | None = typer.Option(
        None, "--eval-prompts-file", help="Eval prompts, one per line (instead of --eval-prompts)."
    ),
    eval_steps: int | None = setting_option(
        "steps", "--eval-steps", help="DDIM steps of the eval videos, as `lamp gen`'s --steps; fewer is faster, recorded."
    ),
    eval_seed: int | None = typer.Option(None, "--eval-seed", help="Seed of every eval video (default: 0, as `lamp eval`)."),
    eval_out: str | None = typer.Option(
        None, "--eval-out", help="Also write each evaluation's videos here: step-NNNNNN/NN_<prompt>.mp4 with a JSON sidecar."
    ),
    clip_model: str | None = setting_option("clip_model", "--clip-model", help="CLIP for --eval-every: repo id (local cache) or folder."),
    flip: bool | None = typer.Option(
        None, "--flip/--no-flip",
        help="Random horizontal flips of the clips (default: on, as the paper). Turn off for motions with a left/right direction.",
    ),
    min_timestep: int | None = typer.Option(
        None, "--min-timestep", help="Train only on noise levels t >= this, of 1000 (default: 0, all levels, as the paper)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
) -> None:
    """Learn a motion from a handful of clips and publish it to the registry.

    Examples:

      lamp train ./horse_run --name horse-run

      lamp train ./clips --name guitar --prompt "a man plays the guitar" --steps 5000

      lamp train ./clips --name rain --recipe rain

      lamp train ./horse_run --name horse-run --resume

      lamp train ./clips --name rain --recipe rain --eval-every 500 --eval-steps 25

      accelerate launch -m lamp_cli train ./horse_run --name horse-run
    """
    from ..train import train_motion

    setup_logging()
    if eval_prompts_file is not None:
        if eval_prompts:
            raise UsageError("give --eval-prompts or --eval-prompts-file, not both")
        eval_prompts = read_prompts_file(eval_prompts_file)
    result = train_motion(
        clips,
        name,
        base=base,
        prompt=prompt,
        recipe=recipe,
        steps=steps,
        frames=frames,
        stride=stride,
        width=width,
        height=height,
        lr=lr,
        seed=seed,
        mixed_precision=mixed_precision.value if mixed_precision is not None else None,
        gradient_checkpointing=gradient_checkpointing,
        checkpoint_every=checkpoint_every,
        resume=resume,
        force=force,
        device=device,
        progress=RichReporter(),
        adapter_dtype=adapter_dtype.value if adapter_dtype is not None else None,
        eval_every=eval_every,
        eval_prompts=eval_prompts,
        eval_steps=eval_steps,
        eval_seed=eval_seed,
        clip_model=clip_model,
        eval_out=eval_out,
        flip=flip,
        min_timestep=min_timestep,
        loras=parse_loras(lora),
    )
    if not result.is_main_process:
        return  # under `accelerate launch`, only the main process reports
    if json_out:
        emit_json(result.to_json())
        return
    m = result.manifest
    out_console.print(
        f"published '{result.name}' ({m.id}, {m.size / 1e6:.1f} MB, {result.steps} steps, "
        f"loss {result.final_loss:.4f}, {result.seconds:.0f} s, seed {result.seed})",
        highlight=False,
        soft_wrap=True,
    )
    best = (result.eval or {}).get("best")
    if best is not None and result.best_manifest is not None:
        out_console.print(
            f"published '{result.best_manifest.name}' ({result.best_manifest.id}, the best of "
            f"{sum('alignment' in p for p in result.eval['history'])} evaluations: step {best['step']}, alignment {best['alignment']:.2f}, "
            f"consistency {best['consistency']:.2f})",
            highlight=False,
            soft_wrap=True,
        )


def register(app: typer.Typer) -> None:
    app.command("train")(cmd_train)
