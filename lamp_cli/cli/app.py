"""The `lamp` Typer app and its one top-level error handler.

Each command group lives in its own module with a `register(app)` function. No module here
imports torch at import time: `lamp --help` and `lamp list` must stay fast.
"""

from __future__ import annotations

import importlib
import os
import sys

import typer

from .. import __version__
from ..errors import LampError

# One module per command group; each defines register(app: typer.Typer) -> None.
COMMAND_MODULES = [
    "lamp_cli.cli.registry_cmds",  # list show rm cp export import verify gc
    "lamp_cli.cli.train_cmd",  # train
    "lamp_cli.cli.gen_cmd",  # gen animate
    "lamp_cli.cli.edit_cmd",  # edit
    "lamp_cli.cli.eval_cmd",  # eval recipes
    "lamp_cli.cli.demo_cmd",  # demo
    "lamp_cli.cli.bench_cmd",  # bench
    "lamp_cli.cli.doctor_cmd",  # doctor
    "lamp_cli.cli.compress_cmd",  # compress
]

app = typer.Typer(
    name="lamp",
    help="Learn a motion from a handful of clips and reuse it (LAMP, CVPR 2024).\n\n"
    "  lamp train ./guitar_clips --name guitar\n\n"
    "  lamp gen guitar \"a bear plays the guitar\"\n\n"
    "  lamp animate photo.jpg --motion waterfall\n\n"
    "  lamp edit run.mp4 \"a man runs on the road\"\n\n"
    "  lamp list",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"lamp {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """Learn a motion from a handful of clips and reuse it (LAMP, CVPR 2024)."""


for _mod in COMMAND_MODULES:
    importlib.import_module(_mod).register(app)


def _print_error(message: str, hint: str | None) -> None:
    from .render import err_console

    err_console.print(f"[bold red]Error:[/bold red] {message}", highlight=False, soft_wrap=True)
    if hint:
        err_console.print(f"[bold]Hint:[/bold] {hint}", highlight=False, soft_wrap=True)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the app and map failures to exit codes.

    Exit codes: 0 ok, 1 error (printed as Error/Hint), 2 usage error, 130 interrupted.
    """
    debug = os.environ.get("LAMP_DEBUG", "") not in ("", "0")
    command = typer.main.get_command(app)
    try:
        rc = command.main(args=argv, prog_name="lamp", standalone_mode=False)
    except (KeyboardInterrupt, typer.Abort):
        if debug:
            raise
        sys.stderr.write("Interrupted.\n")
        sys.exit(130)
    except LampError as e:
        if debug:
            raise
        _print_error(e.message, e.hint)
        sys.exit(e.exit_code)
    except Exception as e:
        # Click-style errors (usage errors, bad parameters). Typer re-exports them under
        # different module paths across releases, so recognise them by their interface.
        if debug or not (hasattr(e, "show") and hasattr(e, "exit_code")):
            raise
        e.show(file=sys.stderr)
        sys.exit(e.exit_code)
    sys.exit(rc if isinstance(rc, int) else 0)
