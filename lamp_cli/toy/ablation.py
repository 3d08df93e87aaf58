"""The paper's claims at toy scale: motion error and content fidelity with each part switched off.

For each motion: learn it once from toy clips on the toy base, then generate videos of shape and
colour pairs the clips never showed, with the full method and with one part removed at a time:

- shared noise    `shared_noise=0` (independent noise per frame)
- AdaIN           `adain=False`
- histogram match `histogram_match=False`
- first frame     `clean_first_frame=False`: frame 1 is denoised with the others (same video UNet)
- temporal conv   the adapter's `conv1d` kernels zeroed (the motion conv becomes the identity)

Path error: mean distance (px) between the object's measured centroid displacement and the
motion's true one. Colour kept: the fraction of frames in which simple image analysis reads the
prompted object colour and background; shape kept: the fraction of frames 2.. whose object reads
as the shape frame 1 shows; smudges: groups of off-palette pixels (`world.colour_purity`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..adapter import MotionAdapter
from ..engine import Engine
from ..errors import InvalidInput
from ..models.base import BaseComponents, load_base
from ..progress import Reporter, reporter_or_null
from . import world
from .demo import (
    DEMO_GUIDANCE,
    DEMO_SAMPLE_STEPS,
    FRAMES,
    TRAIN_STEPS,
    check_content,
    check_motion,
    learn_motion,
    pick_first_frame,
    shortfalls,
    verdict,
)

DEFAULT_MOTIONS = ("slide_right", "rise", "grow")
VARIANTS = ("full", "no shared noise", "no AdaIN", "no histogram match", "no first frame", "no temporal conv")


@dataclass
class Row:
    """One motion and variant, over every seed's videos; spreads are the standard deviation of
    the per-seed means (with one seed: of the videos)."""

    motion: str
    variant: str
    motion_error: float  # px, mean path error over videos
    content: float  # colour kept: fraction of frames whose object colour and background read as the prompt
    first_frame: float  # fraction of videos whose frame 1 has the prompt's colours
    videos: int
    shape: float = float("nan")  # shape kept: fraction of frames 2.. that read as frame 1's shape
    smudges: float = float("nan")  # smudges (world.colour_purity) per video, over frames 2..
    motion_error_sd: float = 0.0
    shape_sd: float = 0.0
    content_sd: float = 0.0
    seeds: int = 1
    transfers: float = float("nan")  # fraction of videos whose verdict is a transfer


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


def _train(components: Any, motion: str, picks: list[tuple[str, str, str]], *, steps: int, seed: int,
           progress: Reporter) -> Any:
    """Learn `motion` with the demo's recipe, from clips none of which shows a target's pair."""
    trained, _ = learn_motion(components, motion, f"ablation-{motion.replace('_', '-')}", seed=seed,
                              exclude=[(s, c) for s, c, _ in picks], steps=steps, publish=False, progress=progress)
    return trained


def _videos(engine: Any, adapter: Any, motion: str, picks: list[tuple[str, str, str]], variants: Sequence[str], *,
            seed: int, sample_steps: int, progress: Reporter) -> list[dict[str, Any]]:
    """Every variant's video of every target, measured: one dict per video."""
    size = world.SIZE
    no_conv = without_temporal_conv(adapter)
    # One first frame per target, shared by every variant that uses one.
    firsts = {
        t: pick_first_frame(engine, world.caption(*t), motion, seed=seed + 100 * k, steps=sample_steps).first
        for k, t in enumerate(picks)
    }
    shapes = {t: world.read_frame(made.image).shape for t, made in firsts.items()}
    out = []
    for variant in variants:
        for k, t in enumerate(picks):
            clean_first = variant != "no first frame"
            frames = engine.sample(
                [(no_conv if variant == "no temporal conv" else adapter, 1.0)], world.caption(*t),
                firsts[t].for_sampling if clean_first else None,
                frames=FRAMES, width=size, height=size, steps=sample_steps, guidance=DEMO_GUIDANCE, seed=seed + k,
                shared_noise=0.0 if variant == "no shared noise" else 0.2,
                adain=variant != "no AdaIN",
                histogram_match=variant != "no histogram match",
                clean_first_frame=clean_first,
            ).frames
            check = check_motion(frames, motion)
            # frame 1's shape: the given image's; without one, the prompt's
            content = check_content(frames, t, shape=shapes[t] if clean_first else None)
            out.append({"motion": motion, "variant": variant, "seed": seed, "target": t,
                        "error_px": check.error, "velocity": check.velocity, "colour_kept": content.colour_kept,
                        "shape": content.shape, "shape_kept": content.shape_kept, "smudges": content.smudges,
                        "first_frame_colours": world.dominant_colors(frames[0]) == (t[1], t[2]),
                        "verdict": verdict(check, content)})
            progress.advance(1)
    return out


