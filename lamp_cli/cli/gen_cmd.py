"""`lamp gen` (text -> first frame -> video) and `lamp animate` (a photo becomes the first frame).

Parsing, checks that need no model, then one `Engine` for every video of the run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer

from ..errors import InvalidInput, UsageError
from ..lora import resolve_loras

GEN_EPILOG = """Examples:

  lamp gen guitar "a bear plays the guitar"

  lamp gen guitar "a panda plays the guitar" --frames 32 --seed 7 -o panda.mp4

  lamp gen --motion guitar:0.7 --motion waterfall:0.3 "a bear plays the guitar by a waterfall"

  lamp gen guitar --prompts-file prompts.txt -o videos/

  lamp gen --from-sidecar panda.mp4.json -o again.mp4
"""

ANIMATE_EPILOG = """Examples:

  lamp animate photo.jpg --motion waterfall

  lamp animate horse.png -m horse_run --prompt "a horse runs in the snow" --format gif
"""


@dataclass
class Options:
    """Every option shared by gen and animate, as given (None = not given)."""

    output: Path | None = None
    fmt: str | None = None
    fps: float | None = None
    frames: int | None = None
    width: int | None = None
    height: int | None = None
    steps: int | None = None
    guidance: float | None = None
    negative: str | None = None
    seed: int | None = None
    shared_noise: float | None = None
    no_adain: bool = False
    no_histogram_match: bool = False
    device: str | None = None
    dtype: str | None = None
    base: str | None = None
    lora: list[str] | None = None
    compile: bool = False
    offload: bool = False
    overwrite: bool = False
    json_out: bool = False
    # not options of their own: filled from a sidecar
    adain_switch: float | None = None
    overlap: int | None = None
    first_frame_model: str | None = None
    expect: dict[str, Any] = field(default_factory=dict)  # digests and fingerprints to compare


def _options(**kw: Any) -> Options:
    return Options(**kw)


# ---- option declarations shared by both commands --------------------------------------------
O_OUTPUT = typer.Option(None, "-o", "--output", help="Video file (.mp4/.gif/.webm) or folder (png frames). Default: a new file in the current folder named from the prompt (never overwrites). With --prompts-file: a folder.")
O_FORMAT = typer.Option(None, "--format", help="mp4 | gif | webm | frames (default: from -o, else mp4).")
O_FPS = typer.Option(None, "--fps", help="Frames per second of the written video [default: 8].")
O_FRAMES = typer.Option(None, "--frames", help="Number of frames; longer than the motion's trained length chains windows [default: 16].")
O_WIDTH = typer.Option(None, "--width", help="Width in pixels, a multiple of 8 [default: the motion's trained size, else 512].")
O_HEIGHT = typer.Option(None, "--height", help="Height in pixels, a multiple of 8 [default: the motion's trained size, else 320].")
O_STEPS = typer.Option(None, "--steps", help="DDIM steps [default: 50].")
O_GUIDANCE = typer.Option(None, "--guidance", help="Classifier-free guidance scale [default: 12.5].")
O_NEGATIVE = typer.Option(None, "--negative", help="Negative prompt (the unconditional text).")
O_SEED = typer.Option(None, "--seed", help="Random seed; random if absent, always printed and recorded.")
O_SHARED = typer.Option(None, "--shared-noise", help="Shared-noise ratio a in eps_i = a*eps_0 + (1-a)*eps_i [default: 0.2].")
O_NO_ADAIN = typer.Option(False, "--no-adain", help="Turn off latent AdaIN toward the first frame.")
O_NO_HIST = typer.Option(False, "--no-histogram-match", help="Turn off pixel histogram matching to the first frame.")
O_DEVICE = typer.Option(None, "--device", help="auto | cpu | cuda | cuda:N | mps [default: auto].")
O_DTYPE = typer.Option(None, "--dtype", help="auto | fp32 | fp16 | bf16 [default: fp16 on GPU, fp32 on CPU].")
O_BASE = typer.Option(None, "--base", help="Base model (repo id, diffusers folder, SD-1.x .safetensors/.ckpt file, tiny) [default: the motion's base].")
O_LORA = typer.Option(None, "--lora", help="Image (style) LoRA FILE[:WEIGHT] fused into the base before the motion; repeat to blend [default: config `lora`].")
O_COMPILE = typer.Option(False, "--compile", help="torch.compile the video UNet (slow first video, faster after).")
O_OFFLOAD = typer.Option(False, "--offload", help="Keep models on the CPU, moving each to the GPU only while it runs.")
O_OVERWRITE = typer.Option(False, "--overwrite", help="Replace an existing -o file.")
O_JSON = typer.Option(False, "--json", help="Print one JSON document describing the videos on stdout.")


def register(app: typer.Typer) -> None:
    app.command("gen", epilog=GEN_EPILOG)(gen)
    app.command("animate", epilog=ANIMATE_EPILOG)(animate)


def gen(
    motion: str | None = typer.Argument(None, metavar="MOTION", help="Motion name in the registry, or NAME:WEIGHT."),
    prompt: str | None = typer.Argument(None, metavar="PROMPT", help="What the video shows."),
    motions: list[str] | None = typer.Option(None, "--motion", "-m", help="(Another) motion NAME[:WEIGHT]; repeat to blend motions."),
    first_frame: Path | None = typer.Option(None, "--first-frame", help="Use this image as the first frame instead of text-to-image."),
    first_frame_prompt: str | None = typer.Option(None, "--first-frame-prompt", help="Prompt for the first frame's image, if it should differ from PROMPT."),
    prompts_file: Path | None = typer.Option(None, "--prompts-file", help="One prompt per line: many videos in one run (split across processes under `accelerate launch`)."),
    from_sidecar: Path | None = typer.Option(None, "--from-sidecar", help="Make the video a sidecar (.json) describes again, bit for bit on the same device."),
    output: Path | None = O_OUTPUT,
    fmt: str | None = O_FORMAT,
    fps: float | None = O_FPS,
    frames: int | None = O_FRAMES,
    width: int | None = O_WIDTH,
    height: int | None = O_HEIGHT,
    steps: int | None = O_STEPS,
    guidance: float | None = O_GUIDANCE,
    negative: str | None = O_NEGATIVE,
    seed: int | None = O_SEED,
    shared_noise: float | None = O_SHARED,
    no_adain: bool = O_NO_ADAIN,
    no_histogram_match: bool = O_NO_HIST,
    device: str | None = O_DEVICE,
    dtype: str | None = O_DTYPE,
    base: str | None = O_BASE,
    lora: list[str] | None = O_LORA,
    compile: bool = O_COMPILE,
    offload: bool = O_OFFLOAD,
    overwrite: bool = O_OVERWRITE,
    json_out: bool = O_JSON,
) -> None:
    """Text -> video: a text-to-image first frame, then the motion animates it."""
    opts = _options(
        output=output, fmt=fmt, fps=fps, frames=frames, width=width, height=height, steps=steps,
        guidance=guidance, negative=negative, seed=seed, shared_noise=shared_noise, no_adain=no_adain,
        no_histogram_match=no_histogram_match, device=device, dtype=dtype, base=base, lora=lora, compile=compile,
        offload=offload, overwrite=overwrite, json_out=json_out,
    )
    if from_sidecar is not None:
        given = [n for n, v in (("MOTION", motion), ("PROMPT", prompt), ("--motion", motions),
                                ("--first-frame", first_frame), ("--first-frame-prompt", first_frame_prompt),
                                ("--prompts-file", prompts_file)) if v]
        if given:
            raise UsageError(f"--from-sidecar takes the video's parameters from the file; drop {', '.join(given)}")
        _run(**_from_sidecar(from_sidecar, opts))
        return
    specs = list(motions or [])
    if specs and motion is not None and prompt is None and prompts_file is None:
        motion, prompt = None, motion  # `lamp gen --motion a --motion b "prompt"`
    if motion is not None:
        specs.insert(0, motion)
    if not specs:
        raise UsageError("name a motion: `lamp gen MOTION PROMPT`", hint="`lamp list` shows the motions you have")
    prompts = _prompts(prompt, prompts_file)
    _run(
        command="gen", motion_specs=specs, prompts=prompts, image=first_frame,
        first_frame_prompt=first_frame_prompt, opts=opts, many=prompts_file is not None,
    )


def animate(
    image: Path = typer.Argument(..., metavar="IMAGE", help="The photo that becomes the first frame."),
    motions: list[str] = typer.Option(..., "--motion", "-m", help="Motion NAME[:WEIGHT]; repeat to blend motions."),
    prompt: str | None = typer.Option(None, "--prompt", "-p", help="What the video shows [default: the motion's training prompt, else the image's file name]."),
    output: Path | None = O_OUTPUT,
    fmt: str | None = O_FORMAT,
    fps: float | None = O_FPS,
    frames: int | None = O_FRAMES,
    width: int | None = O_WIDTH,
    height: int | None = O_HEIGHT,
    steps: int | None = O_STEPS,
    guidance: float | None = O_GUIDANCE,
    negative: str | None = O_NEGATIVE,
    seed: int | None = O_SEED,
    shared_noise: float | None = O_SHARED,
    no_adain: bool = O_NO_ADAIN,
    no_histogram_match: bool = O_NO_HIST,
    device: str | None = O_DEVICE,
    dtype: str | None = O_DTYPE,
    base: str | None = O_BASE,
    lora: list[str] | None = O_LORA,
    compile: bool = O_COMPILE,
    offload: bool = O_OFFLOAD,
    overwrite: bool = O_OVERWRITE,
    json_out: bool = O_JSON,
) -> None:
    """Photo -> video: the image is the first frame; the motion moves it."""
    opts = _options(
        output=output, fmt=fmt, fps=fps, frames=frames, width=width, height=height, steps=steps,
        guidance=guidance, negative=negative, seed=seed, shared_noise=shared_noise, no_adain=no_adain,
        no_histogram_match=no_histogram_match, device=device, dtype=dtype, base=base, lora=lora, compile=compile,
        offload=offload, overwrite=overwrite, json_out=json_out,
    )
    _run(command="animate", motion_specs=motions, prompts=[prompt] if prompt else [None], image=image,
         first_frame_prompt=None, opts=opts, many=False)


# ---- helpers ------------------------------------------------------------------------------
def _prompts(prompt: str | None, prompts_file: Path | None) -> list[str]:
    if prompts_file is None:
        if not prompt or not prompt.strip():
            raise UsageError("missing PROMPT: `lamp gen MOTION PROMPT`", hint="or pass --prompts-file FILE")
        return [prompt]
    if prompt:
        raise UsageError("give either PROMPT or --prompts-file, not both")
    try:
        text = prompts_file.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidInput(f"cannot read prompts file {prompts_file}: {e}") from None
    prompts = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not prompts:
        raise InvalidInput(f"{prompts_file} has no prompts", hint="write one prompt per line (# starts a comment)")
    return prompts


def _from_sidecar(path: Path, opts: Options) -> dict[str, Any]:
    """The arguments of `_run` that make a sidecar's video again (-o, --format, --fps, --device may differ)."""
    from ..generate import read_sidecar

    doc = read_sidecar(path)
    if doc.get("command") == "edit":  # it started from inverted latents, which gen cannot redo
        raise InvalidInput(f"{path} describes a `lamp edit` video",
                           hint="run the same `lamp edit` command again (its tuning and inversion are cached)")
    fixed = ("frames", "width", "height", "steps", "guidance", "negative", "seed", "shared_noise", "base",
             "lora", "dtype", "compile", "offload")
    clash = [f"--{k.replace('_', '-')}" for k in fixed if getattr(opts, k) not in (None, False)]
    clash += [flag for flag, v in (("--no-adain", opts.no_adain), ("--no-histogram-match", opts.no_histogram_match)) if v]
    if clash:
        raise UsageError(f"--from-sidecar takes these from the file: drop {', '.join(clash)}")
    out = doc.get("output", {})
    opts.frames, opts.width, opts.height = doc["frames"], doc["width"], doc["height"]
    opts.steps, opts.guidance, opts.negative, opts.seed = doc["steps"], doc["guidance"], doc.get("negative", ""), doc["seed"]
    opts.shared_noise = doc.get("shared_noise")
    opts.no_adain = not doc.get("adain", True)
    opts.no_histogram_match = not doc.get("histogram_match", True)
    opts.adain_switch = doc.get("adain_switch")
    opts.overlap = doc.get("overlap") or None
    from ..models.base import replay_base_record

    opts.base, loras = replay_base_record(doc["base"])  # refuses a missing or changed file or LoRA
    opts.lora = [f"{s.path}:{s.weight!r}" for s in loras] or ["none"]
    opts.dtype = doc.get("dtype")
    opts.device = opts.device or (doc.get("device", "auto").split(":")[0] if doc.get("device") else None)
    opts.fps = opts.fps or out.get("fps")
    if opts.output is None and opts.fmt is None:
        opts.fmt = out.get("format")
    opts.expect = {"base_fingerprint": doc["base"].get("fingerprint"),
                   "digests": {m["name"]: m.get("digest") for m in doc["motions"]}}
    first = doc.get("first_frame") or {}
    image = None
    if first.get("source") == "image":
        image = Path(first["path"])
        opts.expect["image_sha256"] = first.get("sha256")
    elif first.get("source") == "text-to-image":
        opts.first_frame_model = first.get("model")
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
        "opts": opts,
        "many": False,
    }


