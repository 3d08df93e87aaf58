"""Options whose default is a setting: their help shows the effective default, and where it comes
from when that is not the built-in one (`LAMP_<KEY>` or config.toml). `lamp_cli.cli.app.main`
calls `refresh_help` once per command, so the help always tells the truth.

Choices are listed one way everywhere: `a | b | c`.
"""

from __future__ import annotations

from typing import Any

import typer

from .. import settings


def choices(*values: str) -> str:
    return " | ".join(values)


DEVICE_CHOICES = choices("auto", "cpu", "cuda", "cuda:N", "mps")
DTYPE_CHOICES = choices("auto", "fp32", "fp16", "bf16")
FORMAT_CHOICES = choices("mp4", "gif", "webm", "frames")
BASE_CHOICES = "an HF repo id (local cache), a diffusers folder, an SD-1.x .safetensors/.ckpt file, tiny or toy"

# (the option, its setting, its help with `{default}` where the default goes)
_SETTING_OPTIONS: list[tuple[Any, str, str]] = []


def setting_option(key: str, *flags: str, help: str, **kw: Any) -> Any:
    """A typer option that defaults to setting `key` (None when not given on the command line)."""
    if "{default}" not in help:
        help += " (default: {default})"
    option = typer.Option(None, *flags, help=help.format(default=settings.DEFAULTS[key]), **kw)
    _SETTING_OPTIONS.append((option, key, help))
    return option


def default_text(key: str, config: dict[str, Any]) -> str:
    """`16`, or `24, from LAMP_FRAMES`, or `24, from /path/config.toml`."""
    r = settings.resolve(key, config=config)
    return f"{r.value}" if r.source == "default" else f"{r.value}, from {r.origin}"


def refresh_help() -> None:
    """Write each setting option's effective default into its help (config.toml read once)."""
    try:
        config = settings.load_config()
    except Exception:  # a broken config file is reported by the command that reads it, not by --help
        config = {}
    for option, key, help in _SETTING_OPTIONS:
        try:
            text = default_text(key, config)
        except Exception:  # a bad LAMP_<KEY>: the command reports it
            text = str(settings.DEFAULTS[key])
        option.help = help.format(default=text)


# Image (style) LoRAs: gen, animate, edit and eval read the `lora` setting too; train takes its own.
LORA_OPTION = setting_option(
    "lora", "--lora", help="Image (style) LoRA FILE[:WEIGHT] fused into the base before the motion; repeat to blend; `none` = no LoRA."
)
