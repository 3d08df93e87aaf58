"""`lamp bench ...`: performance measurements (not tests). Each benchmark adds its command to
`bench_app` from its own module (bench_train, bench_gen, bench_toy)."""

from __future__ import annotations

import importlib

import typer

bench_app = typer.Typer(help="Measure speed and memory (tiny base on CPU, full SD-1.x shapes on GPU).", no_args_is_help=True)

BENCH_MODULES = ["lamp_cli.cli.bench_train", "lamp_cli.cli.bench_gen", "lamp_cli.cli.bench_toy"]
BENCH_MODULES += ["lamp_cli.cli.bench_unet"]


def register(app: typer.Typer) -> None:
    for mod in BENCH_MODULES:
        importlib.import_module(mod)
    app.add_typer(bench_app, name="bench")
