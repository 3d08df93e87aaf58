"""Where lamp keeps its data, and the defaults of every command.

One resolver, one precedence: command line > environment (`LAMP_<KEY>`) > config file > default.
`lamp doctor` prints each resolved value with its source.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import InvalidInput
from .schema import shown

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

APP_NAME = "lamp"

# The paper's defaults (docs/method.md). Keys are the names used in config.toml and `LAMP_<KEY>`.
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
    # where exactly: "--steps", "LAMP_STEPS", the config file's path, "default" (not compared)
    origin: str = field(default="", compare=False)

    def describe(self) -> str:
        """The value as the user wrote it, where they wrote it: `--steps 0`, `LAMP_STEPS=0`,
        `steps = 0 in /path/config.toml`, `steps = 0 (default)`."""
        return describe(self.key, self.value, self.origin or self.source)


def describe(key: str, value: Any, origin: str) -> str:
    """`key` = `value` named by where it came from (see `Resolved.describe`)."""
    if origin.startswith("--"):
        return f"{origin} {value}"
    if origin.startswith("LAMP_"):
        return f"{origin}={value}"
    if origin.endswith(".toml") or origin.endswith(".json"):
        return f"{key} = {value!r} in {origin}" if isinstance(value, str) else f"{key} = {value} in {origin}"
    return f"{key} = {value} ({origin or 'default'})"


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


_CONFIG_CACHE: dict[Path, tuple[tuple[int, int], dict[str, Any]]] = {}


def load_config(path: Path | None = None) -> dict[str, Any]:
    """Read config.toml; a missing file is an empty config, a broken one an error. Read once per
    process while the file stays the same (size and modification time)."""
    path = path or config_path()
    try:
        st = path.stat()
    except OSError:
        return {}
    stamp = (st.st_mtime_ns, st.st_size)
    cached = _CONFIG_CACHE.get(path)
    if cached is not None and cached[0] == stamp:
        return dict(cached[1])
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except UnicodeDecodeError as e:
        raise InvalidInput(
            f"cannot read config file {path}: it is not UTF-8 text (byte {e.start})",
            hint="save it as UTF-8, or remove it",
        ) from None
    except (tomllib.TOMLDecodeError, OSError, RecursionError) as e:
        detail = "nested too deeply" if isinstance(e, RecursionError) else str(e)
        raise InvalidInput(f"cannot read config file {path}: {detail}", hint="fix or remove the file") from None
    unknown = sorted(set(data) - set(DEFAULTS))
    if unknown:
        raise InvalidInput(
            f"unknown key(s) in {path}: {', '.join(unknown)}",
            hint=f"known keys: {', '.join(sorted(DEFAULTS))}",
        )
    _CONFIG_CACHE[path] = (stamp, dict(data))
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
            value = float(raw)
            if not math.isfinite(value):  # nan/inf would pass every later range check unnoticed
                raise ValueError
            return value
        return str(raw)
    except (TypeError, ValueError) as e:
        kind = {"int": "whole number", "float": "finite number", "str": "string"}[type(default).__name__]
        raise InvalidInput(f"{key} from {source} must be a {kind}, got {shown(raw)}") from e


def resolve(
    key: str, cli_value: Any = None, *, config: dict[str, Any] | None = None, flag: str | None = None
) -> Resolved:
    """The value of one setting and where it came from (cli > env > config file > default).
    `flag`: how the command line spells it (default `--<key>`)."""
    if key not in DEFAULTS:
        raise KeyError(key)
    if cli_value is not None:
        return Resolved(key, cli_value, "cli", flag or "--" + key.replace("_", "-"))
    env_key = f"LAMP_{key.upper()}"
    env = os.environ.get(env_key)
    if env not in (None, ""):
        return Resolved(key, _coerce(key, env, env_key), "env", env_key)
    cfg = load_config() if config is None else config
    if key in cfg:
        where = str(config_path())
        return Resolved(key, _coerce(key, cfg[key], where), "config", where)
    return Resolved(key, DEFAULTS[key], "default", "default")


def get(key: str, cli_value: Any = None) -> Any:
    return resolve(key, cli_value).value


def resolve_all(cli_values: dict[str, Any] | None = None) -> list[Resolved]:
    cli_values = cli_values or {}
    cfg = load_config()
    return [resolve(k, cli_values.get(k), config=cfg) for k in DEFAULTS]


DEFAULT_LOCK_TIMEOUT = 60.0  # seconds


def lock_timeout() -> float:
    """How long a registry change waits for another lamp process (`LAMP_LOCK_TIMEOUT` seconds).

    A finite number >= 0 (0: do not wait). Anything else (-1, nan, inf, junk) is refused: a
    process that waits forever without saying so looks hung.
    """
    env = os.environ.get("LAMP_LOCK_TIMEOUT", "").strip()
    if not env:
        return DEFAULT_LOCK_TIMEOUT
    try:
        value = float(env)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0 <= value <= 7 * 24 * 3600):
        raise InvalidInput(
            f"LAMP_LOCK_TIMEOUT must be a number of seconds in 0..604800, got {shown(env)}",
            hint="e.g. LAMP_LOCK_TIMEOUT=300 waits up to five minutes; unset it for the default (60)",
        )
    return value
