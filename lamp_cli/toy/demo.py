"""`lamp demo`: the whole idea of LAMP on a laptop, measured.

Write 8 clips of one toy motion, learn the motion from them on the toy base (the ordinary
`train_motion`), generate a video of a shape/colour pair that none of the clips showed (the
ordinary `Engine.sample`, first frame from the base's text-to-image), and read the video back
with the toy world's image analysis: did the object move like the clips did, and does frame 1
show what the prompt asked for?
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..engine import Engine
from ..errors import InvalidInput
from ..fsutil import atomic_write_text, atomic_writer
from ..jsonio import dumps_strict, nulls_for_unmeasured
from ..models.base import BaseComponents, load_base
from ..progress import Reporter
from ..registry import Registry, validate_name
from ..train import train_motion
from ..video import write_video
from . import world
from .recipe import CLIPS as DEMO_CLIPS
from .recipe import CLIPS_RADIUS as DEMO_CLIPS_RADIUS
from .recipe import CLIPS_UPRIGHT as DEMO_CLIPS_UPRIGHT
from .recipe import DEMO_TRAIN_STEPS, FRAMES, TRAIN_STEPS
from .recipe import GUIDANCE as DEMO_GUIDANCE
from .recipe import LR as DEMO_LR
from .recipe import MIN_TIMESTEP as DEMO_MIN_TIMESTEP
from .recipe import SAMPLE_STEPS as DEMO_SAMPLE_STEPS

log = logging.getLogger("lamp")


@dataclass
class MotionCheck:
    """A generated video's object path against the trained motion's."""

    measured: np.ndarray  # F×2 centroid displacement from frame 0 (x, y), px; NaN where not found
    expected: np.ndarray  # F×2 the motion's ground-truth displacement
    found: int  # frames in which an object was found

    @property
    def error(self) -> float:
        """Mean distance (px) between measured and expected displacement over the found frames."""
        d = np.linalg.norm(self.measured - self.expected, axis=1)
        return float(np.nanmean(d)) if np.isfinite(d).any() else float("nan")

    @property
    def velocity(self) -> tuple[float, float]:
        """Least-squares px/frame (x, y) of the measured displacement (through the origin)."""
        return _velocity(self.measured)

    @property
    def expected_velocity(self) -> tuple[float, float]:
        return _velocity(self.expected)

    def to_json(self) -> dict[str, Any]:
        return {
            "error_px": round(self.error, 3),
            "velocity_px_per_frame": [round(v, 3) for v in self.velocity],
            "expected_velocity_px_per_frame": [round(v, 3) for v in self.expected_velocity],
            "frames_with_object": self.found,
            "displacement": [[None if not np.isfinite(v) else round(float(v), 2) for v in row] for row in self.measured],
            "expected_displacement": [[round(float(v), 2) for v in row] for row in self.expected],
        }


def _velocity(d: np.ndarray) -> tuple[float, float]:
    t = np.arange(len(d), dtype=np.float64)
    ok = np.isfinite(d).all(axis=1)
    if ok.sum() < 2:
        return float("nan"), float("nan")
    tt = t[ok]
    return tuple(float(np.sum(tt * d[ok, k]) / np.sum(tt * tt)) for k in range(2))  # type: ignore[return-value]


def check_motion(frames: np.ndarray, motion: str) -> MotionCheck:
    """Measure a video's object path (relative to frame 0) against `motion`'s ground truth."""
    path = world.measure_path(frames)
    return MotionCheck(
        measured=path - path[0],
        expected=world.motion_displacement(motion, len(frames)),
        found=int(np.isfinite(path).all(axis=1).sum()),
    )


# What `lamp demo` and `lamp bench toy` call a transfer: the motion moves the new content like the
# clips moved theirs, and the content stays what frame 1 shows (docs/toy.md, "What counts").
PATH_ERROR_MAX = 3.0  # px, mean over the clip
SHAPE_KEPT_MIN = 0.6  # of frames 2.., reading as frame 1's shape
COLOUR_KEPT_MIN = 0.95  # of frames, reading as the prompted object colour and background
# Artefacts are counted and shown in the verdict, not a bar: a colour fringe of a few pixels at an
# edge counts as a smudge as much as a blotch does (docs/toy.md). A frame of AdaIN-stretched noise
# (an object lost) drops the purity below ~0.98; the demo's videos stay above 0.99.
PURITY_MIN = 0.99  # mean over frames 2.. of the fraction of pixels that are the two colours or a mix


@dataclass
class ContentCheck:
    """Does a generated video keep what its first frame shows?"""

    shape: str  # the shape frame 1 shows (the given first-frame image), which the video should keep
    shape_kept: float  # fraction of frames 2.. whose object reads as `shape`
    colour_kept: float  # fraction of all frames whose object colour and background read as prompted
    purity: float  # mean fraction of frames 2..'s pixels that are the two colours or a mixture
    smudges: int  # off-palette groups (world.colour_purity) in frames 2.. beyond frame 1's own
    smudged_frames: int  # frames 2.. with more smudges than frame 1
    moving_frames: int  # frames 2..F

    def to_json(self) -> dict[str, Any]:
        return {"shape": self.shape, "shape_kept": round(self.shape_kept, 3),
                "colour_kept": round(self.colour_kept, 3), "purity": round(self.purity, 4),
                "smudges": self.smudges, "smudged_frames": self.smudged_frames}


def check_content(frames: np.ndarray, target: tuple[str, str, str], shape: str | None = None) -> ContentCheck:
    """Read every frame back against the prompt (`target`: shape, colour, background) and against
    frame 1's shape (`shape`, read off the given first-frame image; default: the prompt's)."""
    shape = target[0] if shape is None else shape
    readings = [world.read_frame(f) for f in frames]
    # Frame 1's own smudges (the base drew them) are the content; count what the motion adds.
    own = world.colour_purity(frames[0], target[1], target[2]).smudges
    purity = [world.colour_purity(f, target[1], target[2]) for f in frames[1:]]
    return ContentCheck(
        shape=shape,
        shape_kept=float(np.mean([r.shape == shape for r in readings[1:]])),
        colour_kept=float(np.mean([(r.color, r.background) == target[1:] for r in readings])),
        purity=float(np.mean([p.pure for p in purity])),
        smudges=int(sum(max(0, p.smudges - own) for p in purity)),
        smudged_frames=int(sum(p.smudges > own for p in purity)),
        moving_frames=len(purity),
    )


def shortfalls(path_error: float, shape_kept: float, colour_kept: float, purity: float | None = None, *,
               shape: str = "shape") -> list[str]:
    """The bars (above) a video, or a mean over videos, misses; each as a phrase."""
    faults = []
    if not path_error <= PATH_ERROR_MAX:  # NaN (no object found) misses too
        faults.append(f"path error {path_error:.1f} px > {PATH_ERROR_MAX:g}")
    if not shape_kept >= SHAPE_KEPT_MIN:
        faults.append(f"the {shape} kept in {shape_kept:.2f} of frames < {SHAPE_KEPT_MIN:g}")
    if not colour_kept >= COLOUR_KEPT_MIN:
        faults.append(f"colours kept in {colour_kept:.2f} of frames < {COLOUR_KEPT_MIN:g}")
    if purity is not None and not purity >= PURITY_MIN:
        faults.append(f"colour purity {purity:.3f} < {PURITY_MIN:g}")
    return faults


def verdict(check: MotionCheck, content: ContentCheck) -> str:
    """One line: does the video show the trained motion on the new content, and keep the content?"""
    faults = shortfalls(check.error, content.shape_kept, content.colour_kept, content.purity, shape=content.shape)
    artefacts = f"{content.smudges} new smudges in {content.smudged_frames} of {content.moving_frames} frames"
    if faults:
        return "no transfer: " + "; ".join(faults) + f" ({artefacts})"
    return (f"transfer: moves like the clips (path error {check.error:.1f} px) and keeps frame 1's "
            f"{content.shape} ({content.shape_kept:.2f} of frames) and colours ({content.colour_kept:.2f}); "
            f"{artefacts}")


def contact_sheet(frames: np.ndarray, columns: int = 8, scale: int = 2, gap: int = 2) -> np.ndarray:
    """Frames in a grid (rows of `columns`), each enlarged `scale`× (nearest), on white."""
    n, h, w, _ = frames.shape
    big = frames.repeat(scale, axis=1).repeat(scale, axis=2)
    rows = -(-n // columns)
    H, W = h * scale, w * scale
    sheet = np.full((rows * H + (rows + 1) * gap, columns * W + (columns + 1) * gap, 3), 255, np.uint8)
    for i, f in enumerate(big):
        r, c = divmod(i, columns)
        y, x = gap + r * (H + gap), gap + c * (W + gap)
        sheet[y : y + H, x : x + W] = f
    return sheet


def transfer_sheet(clip: np.ndarray, video: np.ndarray, clip_label: str, video_label: str,
                   scale: int = 2) -> np.ndarray:
    """A training clip above the generated video, one row of frames each, each row under its label."""
    from PIL import Image, ImageDraw

    rows = []
    for frames, label in ((clip, clip_label), (video, video_label)):
        grid = contact_sheet(frames, columns=len(frames), scale=scale)
        band = Image.new("RGB", (grid.shape[1], 14), (255, 255, 255))
        ImageDraw.Draw(band).text((4, 2), label, fill=(0, 0, 0))
        rows += [np.asarray(band), grid]
    return np.concatenate(rows, axis=0)


def write_demo_clips(
    motion: str, folder: Path, *, seed: int, exclude: list[tuple[str, str]]
) -> list[tuple[Path, world.ClipSpec]]:
    """The demo's training clips (`DEMO_CLIPS` of them, none showing an `exclude` pair)."""
    return world.write_clips(motion, folder, n=DEMO_CLIPS, seed=seed, frames=FRAMES, exclude=exclude,
                             upright=DEMO_CLIPS_UPRIGHT, radius=DEMO_CLIPS_RADIUS)


