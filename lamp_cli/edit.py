"""Video editing (LAMP §5.2): tune a motion on one video, invert it, swap its first frame, resample.

`edit_video(video, prompt)` runs the four steps of the paper's editing mode, each cached:

1. Tune: `train_motion` on one fixed window of the video (frames `start, start+stride, ...`,
   no flip). The motion is published to the registry as `edit-<12 hex>` (a hash of the video's
   bytes and every training setting) or `--name`, with a record in
   `LAMP_HOME/edits/<motion>/tuning.json`; a second edit of the same video with the same
   settings reuses it without training.
2. Invert: DDIM inversion of the same window with the tuned model and the empty prompt, no
   guidance, frame 0 clean (`inversion.ddim_invert`). The result is cached as
   `LAMP_HOME/edits/<motion>/<key>.safetensors`, the key hashing the window, size, steps and
   the motion's registry digest.
3. First frame: the user's edited frame (`first_frame`), or an image-to-image edit of the
   window's first frame with the base model (optionally guided by a canny ControlNet).
4. Sample: the engine from the inverted latents, no shared noise, the new first frame clean.

Deviations from the reference code (docs/editing.md), all so that a user knows which frame to
edit and the inversion matches how the model samples: the window is fixed and recorded instead
of a random, possibly flipped training batch; training sees only that window, unflipped; frame 0
stays clean during inversion (the reference noised it). See docs/editing.md.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import settings
from . import train as training
from .engine import Engine, encode_first_frame, new_seed
from .errors import Interrupted, InvalidInput, LampError, NotFound, RegistryError
from .first_frame import FIRST_FRAME_GUIDANCE, image_to_image
from .fsutil import atomic_write_bytes, atomic_write_text
from .inversion import ddim_invert
from .jsonio import dumps_strict
from .progress import Reporter, reporter_or_null
from .registry import Registry, validate_name
from .requests import SampleRequest
from .settings import lamp_home
from .tensorfile import file_sha256
from .train import caption_file, checkpoint_path, prompt_from_path
from .video import VIDEO_EXTENSIONS, load_image, probe_video, read_video, resize_center_crop, sample_window

if TYPE_CHECKING:
    import torch

    from .engine import Engine
    from .registry import Registry

log = logging.getLogger("lamp")

# The reference editing config (configs/run-editing.yaml): 24 frames at stride 2, 500 steps.
EDIT_FRAMES = 24
EDIT_STRIDE = 2
EDIT_TRAIN_STEPS = 500
# The training seed is fixed (not the sampling --seed) so a cached tuning is reproducible and
# changing the sampling seed never retrains.
EDIT_TRAIN_SEED = 0
# SDEdit strength of the automatic first-frame edit: 0.6 re-draws textures and colours while
# keeping the layout (and so the subject's pose, which the inverted latents carry).
EDIT_STRENGTH = 0.6
# Fixed-point iterations per inversion step (inversion.ddim_invert `refine`), at most, stopping
# once an iteration changes x_t by less than INVERSION_TOL. The reference's plain inversion is 0;
# a few make each step nearly the exact inverse of the sampling step, for at most 5× the UNet
# calls of a one-time, cached inversion (docs/editing.md has the measurements).
INVERSION_REFINE = 4
INVERSION_TOL = 1e-4
# The paper's ControlNet is the canny one; `--controlnet canny` names it.
CONTROLNET_ALIASES = {"canny": "lllyasviel/sd-controlnet-canny"}
CANNY_LOW, CANNY_HIGH = 100, 200
# Aspect ratios closer than this are the same aspect (a 1-pixel rounding is not a crop).
ASPECT_TOLERANCE = 0.01
INVERSION_FORMAT = "1"


# --------------------------------------------------------------------------------------------
# The window
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EditWindow:
    """The frames of the source that are tuned on, inverted and edited: start, start+stride, ..."""

    start: int
    frames: int
    stride: int
    width: int
    height: int

    @property
    def indices(self) -> list[int]:
        return [self.start + i * self.stride for i in range(self.frames)]

    @property
    def span(self) -> int:
        """Source frames the window covers, first to last inclusive."""
        return (self.frames - 1) * self.stride + 1

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def check_window(num_frames: int, window: EditWindow, what: str = "the video") -> None:
    """InvalidInput unless `window` fits in a video of `num_frames` frames; the message says the
    longest window the video allows."""
    if window.frames < 2:
        raise InvalidInput(f"--frames must be at least 2 (got {window.frames})")
    if window.stride < 1:
        raise InvalidInput(f"--stride must be at least 1 (got {window.stride})")
    if window.start < 0:
        raise InvalidInput(f"--start-frame must be >= 0 (got {window.start})")
    if window.start >= num_frames:
        raise InvalidInput(
            f"{what} has {num_frames} frames; --start-frame {window.start} is past its end",
            hint=f"use a --start-frame below {num_frames}",
        )
    last = window.start + (window.frames - 1) * window.stride
    if last < num_frames:
        return
    available = num_frames - window.start
    longest = (available - 1) // window.stride + 1
    alternatives = [f"--frames {longest}"] if longest >= 2 else []
    if window.stride > 1 and available >= window.frames:
        alternatives.append(f"--stride {(available - 1) // (window.frames - 1)}")
    if window.start > 0:
        alternatives.append("an earlier --start-frame")
    raise InvalidInput(
        f"{what} is too short: {window.frames} frames at stride {window.stride} from frame "
        f"{window.start} need frames {window.start}..{last} ({window.span} frames), but it has "
        f"{num_frames}; the longest window possible at stride {window.stride} from frame "
        f"{window.start} is {longest} frame{'s' if longest != 1 else ''}",
        hint=(f"pass {' or '.join(alternatives)}, or use a longer video" if alternatives else "use a longer video"),
    )


def check_video(video: str | Path, window: EditWindow) -> Any:
    """Probe `video` (InvalidInput/NotFound if unreadable) and check the window fits; VideoInfo."""

    if Path(video).is_dir():
        raise InvalidInput(
            f"{video} is a folder; lamp edit takes one video file",
            hint=f"pass a {', '.join(VIDEO_EXTENSIONS)} file",
        )
    info = probe_video(video)
    check_window(info.num_frames, window, what=f"video {Path(video).name}")
    return info


def read_window(video: str | Path, window: EditWindow) -> tuple[np.ndarray, float]:
    """The window's frames (F×H×W×3 uint8, resized and center-cropped to the window's size) and
    the source's fps."""

    clip = read_video(video, size=(window.width, window.height))  # resized while decoding
    check_window(clip.num_frames, window, what=f"video {Path(video).name}")
    return sample_window(clip.frames, window.start, window.frames, window.stride), float(clip.fps)


