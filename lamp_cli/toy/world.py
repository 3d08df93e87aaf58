"""The toy world: one flat-coloured shape on a plain background, 64×64 px, and clips of it moving.

Everything here is numpy + PIL and deterministic from a seed. It serves three purposes:
the toy base is trained on its images and captions, `lamp demo` and the toy tests train motions
on its clips, and its measuring tools (object mask, centroid, colours, shape class) read the
generated videos back, so a test can say "this object moved right by 2 px per frame".
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SIZE = 64  # image side, px
SUPERSAMPLE = 4  # draw at 4× and box-filter down: anti-aliased edges, like a real (blurry) image

# Saturated, mutually distant colours; every name is one token of the toy base's tokenizer.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 70, 230),
    "yellow": (240, 225, 40),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
    "magenta": (220, 50, 220),
    "cyan": (40, 215, 230),
}
SHAPES = ("circle", "square", "triangle", "star", "cross")
MOTIONS = ("slide_right", "slide_left", "rise", "fall", "grow", "spin", "bounce")

# Known motion parameters (per frame). Speeds are fixed, not random, so "the trained speed" is
# one number a test can check against.
SLIDE_SPEED = 2.0  # px per frame for slide_right/left, rise, fall and bounce's horizontal drift
GROW_RATE = 0.04  # relative size increase per frame (16 frames: 1.6×)
SPIN_RATE = 9.0  # degrees per frame
BOUNCE_HEIGHT = 14.0  # px, the top of each hop above the floor
BOUNCE_PERIOD = 8.0  # frames per hop

# Motions a horizontal mirror image leaves the same: training may flip their clips at random (the
# paper's augmentation). A mirrored slide_right slides left, a mirrored spin turns the other way.
MIRROR_SAFE = frozenset({"rise", "fall", "grow"})
CLIP_MARGIN = 2.0  # px: a clip's object stays at least this far (circumradius) from the border

WORDS = tuple(
    dict.fromkeys(
        ["a", "on", "background", *COLORS, *SHAPES, "moves", "right", "left", "up", "down", "grows", "spins", "bounces"]
    )
)


@dataclass(frozen=True)
class Scene:
    """One image of the world: a shape at (cx, cy) with circumradius `radius`, turned by `angle` degrees."""

    shape: str
    color: str
    background: str
    cx: float
    cy: float
    radius: float
    angle: float = 0.0

    @property
    def caption(self) -> str:
        return caption(self.shape, self.color, self.background)


@dataclass(frozen=True)
class ClipSpec:
    """A clip's known parameters: the first frame's scene, the motion and the frame count."""

    motion: str
    start: Scene
    frames: int = 16

    @property
    def caption(self) -> str:
        return self.start.caption

    def scenes(self) -> list[Scene]:
        return [_scene_at(self.motion, self.start, t) for t in range(self.frames)]


def caption(shape: str, color: str, background: str) -> str:
    """The world's caption for a scene: 'a red circle on a blue background'."""
    return f"a {color} {shape} on a {background} background"


def parse_caption(text: str) -> tuple[str, str, str]:
    """(shape, color, background) from a world caption; ValueError if it is not one."""
    words = text.lower().replace(",", " ").split()
    try:
        i = words.index("on")
        color, shape = words[i - 2], words[i - 1]
        background = words[words.index("background") - 1]
    except (ValueError, IndexError) as e:
        raise ValueError(f"not a toy-world caption: {text!r}") from e
    if shape not in SHAPES or color not in COLORS or background not in COLORS:
        raise ValueError(f"not a toy-world caption: {text!r}")
    return shape, color, background


