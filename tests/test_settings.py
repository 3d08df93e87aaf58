"""Settings: one resolver, precedence command line > environment > config file > default."""

from __future__ import annotations

from pathlib import Path

import pytest

from lamp_cli import settings
from lamp_cli.errors import InvalidInput
from lamp_cli.settings import DEFAULTS, Resolved, resolve


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """The config file the autouse fixture points LAMP_CONFIG at (absent until written)."""
    path = Path(settings.config_path())
    assert path == tmp_path / "config.toml" and not path.exists()
    return path


def test_paper_defaults() -> None:
    assert DEFAULTS["base"] == "CompVis/stable-diffusion-v1-4"
    assert DEFAULTS["first_frame_model"] == "stabilityai/stable-diffusion-xl-base-1.0"
    assert (DEFAULTS["frames"], DEFAULTS["width"], DEFAULTS["height"], DEFAULTS["stride"]) == (
        16,
        512,
        320,
        1,
    )
    assert (DEFAULTS["lr"], DEFAULTS["steps"], DEFAULTS["guidance"], DEFAULTS["shared_noise"]) == (
        3e-5,
        50,
        12.5,
        0.2,
    )
    assert DEFAULTS["fps"] == 8
    assert resolve("frames") == Resolved("frames", 16, "default")


def test_precedence_cli_env_config_default(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config.write_text('frames = 24\nbase = "runwayml/stable-diffusion-v1-5"\nguidance = 9\n')
    assert resolve("frames") == Resolved("frames", 24, "config")
    assert resolve("base").value == "runwayml/stable-diffusion-v1-5"
    assert resolve("guidance") == Resolved("guidance", 9.0, "config")
    assert isinstance(resolve("guidance").value, float)
    assert resolve("steps") == Resolved("steps", 50, "default")

    monkeypatch.setenv("LAMP_FRAMES", "32")
    assert resolve("frames") == Resolved("frames", 32, "env")
    assert resolve("frames", 48) == Resolved("frames", 48, "cli")
    # a falsy command-line value still wins
    assert resolve("shared_noise", 0.0) == Resolved("shared_noise", 0.0, "cli")
    assert settings.get("frames") == 32 and settings.get("frames", 8) == 8

    monkeypatch.setenv("LAMP_FRAMES", "")  # empty means unset
    assert resolve("frames").source == "config"


def test_env_values_are_typed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAMP_LR", "1e-4")
    monkeypatch.setenv("LAMP_STEPS", "25")
    monkeypatch.setenv("LAMP_DEVICE", "cpu")
    assert resolve("lr") == Resolved("lr", 1e-4, "env")
    assert resolve("steps").value == 25 and isinstance(resolve("steps").value, int)
    assert resolve("device").value == "cpu"
    monkeypatch.setenv("LAMP_FRAMES", "many")
    with pytest.raises(InvalidInput, match="LAMP_FRAMES"):
        resolve("frames")


@pytest.mark.parametrize(
    "line", ["frames = 16.5", "frames = true", 'guidance = "strong"', "base = { a = 1 }"]
)
def test_config_values_of_the_wrong_type_are_refused(config: Path, line: str) -> None:
    config.write_text(line + "\n")
    key = line.split()[0]
    with pytest.raises(InvalidInput, match=key):
        resolve(key)


def test_config_integral_float_for_int_is_fine(config: Path) -> None:
    config.write_text("frames = 16.0\n")
    assert resolve("frames") == Resolved("frames", 16, "config")


def test_unknown_key_and_broken_file(config: Path) -> None:
    config.write_text("framez = 3\n")
    with pytest.raises(InvalidInput) as e:
        resolve("frames")
    assert "framez" in e.value.message and "frames" in e.value.hint
    config.write_text("frames = = 3\n")
    with pytest.raises(InvalidInput, match="cannot read config file"):
        resolve("frames")
    with pytest.raises(KeyError):
        resolve("nonsense")


def test_resolve_all_lists_every_key_with_its_source(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config.write_text("fps = 12\n")
    monkeypatch.setenv("LAMP_STEPS", "20")
    got = {r.key: r for r in settings.resolve_all({"frames": 8})}
    assert list(got) == list(DEFAULTS)
    assert got["frames"] == Resolved("frames", 8, "cli")
    assert got["steps"] == Resolved("steps", 20, "env")
    assert got["fps"] == Resolved("fps", 12, "config")
    assert got["width"] == Resolved("width", 512, "default")


def test_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert settings.lamp_home() == tmp_path / "lamp_home"
    monkeypatch.setenv("LAMP_HOME", "~/somewhere")
    assert settings.lamp_home() == Path("~/somewhere").expanduser()
    monkeypatch.delenv("LAMP_HOME")
    monkeypatch.delenv("LAMP_CONFIG")
    import platformdirs

    assert settings.lamp_home() == Path(platformdirs.user_data_dir("lamp"))
    assert settings.config_path() == Path(platformdirs.user_config_dir("lamp")) / "config.toml"