def learn_motion(components: Any, motion: str, name: str, *, seed: int, exclude: list[tuple[str, str]],
                 steps: int = TRAIN_STEPS, **train: Any) -> tuple[Any, list[tuple[Path, world.ClipSpec]]]:
    """Learn `motion` from the demo's clips with the demo's recipe (lamp_cli/toy/recipe.py).

    Returns `train_motion`'s result and the clips' specs (their files are gone by then); `train`
    goes to `train_motion` (registry, publish, progress, adapter_dtype, ...)."""
    with tempfile.TemporaryDirectory(prefix="lamp-toy-") as tmp:
        written = write_demo_clips(motion, Path(tmp) / "clips", seed=seed, exclude=exclude)
        trained = train_motion(
            Path(tmp) / "clips", name, base=components, steps=steps, frames=FRAMES, stride=1,
            width=world.SIZE, height=world.SIZE, lr=DEMO_LR, seed=seed, device="cpu",
            checkpoint_every=0, force=True,
            flip=motion in world.MIRROR_SAFE,  # a mirrored slide_right would teach sliding left
            min_timestep=DEMO_MIN_TIMESTEP, **train,
        )
    return trained, written


def pick_unseen(motion: str, seed: int) -> tuple[str, str, str]:
    """The (shape, colour, background) the demo generates: one the toy base knows well.

    Drawn from the base's training triples; the clips then leave out its (shape, colour) pair.
    """
    rng = np.random.default_rng(seed + 1000)
    triples = world.training_triples()
    if motion == "spin":  # a spinning circle looks still
        triples = [t for t in triples if t[0] != "circle"]
    return triples[int(rng.integers(len(triples)))]


