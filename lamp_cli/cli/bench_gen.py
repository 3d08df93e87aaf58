"""`lamp bench gen`: time a whole video and one UNet step, and measure peak memory (not a test)."""

from __future__ import annotations

import typer

from .bench_cmd import bench_app
from .render import RichReporter, emit_json, out_console, setup_logging


@bench_app.command("gen")
def cmd_bench_gen(
    base: str = typer.Option("tiny", "--base", help="Base model to sample with (ignored with --full-sd)."),
    full_sd: bool = typer.Option(False, "--full-sd", help="The full SD-1.x architecture with random weights (GPU)."),
    frames: int = typer.Option(16, "--frames", help="Frames per video."),
    width: int = typer.Option(512, "--width", help="Width in pixels (multiple of 8)."),
    height: int = typer.Option(320, "--height", help="Height in pixels (multiple of 8)."),
    steps: int = typer.Option(50, "--steps", help="DDIM steps of the timed video."),
    guidance: float = typer.Option(12.5, "--guidance", help="Guidance scale (CFG doubles the UNet batch)."),
    dtype: str = typer.Option("auto", "--dtype", help="auto, fp32, fp16 or bf16."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps."),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the video UNet first."),
    repeats: int = typer.Option(5, "--repeats", help="Timed UNet calls for the step comparison."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
) -> None:
    """Time `lamp gen`'s engine: seconds per video, per UNet step (video vs plain 2-D UNet), peak memory.

    Examples:

      lamp bench gen --frames 4 --width 64 --height 64 --steps 4

      lamp bench gen --full-sd --dtype bf16 --json
    """
    from ..bench.gen import benchmark_sampling

    setup_logging()
    r = benchmark_sampling(
        base=base, full_sd=full_sd, frames=frames, width=width, height=height, steps=steps, guidance=guidance,
        dtype=dtype, device=device, compile=compile, repeats=repeats,
        progress=None if json_out else RichReporter(),
    )
    if json_out:
        emit_json(r)
        return
    from rich.table import Table

    table = Table(box=None, show_header=True, header_style="bold")
    for col in ("BASE", "DEVICE", "DTYPE", "F×H×W", "STEPS", "S/VIDEO", "MS/STEP", "VIDEO/2D", "PEAK MEM"):
        table.add_column(col)
    table.add_row(
        r["base"], r["device_name"], r["dtype"], f"{r['frames']}×{r['height']}×{r['width']}", str(r["steps"]),
        f"{r['video_s']:.2f}", f"{1000 * r['video_unet_step_s']:.1f}", f"{r['video_over_2d']:.2f}×",
        f"{r['peak_memory_bytes'] / 2**30:.2f} GiB ({r['peak_memory_kind']})",
    )
    out_console.print(table)
