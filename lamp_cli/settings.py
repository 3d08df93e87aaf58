"""Where lamp keeps its data, and the defaults of every command.

One resolver, one precedence: command line > environment (`LAMP_<KEY>`) > config file > default.
`lamp doctor` prints each resolved value with its source.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import InvalidInput

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

APP_NAME = "lamp"

# The paper's defaults (DESIGN §10). Keys are the names used in config.toml and `LAMP_<KEY>`.
DEFAULTS: dict[str, Any] = {
    "base": "CompVis/stable-diffusion-v1-4",
    "first_frame_model": "stabilityai/stable-diffusion-xl-base-1.0",
    "clip_model": "openai/clip-vit-large-patch14",
    "frames": 16,
    "width": 512,
    "height": 320,
    "stride": 1,
    "lr": 3e-5,
    "train_steps": 10000,
    "steps": 50,
    "guidance": 12.5,
    "shared_noise": 0.2,
    "fps": 8,
    "device": "auto",
    "dtype": "auto",
    "lora": [],  # image LoRAs FILE[:WEIGHT] fused into the base (gen, animate, edit, eval, train)
}


@dataclass(frozen=True)
class Resolved:
    key: str
    value: Any
    source: str  # "cli" | "env" | "config" | "default"


def lamp_home() -> Path:
    """Root of the registry (`LAMP_HOME`, else the platform's user data dir)."""
    env = os.environ.get("LAMP_HOME")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir(APP_NAME))


def config_path() -> Path:
    env = os.environ.get("LAMP_CONFIG")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_config_dir(APP_NAME)) / "config.toml"


def load_config(path: Path | None = None) -> dict[str, Any]:
    """Read config.toml; a missing file is an empty config, a broken one an error."""
    path = path or config_path()
    if not path.exists():
        return {}
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except (tomllib.TOMLDecodeError, OSError) as e:
        raise InvalidInput(f"cannot read config file {path}: {e}", hint="fix or remove the file") from e
    unknown = sorted(set(data) - set(DEFAULTS))
    if unknown:
        raise InvalidInput(
            f"unknown key(s) in {path}: {', '.join(unknown)}",
            hint=f"known keys: {', '.join(sorted(DEFAULTS))}",
        )
    return data


def _coerce(key: str, raw: Any, source: str) -> Any:
    default = DEFAULTS[key]
    if isinstance(default, bool) or raw is None:
        return raw
    if isinstance(default, list):  # a TOML list of strings, or a comma-separated environment value
        if isinstance(raw, str):
            return [part.strip() for part in raw.split(",") if part.strip()]
        if isinstance(raw, list) and all(isinstance(x, str) for x in raw):
            return list(raw)
        raise InvalidInput(f"{key} from {source} must be a list of strings, got {raw!r}")
    try:
        if isinstance(raw, (bool, dict, list)):  # TOML `true` would silently become 1, a table a string
            raise TypeError
        if isinstance(default, int) and not isinstance(default, bool):
            if isinstance(raw, float) and not raw.is_integer():  # int(16.5) would silently truncate
                raise ValueError
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        return str(raw)
    except (TypeError, ValueError) as e:
        raise InvalidInput(
            f"{key} from {source} must be a {type(default).__name__}, got {raw!r}"
        ) from e


def resolve(key: str, cli_value: Any = None, *, config: dict[str, Any] | None = None) -> Resolved:
    """The value of one setting and where it came from (cli > env > config file > default)."""
    if key not in DEFAULTS:
        raise KeyError(key)
    if cli_value is not None:
        return Resolved(key, cli_value, "cli")
    env = os.environ.get(f"LAMP_{key.upper()}")
    if env not in (None, ""):
        return Resolved(key, _coerce(key, env, f"LAMP_{key.upper()}"), "env")
    cfg = load_config() if config is None else config
    if key in cfg:
        return Resolved(key, _coerce(key, cfg[key], "config file"), "config")
    return Resolved(key, DEFAULTS[key], "default")


def get(key: str, cli_value: Any = None) -> Any:
    return resolve(key, cli_value).value


def resolve_all(cli_values: dict[str, Any] | None = None) -> list[Resolved]:
    cli_values = cli_values or {}
    cfg = load_config()
    return [resolve(k, cli_values.get(k), config=cfg) for k in DEFAULTS]