FIRST_FRAME_CANDIDATES = 8  # text-to-image seeds drawn for every first frame
FIRST_FRAME_MAX_CANDIDATES = 32  # more only while none reads as the prompt and fits the motion


def room_to_move(reading: world.FrameReading, motion: str, frames: int = FRAMES) -> float:
    """How far (px) the object in a first frame stays inside the image along `motion`'s path.

    The least, over the frames, distance between the border and the moved object (its extent
    carried along the motion's displacement, and grown with it for "grow"), less the margin the
    training clips always kept (`world.CLIP_MARGIN`); negative when the motion would carry part of
    it closer to the border than any clip showed. -inf when no object was found.
    """
    if reading.centroid is None or reading.extent is None:
        return float("-inf")
    cx, cy = reading.centroid
    x0, x1, y0, y1 = reading.extent
    path = np.asarray(reading.centroid) + world.motion_displacement(motion, frames)  # F×2 (x, y)
    scale = world.size_factors(motion, frames)  # F: the object's size relative to frame 1
    edges = np.stack([
        path[:, 0] - (cx - x0) * scale, world.SIZE - 1 - (path[:, 0] + (x1 - cx) * scale),
        path[:, 1] - (cy - y0) * scale, world.SIZE - 1 - (path[:, 1] + (y1 - cy) * scale),
    ])
    return float(edges.min() - world.CLIP_MARGIN)


def vae_round_trip(base: Any, image: np.ndarray) -> np.ndarray:
    """`image` as a video's frame 1 shows it: encoded (posterior mean) and decoded by `base`'s VAE."""
    from ..engine import decode_latents, encode_first_frame

    z = encode_first_frame(base.vae, image, image.shape[1], image.shape[0], base.latent_scale)
    return decode_latents(base.vae, z[:, :, None], base.latent_scale)[0]


