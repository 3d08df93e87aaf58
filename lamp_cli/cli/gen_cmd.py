"""`lamp gen` (text -> first frame -> video) and `lamp animate` (a photo becomes the first frame).

Parsing, checks that need no model, then one `Engine` for every video of the run.
"""

from __future__ import annotations

import functools
import inspect
import os
import typing
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import typer

from ..errors import UsageError
from ..prompts import read_prompts_file
from .options import BASE_CHOICES, DEVICE_CHOICES, DTYPE_CHOICES, FORMAT_CHOICES, LORA_OPTION, setting_option
from .render import RichReporter, emit_json, info, setup_logging

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


# ---- the options gen and animate share, declared once --------------------------------------
O_OUTPUT = typer.Option(None, "-o", "--output", help="Video file (.mp4/.gif/.webm) or folder (png frames). Default: a new file in the current folder named from the prompt (never overwrites); a folder when there are several prompts.")
O_FORMAT = typer.Option(None, "--format", help=f"{FORMAT_CHOICES} (default: from -o, else mp4).")
O_FPS = setting_option("fps", "--fps", help="Frames per second of the written video.")
O_FRAMES = setting_option("frames", "--frames", help="Number of frames; longer than the motion's trained length chains windows.")
O_WIDTH = setting_option("width", "--width", help="Width in pixels, a multiple of 8 (default: the motion's trained size, else {default}).")
O_HEIGHT = setting_option("height", "--height", help="Height in pixels, a multiple of 8 (default: the motion's trained size, else {default}).")
O_STEPS = setting_option("steps", "--steps", help="DDIM steps.")
O_GUIDANCE = setting_option("guidance", "--guidance", help="Classifier-free guidance scale.")
O_NEGATIVE = typer.Option(None, "--negative", help="Negative prompt (the unconditional text) (default: none).")
O_SEED = typer.Option(None, "--seed", help="Random seed (default: a random one, always printed and recorded).")
O_SHARED = setting_option("shared_noise", "--shared-noise", help="Shared-noise ratio a in eps_i = a*eps_0 + (1-a)*eps_i.")
O_NO_ADAIN = typer.Option(False, "--no-adain", help="Turn off latent AdaIN toward the first frame.")
O_NO_HIST = typer.Option(False, "--no-histogram-match", help="Turn off pixel histogram matching to the first frame.")
O_DEVICE = setting_option("device", "--device", help=f"{DEVICE_CHOICES}.")
O_DTYPE = setting_option("dtype", "--dtype", help=f"{DTYPE_CHOICES} (auto: fp16 on GPU, fp32 on CPU).")
O_BASE = setting_option("base", "--base", help=f"Base model: {BASE_CHOICES} (default: the motion's base, else {{default}}).")
O_COMPILE = typer.Option(False, "--compile", help="torch.compile the video UNet (slow first video, faster after).")
O_OFFLOAD = typer.Option(False, "--offload", help="Keep models on the CPU, moving each to the GPU only while it runs.")
O_OVERWRITE = typer.Option(False, "--overwrite", help="Replace an existing -o file.")
O_JSON = typer.Option(False, "--json", help="Print one JSON document describing the videos on stdout.")

# name, type, declaration: the parameters `sample_options` adds to gen and animate.
SAMPLE_OPTIONS: list[tuple[str, Any, Any]] = [
    ("output", Path | None, O_OUTPUT), ("fmt", str | None, O_FORMAT), ("fps", float | None, O_FPS),
    ("frames", int | None, O_FRAMES), ("width", int | None, O_WIDTH), ("height", int | None, O_HEIGHT),
    ("steps", int | None, O_STEPS), ("guidance", float | None, O_GUIDANCE),
    ("negative", str | None, O_NEGATIVE), ("seed", int | None, O_SEED),
    ("shared_noise", float | None, O_SHARED), ("no_adain", bool, O_NO_ADAIN),
    ("no_histogram_match", bool, O_NO_HIST), ("device", str | None, O_DEVICE),
    ("dtype", str | None, O_DTYPE), ("base", str | None, O_BASE), ("lora", list[str] | None, LORA_OPTION),
    ("compile", bool, O_COMPILE),
    ("offload", bool, O_OFFLOAD), ("overwrite", bool, O_OVERWRITE), ("json_out", bool, O_JSON),
]


