"""Motion recipes: the paper's eight motions as TOML files (training prompt, defaults, eval prompts).

The TOMLs live in the repository's top-level `motions/` folder. An installed wheel carries them
as the package data `lamp_cli.motions` (pyproject maps that package to `motions/`); a source
checkout or an editable install without that mapping reads `motions/` beside the package.
`load_recipe` also accepts the path of a user's own TOML file in the same format:

    name = "horse_run"
    prompt = "horse run"                 # training prompt
    description = "..."
    eval_prompts = ["a horse runs on the grass", ...]
    [defaults]
    frames = 16
    stride = 1
    width = 512
    height = 320
    steps = 10000                        # training steps
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import InvalidInput, NotFound

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

RECIPE_PACKAGE = "lamp_cli.motions"
_SOURCE_MOTIONS = Path(__file__).resolve().parent.parent / "motions"
_INT_DEFAULTS = {"frames": 16, "stride": 1, "width": 512, "height": 320, "steps": 10000}


@dataclass(frozen=True)
class Recipe:
    name: str
    prompt: str
    description: str
    frames: int
    stride: int
    width: int
    height: int
    eval_prompts: list[str] = field(default_factory=list)
    steps: int = 10000  # training steps
    source: str = ""  # where the TOML was read from

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _recipe_files() -> dict[str, Any]:
    """name -> readable TOML resource (a Traversable or a Path), packaged data first."""
    found: dict[str, Any] = {}
    try:
        root = resources.files(RECIPE_PACKAGE)
        for entry in root.iterdir():
            if entry.name.endswith(".toml") and entry.is_file():
                found[entry.name[: -len(".toml")]] = entry
    except (ModuleNotFoundError, FileNotFoundError, NotADirectoryError, TypeError):
        pass
    if not found and _SOURCE_MOTIONS.is_dir():
        for path in _SOURCE_MOTIONS.glob("*.toml"):
            found[path.stem] = path
    return found


def _parse(text: str, where: str) -> Recipe:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise InvalidInput(f"recipe {where} is not valid TOML: {e}") from e

    def need_str(key: str) -> str:
        value = data.get(key)
        if not isinstance(value, str) or not value.strip():
            raise InvalidInput(f"recipe {where}: '{key}' must be a non-empty string")
        return value

    name, prompt = need_str("name"), need_str("prompt")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise InvalidInput(f"recipe {where}: 'description' must be a string")
    prompts = data.get("eval_prompts", [])
    if not isinstance(prompts, list) or not all(isinstance(p, str) and p.strip() for p in prompts):
        raise InvalidInput(f"recipe {where}: 'eval_prompts' must be a list of non-empty strings")
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        raise InvalidInput(f"recipe {where}: [defaults] must be a table")
    unknown = sorted(set(defaults) - set(_INT_DEFAULTS))
    if unknown:
        raise InvalidInput(
            f"recipe {where}: unknown key(s) in [defaults]: {', '.join(unknown)}",
            hint=f"known keys: {', '.join(_INT_DEFAULTS)}",
        )
    values = {}
    for key, default in _INT_DEFAULTS.items():
        value = defaults.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidInput(f"recipe {where}: defaults.{key} must be a positive integer, got {value!r}")
        values[key] = value
    return Recipe(
        name=name,
        prompt=prompt,
        description=description,
        eval_prompts=list(prompts),
        source=where,
        **values,
    )


def recipe_names() -> list[str]:
    """Names of the built-in recipes, sorted."""
    return sorted(_recipe_files())


def list_recipes() -> list[Recipe]:
    """The built-in recipes, sorted by name."""
    return [
        _parse(entry.read_text(encoding="utf-8"), f"built-in '{name}'")
        for name, entry in sorted(_recipe_files().items())
    ]


def load_recipe(name: str) -> Recipe:
    """A built-in recipe by name, or a recipe TOML file by path."""
    files = _recipe_files()
    if name in files:
        return _parse(files[name].read_text(encoding="utf-8"), f"built-in '{name}'")
    path = Path(name).expanduser()
    if path.suffix.lower() == ".toml" and path.is_file():
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise InvalidInput(f"cannot read recipe {path}: {e}") from e
        return _parse(text, str(path))
    known = ", ".join(sorted(files)) or "none found"
    raise NotFound(
        f"no recipe named '{name}' (built-in: {known})",
        hint="`lamp recipes` lists them; a recipe can also be a path to your own .toml file",
    )