@dataclass
class FirstFramePick:
    """The first frame `pick_first_frame` keeps, and what choosing it took."""

    first: Any  # first_frame.FirstFrame: pass `first.for_sampling` to Engine.sample
    seed: int  # the text-to-image seed that made it
    matching: int  # candidates that read as the prompt
    drawn: int  # candidates drawn


def pick_first_frame(engine: Any, prompt: str, motion: str, *, seed: int, steps: int,
                     candidates: int = FIRST_FRAME_CANDIDATES,
                     max_candidates: int = FIRST_FRAME_MAX_CANDIDATES) -> FirstFramePick:
    """The text-to-image first frame (seeds from `seed`) a user would keep.

    As a user would: an image that shows what the prompt asks for (when the prompt is a world
    caption and any candidate reads as it); of those, one with room for the motion's whole path
    (`room_to_move`), as one picks a first frame for "slides right" with the object on the left:
    the clips' objects always had room, and a slide into the border is not the trained motion; of
    those, one that still reads as the prompt as the video's frame 1 will show it (the image
    itself where the base drew it, since the engine then starts from its latent; else after the
    VAE round trip); and then the one with the most room. `candidates` are drawn, then more, one
    at a time up to `max_candidates`, only while none meets all three, as a user draws again when
    no picture fits.
    """
    try:
        target: tuple[str, str, str] | None = world.parse_caption(prompt)
    except ValueError:
        target = None
    base = getattr(engine, "base", None)
    matching = 0
    best: tuple[tuple[bool, bool, bool, float], Any, int] | None = None
    drawn = 0
    while drawn < max(candidates, 1) or (drawn < max_candidates and not all(best[0][:3])):  # type: ignore[index]
        s = seed + drawn
        drawn += 1
        made = engine.first_frames()(prompt, width=world.SIZE, height=world.SIZE, steps=steps, seed=s)
        reading = world.read_frame(made.image)
        ok = target is not None and reading.matches(*target)
        matching += ok
        room = room_to_move(reading, motion)
        shown = made.image if made.latent is not None or base is None else vae_round_trip(base, made.image)
        survives = ok and world.read_frame(shown).matches(*target)
        key = (ok, room > 0, survives, room)
        if best is None or key > best[0]:
            best = (key, made, s)
    assert best is not None
    return FirstFramePick(best[1], best[2], matching, drawn)


@dataclass
class DemoResult:
    motion: str
    name: str  # the registry name it was trained under
    kept: bool
    prompt: str
    target: tuple[str, str, str]
    training_pairs: list[tuple[str, str]]
    check: MotionCheck
    first_frame: world.FrameReading
    files: dict[str, Path]
    train_seconds: float
    sample_seconds: float
    train_steps: int
    final_loss: float
    content: ContentCheck | None = None
    record: dict[str, Any] = field(default_factory=dict)
    # (how many text-to-image candidates read as the prompt, how many were drawn)
    first_frame_candidates: tuple[int, int] = (0, 0)

    @property
    def verdict(self) -> str:
        return verdict(self.check, self.content) if self.content is not None else ""

    @property
    def first_frame_ok(self) -> bool:
        return self.first_frame.matches(*self.target)

    def to_json(self) -> dict[str, Any]:
        shape, color, background = self.target
        content = self.content.to_json() if self.content is not None else {}
        return nulls_for_unmeasured({
            "motion": self.motion,
            "path_error_px": round(self.check.error, 3),
            "shape_kept": content.get("shape_kept"),
            "colour_kept": content.get("colour_kept"),
            "artefacts": {"smudges": content.get("smudges"), "smudged_frames": content.get("smudged_frames"),
                          "purity": content.get("purity")},
            "verdict": self.verdict,
            "video": str(self.files.get("mp4", "")),
            "name": self.name,
            "kept": self.kept,
            "prompt": self.prompt,
            "unseen": {"shape": shape, "color": color, "background": background},
            "training_pairs": [list(p) for p in self.training_pairs],
            "motion_check": self.check.to_json(),
            "content_check": content,
            "first_frame": {**self.first_frame.to_dict(), "matches_prompt": self.first_frame_ok,
                            "candidates": self.first_frame_candidates[1],
                            "candidates_matching_prompt": self.first_frame_candidates[0]},
            "files": {k: str(v) for k, v in self.files.items()},
            "train_seconds": round(self.train_seconds, 1),
            "sample_seconds": round(self.sample_seconds, 1),
            "train_steps": self.train_steps,
            "final_loss": self.final_loss,
            "seed": self.record.get("seed"),
        })