def _row(motion: str, variant: str, videos: list[dict[str, Any]]) -> Row:
    """Aggregate one motion and variant: means over videos, spread over the seeds' means."""
    mine = [v for v in videos if v["motion"] == motion and v["variant"] == variant]
    seeds = sorted({v["seed"] for v in mine})

    def stats(key: str) -> tuple[float, float]:
        if len(seeds) == 1:  # one seed: the spread over its videos (targets and sampling seeds)
            finite = [v[key] for v in mine if np.isfinite(v[key])]
            return (float(np.mean(finite)) if finite else float("nan"),
                    float(np.std(finite)) if len(finite) > 1 else 0.0)
        per_seed = [np.nanmean([v[key] for v in mine if v["seed"] == s]) if any(
            np.isfinite(v[key]) for v in mine if v["seed"] == s) else np.nan for s in seeds]
        finite = [x for x in per_seed if np.isfinite(x)]
        return (float(np.mean(finite)) if finite else float("nan"),
                float(np.std(finite)) if len(finite) > 1 else 0.0)

    err, err_sd = stats("error_px")
    shape, shape_sd = stats("shape_kept")
    colour, colour_sd = stats("colour_kept")
    return Row(motion, variant, err, colour, float(np.mean([v["first_frame_colours"] for v in mine])), len(mine),
               shape, float(np.mean([v["smudges"] for v in mine])), err_sd, shape_sd, colour_sd, len(seeds),
               float(np.mean([v["verdict"].startswith("transfer") for v in mine])))


def run_ablation(
    motions: Sequence[str] = DEFAULT_MOTIONS,
    *,
    train_steps: int = TRAIN_STEPS,
    targets: int = 3,
    seed: int = 0,
    seeds: int = 1,
    sample_steps: int = DEMO_SAMPLE_STEPS,
    base: Any = "toy",
    variants: Sequence[str] = VARIANTS,
    progress: Reporter | None = None,
) -> tuple[list[Row], dict[str, Any]]:
    """Rows of the ablation table and a record (timings, settings, per-video numbers).

    Each of `seeds` seeds (from `seed`) learns each motion once, from its own clips, and
    generates its own `targets` unseen pairs with every variant."""

    for m in motions:
        if m not in world.MOTIONS:
            raise InvalidInput(f"unknown toy motion '{m}'", hint=f"choose from: {', '.join(world.MOTIONS)}")
    for v in variants:
        if v not in VARIANTS:
            raise InvalidInput(f"unknown variant '{v}'", hint=f"choose from: {', '.join(VARIANTS)}")
    if seeds < 1 or targets < 1:
        raise InvalidInput("--seeds and --targets must be at least 1")
    progress = reporter_or_null(progress)
    components = base if isinstance(base, BaseComponents) else load_base(str(base))
    engine = Engine(components, first_frame_model="base")
    record: dict[str, Any] = {"train_steps": train_steps, "sample_steps": sample_steps, "guidance": DEMO_GUIDANCE,
                              "seed": seed, "seeds": seeds, "videos": [], "train_seconds": {}}
    t_start = time.perf_counter()
    for motion in motions:
        for s in range(seed, seed + seeds):
            picks = unseen_targets(motion, targets, s)
            t0 = time.perf_counter()
            trained = _train(components, motion, picks, steps=train_steps, seed=s, progress=progress)
            record["train_seconds"][f"{motion}/{s}"] = round(time.perf_counter() - t0, 1)
            progress.start(f"ablation {motion} seed {s}", len(variants) * len(picks))
            record["videos"] += _videos(engine, trained.adapter, motion, picks, variants, seed=s,
                                        sample_steps=sample_steps, progress=progress)
            progress.finish()
    rows = [_row(m, v, record["videos"]) for m in motions for v in variants]
    record["seconds"] = round(time.perf_counter() - t_start, 1)
    return rows, record


def verdict_line(row: Row) -> str:
    """One line for a motion's full method: its means against the bars `lamp demo` applies."""
    faults = shortfalls(row.motion_error, row.shape, row.content)
    head = "no transfer: " + "; ".join(faults) if faults else (
        f"transfer: path error {row.motion_error:.1f} px, shape kept {row.shape:.2f}, colour kept {row.content:.2f}")
    return f"{head} ({row.smudges:.1f} smudges per video; {row.transfers:.0%} of {row.videos} videos pass on their own)"


def markdown_table(rows: Sequence[Row]) -> str:
    """The ablation as a markdown table (one row per motion and variant; ± the spread over seeds)."""
    lines = [
        "| motion | variant | path error (px) ↓ | shape kept ↑ | colour kept ↑ | smudges / video ↓ "
        "| frame 1 colours right ↑ | transfers ↑ | videos (seeds) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r.motion} | {r.variant} | {r.motion_error:.2f} ± {r.motion_error_sd:.2f} "
                     f"| {r.shape:.2f} ± {r.shape_sd:.2f} | {r.content:.2f} ± {r.content_sd:.2f} | {r.smudges:.1f} "
                     f"| {r.first_frame:.2f} | {r.transfers:.2f} | {r.videos} ({r.seeds}) |")
    return "\n".join(lines)


def shape_table(videos: Sequence[dict[str, Any]]) -> str:
    """The full method's videos by the prompt's shape, over every motion and seed: which shapes the
    learned motions carry (the toy base draws some shapes far better than others, docs/toy.md)."""
    lines = ["| shape (prompt) | videos | path error (px) ↓ | shape kept ↑ | colour kept ↑ | transfers ↑ |",
             "|---|---:|---:|---:|---:|---:|"]
    full = [v for v in videos if v["variant"] == "full"]
    for shape in world.SHAPES:
        mine = [v for v in full if v["target"][0] == shape]
        if not mine:
            continue
        err = [v["error_px"] for v in mine if np.isfinite(v["error_px"])]
        lines.append(f"| {shape} | {len(mine)} | {np.mean(err) if err else float('nan'):.2f} "
                     f"| {np.mean([v['shape_kept'] for v in mine]):.2f} | {np.mean([v['colour_kept'] for v in mine]):.2f} "
                     f"| {np.mean([v['verdict'].startswith('transfer') for v in mine]):.2f} |")
    return "\n".join(lines)
