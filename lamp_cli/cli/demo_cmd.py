"""`lamp demo`: learn a toy motion on the CPU and show that it transfers to unseen content.

Thin: parse, call `lamp_cli.toy.demo.run_demo`, render what it measured.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from ..toy import recipe
from .render import RichReporter, emit_json, info, out_console, setup_logging

# The toy world's motions (lamp_cli.toy.world.MOTIONS), spelled out so `--help` needs no import.
ToyMotion = Enum(
    "ToyMotion",
    {m: m for m in ("slide_right", "slide_left", "rise", "fall", "grow", "spin", "bounce")},
    type=str,
)


def cmd_demo(
    motion: ToyMotion = typer.Option("slide_right", "--motion", "-m", help="The toy motion to learn."),
    steps: int = typer.Option(recipe.DEMO_TRAIN_STEPS, "--steps", min=1, help="Training steps (a few minutes on 2 CPU cores)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Folder for the video files (default: ./lamp-demo-MOTION)."),
    keep: bool = typer.Option(False, "--keep", help="Keep the trained motion in the registry as toy-MOTION."),
    seed: int = typer.Option(0, "--seed", help="Seed for the clips, the training and the video."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
) -> None:
    """Learn a motion from 8 toy clips on the built-in toy base, then generate a shape and colour
    the clips never showed, and measure whether it moves the same way.

    Runs on a CPU in a few minutes, with no downloads. Writes an mp4, a gif, a PNG of all frames
    and a JSON record; prints the object's measured path against the trained one.

    Examples:

      lamp demo

      lamp demo --motion rise --keep

      lamp demo --motion spin --steps 500 --out ./spin-demo --json
    """
    from ..toy.demo import run_demo

    setup_logging()
    info(f"demo: learning '{motion.value}' from 8 toy clips on the toy base (CPU, ~{steps} steps)")
    result = run_demo(motion.value, out=out, steps=steps, keep=keep, seed=seed, progress=RichReporter())
    if json_out:
        emit_json(result.to_json())
        return
    check = result.check
    vx, vy = check.velocity
    ex, ey = check.expected_velocity
    ff = result.first_frame
    mark = "yes" if result.first_frame_ok else "no"
    lines = [
        f"trained '{result.name}' in {result.train_seconds:.0f} s ({result.train_steps} steps, loss {result.final_loss:.4f}) "
        f"on clips of {len(result.training_pairs)} other shape/colour pairs",
        f"generated \"{result.prompt}\" (a pair the clips never showed) in {result.sample_seconds:.0f} s",
        f"motion: measured {vx:+.2f} px/frame right, {-vy:+.2f} px/frame up; "
        f"trained {ex + 0.0:+.2f} right, {-ey + 0.0:+.2f} up; mean path error {check.error:.2f} px "
        f"(object found in {check.found}/{len(check.measured)} frames)",
        f"frame 1: a {ff.color} {ff.shape} on a {ff.background} background - matches the prompt: {mark} "
        f"({result.first_frame_candidates[0]} of {result.first_frame_candidates[1]} text-to-image candidates did)",
    ]
    c = result.content
    if c is not None:
        lines += [
            f"content: frame 1's {c.shape} kept in {c.shape_kept:.2f} of the moving frames; prompted colours in "
            f"{c.colour_kept:.2f} of frames; artefacts: {c.smudges} smudges in {c.smudged_frames} of "
            f"{c.moving_frames} moving frames (colour purity {c.purity:.3f})",
            f"verdict: {result.verdict}",
        ]
    for key in ("mp4", "gif", "contact_sheet", "json"):
        lines.append(f"wrote {result.files[key]}")
    lines.append(f"kept '{result.name}' in the registry" if result.kept else f"removed '{result.name}' (use --keep to keep it)")
    for line in lines:
        out_console.print(line, highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("demo")(cmd_demo)
