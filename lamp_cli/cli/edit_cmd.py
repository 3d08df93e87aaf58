"""`lamp edit VIDEO PROMPT`: one-video tuning, DDIM inversion, a new first frame, resampling.

Parsing and rendering only; the work is `lamp_cli.edit.edit_video`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from .. import settings
from ..errors import InvalidInput, UsageError
from ..lora import resolve_loras
from .options import BASE_CHOICES, DEVICE_CHOICES, DTYPE_CHOICES, FORMAT_CHOICES, LORA_OPTION, setting_option
from .render import RichReporter, emit_json, info, setup_logging

EDIT_EPILOG = """Examples:

  lamp edit run.mp4 "a girl in black runs on the road, Van Gogh style"

  lamp edit run.mp4 --export-first-frame first.png      # edit first.png in any image editor, then:

  lamp edit run.mp4 "a robot runs on the road" --first-frame first_edited.png

  lamp edit run.mp4 "a knight runs on the road" --controlnet canny --edit-strength 0.8 -o knight.gif

The first edit of a video tunes a motion on it (500 steps by default) and keeps it in the
registry as edit-<id>; later edits of the same video reuse it and its inversion.
"""


def register(app: typer.Typer) -> None:
    app.command("edit", epilog=EDIT_EPILOG)(edit)


def edit(
    video: Path = typer.Argument(..., metavar="VIDEO", help="The video to edit (mp4, mov, webm, mkv, gif)."),
    prompt: str | None = typer.Argument(None, metavar="PROMPT", help="What the edited video shows."),
    first_frame: Path | None = typer.Option(None, "--first-frame", help="Your edited version of the window's first frame (see --export-first-frame); other aspects are center-cropped. Default: an image edit of it with PROMPT."),
    export_first_frame: Path | None = typer.Option(None, "--export-first-frame", metavar="FILE", help="Write the window's first frame (after resize/crop) to FILE (.png) and exit."),
    name: str | None = typer.Option(None, "--name", help="Registry name of the motion tuned on VIDEO (default: edit-<hash of video and settings>)."),
    source_prompt: str | None = typer.Option(None, "--source-prompt", help="What VIDEO shows, for tuning (default: <video>.txt beside it, else its file name)."),
    train_steps: int = typer.Option(500, "--steps", help="Training steps of the one-video tuning."),
    frames: int = typer.Option(24, "--frames", help="Frames of the edited window."),
    stride: int = typer.Option(2, "--stride", help="Take every N-th frame of VIDEO."),
    start_frame: int = typer.Option(0, "--start-frame", help="First frame of the window in VIDEO (counted from 0)."),
    edit_strength: float = typer.Option(0.6, "--edit-strength", help="How much the automatic first-frame edit may change the frame (0..1]."),
    controlnet: str | None = typer.Option(None, "--controlnet", help="Guide the first-frame edit with a canny ControlNet: a local folder, an HF repo id in the local cache, or `canny`."),
    ddim_steps: int | None = setting_option("steps", "--ddim-steps", help="DDIM steps of the inversion and of sampling."),
    inversion_refine: int = typer.Option(4, "--inversion-refine", help="Fixed-point iterations per inversion step, at most (0 = plain DDIM inversion, as the reference)."),
    inversion_prompt: str = typer.Option("", "--inversion-prompt", help="Text the inversion is conditioned on (default: empty, as the reference)."),
    output: Path | None = typer.Option(None, "-o", "--output", help="Video file (.mp4/.gif/.webm) or folder (png frames) (default: a new file named from PROMPT)."),
    fmt: str | None = typer.Option(None, "--format", help=f"{FORMAT_CHOICES} (default: from -o, else mp4)."),
    fps: float | None = typer.Option(None, "--fps", help="Frames per second of the written video (default: VIDEO's fps / stride, i.e. its real speed)."),
    width: int | None = setting_option("width", "--width", help="Width in pixels, a multiple of 8."),
    height: int | None = setting_option("height", "--height", help="Height in pixels, a multiple of 8."),
    guidance: float | None = setting_option("guidance", "--guidance", help="Classifier-free guidance scale."),
    negative: str | None = typer.Option(None, "--negative", help="Negative prompt (the unconditional text)."),
    seed: int | None = typer.Option(None, "--seed", help="Random seed of the first-frame edit and sampling; random if absent."),
    no_adain: bool = typer.Option(False, "--no-adain", help="Turn off latent AdaIN toward the first frame."),
    no_histogram_match: bool = typer.Option(False, "--no-histogram-match", help="Turn off pixel histogram matching to the first frame."),
    device: str | None = setting_option("device", "--device", help=f"{DEVICE_CHOICES}."),
    dtype: str | None = setting_option("dtype", "--dtype", help=f"{DTYPE_CHOICES} (auto: fp16 on GPU, fp32 on CPU)."),
    base: str | None = setting_option("base", "--base", help=f"Base model: {BASE_CHOICES}."),
    lora: list[str] | None = LORA_OPTION,
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing -o file."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document describing the result on stdout."),
) -> None:
    """Edit a video: tune a motion on it, invert it, give it a new first frame, resample (LAMP §5.2)."""

    setup_logging()
    width = int(settings.get("width", width))
    height = int(settings.get("height", height))

    if export_first_frame is not None:
        if prompt is not None:
            raise UsageError("--export-first-frame writes the frame and exits: drop PROMPT")
        from ..edit import EditWindow
        from ..edit import export_first_frame as export

        path = export(video, export_first_frame, EditWindow(start_frame, frames, stride, width, height))
        info(f"[green]wrote[/green] {path}: frame {start_frame} of {video.name} at {width}×{height}; edit it, then pass it with --first-frame")
        if json_out:
            emit_json({"path": str(path), "video": str(video), "frame": start_frame, "width": width, "height": height})
        else:
            typer.echo(str(path))
        return

    if prompt is None or not prompt.strip():
        raise UsageError('missing PROMPT: `lamp edit VIDEO "what the edited video shows"`',
                         hint="or `lamp edit VIDEO --export-first-frame FILE` to export the frame to edit")
    from ..generate import output_format, plan_output, save_video

    fps_setting = settings.resolve("fps", fps)
    if fps is not None and not fps > 0:
        raise InvalidInput(f"--fps must be positive (got {fps})")
    fmt_name = output_format(output, fmt)
    path = plan_output(prompt, output, fmt_name, overwrite=overwrite)

    from ..edit import edit_video

    result = edit_video(
        video,
        prompt,
        first_frame=first_frame,
        name=name,
        source_prompt=source_prompt,
        train_steps=train_steps,
        frames=frames,
        stride=stride,
        start_frame=start_frame,
        width=width,
        height=height,
        lr=float(settings.get("lr")),
        edit_strength=edit_strength,
        controlnet=controlnet,
        inversion_steps=int(settings.get("steps", ddim_steps)),
        inversion_refine=inversion_refine,
        inversion_prompt=inversion_prompt,
        guidance=float(settings.get("guidance", guidance)),
        negative=negative or "",
        seed=seed,
        adain=not no_adain,
        histogram_match=not no_histogram_match,
        base=settings.get("base", base),
        loras=resolve_loras(lora),
        device=settings.get("device", device),
        dtype=settings.get("dtype", dtype),
        progress=RichReporter(),
    )
    # Unless asked otherwise, play the edit at the source's real speed.
    if fps_setting.source == "default" and result.source_fps > 0:
        out_fps = round(result.source_fps / result.window.stride, 3)
    else:
        out_fps = float(fps_setting.value)
    record: dict[str, Any] = {"command": "edit", **result.record}
    written, sidecar = save_video(result.frames, path, fps=out_fps, fmt=fmt_name, record=record, overwrite=overwrite)
    w = result.window
    info(
        f"[green]wrote[/green] {written} (frames {w.indices[0]}..{w.indices[-1]} every {w.stride} of {video.name}, "
        f"{w.frames} frames, {w.width}×{w.height}, {out_fps:g} fps, seed {record['seed']}, motion '{result.motion}')"
    )
    if json_out:
        emit_json({
            "path": str(written),
            "sidecar": str(sidecar),
            "prompt": prompt,
            "seed": record["seed"],
            "fps": out_fps,
            "format": fmt_name,
            "motion": result.motion,
            "trained": result.trained,
            "inversion_cached": result.inversion_cached,
            "inversion_path": str(result.inversion_path),
            "window": w.to_json(),
            "source_frames": w.indices,
            "first_frame": record["first_frame"],
            "notes": result.notes,
            "timings": result.timings,
        })
    else:
        typer.echo(str(written))