# ---------------------------------------------------------------------------------------------
# Drawing


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    """Vertices of a shape centred (centroid) at (cx, cy) with circumradius r, turned by `angle`."""
    if shape == "square":
        pts = [(math.cos(math.radians(45 + 90 * k)), math.sin(math.radians(45 + 90 * k))) for k in range(4)]
    elif shape == "triangle":  # equilateral, pointing up at angle 0; centroid = circumcentre
        pts = [(math.cos(math.radians(-90 + 120 * k)), math.sin(math.radians(-90 + 120 * k))) for k in range(3)]
    elif shape == "star":  # five points, inner radius 0.45 of the outer
        pts = [
            ((1.0 if k % 2 == 0 else 0.45) * math.cos(math.radians(-90 + 36 * k)),
             (1.0 if k % 2 == 0 else 0.45) * math.sin(math.radians(-90 + 36 * k)))
            for k in range(10)
        ]
    elif shape == "cross":  # a plus sign whose arms are 0.36 of the span wide
        h = 0.36 / 2 / math.hypot(0.5, 0.18)  # arm half-width, in units of the circumradius
        e = 0.5 / math.hypot(0.5, 0.18)  # arm length from centre
        pts = [(h, -e), (h, -h), (e, -h), (e, h), (h, h), (h, e), (-h, e), (-h, h), (-e, h), (-e, -h), (-h, -h), (-h, -e)]
    else:
        raise ValueError(f"unknown shape {shape!r}")
    a = math.radians(angle)
    ca, sa = math.cos(a), math.sin(a)
    return [(cx + r * (x * ca - y * sa), cy + r * (x * sa + y * ca)) for x, y in pts]


