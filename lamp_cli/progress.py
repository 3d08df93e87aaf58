"""How long-running library code reports progress without knowing about terminals.

Library functions take a `progress: Reporter | None`; the CLI passes a Rich implementation
(`lamp_cli.cli.render.RichReporter`), tests pass nothing or a recorder. Messages for humans go
through the `lamp` logger (`logging.getLogger("lamp")`), which the CLI routes to stderr.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

log = logging.getLogger("lamp")


class Reporter(Protocol):
    def start(self, task: str, total: int | None) -> None:
        """A new phase of work begins (e.g. "train", "sample"), with its number of units."""

    def advance(self, n: int = 1, **fields: Any) -> None:
        """`n` units done; `fields` (loss=..., step=...) are shown beside the bar."""

    def finish(self) -> None:
        """The current phase is over."""


class NullReporter:
    def start(self, task: str, total: int | None) -> None:
        pass

    def advance(self, n: int = 1, **fields: Any) -> None:
        pass

    def finish(self) -> None:
        pass


def reporter_or_null(progress: Reporter | None) -> Reporter:
    return progress if progress is not None else NullReporter()
