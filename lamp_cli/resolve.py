"""Motion names -> adapters: the one place a registry name becomes a motion the engine can use.

The engine takes adapters, never names (it does not know the registry). A name that is not in
the registry but is a built-in recipe or one of the released LAMP motions gets a hint with the
command that makes it.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import settings
from .adapter import MotionAdapter
from .devices import check_device_name, check_dtype_name
from .errors import InvalidInput, MotionNotFound, UsageError
from .generate import parse_motion, read_sidecar
from .lora import resolve_loras
from .models.base import builtin_dir, replay_base_record
from .models.locate import require_base
from .recipes import recipe_names
from .registry import Manifest, Registry
from .requests import DEFAULT_ADAIN_SWITCH, GenRequest, ResolvedMotion, SampleRequest, check_motion_weight
from .video import load_image

log = logging.getLogger("lamp")

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
    folders = dict(OFFICIAL_MOTIONS)
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


# --------------------------------------------------------------------------------------------
# Sampling requests: `lamp gen`, `lamp animate`, `lamp gen --from-sidecar`
# --------------------------------------------------------------------------------------------
# Options of gen/animate that are settings (config.toml, LAMP_<KEY>), by their setting key.
SAMPLE_SETTINGS = ("frames", "width", "height", "steps", "guidance", "shared_noise", "fps", "base", "device", "dtype")
STOP_WORDS = frozenset({"a", "an", "the", "on", "of", "in", "and", "with", "to", "is"})


@functools.cache
def toy_words() -> frozenset[str]:
    """The words the toy base's tokenizer knows as whole words (read from its tokenizer file)."""
    path = builtin_dir("toy") / "tokenizer" / "tokenizer.json"
    try:
        vocab = json.loads(path.read_text("utf-8"))["model"]["vocab"]
    except (OSError, KeyError, ValueError):
        return frozenset()
    return frozenset(k[:-4] for k in vocab if k.endswith("</w>") and len(k) > 5 and k[:-4].isalpha()) - STOP_WORDS


def check_toy_prompt(prompt: str, *, how: str) -> None:
    """Warn when the toy base knows no word of `prompt` (its video then follows the motion only)."""
    known = toy_words()
    words = {w.strip(".,!?;:").lower() for w in prompt.split()}
    if known and not words & known:
        log.warning(
            "the toy base knows no word of the prompt '%s' (%s); it draws colours and shapes such as "
            "'a red circle on a blue background'. Known words: %s",
            prompt, how, ", ".join(sorted(known)),
        )


@dataclass
class _Layers:
    """The values of one request, one lookup per key: CLI > (motion or sidecar) > env > config >
    default. config.toml is read once."""

    cli: dict[str, Any]
    middle: dict[str, tuple[Any, str]] = field(default_factory=dict)  # key -> (value, origin)
    config: dict[str, Any] = field(default_factory=settings.load_config)
    sources: dict[str, str] = field(default_factory=dict)

    def get(self, key: str, *, flag: str | None = None) -> Any:
        if self.cli.get(key) is not None:
            self.sources[key] = flag or "--" + key.replace("_", "-")
            return self.cli[key]
        if key in self.middle and self.middle[key][0] is not None:
            value, self.sources[key] = self.middle[key]
            return value
        r = settings.resolve(key, config=self.config)
        self.sources[key] = r.origin
        return r.value


def parse_motions(specs: Sequence[str]) -> list[tuple[str, float]]:
    """`NAME` / `NAME:WEIGHT` specs -> (name, weight), weights finite."""
    out = []
    for spec in specs:
        name, weight = parse_motion(spec)
        out.append((name, check_motion_weight(spec, weight)))
    return out


def gen_request(
    command: str,
    motion_specs: Sequence[str],
    prompts: Sequence[str | None],
    *,
    cli: dict[str, Any],
    image: Path | None = None,
    first_frame_prompt: str | None = None,
    many: bool = False,
    sidecar: dict[str, Any] | None = None,
    registry: Registry | None = None,
) -> tuple[GenRequest, list[Manifest]]:
    """The one place a `lamp gen`/`lamp animate` run becomes a checked request, before any model
    loads: motions in the registry, the image readable, numbers in range, the base on disk.
    `cli`: the options as given (None = not given); `sidecar`: values that a sidecar fixes."""
    registry = registry or Registry()
    motions = parse_motions(motion_specs)
    manifests = [find_manifest(name, registry) for name, _ in motions]
    first = manifests[0]
    layers = _Layers(cli=dict(cli))
    if sidecar is not None:
        layers.middle = sidecar
    else:
        layers.middle = {
            "width": (first.width or None, f"motion '{first.name}'"),
            "height": (first.height or None, f"motion '{first.name}'"),
            "base": ((first.base or {}).get("spec"), f"motion '{first.name}'"),
        }
    values = {key: layers.get(key) for key in SAMPLE_SETTINGS}
    values["device"] = check_device_name(str(values["device"]))
    values["dtype"] = check_dtype_name(str(values["dtype"]))
    base = str(values["base"])
    require_base(base)
    image_note = ""
    if image is not None:
        load_image(image)  # NotFound / InvalidInput now, not after the models load
    if command == "animate" and list(prompts) == [None]:
        from_name = image.stem.replace("_", " ").strip() if image is not None else ""
        prompts = [first.prompt or from_name or "a video"]
        image_note = "the motion's training prompt" if first.prompt else "taken from the image's file name; pass --prompt"
    first_frame_model = cli.get("first_frame_model")
    ff = settings.resolve("first_frame_model", first_frame_model, config=layers.config)
    if base == "toy" and ff.source == "default":
        first_frame_model = "base"  # the toy base makes its own first frames (no SDXL warning)
    sample_fields = {k: values[k] for k in ("frames", "width", "height", "steps", "guidance", "shared_noise")}
    samples = []
    for text in prompts:
        if base == "toy":
            check_toy_prompt(str(text), how=image_note or "as given")
        samples.append(SampleRequest(
            prompt=str(text), motions=tuple(motions), negative=cli.get("negative") or "",
            first_frame_prompt=first_frame_prompt, seed=cli.get("seed"), adain=not cli.get("no_adain"),
            histogram_match=not cli.get("no_histogram_match"),
            adain_switch=cli.get("adain_switch") if cli.get("adain_switch") is not None else DEFAULT_ADAIN_SWITCH,
            overlap=cli.get("overlap") or None, sources=dict(layers.sources), **sample_fields,
        ))
    request = GenRequest(
        command=command, samples=tuple(samples), image=image, base=base, device=values["device"],
        dtype=values["dtype"], fps=float(values["fps"]), fmt=cli.get("fmt"), output=cli.get("output"), many=many,
        compile=bool(cli.get("compile")), offload=bool(cli.get("offload")), overwrite=bool(cli.get("overwrite")),
        first_frame_model=first_frame_model, first_frame_round_trip=bool(cli.get("first_frame_round_trip")),
        loras=tuple(resolve_loras(cli.get("lora"))),
        expect=cli.get("expect") or {}, sources=dict(layers.sources),
    )
    return request, manifests