def export_first_frame(video: str | Path, file: str | Path, window: EditWindow) -> Path:
    """Write the window's first frame (source frame `window.start` after resize + center crop),
    exactly as `edit_video` sees it, so it can be edited in any image editor. PNG is lossless;
    other image formats are written with a warning."""
    from PIL import Image

    file = Path(file)
    fmt = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP"}.get(file.suffix.lower())
    if fmt is None:
        raise InvalidInput(f"cannot write an image to {file.name}", hint="use a .png file name")

    check_video(video, window)
    clip = read_video(video, size=(window.width, window.height))  # resized while decoding
    check_window(clip.num_frames, window, what=f"video {Path(video).name}")
    first = clip.frames[window.start]
    if fmt != "PNG":
        log.warning("%s is lossy: the exported frame will differ from the video's (use .png to keep it exact)", fmt)
    import io

    buf = io.BytesIO()
    Image.fromarray(first).save(buf, format=fmt)
    atomic_write_bytes(file, buf.getvalue())
    return file


# --------------------------------------------------------------------------------------------
# Hashes and cache keys
# --------------------------------------------------------------------------------------------
def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def tuning_settings(
    *,
    video_hash: str,
    window: EditWindow,
    train_steps: int,
    lr: float,
    source_prompt: str,
    base_fingerprint: str,
) -> dict[str, Any]:
    """Everything the tuned motion depends on; its hash names the motion and keys the cache."""
    return {
        "video_sha256": video_hash,
        "window": window.to_json(),
        "train_steps": int(train_steps),
        "lr": float(lr),
        "seed": EDIT_TRAIN_SEED,
        "prompt": source_prompt,
        "base_fingerprint": base_fingerprint,
        "flip": False,
    }


def tuned_motion_name(settings: dict[str, Any]) -> str:
    """`edit-<12 hex>`: the registry name of the motion tuned with these settings."""
    return f"edit-{_digest(settings)[:12]}"


