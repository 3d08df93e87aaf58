"""`lamp compress NAME --name NEW`: a low-rank (SVD) copy of a motion, published as NEW.

Thin: parse, call `lamp_cli.compress.compress_motion`, render. torch is imported by the library
only when the command runs.
"""

from __future__ import annotations

from enum import Enum

import typer

from .render import emit_json, out_console, setup_logging


class FactorDtype(str, Enum):
    fp16 = "fp16"
    bf16 = "bf16"
    fp32 = "fp32"


def cmd_compress(
    name: str = typer.Argument(..., help="The motion to compress (trained, imported or official)."),
    new_name: str = typer.Option(..., "--name", "-n", help="Name of the compressed motion in the registry."),
    rank: int | None = typer.Option(None, "--rank", "-r", help="Rank R for every factored tensor."),
    size: str | None = typer.Option(
        None, "--size", help="Largest file size, e.g. 60MB or 64MiB: ranks are allocated where they keep the most energy per byte."
    ),
    max_error: float | None = typer.Option(
        None, "--max-error", help="Largest relative Frobenius error of each factored tensor, e.g. 0.1."
    ),
    dtype: FactorDtype = typer.Option(FactorDtype.fp16, "--dtype", help="Precision of the stored tensors."),
    force: bool = typer.Option(False, "--force", "-f", help="Replace an existing motion named NEW."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
) -> None:
    """Make a smaller copy of a motion: big tensors stored as low-rank SVD factors.

    Give one target: --rank, --size or --max-error. Layers whose factors would not be smaller stay dense. The result loads like any motion (gen, animate, edit, eval, blends, export/import).

    Examples:

      lamp compress guitar --name guitar-small --size 60MB

      lamp compress guitar --name guitar-r16 --rank 16

      lamp compress horse-run --name horse-run-5pc --max-error 0.05
    """
    from ..compress import compress_motion, describe
    from .registry_cmds import human_size
    from .render import RichReporter

    setup_logging()
    m, out = compress_motion(
        name, new_name, rank=rank, size=size, max_error=max_error, dtype=dtype.value, force=force,
        progress=RichReporter(),
    )
    record = {k: v for k, v in out.record.items() if k != "factors"}
    if json_out:
        emit_json({"compressed": m.to_json(), "record": record, "factors": out.factors})
        return
    src = out.record.get("source") or {}
    ratio = f", {src['size'] / m.size:.1f}× smaller" if isinstance(src.get("size"), int) and m.size else ""
    out_console.print(
        f"published '{m.name}' ({m.id}, {human_size(m.size)}{ratio})", highlight=False, soft_wrap=True
    )
    lines = describe(out.record)
    width = max(len(k) for k in lines)
    for k, v in lines.items():
        out_console.print(f"  {k:<{width}}  {v}", highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("compress")(cmd_compress)
