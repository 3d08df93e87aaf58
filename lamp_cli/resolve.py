"""Motion names -> adapters: the one place a registry name becomes a motion the engine can use.

The engine takes adapters, never names (it does not know the registry). A name that is not in
the registry but is a built-in recipe or one of the released LAMP motions gets a hint with the
command that makes it.
"""

from __future__ import annotations

from collections.abc import Sequence

from .adapter import MotionAdapter
from .errors import MotionNotFound
from .recipes import recipe_names
from .registry import Manifest, Registry
from .requests import ResolvedMotion

# The eight motions the LAMP authors released (docs/official-motions.md): registry name -> folder.
OFFICIAL_MOTIONS = {
    "horse-run": "horse_run", "birds-fly": "birds_fly", "firework": "firework", "helicopter": "helicopter",
    "rain": "rain", "waterfall": "waterfall", "turn-to-smile": "turn_to_smile", "guitar": "play_the_guitar",
}


def not_found(name: str) -> MotionNotFound:
    """MotionNotFound for `name`, with the command that makes it when lamp knows one."""
    err = MotionNotFound(name)
    key = name.replace("_", "-")
    hints = []
    recipes = {r.replace("_", "-"): r for r in recipe_names()}
    if key in recipes:
        hints.append(f"train it from your clips with `lamp train CLIPS --recipe {recipes[key]} --name {name}`")
    folders = {k: v for k, v in OFFICIAL_MOTIONS.items()}
    folders.update({v.replace("_", "-"): v for v in OFFICIAL_MOTIONS.values()})
    if key in folders:
        hints.append(f"import the released LAMP motion with "
                     f"`lamp import --official ./my_weight/{folders[key]} --name {name}`")
    if hints:
        err.hint = "; or ".join(hints)
    return err


def find_manifest(name: str, registry: Registry | None = None) -> Manifest:
    """The manifest of `name` (cheap: no torch, blob not read), or MotionNotFound with a hint."""
    registry = registry or Registry()
    try:
        return registry.manifest(name)
    except MotionNotFound:
        raise not_found(name) from None


def load_motion(name: str, registry: Registry | None = None) -> ResolvedMotion:
    """The hash-checked adapter of registry motion `name`."""

    registry = registry or Registry()
    manifest = find_manifest(name, registry)
    adapter = MotionAdapter.from_bytes(registry.read_bytes(name))  # hash-checked
    return ResolvedMotion(adapter, name, manifest.digest)


def load_motions(specs: Sequence[tuple[str, float]], registry: Registry | None = None) -> list[tuple[ResolvedMotion, float]]:
    """(name, weight) pairs -> (motion, weight) pairs, each name loaded once."""
    registry = registry or Registry()
    cache: dict[str, ResolvedMotion] = {}
    out = []
    for name, weight in specs:
        if name not in cache:
            cache[name] = load_motion(name, registry)
        out.append((cache[name], float(weight)))
    return out