def _draw_mask(shape: str, cx: float, cy: float, r: float, angle: float, size: int = SIZE) -> np.ndarray:
    """Anti-aliased coverage (H×W float in [0, 1]) of one shape."""
    s = SUPERSAMPLE
    img = Image.new("L", (size * s, size * s), 0)
    draw = ImageDraw.Draw(img)
    # Pixel centres sit at +0.5: shift so that (cx, cy) in pixel-index coordinates is the centroid.
    X, Y, R = (cx + 0.5) * s, (cy + 0.5) * s, r * s
    if shape == "circle":
        draw.ellipse([X - R, Y - R, X + R, Y + R], fill=255)
    else:
        draw.polygon([(x * s, y * s) for x, y in _polygon(shape, cx + 0.5, cy + 0.5, r, angle)], fill=255)
    small = img.resize((size, size), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


def render(scene: Scene, size: int = SIZE) -> np.ndarray:
    """One frame, H×W×3 uint8."""
    cover = _draw_mask(scene.shape, scene.cx, scene.cy, scene.radius, scene.angle, size)[..., None]
    fg = np.asarray(COLORS[scene.color], np.float32)
    bg = np.asarray(COLORS[scene.background], np.float32)
    return np.clip(cover * fg + (1 - cover) * bg + 0.5, 0, 255).astype(np.uint8)


def render_clip(spec: ClipSpec, size: int = SIZE) -> np.ndarray:
    """All frames of a clip, T×H×W×3 uint8."""
    return np.stack([render(s, size) for s in spec.scenes()])


# ---------------------------------------------------------------------------------------------
# Random scenes and clips


def random_scene(
    rng: np.random.Generator,
    *,
    pairs: Sequence[tuple[str, str, str]] | None = None,
    radius: tuple[float, float] = (8.0, 16.0),
    margin: float = CLIP_MARGIN,
) -> Scene:
    """A random scene: shape/colour/background from `pairs` (triples) or all valid ones."""
    if pairs:
        shape, color, background = pairs[int(rng.integers(len(pairs)))]
    else:
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        names = list(COLORS)
        color = names[int(rng.integers(len(names)))]
        background = [c for c in names if c != color][int(rng.integers(len(names) - 1))]
    r = float(rng.uniform(*radius))
    lo, hi = r + margin, SIZE - 1 - r - margin
    return Scene(
        shape, color, background,
        cx=float(rng.uniform(lo, hi)), cy=float(rng.uniform(lo, hi)), radius=r,
        angle=float(rng.uniform(0, 360)),
    )


def all_triples() -> list[tuple[str, str, str]]:
    """Every (shape, colour, background) the world can draw (background differs from colour)."""
    return [(s, c, b) for s in SHAPES for c in COLORS for b in COLORS if c != b]


def heldout_triples(n: int = 24, seed: int = 8) -> list[tuple[str, str, str]]:
    """Captions the toy base never saw in training, for its quality check.

    Drawn so that every (shape, colour), (shape, background) and (colour, background) pair of a
    held-out triple still occurs in training: the test asks for a new combination of known parts.
    """
    rng = np.random.default_rng(seed)
    triples = all_triples()
    held: list[tuple[str, str, str]] = []
    for i in rng.permutation(len(triples)):
        t = triples[int(i)]
        rest = [u for u in triples if u != t and u not in held]
        if all(any(u[a] == t[a] and u[b] == t[b] for u in rest) for a, b in ((0, 1), (0, 2), (1, 2))):
            held.append(t)
        if len(held) == n:
            break
    return sorted(held)


def training_triples() -> list[tuple[str, str, str]]:
    """The triples the toy base was trained on: all but the held-out ones."""
    held = set(heldout_triples())
    return [t for t in all_triples() if t not in held]


def _scene_at(motion: str, s: Scene, t: int) -> Scene:
    if motion == "slide_right":
        return replace(s, cx=s.cx + SLIDE_SPEED * t)
    if motion == "slide_left":
        return replace(s, cx=s.cx - SLIDE_SPEED * t)
    if motion == "rise":
        return replace(s, cy=s.cy - SLIDE_SPEED * t)
    if motion == "fall":
        return replace(s, cy=s.cy + SLIDE_SPEED * t)
    if motion == "grow":
        return replace(s, radius=s.radius * (1 + GROW_RATE * t))
    if motion == "spin":
        return replace(s, angle=s.angle + SPIN_RATE * t)
    if motion == "bounce":  # drifts right while hopping: |sin| arcs off a floor at the start height
        hop = BOUNCE_HEIGHT * abs(math.sin(math.pi * t / BOUNCE_PERIOD))
        return replace(s, cx=s.cx + 0.5 * SLIDE_SPEED * t, cy=s.cy - hop)
    raise ValueError(f"unknown motion {motion!r}; choose from {', '.join(MOTIONS)}")


def _extent(motion: str, frames: int) -> tuple[float, float, float, float, float]:
    """How far a motion takes the centre: (dx_min, dx_max, dy_min, dy_max, radius growth factor)."""
    dx = [0.0]
    dy = [0.0]
    probe = Scene("circle", "red", "blue", 0.0, 0.0, 1.0)
    for t in range(frames):
        p = _scene_at(motion, probe, t)
        dx.append(p.cx)
        dy.append(p.cy)
    growth = 1 + GROW_RATE * (frames - 1) if motion == "grow" else 1.0
    return min(dx), max(dx), min(dy), max(dy), growth


def random_clip(
    motion: str,
    rng: np.random.Generator,
    *,
    frames: int = 16,
    pairs: Sequence[tuple[str, str, str]] | None = None,
    radius: tuple[float, float] = (7.0, 11.0),
    margin: float = CLIP_MARGIN,
    upright: bool = False,
) -> ClipSpec:
    """A clip of `motion` with a random shape/colour/background and a start that keeps it in view.

    `upright`: the shape starts at angle 0 (as the toy base draws them) instead of turned at random.
    """
    if motion not in MOTIONS:
        raise ValueError(f"unknown motion {motion!r}; choose from {', '.join(MOTIONS)}")
    base = random_scene(rng, pairs=pairs, radius=radius, margin=margin)
    if motion == "spin" and base.shape == "circle" and not pairs:  # a spinning circle shows nothing
        base = replace(base, shape=SHAPES[1 + int(rng.integers(len(SHAPES) - 1))])
    x0, x1, y0, y1, growth = _extent(motion, frames)
    r = base.radius
    reach = r * growth + margin  # the object must stay whole in every frame
    lo_x, hi_x = reach - x0, SIZE - 1 - reach - x1
    lo_y, hi_y = reach - y0, SIZE - 1 - reach - y1
    if lo_x > hi_x or lo_y > hi_y:
        raise ValueError(f"{frames} frames of {motion} do not fit in {SIZE} px at radius {r:.1f}")
    start = replace(base, cx=float(rng.uniform(lo_x, hi_x)), cy=float(rng.uniform(lo_y, hi_y)))
    return ClipSpec(motion, replace(start, angle=0.0) if upright else start, frames)


def make_clips(
    motion: str,
    n: int,
    seed: int = 0,
    *,
    frames: int = 16,
    exclude: Iterable[tuple[str, str]] = (),
    upright: bool = False,
    radius: tuple[float, float] = (7.0, 11.0),
) -> list[ClipSpec]:
    """`n` clips of one motion, each a different random (shape, colour) pair not in `exclude`.

    `exclude` holds (shape, colour) pairs kept out of the clips (the demo generates one of them).
    `upright` and `radius` as `random_clip`'s (circumradius range, px).
    """
    rng = np.random.default_rng(seed)
    banned = set(exclude)
    triples = [t for t in all_triples() if (t[0], t[1]) not in banned]
    if motion == "spin":
        triples = [t for t in triples if t[0] != "circle"]
    order = rng.permutation(len(triples))
    clips: list[ClipSpec] = []
    seen: set[tuple[str, str]] = set()
    for i in order:
        t = triples[int(i)]
        if (t[0], t[1]) in seen:  # each clip a different shape/colour pair
            continue
        seen.add((t[0], t[1]))
        clips.append(random_clip(motion, rng, frames=frames, pairs=[t], upright=upright, radius=radius))
        if len(clips) == n:
            break
    return clips


def centroid_path(spec: ClipSpec) -> np.ndarray:
    """Ground-truth centroid per frame, F×2 (x, y) in pixel-index coordinates."""
    return np.array([[s.cx, s.cy] for s in spec.scenes()], dtype=np.float64)


def size_factors(motion: str, frames: int = 16) -> np.ndarray:
    """The object's size in each frame relative to frame 0 under `motion` (F,)."""
    probe = Scene("square", "red", "blue", 0.0, 0.0, 10.0)
    return np.array([_scene_at(motion, probe, t).radius / probe.radius for t in range(frames)])


def motion_displacement(motion: str, frames: int = 16) -> np.ndarray:
    """The trained motion's centroid displacement from frame 0, F×2 (x, y); independent of the start."""
    probe = Scene("square", "red", "blue", 0.0, 0.0, 10.0)
    return centroid_path(ClipSpec(motion, probe, frames))


def write_clips(
    motion: str,
    folder: str | Path,
    n: int = 8,
    seed: int = 0,
    *,
    frames: int = 16,
    fps: float = 8.0,
    fmt: str = "mp4",
    exclude: Iterable[tuple[str, str]] = (),
    upright: bool = False,
    radius: tuple[float, float] = (7.0, 11.0),
) -> list[tuple[Path, ClipSpec]]:
    """Write `n` clips of `motion` as `clip_XX.<fmt>` with `clip_XX.txt` captions beside them."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out: list[tuple[Path, ClipSpec]] = []
    for i, spec in enumerate(make_clips(motion, n, seed, frames=frames, exclude=exclude, upright=upright,
                                        radius=radius)):
        path = folder / f"clip_{i:02d}.{fmt}"
        _write_video(render_clip(spec), path, fps)
        path.with_suffix(".txt").write_text(spec.caption + "\n", encoding="utf-8")
        out.append((path, spec))
    return out


def _write_video(frames: np.ndarray, path: Path, fps: float) -> None:
    try:
        from ..video import write_video
    except ImportError:  # the video module is optional for the world itself
        write_video = None
    if write_video is not None:
        write_video(frames, path, fps)
        return
    import imageio.v2 as imageio

    if path.suffix == ".gif":
        imageio.mimsave(path, list(frames), duration=1000 / fps, loop=0)
    else:
        imageio.mimsave(path, list(frames), fps=fps, codec="libx264", quality=9, macro_block_size=1,
                        pixelformat="yuv420p")


# ---------------------------------------------------------------------------------------------
# Measuring frames (works on rendered and on generated images)


def nearest_color(rgb: Sequence[float]) -> str:
    """The palette name closest to an RGB value."""
    v = np.asarray(rgb, np.float64)
    return min(COLORS, key=lambda n: float(np.sum((np.asarray(COLORS[n], np.float64) - v) ** 2)))


def background_rgb(frame: np.ndarray) -> np.ndarray:
    """The background colour: the median of the image's border pixels (RGB float)."""
    f = frame.astype(np.float64)
    border = np.concatenate([f[0], f[-1], f[1:-1, 0], f[1:-1, -1]])
    return np.median(border, axis=0)


def object_mask(frame: np.ndarray, background: Sequence[float] | None = None, threshold: float = 60.0) -> np.ndarray:
    """H×W bool: pixels whose colour is far (Euclidean RGB) from the background colour."""
    bg = background_rgb(frame) if background is None else np.asarray(background, np.float64)
    dist = np.sqrt(np.sum((frame.astype(np.float64) - bg) ** 2, axis=-1))
    return dist > threshold


def _label_components(mask: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """4-connected components of a mask: a label image (0 outside, k for the k-th) and their sizes."""
    h, w = mask.shape
    labels = np.zeros((h, w), np.int32)
    sizes: list[int] = []
    for y, x in zip(*np.nonzero(mask), strict=True):
        if labels[y, x]:
            continue
        sizes.append(0)
        current = len(sizes)
        stack = [(y, x)]
        labels[y, x] = current
        while stack:
            cy, cx = stack.pop()
            sizes[-1] += 1
            for ny, nx in ((cy - 1, cx), (cy + 1, cx), (cy, cx - 1), (cy, cx + 1)):
                if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not labels[ny, nx]:
                    labels[ny, nx] = current
                    stack.append((ny, nx))
    return labels, sizes


def _largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected component of a mask (generated images can have specks)."""
    labels, sizes = _label_components(mask)
    return labels == 1 + int(np.argmax(sizes)) if sizes else np.zeros_like(mask)


def centroid(mask: np.ndarray) -> tuple[float, float] | None:
    """(x, y) mean of a mask's pixels; None for an empty mask."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    return float(xs.mean()), float(ys.mean())


def measure_path(frames: np.ndarray, background: Sequence[float] | None = None) -> np.ndarray:
    """Per-frame object centroid, F×2 (x, y); NaN where no object is found.

    The background colour is read from the first frame and reused, so a frame whose border the
    object touches is still measured against the right colour.
    """
    bg = background_rgb(frames[0]) if background is None else background
    path = np.full((len(frames), 2), np.nan)
    for i, frame in enumerate(frames):
        c = centroid(_largest_component(object_mask(frame, bg)))
        if c is not None:
            path[i] = c
    return path


def dominant_colors(frame: np.ndarray) -> tuple[str, str]:
    """(object colour, background colour) as palette names.

    Background: the border's median. Object: the median of the object's pixels, eroded by one
    pixel so that anti-aliased edges (mixtures of the two colours) do not pull it.
    """
    bg = background_rgb(frame)
    mask = _largest_component(object_mask(frame, bg))
    core = mask.copy()
    core[1:-1, 1:-1] &= mask[:-2, 1:-1] & mask[2:, 1:-1] & mask[1:-1, :-2] & mask[1:-1, 2:]
    pix = frame[core] if core.sum() >= 4 else frame[mask]
    fg = np.median(pix.astype(np.float64), axis=0) if len(pix) else bg
    return nearest_color(fg), nearest_color(bg)


# Area of each shape at circumradius 1, for matching a template to a mask of known area.
def _unit_area(shape: str) -> float:
    if shape == "circle":
        return math.pi
    pts = _polygon(shape, 0.0, 0.0, 1.0, 0.0)
    return 0.5 * abs(sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(pts, pts[1:] + pts[:1], strict=True)))


_SYMMETRY = {"circle": 360.0, "square": 90.0, "triangle": 120.0, "star": 72.0, "cross": 90.0}


def shape_scores(mask: np.ndarray, angle_step: float = 6.0) -> dict[str, float]:
    """Best IoU of the mask with each shape, drawn at the mask's centroid and area, over rotations."""
    c = centroid(mask)
    if c is None:
        return {s: 0.0 for s in SHAPES}
    area = float(mask.sum())
    scores: dict[str, float] = {}
    for shape in SHAPES:
        r = math.sqrt(area / _unit_area(shape))
        best = 0.0
        angles = [0.0] if shape == "circle" else np.arange(0.0, _SYMMETRY[shape], angle_step)
        for a in angles:
            tpl = _draw_mask(shape, c[0], c[1], r, float(a), mask.shape[0]) > 0.5
            inter = float(np.logical_and(tpl, mask).sum())
            union = float(np.logical_or(tpl, mask).sum())
            best = max(best, inter / union if union else 0.0)
        scores[shape] = best
    return scores


# Colour purity: a flat-coloured object on a plain background has only two colours and, at its
# anti-aliased edge, mixtures of them. A pixel far (Euclidean RGB) from every mixture of the two
# is an artefact: the "dark smudges" a video's frames can show. On rendered frames none is; on the
# toy VAE's round trips of world images the largest distance of any pixel is ~30.
OFF_PALETTE_TOLERANCE = 60.0
SMUDGE_MIN_PIXELS = 4  # a smudge: a 4-connected group of off-palette pixels at least this large


def off_palette(frame: np.ndarray, color: Sequence[float], background: Sequence[float],
                tolerance: float = OFF_PALETTE_TOLERANCE) -> np.ndarray:
    """H×W bool: pixels farther than `tolerance` from every mixture of `color` and `background`."""
    px = frame.astype(np.float64).reshape(-1, 3)
    a = np.asarray(background, np.float64)
    d = np.asarray(color, np.float64) - a
    t = np.clip((px - a) @ d / max(float(d @ d), 1e-9), 0.0, 1.0)
    dist = np.linalg.norm(px - (a + t[:, None] * d), axis=1)
    return (dist > tolerance).reshape(frame.shape[:2])


@dataclass
class Purity:
    """How clean one frame's colours are, given the two colours it should show."""

    pure: float  # fraction of pixels that are the object colour, the background or a mixture
    smudges: int  # groups of >= SMUDGE_MIN_PIXELS off-palette pixels

    def to_dict(self) -> dict:
        return asdict(self)


def colour_purity(frame: np.ndarray, color: str | Sequence[float], background: str | Sequence[float]) -> Purity:
    """Colour purity and smudge count of a frame that should show `color` on `background`
    (palette names or RGB)."""
    fg = COLORS[color] if isinstance(color, str) else color
    bg = COLORS[background] if isinstance(background, str) else background
    off = off_palette(frame, fg, bg)
    return Purity(pure=float(1.0 - off.mean()),
                  smudges=sum(1 for n in _label_components(off)[1] if n >= SMUDGE_MIN_PIXELS))


@dataclass
class FrameReading:
    """What simple image analysis sees in one frame."""

    shape: str
    color: str
    background: str
    centroid: tuple[float, float] | None
    area: int
    extent: tuple[int, int, int, int] | None  # the object's x_min, x_max, y_min, y_max (px); None: no object

    def matches(self, shape: str, color: str, background: str) -> bool:
        return (self.shape, self.color, self.background) == (shape, color, background)

    def to_dict(self) -> dict:
        return asdict(self)


def read_frame(frame: np.ndarray) -> FrameReading:
    """Shape class, colours, centroid and area of the object in one frame."""
    mask = _largest_component(object_mask(frame))
    color, background = dominant_colors(frame)
    scores = shape_scores(mask)
    return FrameReading(
        shape=max(scores, key=scores.__getitem__),
        color=color,
        background=background,
        centroid=centroid(mask),
        area=int(mask.sum()),
        extent=_extent_of(mask),
    )


def _extent_of(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    ys, xs = np.nonzero(mask)
    return (int(xs.min()), int(xs.max()), int(ys.min()), int(ys.max())) if len(xs) else None