def sample_options(func: Callable[..., None]) -> Callable[..., None]:
    """Give a command every shared option of SAMPLE_OPTIONS; it receives them as `opts` (a dict)."""
    own = [p for p in inspect.signature(func).parameters.values() if p.name != "opts"]
    shared = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=d, annotation=t) for n, t, d in SAMPLE_OPTIONS]

    @functools.wraps(func)
    def command(**kw: Any) -> None:
        func(opts={n: kw.pop(n) for n, _, _ in SAMPLE_OPTIONS}, **kw)

    command.__signature__ = inspect.Signature(own + shared)  # type: ignore[attr-defined]
    command.__annotations__ = {**typing.get_type_hints(func), **{n: t for n, t, _ in SAMPLE_OPTIONS}}
    command.__annotations__.pop("opts", None)
    return command


def register(app: typer.Typer) -> None:
    app.command("gen", epilog=GEN_EPILOG)(sample_options(gen))
    app.command("animate", epilog=ANIMATE_EPILOG)(sample_options(animate))


def gen(
    motion: str | None = typer.Argument(None, metavar="MOTION", help="Motion name in the registry, or NAME:WEIGHT."),
    prompt: str | None = typer.Argument(None, metavar="PROMPT", help="What the video shows."),
    motions: list[str] | None = typer.Option(None, "--motion", "-m", help="(Another) motion NAME[:WEIGHT]; repeat to blend motions."),
    first_frame: Path | None = typer.Option(None, "--first-frame", help="Use this image as the first frame instead of text-to-image."),
    first_frame_prompt: str | None = typer.Option(None, "--first-frame-prompt", help="Prompt for the first frame's image, if it should differ from PROMPT."),
    prompts_file: Path | None = typer.Option(None, "--prompts-file", help="One prompt per line (# starts a comment): many videos in one run (split across processes under `accelerate launch`)."),
    from_sidecar: Path | None = typer.Option(None, "--from-sidecar", help="Make the video a sidecar (.json) describes again, bit for bit on the same device."),
    *,
    opts: dict[str, Any],
) -> None:
    """Text -> video: a text-to-image first frame, then the motion animates it."""
    if from_sidecar is not None:
        given = [n for n, v in (("MOTION", motion), ("PROMPT", prompt), ("--motion", motions),
                                ("--first-frame", first_frame), ("--first-frame-prompt", first_frame_prompt),
                                ("--prompts-file", prompts_file)) if v]
        if given:
            raise UsageError(f"--from-sidecar takes the video's parameters from the file; drop {', '.join(given)}")
        from ..resolve import sidecar_run

        _run(**sidecar_run(from_sidecar, opts))
        return
    specs = list(motions or [])
    if specs and motion is not None and prompt is None and prompts_file is None:
        motion, prompt = None, motion  # `lamp gen --motion a --motion b "prompt"`
    if motion is not None:
        specs.insert(0, motion)
    if not specs:
        raise UsageError("name a motion: `lamp gen MOTION PROMPT`", hint="`lamp list` shows the motions you have")
    prompts = _prompts(prompt, prompts_file)
    _run(command="gen", motion_specs=specs, prompts=prompts, image=first_frame,
         first_frame_prompt=first_frame_prompt, cli=opts, many=prompts_file is not None)


def animate(
    image: Path = typer.Argument(..., metavar="IMAGE", help="The photo that becomes the first frame."),
    motions: list[str] = typer.Option(..., "--motion", "-m", help="Motion NAME[:WEIGHT]; repeat to blend motions."),
    prompt: str | None = typer.Option(None, "--prompt", "-p", help="What the video shows (default: the motion's training prompt, else the image's file name)."),
    *,
    opts: dict[str, Any],
) -> None:
    """Photo -> video: the image is the first frame; the motion moves it."""
    _run(command="animate", motion_specs=motions, prompts=[prompt] if prompt else [None], image=image,
         first_frame_prompt=None, cli=opts, many=False)