# What a sidecar fixes: a sidecar key -> the option that may not be given with --from-sidecar.
SIDECAR_FIXED = ("frames", "width", "height", "steps", "guidance", "negative", "seed", "shared_noise", "base",
                 "lora", "dtype", "compile", "offload")


def sidecar_run(path: Path, opts: dict[str, Any]) -> dict[str, Any]:
    """A sidecar read back as the arguments of a gen/animate run (`lamp gen --from-sidecar`): the
    values it fixes come from the file (named by it in errors); -o, --format, --fps, --device may
    differ. `opts`: the command line's options (a fixed one given is a usage error)."""
    doc = read_sidecar(path)
    if doc.get("command") == "edit":  # it started from inverted latents, which gen cannot redo
        raise InvalidInput(f"{path} describes a `lamp edit` video",
                           hint="run the same `lamp edit` command again (its tuning and inversion are cached)")
    clash = [f"--{k.replace('_', '-')}" for k in SIDECAR_FIXED if opts.get(k) not in (None, False)]
    clash += [flag for flag, k in (("--no-adain", "no_adain"), ("--no-histogram-match", "no_histogram_match")) if opts.get(k)]
    if clash:
        raise UsageError(f"--from-sidecar takes these from the file: drop {', '.join(clash)}")
    where = str(path)
    out = doc.get("output", {})
    cli = dict(opts)
    cli.update(negative=doc.get("negative", ""), seed=doc["seed"], no_adain=not doc.get("adain", True),
               no_histogram_match=not doc.get("histogram_match", True), adain_switch=doc.get("adain_switch"),
               overlap=doc.get("overlap") or None)
    if cli.get("output") is None and cli.get("fmt") is None:
        cli["fmt"] = out.get("format")
    fixed = {k: (doc.get(k), where) for k in ("frames", "width", "height", "steps", "guidance", "shared_noise", "dtype")}
    base_spec, loras = replay_base_record(doc["base"])  # refuses a missing or changed file or LoRA
    fixed["base"] = (base_spec, where)
    cli["lora"] = [f"{s.path}:{s.weight!r}" for s in loras] or ["none"]  # never the config's
    fixed["fps"] = (out.get("fps"), where)
    fixed["device"] = (doc["device"].split(":")[0] if doc.get("device") else None, where)
    cli["expect"] = {"base_fingerprint": doc["base"].get("fingerprint"),
                     "digests": {m["name"]: m.get("digest") for m in doc["motions"]}}
    first = doc.get("first_frame") or {}
    image = None
    if first.get("source") == "image":
        image = Path(first["path"])
        cli["expect"]["image_sha256"] = first.get("sha256")
    elif first.get("source") == "text-to-image":
        cli["first_frame_model"] = first.get("model")
        # recorded since the base's own latent is kept; older videos encoded the image again
        cli["first_frame_round_trip"] = bool(first.get("vae_round_trip", True))
    else:
        raise InvalidInput(
            f"{path}: its first frame was passed in by a program ({first.get('source')}), so it cannot be made again here"
        )
    return {
        "command": doc.get("command", "gen"),
        "motion_specs": [f"{m['name']}:{m['weight']!r}" for m in doc["motions"]],
        "prompts": [doc["prompt"]],
        "image": image,
        "first_frame_prompt": doc.get("first_frame_prompt"),
        "cli": cli,
        "many": False,
        "sidecar": fixed,
    }


def motion_sample_request(manifest: Manifest, cli: dict[str, Any], *, seed: int | None = None) -> SampleRequest:
    """The sampling values of `lamp eval MOTION`: the command line, else the motion's trained
    length and size, else the settings (one lookup per key, config.toml read once)."""
    motion = f"motion '{manifest.name}'"
    layers = _Layers(cli=dict(cli), middle={
        "frames": (manifest.frames or None, motion),
        "width": (manifest.width or None, motion),
        "height": (manifest.height or None, motion),
    })
    values = {k: layers.get(k) for k in ("frames", "width", "height", "steps", "guidance", "shared_noise")}
    return SampleRequest(prompt="", motions=((manifest.name, 1.0),), seed=seed, sources=dict(layers.sources),
                         **{k: (float(v) if k in ("guidance", "shared_noise") else int(v)) for k, v in values.items()})
