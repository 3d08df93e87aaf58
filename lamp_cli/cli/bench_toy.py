"""`lamp bench toy`: the ablation of LAMP's parts on the toy world (a measurement, not a test)."""

from __future__ import annotations

from pathlib import Path

import typer

from ..fsutil import atomic_write_text
from ..jsonio import nulls_for_unmeasured
from ..toy import recipe
from .bench_cmd import bench_app
from .render import RichReporter, emit_json, out_console, setup_logging


@bench_app.command("toy")
def cmd_bench_toy(
    motion: list[str] = typer.Option(["slide_right", "rise", "grow"], "--motion", "-m",
                                     help="Toy motions to learn (repeat)."),
    steps: int = typer.Option(recipe.TRAIN_STEPS, "--steps", min=1, help="Training steps per motion (the toy recipe's)."),
    targets: int = typer.Option(3, "--targets", help="Unseen shape/colour pairs generated per motion, seed and variant."),
    seeds: int = typer.Option(1, "--seeds", help="Seeds (from --seed): each learns every motion from its own clips."),
    sample_steps: int = typer.Option(recipe.SAMPLE_STEPS, "--sample-steps", help="DDIM steps per video."),
    seed: int = typer.Option(0, "--seed", help="Seed for clips, training and sampling."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Also write the markdown table to this file."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
) -> None:
    """Path error, shape kept, colour kept and artefacts on the toy base, full method vs. each
    part switched off (shared noise, AdaIN, histogram matching, first-frame conditioning, temporal
    conv), with a one-line verdict per motion for the full method.

    Examples:

      lamp bench toy

      lamp bench toy --motion slide_right --motion rise --motion spin --seeds 3 --out toy_ablation.md
    """
    from ..toy.ablation import markdown_table, run_ablation, shape_table, verdict_line

    setup_logging()
    rows, record = run_ablation(
        motion, train_steps=steps, targets=targets, seed=seed, seeds=seeds, sample_steps=sample_steps,
        progress=None if json_out else RichReporter(),
    )
    table = markdown_table(rows)
    by_shape = shape_table(record["videos"])
    verdicts = [f"{r.motion}: {verdict_line(r)}" for r in rows if r.variant == "full"]
    if out is not None:
        atomic_write_text(out, table + "\n\n" + "\n".join(f"- {v}" for v in verdicts) + "\n\nFull method by shape:\n\n"
                          + by_shape + "\n")
    if json_out:
        # a variant that draws no object (no first frame) has no path: null, not a refusal
        emit_json(nulls_for_unmeasured({"rows": [r.__dict__ for r in rows], "verdicts": verdicts, "record": record,
                                        "markdown": table, "by_shape": by_shape}))
        return
    out_console.print(table, highlight=False, soft_wrap=True)
    for line in verdicts:
        out_console.print(line, highlight=False, soft_wrap=True)
    out_console.print("\nFull method by shape:\n" + by_shape, highlight=False, soft_wrap=True)
