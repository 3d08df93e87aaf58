"""Requests as values: what one piece of work (sampling a video, training a motion) needs,
complete and checked.

Values only: no torch, no registry. A request is built in one place (`lamp_cli.resolve`, from the
command line > `LAMP_<KEY>` > config.toml > the defaults in `lamp_cli.settings`), checked once
when it is made (`__post_init__`), and carries where each value came from, so an error names
its source: `--steps 0`, `LAMP_STEPS=0`, `steps = 0 in /path/config.toml`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import InvalidInput
from .settings import DEFAULTS, describe

# The reference switches the AdaIN target after step index 30 of 50: 31 early steps = 0.62.
DEFAULT_ADAIN_SWITCH = 0.62
MAX_SEED = 2**63 - 1


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


def _named(key: str, value: Any, sources: Mapping[str, str]) -> str:
    """`value` of `key` as its source spells it (a library call: `key=value`)."""
    origin = sources.get(key)
    if origin is None:
        return f"{key}={value}"
    return describe(key, value, origin)


def _finite(key: str, value: Any, sources: Mapping[str, str]) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"{_named(key, value, sources)}: not a number") from None
    if not math.isfinite(v):
        raise InvalidInput(f"{_named(key, value, sources)} must be a finite number")
    return v


def check_positive(key: str, value: Any, sources: Mapping[str, str], kind: type = int) -> Any:
    """`value` as a positive `kind` (finite for floats), else InvalidInput naming its source."""
    try:
        v = kind(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"{_named(key, value, sources)}: must be a number") from None
    if v <= 0 or (kind is float and not math.isfinite(v)):
        raise InvalidInput(f"{_named(key, value, sources)}: must be positive")
    return v


def check_size(key: str, value: int, sources: Mapping[str, str]) -> None:
    """A width or height the VAE can take: a positive multiple of 8."""
    if value < 8 or value % 8:
        lo, hi = value // 8 * 8, value // 8 * 8 + 8
        raise InvalidInput(
            f"{_named(key, value, sources)} is not a {'positive ' if value < 8 else ''}multiple of 8"
            " (the VAE works on 8×8 pixel blocks)",
            hint=f"use {hi}" + (f" or {lo}" if lo else ""),
        )


def check_motion_weight(spec: str, weight: float) -> float:
    """A motion's blend weight: a finite number (`guitar:nan` is refused)."""
    if not math.isfinite(weight):
        raise InvalidInput(f"bad motion '{spec}': the weight must be a finite number",
                           hint="write a motion as NAME or NAME:WEIGHT, e.g. guitar:0.7")
    return weight


@dataclass(frozen=True)
class SampleRequest:
    """Everything `Engine.sample` needs to make one video, besides the models and the first frame.

    The sidecar of a video records these values, plus what the engine measured
    (`generate.py`); `resolve.sidecar_run` reads one back (`lamp gen --from-sidecar`).
    """

    prompt: str
    motions: tuple[tuple[str, float], ...] = ()
    negative: str = ""
    first_frame_prompt: str | None = None
    frames: int = DEFAULTS["frames"]
    width: int = DEFAULTS["width"]
    height: int = DEFAULTS["height"]
    steps: int = DEFAULTS["steps"]
    guidance: float = DEFAULTS["guidance"]
    shared_noise: float = DEFAULTS["shared_noise"]
    seed: int | None = None
    adain: bool = True
    adain_switch: float = DEFAULT_ADAIN_SWITCH
    histogram_match: bool = True
    overlap: int | None = None
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        s = self.sources
        if self.frames < 2:
            raise InvalidInput(f"{_named('frames', self.frames, s)}: a video needs at least 2 frames",
                               hint="a first frame and at least one more")
        check_size("width", self.width, s)
        check_size("height", self.height, s)
        if self.steps < 1:
            raise InvalidInput(f"{_named('steps', self.steps, s)}: steps must be at least 1")
        if _finite("guidance", self.guidance, s) < 0:
            raise InvalidInput(f"{_named('guidance', self.guidance, s)}: guidance must be a number >= 0")
        if not 0.0 <= _finite("shared_noise", self.shared_noise, s) <= 1.0:
            raise InvalidInput(f"{_named('shared_noise', self.shared_noise, s)}: shared noise must be in [0, 1]")
        if not 0.0 <= _finite("adain_switch", self.adain_switch, s) <= 1.0:
            raise InvalidInput(f"adain_switch must be a fraction in [0, 1] (got {self.adain_switch})")
        if self.seed is not None and not 0 <= int(self.seed) <= MAX_SEED:
            raise InvalidInput(f"{_named('seed', self.seed, s)}: the seed must be in [0, 2^63-1]")
        if self.overlap is not None and self.overlap < 1:
            raise InvalidInput(f"overlap must be at least 1 (got {self.overlap})")
        for name, weight in self.motions:
            check_motion_weight(f"{name}:{weight}", weight)

    def to_json(self) -> dict[str, Any]:
        """The request as strict JSON (no NaN or infinity), sources included."""
        doc = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "sources"}
        doc["motions"] = [list(m) for m in self.motions]
        doc["sources"] = dict(self.sources)
        return doc


@dataclass(frozen=True)
class TrainRequest:
    """A training run's resolved options (`lamp_cli.train.loop._check_run` builds it: command line >
    checkpoint > recipe > `LAMP_<KEY>` > config.toml > default; `sources` says which)."""

    name: str
    clips: str
    base_spec: str
    steps: int
    frames: int
    stride: int
    width: int
    height: int
    lr: float
    seed: int
    min_timestep: int
    flip: bool
    adapter_dtype: str
    checkpoint_every: int
    device: str
    mixed_precision: str
    prompts: tuple[str, ...]
    clip_files: tuple[str, ...]
    recipe: str | None = None
    publish: bool = True
    force: bool = False
    window_start: int | None = None
    seed_note: str | None = None
    gradient_checkpointing: bool | None = None
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        s = self.sources
        for key in ("steps", "frames", "stride", "width", "height"):
            check_positive(key, getattr(self, key), s)
        check_positive("lr", self.lr, s, float)
        check_size("width", self.width, s)
        check_size("height", self.height, s)
        if not 0 <= self.min_timestep < 1000:
            raise InvalidInput(f"--min-timestep must be in [0, 1000), got {self.min_timestep}")
        if self.checkpoint_every < 0:
            raise InvalidInput(f"--checkpoint-every must be 0 (only on Ctrl-C) or positive, got {self.checkpoint_every}")


@dataclass(frozen=True)
class GenRequest:
    """A `lamp gen` / `lamp animate` run: one SampleRequest per prompt, the models to load and where
    the videos go. Built by `lamp_cli.resolve.gen_request`."""

    command: str  # "gen" | "animate"
    samples: tuple[SampleRequest, ...]
    image: Path | None
    base: str
    device: str
    dtype: str
    fps: float
    fmt: str | None
    output: Path | None
    many: bool
    compile: bool = False
    offload: bool = False
    overwrite: bool = False
    first_frame_model: str | None = None
    first_frame_round_trip: bool = False  # replaying a sidecar from before the base's latent was kept
    loras: tuple[Any, ...] = ()  # lora.LoraSpec: image LoRAs fused into the base (`--lora`, setting `lora`)
    expect: Mapping[str, Any] = field(default_factory=dict, compare=False)  # digests to compare (sidecar)
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not _finite("fps", self.fps, self.sources) > 0:
            raise InvalidInput(f"{_named('fps', self.fps, self.sources)}: fps must be positive")

