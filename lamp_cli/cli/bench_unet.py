"""`lamp bench unet`: 2-D UNet vs lamp's VideoUNet vs AnimateDiff, FLOPs and time (not a test)."""

from __future__ import annotations

import typer

from .bench_cmd import bench_app
from .render import emit_json, out_console, setup_logging


@bench_app.command("unet")
def cmd_bench_unet(
    base: str | None = typer.Option(None, "--base", help="Base whose UNet is compared (default: SD-1.x architecture, random weights)."),
    frames: int = typer.Option(16, "--frames", help="Frames per video."),
    width: int = typer.Option(128, "--width", help="Width in pixels (latent = width/8)."),
    height: int = typer.Option(128, "--height", help="Height in pixels (latent = height/8)."),
    batch: int = typer.Option(2, "--batch", help="Videos per call (2 = one CFG step)."),
    repeats: int = typer.Option(5, "--repeats", help="Timed rounds (2-D, lamp, AnimateDiff in turn)."),
    device: str = typer.Option("cpu", "--device", help="auto, cpu, cuda, cuda:N or mps."),
    dtype: str = typer.Option("fp32", "--dtype", help="auto, fp32, fp16 or bf16."),
    shares: bool = typer.Option(True, "--shares/--no-shares", help="Also time each added operation (one more call)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
) -> None:
    """Compare the 2-D UNet, lamp's VideoUNet and AnimateDiff's UNetMotionModel on one base:
    FLOPs (meta device) and interleaved time per call, and where lamp's added time goes.

    Examples:

      lamp bench unet

      lamp bench unet --width 256 --height 256 --repeats 7 --json

      lamp bench unet --device cuda --dtype bf16 --width 512 --height 320
    """
    from ..bench.unet import benchmark_unet

    setup_logging()
    r = benchmark_unet(
        base=base, frames=frames, width=width, height=height, batch=batch, repeats=repeats,
        device=device, dtype=dtype, shares=shares,
    )
    if json_out:
        emit_json(r)
        return
    from rich.table import Table

    table = Table(box=None, show_header=True, header_style="bold")
    for col in ("MODEL", "GFLOP", "FLOP RATIO", "MS MIN", "MS MEDIAN", "TIME RATIO"):
        table.add_column(col)
    for name, label in (("unet2d", "2-D UNet"), ("lamp", "lamp VideoUNet"), ("animatediff", "AnimateDiff")):
        t = r["time_s"][name]
        table.add_row(
            label, f"{r['flops'][name] / 1e9:.1f}", f"{r['flops'][name] / r['flops']['unet2d']:.3f}",
            f"{1000 * t['min']:.1f}", f"{1000 * t['median']:.1f}", f"{t['min'] / r['time_s']['unet2d']['min']:.3f}",
        )
    out_console.print(table)
    out_console.print(
        f"{r['base']}, {r['device']} {r['dtype']}, B={r['batch']} F={r['frames']} latent {r['latent'][0]}×{r['latent'][1]}: "
        f"lamp time/FLOP ratio {r['lamp_time_over_flop']:.3f}, AnimateDiff {r['animatediff_time_over_flop']:.3f}"
    )
    if "lamp_shares" in r:
        out_console.print("lamp call: " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in r["lamp_shares"].items()))