# ---- helpers ------------------------------------------------------------------------------
def _prompts(prompt: str | None, prompts_file: Path | None) -> list[str]:
    if prompts_file is None:
        if not prompt or not prompt.strip():
            raise UsageError("missing PROMPT: `lamp gen MOTION PROMPT`", hint="or pass --prompts-file FILE")
        return [prompt]
    if prompt:
        raise UsageError("give either PROMPT or --prompts-file, not both")
    return read_prompts_file(prompts_file)


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
    cli: dict[str, Any],
    many: bool,
    sidecar: dict[str, Any] | None = None,
) -> None:
    from ..engine import image_digest, new_seed
    from ..generate import output_format, plan_output, save_video
    from ..registry import Registry
    from ..resolve import gen_request, load_motions
    from ..video import load_image

    setup_logging()
    # 1. Everything that can be checked without a model: motions, image, numbers, base, outputs.
    registry = Registry()
    request, manifests = gen_request(command, motion_specs, prompts, cli=cli, image=image,
                                     first_frame_prompt=first_frame_prompt, many=many, sidecar=sidecar,
                                     registry=registry)
    expect = request.expect
    for manifest in manifests:
        want, have = expect.get("digests", {}).get(manifest.name), manifest.digest
        if want and want != have:
            info(f"[yellow]Warning:[/yellow] motion '{manifest.name}' changed since the video was made ({want[:19]} -> {have[:19]}); the video will differ")
    if image is not None and expect.get("image_sha256") and image_digest(load_image(image)) != expect["image_sha256"]:
        info(f"[yellow]Warning:[/yellow] {image} changed since the video was made; the video will differ")
    fmt = output_format(None if many else request.output, request.fmt)
    if many and request.output is not None and request.output.suffix:
        raise UsageError("with --prompts-file, -o/--output is a folder", hint="e.g. -o videos/")
    jobs, state = _split_for_processes(list(enumerate(request.samples)))
    plans = []
    for index, sample in jobs:
        if many:
            path = plan_output(sample.prompt, None, fmt, folder=request.output or Path.cwd(), prefix=f"{index:03d}-")
        else:
            path = plan_output(sample.prompt, request.output, fmt, overwrite=request.overwrite)
        plans.append((sample, path))

    # 2. The models, once for every video of the run.
    from ..engine import Engine

    device = request.device
    if state is not None and cli.get("device") is None:
        device = state.device
    info(f"loading base '{request.base}' ...")
    engine = Engine(request.base, device=device, dtype=request.dtype, compile=request.compile,
                    offload=request.offload, first_frame_model=request.first_frame_model, loras=list(request.loras),
                    first_frame_round_trip=request.first_frame_round_trip)
    want = expect.get("base_fingerprint")
    if want and want != engine.base.fingerprint:
        info(f"[yellow]Warning:[/yellow] base '{request.base}' is not the one the video was made with (fingerprint {engine.base.fingerprint} != {want}); the video will differ")

    # 3. One video per prompt.
    loaded = load_motions(request.samples[0].motions, registry)
    results = []
    for sample, path in plans:
        if sample.seed is None:
            sample = replace(sample, seed=new_seed())
        info(f"seed {sample.seed}")
        result = engine.run(sample, loaded, image, progress=RichReporter())
        record = {"command": command, **result.record}
        video, side = save_video(result.frames, path, fps=request.fps, fmt=fmt, record=record, overwrite=request.overwrite)
        t = result.record["timings"]
        info(f"[green]wrote[/green] {video} ({sample.frames} frames, {sample.width}×{sample.height}, {request.fps:g} fps, seed {sample.seed}) in {t['total_s']:.1f} s")
        results.append({
            "path": str(video), "sidecar": str(side), "prompt": sample.prompt, "seed": sample.seed,
            "frames": sample.frames, "width": sample.width, "height": sample.height, "fps": request.fps,
            "format": fmt, "motions": result.record["motions"], "base": result.record["base"], "timings": t,
        })
        if not cli.get("json_out"):
            typer.echo(str(video))
    if cli.get("json_out"):
        emit_json({"videos": results})