def run_demo(
    motion: str = "slide_right",
    *,
    out: str | Path | None = None,
    steps: int = DEMO_TRAIN_STEPS,
    keep: bool = False,
    seed: int = 0,
    name: str | None = None,
    base: Any = "toy",
    sample_steps: int = DEMO_SAMPLE_STEPS,
    progress: Reporter | None = None,
    registry: Any = None,
) -> DemoResult:
    """Train `motion` from toy clips on the toy base, generate an unseen pair, measure it."""

    # 1. check inputs before any model loads
    if motion not in world.MOTIONS:
        raise InvalidInput(f"unknown toy motion '{motion}'", hint=f"choose one of: {', '.join(world.MOTIONS)}")
    if steps < 1 or sample_steps < 1:
        raise InvalidInput("--steps must be at least 1")
    name = validate_name(name or f"toy-{motion.replace('_', '-')}")
    registry = registry if registry is not None else Registry()
    out = Path(out) if out is not None else Path.cwd() / f"lamp-demo-{motion.replace('_', '-')}"
    if out.exists() and not out.is_dir():
        raise InvalidInput(f"{out} exists and is not a folder", hint="pass --out DIR")


    components = base if isinstance(base, BaseComponents) else load_base(str(base))
    target = pick_unseen(motion, seed)
    shape, color, background = target
    prompt = world.caption(shape, color, background)

    # 2. eight clips of the motion, none showing the target's (shape, colour) pair; 3. learn the
    # motion (publishing replaces an earlier demo run of the same motion)
    t0 = time.perf_counter()
    trained, written = learn_motion(components, motion, name, seed=seed, exclude=[(shape, color)], steps=steps,
                                    registry=registry, progress=progress)
    train_seconds = time.perf_counter() - t0
    pairs = [(spec.start.shape, spec.start.color) for _, spec in written]
    example = written[0][1]  # shown above the generated video in the contact sheet
    assert (shape, color) not in pairs

    try:
        # 4. generate the unseen pair with the engine `lamp gen` uses; first frame from the base
        t0 = time.perf_counter()
        engine = Engine(components, first_frame_model="base")
        pick = pick_first_frame(engine, prompt, motion, seed=seed, steps=sample_steps)
        result = engine.sample(
            [(trained.adapter, 1.0)], prompt, pick.first.for_sampling, frames=FRAMES, width=world.SIZE, height=world.SIZE,
            steps=sample_steps, guidance=DEMO_GUIDANCE, seed=seed, progress=progress,
        )
        result.record["first_frame"] = {
            "source": f"text-to-image (toy base): of {pick.drawn} seeds, the best-placed one "
                      "that reads as the prompt", "seed": pick.seed,
            "candidates": pick.drawn, "candidates_matching_prompt": pick.matching,
        }
        sample_seconds = time.perf_counter() - t0

        # 5. write the video three ways and measure it
        from ..fsutil import make_output_folder

        make_output_folder(out)
        stem = name
        files = {
            "mp4": write_video(result.frames, out / f"{stem}.mp4", fps=8),
            "gif": write_video(result.frames, out / f"{stem}.gif", fps=8),
        }
        from PIL import Image


        sheet_path = out / f"{stem}-frames.png"
        sheet = transfer_sheet(world.render_clip(example, world.SIZE), result.frames,
                               f"a training clip: {example.caption}", f"generated: {prompt}")
        with atomic_writer(sheet_path) as f:
            Image.fromarray(sheet).save(f, format="PNG")
        files["contact_sheet"] = sheet_path
        demo = DemoResult(
            motion=motion, name=name, kept=keep, prompt=prompt, target=target, training_pairs=pairs,
            check=check_motion(result.frames, motion), first_frame=world.read_frame(result.frames[0]),
            files=files, train_seconds=train_seconds, sample_seconds=sample_seconds,
            train_steps=trained.steps, final_loss=trained.final_loss, record=result.record,
            first_frame_candidates=(pick.matching, pick.drawn),
            content=check_content(result.frames, target, shape=world.read_frame(pick.first.image).shape),
        )

        sidecar = out / f"{stem}.json"
        atomic_write_text(sidecar, dumps_strict({**demo.to_json(), "record": result.record}, what="the demo sidecar", indent=2, default=str))
        demo.files["json"] = sidecar
        return demo
    finally:
        if not keep:
            registry.remove(name)