def inversion_key(
    *, video_hash: str, window: EditWindow, steps: int, refine: int, prompt: str, motion_digest: str,
    base_fingerprint: str, refine_tol: float = INVERSION_TOL,
) -> str:
    """The name of an inversion in the cache: everything the inverted latents depend on."""
    return _digest(
        {
            "video_sha256": video_hash,
            "window": window.to_json(),
            "steps": int(steps),
            "refine": int(refine),
            "refine_tol": float(refine_tol),
            "prompt": prompt,
            "motion_digest": motion_digest,
            "base_fingerprint": base_fingerprint,
            "clean_first_frame": True,
        }
    )[:16]


def edits_dir(motion: str, root: str | Path | None = None) -> Path:
    """`LAMP_HOME/edits/<motion>`: the tuning record and inverted latents of an edit motion."""

    return Path(root if root is not None else lamp_home()) / "edits" / validate_name(motion)


def default_source_prompt(video: str | Path) -> str:
    """What the source video shows, for tuning, as `lamp train` finds it: a `<video>.txt`
    caption beside it, else the file name with `_` -> space."""

    caption = caption_file(Path(video))
    if caption is not None:
        text = " ".join(caption.read_text("utf-8", errors="replace").split())
        if text:
            return text
    return prompt_from_path(video) or "a video"


# --------------------------------------------------------------------------------------------
# First frames
# --------------------------------------------------------------------------------------------
def fit_first_frame(image: np.ndarray, width: int, height: int, what: str = "first frame") -> tuple[np.ndarray, str | None]:
    """Resize + center-crop an edited first frame to the window's size; a note if it was cropped."""

    h, w = image.shape[:2]
    note = None
    if abs((w / h) / (width / height) - 1.0) > ASPECT_TOLERANCE:
        note = (
            f"{what} is {w}×{h} (aspect {w / h:.3g}), the video window is {width}×{height} "
            f"(aspect {width / height:.3g}): center-cropped to fit"
        )
    return resize_center_crop(image, width, height), note


def canny_edges(image: np.ndarray, low: float = CANNY_LOW, high: float = CANNY_HIGH) -> np.ndarray:
    """Canny edges of an H×W×3 uint8 image as an H×W×3 uint8 map (255 on edges), in NumPy.

    Gaussian blur (5×5, sigma 1.4), Sobel gradients on 0..255 gray, non-maximum suppression
    along the gradient direction, then hysteresis between `low` and `high` (OpenCV's usual
    100/200 thresholds give comparable maps).
    """
    gray = image.astype(np.float64) @ np.array([0.299, 0.587, 0.114])  # H×W
    x = np.arange(-2, 3)
    g = np.exp(-(x**2) / (2 * 1.4**2))
    g /= g.sum()

    def conv1d(a: np.ndarray, k: np.ndarray, axis: int) -> np.ndarray:
        r = len(k) // 2
        pad = [(0, 0), (0, 0)]
        pad[axis] = (r, r)
        p = np.pad(a, pad, mode="edge")
        n = a.shape[axis]
        return sum(k[i] * np.take(p, np.arange(i, i + n), axis=axis) for i in range(len(k)))

    blur = conv1d(conv1d(gray, g, 0), g, 1)
    # Sobel = smoothing [1,2,1] across, derivative [-1,0,1] along.
    gx = conv1d(conv1d(blur, np.array([1.0, 2.0, 1.0]), 0), np.array([-1.0, 0.0, 1.0]), 1)
    gy = conv1d(conv1d(blur, np.array([1.0, 2.0, 1.0]), 1), np.array([-1.0, 0.0, 1.0]), 0)
    mag = np.hypot(gx, gy)
    angle = (np.rad2deg(np.arctan2(gy, gx)) + 180.0) % 180.0
    # Neighbour offsets (dy, dx) along the gradient for 0°, 45°, 90°, 135°.
    sector = (np.round(angle / 45.0).astype(int)) % 4
    padded = np.pad(mag, 1)
    h, w = mag.shape
    keep = np.zeros_like(mag, dtype=bool)
    for s, (dy, dx) in enumerate(((0, 1), (1, 1), (1, 0), (1, -1))):
        a = padded[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
        b = padded[1 - dy : 1 - dy + h, 1 - dx : 1 - dx + w]
        keep |= (sector == s) & (mag >= a) & (mag >= b)
    nms = np.where(keep, mag, 0.0)
    weak = nms >= low
    edges = nms >= high
    # Hysteresis: grow strong edges through 8-connected weak pixels until nothing changes.
    while True:
        p = np.pad(edges, 1)
        grown = np.zeros_like(edges)
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                grown |= p[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
        grown &= weak
        if (grown == edges).all():
            break
        edges = grown | edges
    out = np.where(edges, 255, 0).astype(np.uint8)
    return np.repeat(out[..., None], 3, axis=2)


def resolve_controlnet(spec: str) -> Path:
    """A ControlNet on disk: a local diffusers folder, or an HF repo id from the local cache only
    (`canny` = the paper's canny ControlNet); LampError with the download command otherwise."""
    repo = CONTROLNET_ALIASES.get(spec, spec)
    p = Path(repo).expanduser()
    if p.exists():
        if not (p / "config.json").is_file():
            raise InvalidInput(f"{p} is not a diffusers ControlNet folder (no config.json inside)")
        return p
    hint = f"download it once with `hf download {repo}`, or pass a local ControlNet folder"
    if repo.count("/") != 1 or repo.startswith((".", "/", "~")):
        raise NotFound(f"ControlNet '{spec}' is not a folder or a Hugging Face repo id", hint=hint)
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo, local_files_only=True))
    except Exception as e:  # LocalEntryNotFoundError and friends
        raise LampError(f"ControlNet '{repo}' is not available locally", hint=hint) from e


