"""`lamp bench train`: time a training step and measure peak memory (a measurement, not a test)."""

from __future__ import annotations

import typer

from .bench_cmd import bench_app
from .render import RichReporter, emit_json, out_console, setup_logging


@bench_app.command("train")
def cmd_bench_train(
    base: str = typer.Option("tiny", "--base", help="Base whose UNet is trained (ignored with --full-sd)."),
    full_sd: bool = typer.Option(False, "--full-sd", help="The full SD-1.x UNet architecture with random weights (GPU)."),
    steps: int = typer.Option(10, "--steps", help="Timed steps."),
    warmup: int = typer.Option(2, "--warmup", help="Untimed steps first."),
    frames: int = typer.Option(16, "--frames", help="Frames per window."),
    width: int = typer.Option(512, "--width", help="Width in pixels (latent = width/8)."),
    height: int = typer.Option(320, "--height", help="Height in pixels (latent = height/8)."),
    mixed_precision: str | None = typer.Option(None, "--mixed-precision", help="auto, no, fp16 or bf16 (default: auto)."),
    gradient_checkpointing: bool | None = typer.Option(
        None, "--gradient-checkpointing/--no-gradient-checkpointing", help="(default: on for CUDA, off elsewhere)"
    ),
    device: str | None = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
) -> None:
    """Time training steps on cached latents and report peak memory.

    Examples:

      lamp bench train --steps 20 --frames 4 --width 64 --height 64

      lamp bench train --full-sd --mixed-precision bf16 --json
    """
    from ..bench.train import benchmark_training

    setup_logging()
    r = benchmark_training(
        base=base,
        full_sd=full_sd,
        steps=steps,
        warmup=warmup,
        frames=frames,
        width=width,
        height=height,
        mixed_precision=mixed_precision,
        gradient_checkpointing=gradient_checkpointing,
        device=device,
        progress=None if json_out else RichReporter(),
    )
    if json_out:
        emit_json(r)
        return
    from rich.table import Table

    table = Table(box=None, show_header=True, header_style="bold")
    for col in ("BASE", "DEVICE", "PRECISION", "CKPT", "F×H×W", "MS/STEP", "STEPS/S", "PEAK MEM"):
        table.add_column(col)
    table.add_row(
        r["base"],
        r["device_name"],
        r["mixed_precision"],
        "on" if r["gradient_checkpointing"] else "off",
        f"{r['frames']}×{r['height']}×{r['width']}",
        f"{r['ms_per_step']:.1f}",
        f"{r['steps_per_second']:.2f}",
        f"{r['peak_memory_bytes'] / 2**30:.2f} GiB ({r['peak_memory_kind']})",
    )
    out_console.print(table)
