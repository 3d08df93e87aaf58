"""Placeholder: this benchmark command is not built yet (it adds itself to bench_app)."""

from __future__ import annotations

from .bench_cmd import bench_app  # noqa: F401