def controlnet_image_to_image(
    engine: Engine,
    image: np.ndarray,
    prompt: str,
    controlnet: Path,
    *,
    strength: float,
    steps: int,
    seed: int,
    negative: str = "",
    progress: Reporter | None = None,
) -> np.ndarray:
    """Image-to-image with the base model guided by a canny ControlNet on `image`'s edges
    (the paper's first-frame edit). `image` is W×H×3 at the output size; returns the same size."""
    import torch
    from diffusers import ControlNetModel, StableDiffusionControlNetImg2ImgPipeline
    from PIL import Image


    base = engine.base
    height, width = image.shape[:2]
    net = ControlNetModel.from_pretrained(controlnet, torch_dtype=engine.dtype, local_files_only=True).to(engine.device)
    report = reporter_or_null(progress)
    report.start("edit frame", max(1, int(round(steps * strength))))

    def _advance(_pipe: Any, _i: int, _t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        report.advance(1)
        return kwargs

    try:
        with engine.unet2d() as unet, engine.on_device(base.vae, base.text_encoder):
            pipe = StableDiffusionControlNetImg2ImgPipeline(
                vae=base.vae,
                text_encoder=base.text_encoder,
                tokenizer=base.tokenizer,
                unet=unet,
                controlnet=net,
                scheduler=base.ddim(),
                safety_checker=None,
                feature_extractor=None,
                requires_safety_checker=False,
            )
            pipe.set_progress_bar_config(disable=True)
            out = pipe(
                prompt,
                image=Image.fromarray(image),
                control_image=Image.fromarray(canny_edges(image)),
                strength=strength,
                num_inference_steps=steps,
                guidance_scale=FIRST_FRAME_GUIDANCE,
                negative_prompt=negative or None,
                generator=torch.Generator("cpu").manual_seed(int(seed)),
                height=height,
                width=width,
                output_type="np",
                callback_on_step_end=_advance,
            ).images[0]
    finally:
        report.finish()
    return (np.clip(out, 0.0, 1.0) * 255.0).round().astype(np.uint8)


# --------------------------------------------------------------------------------------------
# Latents
# --------------------------------------------------------------------------------------------
def encode_window(engine: Engine, frames: np.ndarray) -> torch.Tensor:
    """F×H×W×3 uint8 -> 1×4×F×h×w clean latents, each frame encoded as the engine encodes a first
    frame (VAE mean × scale), so frame 0 is bit-for-bit what sampling holds clean."""
    import torch


    base = engine.base
    height, width = frames.shape[1:3]
    with engine.on_device(base.vae):
        zs = [encode_first_frame(base.vae, f, width, height, base.latent_scale).cpu() for f in frames]
    return torch.stack(zs, dim=2)  # F × (1×4×h×w) -> 1×4×F×h×w


def invert_window(
    engine: Engine,
    adapter: Any,
    latents: torch.Tensor,
    *,
    steps: int,
    refine: int = INVERSION_REFINE,
    refine_tol: float = INVERSION_TOL,
    prompt: str = "",
    stats: dict[str, Any] | None = None,
    progress: Reporter | None = None,
) -> torch.Tensor:
    """DDIM-invert 1×4×F×h×w clean latents with the engine's video UNet carrying `adapter`,
    conditioned on `prompt` (the reference: empty) without guidance; frame 0 stays clean.
    Returns float32 latents on the CPU."""

    engine.use_motions(engine.resolve_motions([(adapter, 1.0)]))
    base = engine.base
    with engine.on_device(base.text_encoder):
        text = base.encode_prompt([prompt]).to(engine.device, engine.dtype)
    with engine.on_device(engine.video_unet):
        x_t = ddim_invert(
            engine.video_unet,
            latents.to(engine.device),
            base.ddim(),
            text,
            steps=steps,
            refine=refine,
            refine_tol=refine_tol,
            stats=stats,
            progress=progress,
        )
    return x_t.cpu()


def save_inverted(path: Path, latents: torch.Tensor, metadata: dict[str, Any]) -> None:
    from safetensors.torch import save

    md = {"format": "pt", "lamp.inversion_format": INVERSION_FORMAT}
    md.update({f"lamp.{k}": dumps_strict(v, what=f"lamp.{k}", sort_keys=True) for k, v in metadata.items()})
    atomic_write_bytes(path, save({"latents": latents.contiguous().float()}, metadata=md))


def load_inverted(path: Path, shape: tuple[int, ...]) -> torch.Tensor | None:
    """Cached inverted latents, or None if the file is missing, unreadable or of another shape."""
    if not path.is_file():
        return None
    try:
        from safetensors.torch import load

        t = load(path.read_bytes()).get("latents")
    except Exception as e:  # a damaged cache file is recomputed, never fatal
        log.warning("ignoring unreadable inversion cache %s (%s)", path, e)
        return None
    if t is None or tuple(t.shape) != tuple(shape):
        log.warning("ignoring inversion cache %s: it holds no latents of shape %s", path, tuple(shape))
        return None
    return t


# --------------------------------------------------------------------------------------------
# The edit
# --------------------------------------------------------------------------------------------
@dataclass
class EditResult:
    frames: np.ndarray  # F×H×W×3 uint8, the edited video
    latents: Any  # torch.Tensor 1×4×F×h×w, the engine's final latents
    record: dict[str, Any]  # the engine's record with an "edit" section
    motion: str  # registry name of the tuned motion
    trained: bool  # False when a cached tuning was reused
    inversion_cached: bool
    inversion_path: Path
    first_frame: np.ndarray  # H×W×3 uint8, the first frame the video starts from
    source_fps: float
    window: EditWindow
    notes: list[str] = field(default_factory=list)  # things the user should know (crops, reuse)
    timings: dict[str, float] = field(default_factory=dict)


def _load_tuning_record(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / "tuning.json").read_text("utf-8"))
    except (OSError, ValueError):
        return None