def _split_for_processes(items: list[Any]) -> tuple[list[Any], Any]:
    """Under `accelerate launch` (or torchrun) with several processes, this process's share of `items`."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return items, None
    from accelerate import PartialState

    state = PartialState()
    if state.num_processes > 1:
        with state.split_between_processes(items) as mine:
            return list(mine), state
    # accelerate sets up no process group for plain CPU runs: split by rank, as it would.
    rank = int(os.environ.get("RANK", "0"))
    per = -(-len(items) // world)  # ceil: the first processes take one more
    return items[rank * per : (rank + 1) * per], None


def _run(
    *,
    command: str,
    motion_specs: list[str],
    prompts: list[str | None],
    image: Path | None,
    first_frame_prompt: str | None,
    opts: Options,
    many: bool,
) -> None:
    from .. import settings
    from ..engine import check_sample_args, image_digest, new_seed
    from ..generate import output_format, parse_motion, plan_output, save_video
    from ..registry import Registry
    from .render import RichReporter, emit_json, info, setup_logging

    setup_logging()
    # 1. Everything that can be checked without a model: motions, image, numbers, outputs.
    registry = Registry()
    motions = [parse_motion(s) for s in motion_specs]
    manifests = [registry.manifest(name) for name, _ in motions]  # MotionNotFound, hint `lamp list`
    for (name, _), manifest in zip(motions, manifests, strict=True):
        want, have = opts.expect.get("digests", {}).get(name), manifest.digest
        if want and want != have:
            info(f"[yellow]Warning:[/yellow] motion '{name}' changed since the video was made ({want[:19]} -> {have[:19]}); the video will differ")
    first = manifests[0]
    width = opts.width or (first.width if first.width else None) or settings.get("width")
    height = opts.height or (first.height if first.height else None) or settings.get("height")
    frames = settings.get("frames", opts.frames)
    steps = settings.get("steps", opts.steps)
    guidance = settings.get("guidance", opts.guidance)
    shared_noise = settings.get("shared_noise", opts.shared_noise)
    fps = float(settings.get("fps", opts.fps))
    base = opts.base or (first.base or {}).get("spec") or settings.get("base")
    loras = resolve_loras(opts.lora)
    check_sample_args(frames=frames, width=width, height=height, steps=steps, guidance=guidance,
                      shared_noise=shared_noise, seed=opts.seed)
    if not fps > 0:
        raise InvalidInput(f"--fps must be positive (got {fps})")
    image_pixels = None
    if image is not None:
        from ..video import load_image

        image_pixels = load_image(image)  # NotFound / InvalidInput now, not after the models load
        want = opts.expect.get("image_sha256")
        if want and image_digest(image_pixels) != want:
            info(f"[yellow]Warning:[/yellow] {image} changed since the video was made; the video will differ")
    if command == "animate" and prompts == [None]:
        prompts = [first.prompt or image.stem.replace("_", " ").strip() or "a video"]
    fmt = output_format(None if many else opts.output, opts.fmt)
    if many and opts.output is not None and opts.output.suffix:
        raise UsageError("with --prompts-file, -o/--output is a folder", hint="e.g. -o videos/")
    jobs, state = _split_for_processes(list(enumerate(prompts)))
    plans = []
    for index, text in jobs:
        if many:
            path = plan_output(text, None, fmt, folder=opts.output or Path.cwd(), prefix=f"{index:03d}-")
        else:
            path = plan_output(text, opts.output, fmt, overwrite=opts.overwrite)
        plans.append((text, path))

    # 2. The models, once for every video of the run.
    from ..engine import Engine

    device = opts.device or settings.get("device")
    if state is not None and opts.device is None:
        device = state.device
    info(f"loading base '{base}' ...")
    engine = Engine(base, device=device, dtype=settings.get("dtype", opts.dtype), compile=opts.compile,
                    offload=opts.offload, first_frame_model=opts.first_frame_model, loras=loras)
    want = opts.expect.get("base_fingerprint")
    if want and want != engine.base.fingerprint:
        info(f"[yellow]Warning:[/yellow] base '{base}' is not the one the video was made with (fingerprint {engine.base.fingerprint} != {want}); the video will differ")

    # 3. One video per prompt.
    results = []
    for text, path in plans:
        seed = opts.seed if opts.seed is not None else new_seed()
        info(f"seed {seed}")
        kw: dict[str, Any] = {}
        if opts.adain_switch is not None:
            kw["adain_switch"] = opts.adain_switch
        if opts.overlap:
            kw["overlap"] = opts.overlap
        result = engine.sample(
            motions, text, image, frames=frames, width=width, height=height,
            steps=steps, guidance=guidance, negative=opts.negative or "", seed=seed,
            shared_noise=shared_noise if shared_noise is not None else 0.2, adain=not opts.no_adain,
            histogram_match=not opts.no_histogram_match, first_frame_prompt=first_frame_prompt,
            progress=RichReporter(), **kw,
        )
        record = {"command": command, **result.record}
        video, sidecar = save_video(result.frames, path, fps=fps, fmt=fmt, record=record, overwrite=opts.overwrite)
        t = result.record["timings"]
        info(f"[green]wrote[/green] {video} ({frames} frames, {width}×{height}, {fps:g} fps, seed {seed}) in {t['total_s']:.1f} s")
        results.append({
            "path": str(video), "sidecar": str(sidecar), "prompt": text, "seed": seed, "frames": frames,
            "width": width, "height": height, "fps": fps, "format": fmt, "motions": result.record["motions"],
            "base": result.record["base"], "timings": t,
        })
        if not opts.json_out:
            typer.echo(str(video))
    if opts.json_out:
        emit_json({"videos": results})
