"""Shared fixtures: every test gets its own LAMP_HOME and config, offline Hugging Face, 1 thread."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


@pytest.fixture(autouse=True)
def lamp_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point lamp's data and config at a fresh temp folder; keep torch on one thread."""
    home = tmp_path / "lamp_home"
    monkeypatch.setenv("LAMP_HOME", str(home))
    monkeypatch.setenv("LAMP_CONFIG", str(tmp_path / "config.toml"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("LAMP_DEBUG", raising=False)
    for key in list(os.environ):
        if key.startswith("LAMP_") and key not in ("LAMP_HOME", "LAMP_CONFIG"):
            monkeypatch.delenv(key, raising=False)
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass
    return home


@pytest.fixture(scope="session")
def tiny_base_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny base saved once per test session as a diffusers folder (load it with load_base)."""
    from lamp_cli.testing import save_tiny_base

    return save_tiny_base(tmp_path_factory.mktemp("tiny_base"))


@pytest.fixture(scope="session")
def tiny_base(tiny_base_dir: Path):
    """The tiny base's components, loaded through the real loader (shared: do not mutate)."""
    from lamp_cli.models.base import load_base

    return load_base(str(tiny_base_dir))