def _train(
    video: Path, name: str, base: Any, prompt: str, steps: int, window: EditWindow, lr: float,
    registry: Registry, device: str, progress: Reporter | None, resume: bool,
) -> Any:
    """train_motion on exactly the edit window, in order, never flipped (a resumed run checks
    that its checkpoint was made with the same settings)."""
    return training.train_motion(
        video,
        name,
        base=base,
        prompt=prompt,
        steps=steps,
        seed=EDIT_TRAIN_SEED,
        # not the edit's --seed (that one only seeds sampling): say so, or users read it as theirs
        seed_note="tuning seed {seed} (fixed, so the tuning is cached; --seed only changes the sampling)",
        frames=window.frames,
        stride=window.stride,
        window_start=window.start,
        flip=False,
        width=window.width,
        height=window.height,
        lr=lr,
        checkpoint_every=0,
        registry=registry,
        device=device,
        progress=progress,
        resume=resume,
    )


def _find_or_train(
    engine: Engine,
    registry: Registry,
    *,
    name: str | None,
    tuning: dict[str, Any],
    window: EditWindow,
    video: Path,
    train_steps: int,
    lr: float,
    source_prompt: str,
    device: str,
    progress: Reporter | None,
) -> tuple[Any, Any, bool, float]:
    """The tuned motion for `tuning` (see `tuning_settings`): reused from the registry, or
    trained and published. Returns (manifest, adapter, trained, seconds)."""
    name = name or tuned_motion_name(tuning)
    folder = edits_dir(name, registry.root)
    key = _digest(tuning)
    record = _load_tuning_record(folder)
    if registry.exists(name):
        manifest = registry.get(name)
        if record is not None and record.get("key") == key and record.get("digest") == manifest.digest:
            log.info("reusing tuned motion '%s' (no training)", name)
            return manifest, registry.load_adapter(name), False, 0.0
        what = "was not tuned by `lamp edit`" if record is None else "was tuned on another video or with other settings"
        raise RegistryError(
            f"a motion named '{name}' already exists and {what}",
            hint=f"choose another --name, or `lamp rm {name}` first",
        )
    import torch


    # An edit interrupted during tuning left a checkpoint: the same command picks it up.
    resume = checkpoint_path(name).exists()
    if resume:
        log.info("resuming the interrupted tuning of '%s'", name)
    idx = window.indices
    log.info(
        "tuning motion '%s' on frames %d..%d (every %d) of %s: %d steps, once; later edits of this video reuse it",
        name, idx[0], idx[-1], window.stride, video.name, train_steps,
    )
    t0 = time.perf_counter()
    # Tune on exactly the window that is inverted and edited, in order, never flipped. A base
    # loaded in half precision is not trainable (the optimizer needs fp32 weights): then
    # train_motion loads its own fp32 copy and trains in mixed precision.
    shared_base = engine.base if engine.dtype == torch.float32 else engine.base.spec
    try:
        result = _train(video, name, shared_base, source_prompt, train_steps, window, lr, registry,
                        device, progress, resume)
    except Interrupted as e:
        raise Interrupted(e.message, hint="run the same `lamp edit` command again to continue the tuning") from None
    seconds = time.perf_counter() - t0
    manifest = result.manifest
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.safetensors"):  # inversions of an earlier tuning under this name
        stale.unlink(missing_ok=True)
    atomic_write_text(
        folder / "tuning.json",
        dumps_strict({"key": key, "digest": manifest.digest, "settings": tuning, "video": str(video)},
                     what="tuning.json", indent=2, sort_keys=True) + "\n",
    )
    return manifest, result.adapter, True, seconds


