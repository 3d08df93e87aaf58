"""The `lamp` Typer app and its one top-level error handler.

Each command group lives in its own module with a `register(app)` function. No module here
imports torch at import time: `lamp --help` and `lamp list` must stay fast.
"""

from __future__ import annotations

import importlib
import os
import shlex
import sys
from typing import Any

import typer
from rich.markup import escape
from typer.core import TyperGroup

from .. import __version__
from ..errors import LampError, from_os_error
from ..settings import lamp_home
from .options import refresh_help
from .render import err_console

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

def _debug() -> bool:
    return os.environ.get("LAMP_DEBUG", "") not in ("", "0")


def _debug_command() -> str:
    args = sys.argv[1:] if sys.argv and os.path.basename(sys.argv[0]) in ("lamp", "__main__.py") else []
    return "LAMP_DEBUG=1 " + shlex.join(["lamp", *args]) if args else "LAMP_DEBUG=1 lamp ..."


def report_failure(e: BaseException) -> int:
    """Print a failure as `Error:` (and `Hint:`) lines on stderr; the exit code to use.

    The one place where failures become messages: a LampError as it is, an OSError through
    `errors.from_os_error` (naming the path and what to do), anything else as an internal error
    with the command that shows the traceback. No Python traceback reaches a user unless
    LAMP_DEBUG is set.
    """
    if isinstance(e, LampError):
        _print_error(e.message, e.hint)
        return e.exit_code
    if isinstance(e, OSError):
        try:
            home: str | None = str(lamp_home())
        except Exception:  # noqa: BLE001 - a broken platformdirs must not hide the real error
            home = None
        err = from_os_error(e, home=home)
        _print_error(err.message, err.hint)
        return err.exit_code
    if isinstance(e, MemoryError):
        _print_error("out of memory", "use a smaller --width/--height/--frames, or close other programs")
        return 1
    detail = str(e).splitlines()[0][:300] if str(e).strip() else ""
    _print_error(
        f"internal error: {type(e).__name__}" + (f": {detail}" if detail else "") + " (a bug in lamp)",
        f"run it again as `{_debug_command()}` to see the traceback, and report it",
    )
    return 1


def _is_click(e: BaseException) -> bool:
    """A Click control-flow or usage exception (Typer vendors Click, so match by class name)."""
    return any(
        c.__name__ in ("ClickException", "Exit", "Abort") and c.__module__.split(".")[0] in ("click", "typer")
        for c in type(e).__mro__
    )


class _LampGroup(TyperGroup):
    """The root command group: every command runs inside one failure net (`report_failure`)."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as e:  # noqa: BLE001 - the last line of defence
            if _debug() or _is_click(e):
                raise
            raise typer.Exit(report_failure(e)) from None


app = typer.Typer(
    name="lamp",
    cls=_LampGroup,
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
    # escaped: messages quote user data and expected forms like [width, height], never markup
    err_console.print(f"[bold red]Error:[/bold red] {escape(message)}", highlight=False, soft_wrap=True)
    if hint:
        err_console.print(f"[bold]Hint:[/bold] {escape(hint)}", highlight=False, soft_wrap=True)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the app and map failures to exit codes.

    Exit codes: 0 ok, 1 error (printed as Error/Hint), 2 usage error, 130 interrupted.
    """
    debug = _debug()
    refresh_help()
    command = typer.main.get_command(app)
    try:
        rc = command.main(args=argv, prog_name="lamp", standalone_mode=False)
    except (KeyboardInterrupt, typer.Abort):
        if debug:
            raise
        sys.stderr.write("Interrupted.\n")
        sys.exit(130)
    except Exception as e:
        if _is_click(e) and type(e).__name__ == "Exit":
            sys.exit(getattr(e, "exit_code", 1))
        if debug:
            raise
        # Click-style errors (usage errors, bad parameters). Typer re-exports them under
        # different module paths across releases, so recognise them by their interface.
        if hasattr(e, "show") and hasattr(e, "exit_code") and not isinstance(e, (LampError, OSError)):
            e.show(file=sys.stderr)
            sys.exit(e.exit_code)
        sys.exit(report_failure(e))  # raised outside a command (e.g. while importing one)
    sys.exit(rc if isinstance(rc, int) else 0)
