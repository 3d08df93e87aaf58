"""`lamp bench toy`: the ablation of LAMP's parts on the toy world (a measurement, not a test)."""

from __future__ import annotations

from pathlib import Path

import typer

from ..fsutil import atomic_write_text
from .bench_cmd import bench_app
from .render import RichReporter, emit_json, out_console, setup_logging


@bench_app.command("toy")
def cmd_bench_toy(
    motion: list[str] = typer.Option(["slide_right", "rise"], "--motion", "-m", help="Toy motions to learn (repeat)."),
    steps: int = typer.Option(300, "--steps", help="Training steps per motion."),
    targets: int = typer.Option(4, "--targets", help="Unseen shape/colour pairs generated per motion and variant."),
    sample_steps: int = typer.Option(25, "--sample-steps", help="DDIM steps per video."),
    seed: int = typer.Option(0, "--seed", help="Seed for clips, training and sampling."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Also write the markdown table to this file."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
) -> None:
    """Motion error and content fidelity on the toy base, full method vs. each part switched off
    (shared noise, AdaIN, histogram matching, first-frame conditioning, temporal conv).

    Examples:

      lamp bench toy

      lamp bench toy --motion slide_right --motion rise --motion grow --out toy_ablation.md
    """
    from ..toy.ablation import markdown_table, run_ablation

    setup_logging()
    rows, record = run_ablation(
        motion, train_steps=steps, targets=targets, seed=seed, sample_steps=sample_steps,
        progress=None if json_out else RichReporter(),
    )
    table = markdown_table(rows)
    if out is not None:
        atomic_write_text(out, table + "\n")
    if json_out:
        emit_json({"rows": [r.__dict__ for r in rows], "record": record, "markdown": table})
        return
    out_console.print(table, highlight=False, soft_wrap=True)
