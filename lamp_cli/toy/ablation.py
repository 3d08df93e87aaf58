"""The paper's claims at toy scale: motion error and content fidelity with each part switched off.

For each motion: learn it once from toy clips on the toy base, then generate videos of shape and
colour pairs the clips never showed, with the full method and with one part removed at a time:

- shared noise    `shared_noise=0` (independent noise per frame)
- AdaIN           `adain=False`
- histogram match `histogram_match=False`
- first frame     `clean_first_frame=False`: frame 1 is denoised with the others (same video UNet)
- temporal conv   the adapter's `conv1d` kernels zeroed (the motion conv becomes the identity)

Motion error: mean distance (px) between the object's measured centroid displacement and the
motion's true one. Content fidelity: the fraction of frames in which simple image analysis reads
the prompted object colour and background; shape kept: the fraction whose object reads as the
prompted shape.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..adapter import MotionAdapter
from ..engine import Engine
from ..errors import InvalidInput
from ..models.base import BaseComponents, load_base
from ..progress import Reporter, reporter_or_null
from ..train import train_motion
from . import world
from .demo import DEMO_GUIDANCE, DEMO_LR, DEMO_SAMPLE_STEPS, FRAMES, check_motion, pick_first_frame

VARIANTS = ("full", "no shared noise", "no AdaIN", "no histogram match", "no first frame", "no temporal conv")


@dataclass
class Row:
    motion: str
    variant: str
    motion_error: float  # px, mean over videos
    content: float  # fraction of frames whose object colour and background read as the prompt
    first_frame: float  # fraction of videos whose frame 1 has the prompt's colours
    videos: int
    shape: float = float("nan")  # fraction of frames whose object reads as the prompted shape


def without_temporal_conv(adapter: Any) -> Any:
    """A copy of `adapter` whose motion-conv kernels are zero: conv1d(y) = 0, so out = y."""

    tensors = {k: (v * 0 if ".conv1d." in k else v) for k, v in adapter.tensors.items()}
    return MotionAdapter(tensors=tensors, metadata=dict(adapter.metadata))


def unseen_targets(motion: str, n: int, seed: int) -> list[tuple[str, str, str]]:
    """`n` (shape, colour, background) triples from the base's training set with distinct (shape, colour)."""
    rng = np.random.default_rng(seed + 2000)
    triples = world.training_triples()
    if motion == "spin":
        triples = [t for t in triples if t[0] != "circle"]
    out: list[tuple[str, str, str]] = []
    for i in rng.permutation(len(triples)):
        t = triples[int(i)]
        if all((t[0], t[1]) != (u[0], u[1]) for u in out):
            out.append(t)
        if len(out) == n:
            break
    return out


def run_ablation(
    motions: Sequence[str] = ("slide_right", "rise"),
    *,
    train_steps: int = 300,
    targets: int = 4,
    seed: int = 0,
    sample_steps: int = DEMO_SAMPLE_STEPS,
    base: Any = "toy",
    variants: Sequence[str] = VARIANTS,
    progress: Reporter | None = None,
) -> tuple[list[Row], dict[str, Any]]:
    """Rows of the ablation table and a record (timings, settings, per-video numbers)."""
    import tempfile


    for m in motions:
        if m not in world.MOTIONS:
            raise InvalidInput(f"unknown toy motion '{m}'", hint=f"choose from: {', '.join(world.MOTIONS)}")
    for v in variants:
        if v not in VARIANTS:
            raise InvalidInput(f"unknown variant '{v}'", hint=f"choose from: {', '.join(VARIANTS)}")
    progress = reporter_or_null(progress)
    components = base if isinstance(base, BaseComponents) else load_base(str(base))
    engine = Engine(components, first_frame_model="base")
    rows: list[Row] = []
    record: dict[str, Any] = {"train_steps": train_steps, "sample_steps": sample_steps, "guidance": DEMO_GUIDANCE,
                              "seed": seed, "videos": [], "train_seconds": {}}
    size = world.SIZE
    t_start = time.perf_counter()
    for motion in motions:
        picks = unseen_targets(motion, targets, seed)
        with tempfile.TemporaryDirectory(prefix="lamp-ablation-") as tmp:
            world.write_clips(motion, Path(tmp), n=8, seed=seed, frames=FRAMES, exclude=[(s, c) for s, c, _ in picks])
            t0 = time.perf_counter()
            trained = train_motion(
                tmp, f"ablation-{motion.replace('_', '-')}", base=components, steps=train_steps, frames=FRAMES,
                stride=1, width=size, height=size, lr=DEMO_LR, seed=seed, device="cpu", checkpoint_every=0,
                force=True, publish=False, progress=progress, flip=motion in world.MIRROR_SAFE,
            )
            record["train_seconds"][motion] = round(time.perf_counter() - t0, 1)
        adapter = trained.adapter
        no_conv = without_temporal_conv(adapter)
        # One first frame per target, shared by every variant that uses one.
        firsts = {
            t: pick_first_frame(engine, world.caption(*t), motion, seed=seed + 100 * k, steps=sample_steps)[0]
            for k, t in enumerate(picks)
        }
        progress.start(f"ablation {motion}", len(variants) * len(picks))
        for variant in variants:
            errors, contents, ffs, shapes = [], [], [], []
            for k, t in enumerate(picks):
                prompt = world.caption(*t)
                kw = dict(frames=FRAMES, width=size, height=size, steps=sample_steps, guidance=DEMO_GUIDANCE,
                          seed=seed + k)
                clean_first = variant != "no first frame"
                frames = engine.sample(
                    [(no_conv if variant == "no temporal conv" else adapter, 1.0)], prompt,
                    firsts[t] if clean_first else None,
                    shared_noise=0.0 if variant == "no shared noise" else 0.2,
                    adain=variant != "no AdaIN",
                    histogram_match=variant != "no histogram match",
                    clean_first_frame=clean_first,
                    **kw,
                ).frames
                check = check_motion(frames, motion)
                readings = [world.read_frame(f) for f in frames]
                content = float(np.mean([(r.color, r.background) == t[1:] for r in readings]))
                shape = float(np.mean([r.shape == t[0] for r in readings]))
                errors.append(check.error)
                contents.append(content)
                shapes.append(shape)
                ffs.append((readings[0].color, readings[0].background) == t[1:])
                record["videos"].append({"motion": motion, "variant": variant, "target": t,
                                         "error_px": check.error, "content": content, "shape": shape,
                                         "velocity": check.velocity})
                progress.advance(1)
            rows.append(Row(motion, variant, float(np.nanmean(errors)), float(np.mean(contents)),
                            float(np.mean(ffs)), len(picks), float(np.mean(shapes))))
        progress.finish()
    record["seconds"] = round(time.perf_counter() - t_start, 1)
    return rows, record


def markdown_table(rows: Sequence[Row]) -> str:
    """The ablation as a markdown table (one row per motion and variant)."""
    lines = [
        "| motion | variant | motion error (px) ↓ | content fidelity (colours) ↑ | shape kept ↑ "
        "| frame 1 colours right ↑ | videos |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r.motion} | {r.variant} | {r.motion_error:.2f} | {r.content:.2f} | {r.shape:.2f} "
                     f"| {r.first_frame:.2f} | {r.videos} |")
    return "\n".join(lines)