def _check_edit_inputs(
    video: Path, prompt: str, window: EditWindow, notes: list[str], *, name: str | None, inversion_steps: int,
    train_steps: int, inversion_refine: int, inversion_tol: float,
    edit_strength: float, first_frame: Any, controlnet: str | None,
) -> tuple[np.ndarray | None, Path | None]:
    """Step 1 of `edit_video`: every input checked before any model loads. Returns the user's
    first frame fitted to the window (or None) and the ControlNet folder (or None)."""
    if not prompt or not prompt.strip():
        raise InvalidInput("the edit prompt is empty", hint='describe the edited video, e.g. "a girl in black runs on the road"')
    if name is not None:
        validate_name(name)
    if inversion_steps < 1:
        raise InvalidInput(f"--ddim-steps must be at least 1 (got {inversion_steps})")
    if train_steps < 1:
        raise InvalidInput(f"--steps (training steps) must be at least 1 (got {train_steps})")
    if inversion_refine < 0:
        raise InvalidInput(f"--inversion-refine must be >= 0 (got {inversion_refine})")
    if not inversion_tol >= 0:
        raise InvalidInput(f"the inversion tolerance must be >= 0 (got {inversion_tol})")
    if not 0.0 < edit_strength <= 1.0:
        raise InvalidInput(f"--edit-strength must be in (0, 1] (got {edit_strength})")
    check_video(video, window)
    user_frame = None
    if first_frame is not None:
        image = load_image(first_frame) if isinstance(first_frame, (str, Path)) else np.asarray(first_frame)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
            raise InvalidInput(f"first frame must be an H×W×3 uint8 image, got {image.dtype} {image.shape}")
        user_frame, note = fit_first_frame(image, window.width, window.height)
        if note:
            log.info("note: %s", note)
            notes.append(note)
    controlnet_path = resolve_controlnet(controlnet) if controlnet and user_frame is None else None
    if controlnet and user_frame is not None:
        notes.append("--controlnet ignored: --first-frame was given")
    return user_frame, controlnet_path


