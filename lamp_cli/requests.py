"""Requests as values: what one piece of work (sample, train, edit, eval) needs, resolved once.

Values only: no torch, no registry. `lamp_cli.resolve` builds them from the command line, the
environment, config.toml and the defaults in `lamp_cli.settings`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ResolvedMotion:
    """An adapter with the name and digest it is recorded under in a sidecar."""

    adapter: Any  # MotionAdapter
    name: str
    digest: str


def as_resolved(item: Any) -> ResolvedMotion:
    """An in-memory adapter (not from the registry) recorded under its own name and weights hash."""
    if isinstance(item, ResolvedMotion):
        return item
    return ResolvedMotion(item, item.name or "adapter", item.weights_sha256())
