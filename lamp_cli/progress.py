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


PLAIN_INTERVAL_S = 30.0  # a non-terminal reporter prints at least this often while work advances


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class PlainReporter:
    """Progress as plain lines, for a stderr that is not a terminal (a log file, CI, nohup).

    One line when a phase starts, then one at most every `interval` seconds while it advances
    (`train: 120/300  step 120/300  loss 0.0123  2.31 it/s  ETA 1m18s`), and one when it ends.
    `clock` and `write` are injectable for tests.
    """

    def __init__(
        self,
        write: Any = None,
        *,
        interval: float = PLAIN_INTERVAL_S,
        clock: Any = None,
    ):
        import sys
        import time

        self._write = write or (lambda line: (sys.stderr.write(line + "\n"), sys.stderr.flush()))
        self._clock = clock or time.monotonic
        self.interval = interval
        self._task: str | None = None
        self._total: int | None = None
        self._done = 0
        self._t0 = self._last = 0.0
        self._fields: dict[str, Any] = {}

    def start(self, task: str, total: int | None) -> None:
        self.finish()
        self._task, self._total, self._done, self._fields = task, total, 0, {}
        self._t0 = self._last = self._clock()
        self._write(f"{task}: started" + (f" ({total} steps)" if total else ""))

    def _line(self, now: float, *, final: bool = False) -> str:
        elapsed = max(now - self._t0, 1e-9)
        rate = self._done / elapsed
        parts = [f"{self._task}: {self._done}" + (f"/{self._total}" if self._total else "")]
        parts += [f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in self._fields.items()]
        parts.append(f"{rate:.2f} it/s")
        if self._total and rate > 0 and not final:
            parts.append(f"ETA {_duration(max(self._total - self._done, 0) / rate)}")
        parts.append(f"elapsed {_duration(elapsed)}")
        return "  ".join(parts)

    def advance(self, n: int = 1, **fields: Any) -> None:
        if self._task is None:
            return
        self._done += n
        self._fields = fields
        now = self._clock()
        if now - self._last >= self.interval:
            self._last = now
            self._write(self._line(now))

    def finish(self) -> None:
        if self._task is None:
            return
        now = self._clock()
        self._write(self._line(now, final=True).replace(f"{self._task}: ", f"{self._task}: done ", 1))
        self._task = None