def _edit_first_frame(
    engine: Engine, window_frames: np.ndarray, prompt: str, *, user_frame: np.ndarray | None, first_frame: Any,
    controlnet: str | None, controlnet_path: Path | None, edit_strength: float, steps: int, seed: int,
    negative: str, width: int, height: int, progress: Reporter | None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Step 6 of `edit_video`: the user's first frame, or an image edit of the window's first frame."""
    if user_frame is not None:
        path = str(first_frame) if isinstance(first_frame, (str, Path)) else None
        return user_frame, {"source": "image", "path": path}
    if controlnet_path is not None:
        new_first = controlnet_image_to_image(
            engine, window_frames[0], prompt, controlnet_path, strength=edit_strength,
            steps=steps, seed=seed, negative=negative, progress=progress,
        )
        return new_first, {"source": "controlnet image edit", "controlnet": str(controlnet), "strength": edit_strength}
    new_first = image_to_image(
        engine.base, engine.place, window_frames[0], prompt, strength=edit_strength, steps=steps,
        negative=negative, seed=seed, width=width, height=height, progress=progress,
    )
    return new_first, {"source": "image edit", "strength": edit_strength}


def edit_video(
    video: str | Path,
    prompt: str,
    *,
    first_frame: str | Path | np.ndarray | None = None,
    name: str | None = None,
    source_prompt: str | None = None,
    train_steps: int = EDIT_TRAIN_STEPS,
    frames: int = EDIT_FRAMES,
    stride: int = EDIT_STRIDE,
    start_frame: int = 0,
    width: int | None = None,
    height: int | None = None,
    lr: float | None = None,
    edit_strength: float = EDIT_STRENGTH,
    controlnet: str | None = None,
    inversion_steps: int | None = None,
    inversion_refine: int = INVERSION_REFINE,
    inversion_prompt: str = "",
    inversion_tol: float = INVERSION_TOL,
    guidance: float | None = None,
    negative: str = "",
    seed: int | None = None,
    adain: bool = True,
    histogram_match: bool = True,
    base: Any = None,
    device: str | None = None,
    dtype: str | None = None,
    engine: Engine | None = None,
    registry: Registry | None = None,
    progress: Reporter | None = None,
    loras: Any = None,
) -> EditResult:
    """Edit `video` toward `prompt` (LAMP §5.2): tune, invert, new first frame, resample.

    `inversion_steps` is also the number of sampling steps (inverted latents sit at the last
    timestep of that schedule). `inversion_prompt`: the text the inversion is conditioned on
    (the reference's empty prompt by default; the source prompt reconstructs more closely when
    sampling with it at guidance 1). `first_frame`: an edited version of the window's first frame
    (see `export_first_frame`); None makes one by image-to-image (`edit_strength`, optionally
    with `controlnet`). `engine`: reuse an already-loaded engine (its base wins over `base`).
    Options left as None come from the settings (`lamp doctor`): width, height, lr, steps (DDIM),
    guidance, base, device, dtype.
    """

    t_total = time.perf_counter()
    width, height = int(settings.get("width", width)), int(settings.get("height", height))
    lr = float(settings.get("lr", lr))
    inversion_steps = int(settings.get("steps", inversion_steps))
    guidance = float(settings.get("guidance", guidance))
    device, dtype = settings.get("device", device), settings.get("dtype", dtype)
    video = Path(video)
    window = EditWindow(int(start_frame), int(frames), int(stride), int(width), int(height))
    notes: list[str] = []

    # 1. Check every input before any model loads.
    user_frame, controlnet_path = _check_edit_inputs(
        video, prompt, window, notes, name=name, inversion_steps=inversion_steps, train_steps=train_steps, inversion_refine=inversion_refine, inversion_tol=inversion_tol,
        edit_strength=edit_strength, first_frame=first_frame, controlnet=controlnet,
    )
    # The sampling values, checked once: no shared noise (sampling starts from inverted latents).
    seed = new_seed() if seed is None else int(seed)
    request = SampleRequest(
        prompt=prompt, frames=window.frames, width=width, height=height, steps=inversion_steps, guidance=guidance,
        negative=negative, seed=seed, shared_noise=0.0, adain=adain, histogram_match=histogram_match,
    )
    source_prompt = (source_prompt or "").strip() or default_source_prompt(video)
    registry = registry or Registry()

    # 2. The window, as pixels, and the video's identity.
    window_frames, fps = read_window(video, window)
    video_hash = file_sha256(video)  # its bytes: renaming or moving it keeps its tunings

    # 3. Models, once.
    t0 = time.perf_counter()
    if engine is None:
        engine = Engine(settings.get("base", base), device=device, dtype=dtype, loras=loras)
    load_s = time.perf_counter() - t0

    # 4. Tune (or reuse) a motion on the window.
    tuning = tuning_settings(
        video_hash=video_hash, window=window, train_steps=train_steps, lr=lr,
        source_prompt=source_prompt, base_fingerprint=engine.base.fingerprint,
    )
    manifest, adapter, trained, train_s = _find_or_train(
        engine, registry, name=name, tuning=tuning, window=window, video=video, train_steps=train_steps,
        lr=lr, source_prompt=source_prompt, device=device, progress=progress,
    )
    motion = manifest.name
    if not trained:
        notes.append(f"reusing tuned motion '{motion}' (no training)")

    # 5. Invert the window (cached beside the tuning).
    t0 = time.perf_counter()
    latents = encode_window(engine, window_frames)
    key = inversion_key(
        video_hash=video_hash, window=window, steps=inversion_steps, refine=inversion_refine,
        prompt=inversion_prompt, refine_tol=inversion_tol, motion_digest=manifest.digest,
        base_fingerprint=engine.base.fingerprint,
    )
    inv_path = edits_dir(motion, registry.root) / f"{key}.safetensors"
    inverted = load_inverted(inv_path, tuple(latents.shape))
    inversion_cached = inverted is not None
    inv_stats: dict[str, Any] = {}
    if inverted is None:
        inverted = invert_window(
            engine, adapter, latents, steps=inversion_steps, refine=inversion_refine, refine_tol=inversion_tol,
            prompt=inversion_prompt, stats=inv_stats, progress=progress,
        )
        save_inverted(
            inv_path,
            inverted,
            {
                "video_sha256": video_hash, "video": str(video), "window": window.to_json(),
                "steps": inversion_steps, "refine": inversion_refine, "refine_tol": inversion_tol,
                "prompt": inversion_prompt, **inv_stats, "motion": motion, "motion_digest": manifest.digest,
                "base_fingerprint": engine.base.fingerprint, "clean_first_frame": True,
            },
        )
    else:
        log.info("reusing inverted latents %s", inv_path.name)
    invert_s = time.perf_counter() - t0

    # 6. The first frame: the user's, or an image edit of the window's first frame.
    t0 = time.perf_counter()
    new_first, first_source = _edit_first_frame(
        engine, window_frames, prompt, user_frame=user_frame, first_frame=first_frame, controlnet=controlnet,
        controlnet_path=controlnet_path, edit_strength=edit_strength, steps=inversion_steps, seed=seed,
        negative=negative, width=width, height=height, progress=progress,
    )
    first_s = time.perf_counter() - t0

    # 7. Sample from the inverted latents: no shared noise, the new first frame held clean.
    result = engine.run(request, [(adapter, 1.0)], new_first, init_latents=inverted, progress=progress)
    timings = {
        "load_s": round(load_s, 3), "train_s": round(train_s, 3), "invert_s": round(invert_s, 3),
        "first_frame_s": round(first_s, 3), "sample_s": round(result.record["timings"]["total_s"], 3),
        "total_s": round(time.perf_counter() - t_total, 3),
    }
    record = dict(result.record)
    record["first_frame"] = {**first_source, "sha256": record.get("first_frame", {}).get("sha256")}
    record["edit"] = {
        "video": str(video),
        "video_sha256": video_hash,
        "window": window.to_json(),
        "source_frames": window.indices,
        "source_prompt": source_prompt,
        "motion": motion,
        "motion_digest": manifest.digest,
        "trained": trained,
        "train_steps": train_steps,
        "inversion": {
            "steps": inversion_steps, "refine": inversion_refine, "refine_tol": inversion_tol,
            "prompt": inversion_prompt, "guidance": None, **inv_stats, "clean_first_frame": True,
            "cached": inversion_cached, "path": str(inv_path),
        },
        "notes": notes,
        "timings": timings,
    }
    return EditResult(
        frames=result.frames, latents=result.latents, record=record, motion=motion, trained=trained,
        inversion_cached=inversion_cached, inversion_path=inv_path, first_frame=new_first,
        source_fps=fps, window=window, notes=notes, timings=timings,
    )
