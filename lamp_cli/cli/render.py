"""Shared rendering for the CLI: stderr console, JSON output, logging, progress bars.

stdout carries results only (tables, or exactly one JSON document with --json); everything
else (progress, logs, warnings, errors) goes to stderr.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

from rich.console import Console

from ..jsonio import dumps_strict

err_console = Console(stderr=True)
out_console = Console()


def emit_json(obj: Any) -> None:
    """Print exactly one JSON document on stdout."""
    sys.stdout.write(dumps_strict(obj, what="the JSON output", indent=2, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()


def info(msg: str) -> None:
    err_console.print(msg, highlight=False, soft_wrap=True)


def setup_logging(quiet: bool = False) -> None:
    """Route the library's `lamp` logger to stderr, once."""
    logger = logging.getLogger("lamp")
    if any(getattr(h, "_lamp_cli", False) for h in logger.handlers):
        return

    class _Handler(logging.Handler):
        _lamp_cli = True

        def emit(self, record: logging.LogRecord) -> None:
            from rich.markup import escape

            msg = escape(record.getMessage())  # library messages are plain text, never markup
            if record.levelno >= logging.WARNING:
                err_console.print(f"[yellow]Warning:[/yellow] {msg}", highlight=False, soft_wrap=True)
            else:
                err_console.print(msg, highlight=False, soft_wrap=True)

    logger.addHandler(_Handler())
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    logger.propagate = False


class RichReporter:
    """A `lamp_cli.progress.Reporter` drawn as one Rich progress bar per phase, on stderr.

    When stderr is not a terminal (a log file, CI, nohup), Rich would draw the bar only at the
    end; then progress is printed as plain lines instead, at least every 30 s
    (`lamp_cli.progress.PlainReporter`).
    """

    def __init__(self, enabled: bool = True):
        from ..progress import PlainReporter

        self.enabled = enabled
        self._plain = PlainReporter() if enabled and not err_console.is_terminal else None
        self._progress = None
        self._task = None
        self._t0 = 0.0
        self._done = 0

    def start(self, task: str, total: int | None) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.finish()
        if self._plain is not None:
            self._plain.start(task, total)
            return
        if not self.enabled:
            return
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[extra]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=err_console,
            transient=False,
        )
        self._progress.start()
        self._task = self._progress.add_task(task, total=total, extra="")
        self._t0 = time.perf_counter()
        self._done = 0

    def advance(self, n: int = 1, **fields: Any) -> None:
        if self._plain is not None:
            self._plain.advance(n, **fields)
            return
        if self._progress is None:
            return
        self._done += n
        rate = self._done / max(time.perf_counter() - self._t0, 1e-9)
        parts = [f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items()]
        parts.append(f"{rate:.2f} it/s")
        extra = "  ".join(parts)
        self._progress.update(self._task, advance=n, extra=extra)

    def finish(self) -> None:
        if self._plain is not None:
            self._plain.finish()
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
            self._task = None
