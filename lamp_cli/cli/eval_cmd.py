"""`lamp eval` (the paper's CLIP metrics) and `lamp recipes` (the built-in motion recipes).

Thin: parse, call `lamp_cli.evaluate` / `lamp_cli.recipes`, render. torch is imported only
inside the commands, when CLIP or the engine loads.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

import typer

from .. import settings
from ..errors import UsageError
from ..fsutil import atomic_write_text
from ..jsonio import dumps_strict
from ..lora import resolve_loras
from ..prompts import read_prompts_file
from .options import BASE_CHOICES, DEVICE_CHOICES, LORA_OPTION, setting_option
from .render import RichReporter, emit_json, info, out_console, setup_logging

JSON_HELP = "Print one JSON document on stdout."
FORMATS = ("mp4", "gif", "webm", "frames")


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _render_report(report: dict[str, Any], title: str) -> None:
    from rich.table import Table

    table = Table(
        box=None, pad_edge=False, show_edge=False, header_style="bold", title=title, title_justify="left"
    )
    table.add_column("VIDEO", no_wrap=True)
    table.add_column("PROMPT")
    table.add_column("ALIGNMENT", justify="right")
    table.add_column("CONSISTENCY", justify="right")
    for v in report["videos"]:
        table.add_row(Path(v["file"]).name, v["prompt"], _fmt(v["alignment"]), _fmt(v["consistency"]))
    table.add_section()
    mean = report["mean"]
    table.add_row(f"mean of {report['count']}", "", _fmt(mean["alignment"]), _fmt(mean["consistency"]))
    out_console.print(table)
    out_console.print(
        f"diversity {_fmt(report['diversity'])}  (lower is more diverse)   CLIP {report['clip_model']}",
        highlight=False,
    )


def _prompts_for(recipe: str | None, prompts_file: Path | None, motion: str | None) -> tuple[list[str], str]:
    """The evaluation prompts and where they came from (prompts file > recipe > recipe named MOTION)."""
    from ..recipes import load_recipe, recipe_names

    if recipe and prompts_file:
        raise UsageError("give --recipe or --prompts-file, not both")
    if prompts_file is not None:
        return read_prompts_file(prompts_file), str(prompts_file)
    if recipe:
        r = load_recipe(recipe)
        return list(r.eval_prompts), f"recipe {r.name}"
    if motion and motion in recipe_names():
        r = load_recipe(motion)
        return list(r.eval_prompts), f"recipe {r.name}"
    raise UsageError(
        "no evaluation prompts: pass --prompts-file F (one prompt per line) or --recipe R",
        hint="`lamp recipes` lists the built-in recipes and their prompts",
    )


def _default_out(motion: str) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(f"lamp-eval-{motion}-{stamp}")
    k = 2
    while out.exists():
        out = Path(f"lamp-eval-{motion}-{stamp}-{k}")
        k += 1
    return out


def cmd_eval(
    motion: str | None = typer.Argument(
        None, metavar="MOTION", help="A motion in the registry: generate videos with it, then score them."
    ),
    videos: Path | None = typer.Option(
        None,
        "--videos",
        help="Score the existing videos in this folder instead (one per prompt, in name order).",
    ),
    recipe: str | None = typer.Option(
        None, "--recipe", help="Take the evaluation prompts from this recipe (`lamp recipes`)."
    ),
    prompts_file: Path | None = typer.Option(
        None, "--prompts-file", help="Evaluation prompts, one per line."
    ),
    seeds: int = typer.Option(1, "--seeds", min=1, help="Videos per prompt (seeds --seed, --seed+1, ...)."),
    seed: int = typer.Option(0, "--seed", help="First seed."),
    base: str | None = setting_option(
        "base", "--base", help=f"Base model: {BASE_CHOICES} (default: the motion's base, else {{default}})."
    ),
    lora: list[str] | None = LORA_OPTION,
    steps: int | None = setting_option("steps", "--steps", min=1, help="DDIM steps."),
    frames: int | None = typer.Option(
        None, "--frames", min=2, help="Frames per video (default: the motion's)."
    ),
    width: int | None = typer.Option(None, "--width", min=8, help="Width (default: the motion's)."),
    height: int | None = typer.Option(None, "--height", min=8, help="Height (default: the motion's)."),
    guidance: float | None = setting_option("guidance", "--guidance", help="Classifier-free guidance scale."),
    out: Path | None = typer.Option(
        None,
        "--out",
        "-o",
        help="Folder for the generated videos (default: a new lamp-eval-MOTION-<time> folder).",
    ),
    format: str = typer.Option("mp4", "--format", help=f"Video format: {' | '.join(FORMATS)}."),
    fps: float | None = setting_option("fps", "--fps", help="Frames per second of the written videos."),
    clip_model: str | None = setting_option("clip_model", "--clip-model", help="CLIP repo id (local cache) or folder."),
    device: str | None = setting_option("device", "--device", help=f"{DEVICE_CHOICES}."),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Score videos with the paper's CLIP metrics: text alignment, frame consistency, diversity.

    Alignment: mean over frames of 100·cos(frame, prompt). Consistency: mean over frame pairs of 100·cos. Diversity: mean over video pairs of 100·dot of the videos' mean unit frame embeddings (lower is more diverse). CLIP is read from the local cache only.

    Examples:

      lamp eval horse_run                      # generate the recipe's 6 prompts, then score

      lamp eval guitar --recipe play_the_guitar --seeds 2 --out runs/guitar

      lamp eval --videos ./other_tool_out --prompts-file prompts.txt --json

      lamp eval --videos ./out --recipe rain
    """
    from ..evaluate import evaluate_videos, find_videos, pair_videos_with_prompts

    setup_logging(quiet=json_out)
    if (motion is None) == (videos is None):
        raise UsageError(
            "give a MOTION to generate and score, or --videos DIR to score existing videos (not both)",
            hint="`lamp eval --help` shows examples",
        )
    fmt = format.lower()
    if fmt not in FORMATS:
        raise UsageError(f"unknown --format '{format}'", hint=f"choose one of {', '.join(FORMATS)}")
    clip_spec = str(settings.get("clip_model", clip_model))
    dev = str(settings.get("device", device))

    progress = RichReporter(enabled=not json_out)

    if videos is not None:
        # 1. Check the inputs (cheap) before CLIP loads.
        files = find_videos(videos)
        prompts, source = _prompts_for(recipe, prompts_file, None)
        pair_videos_with_prompts(files, prompts, where=f" in {videos}")
        # 2. Score.
        report = evaluate_videos(
            files, prompts, clip_model=clip_spec, device=dev, progress=progress
        ).to_dict()
        report.update({"mode": "videos", "videos_dir": str(videos), "prompts_source": source})
        if json_out:
            emit_json(report)
        else:
            _render_report(report, f"{len(files)} videos in {videos}")
        return

    # Generate, then score.
    # 1. Check the inputs before any model loads: the motion, the prompts, the output folder.
    from ..engine import Engine
    from ..evaluate import Scorer, generate_videos
    from ..registry import Registry
    from ..resolve import find_manifest, load_motion, motion_sample_request

    manifest = find_manifest(motion, Registry())  # cheap: the blob is hash-checked when it loads
    prompts, source = _prompts_for(recipe, prompts_file, motion)
    out_dir = out or _default_out(motion)
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out {out_dir} exists and is not a folder")
    seed_list = [seed + k for k in range(seeds)]
    request = motion_sample_request(
        manifest, {"frames": frames, "width": width, "height": height, "steps": steps, "guidance": guidance},
        seed=seed_list[-1],
    )
    sample_kwargs = {k: getattr(request, k) for k in ("frames", "width", "height", "steps", "guidance", "shared_noise")}
    if fps is not None and not fps > 0:
        raise UsageError(f"--fps must be positive (got {fps})")
    loras = resolve_loras(lora)  # a missing LoRA file fails now
    # 2. CLIP first: a missing CLIP model should fail before minutes of generation.
    scorer = Scorer(clip_spec, device=dev)
    # 3. Generate with the engine (text-to-image first frames, as `lamp gen` does), on the
    #    motion's own base unless --base says otherwise.
    motion_base = manifest.base.get("spec") if isinstance(manifest.base, dict) else None
    base_spec = str(base or motion_base or settings.get("base"))
    engine = Engine(base_spec, device=dev, dtype=settings.get("dtype"), loras=loras)
    info(f"generating {len(prompts) * len(seed_list)} videos of '{motion}' into {out_dir}")
    made = generate_videos(
        engine,
        load_motion(motion),
        prompts,
        out_dir,
        seeds=seed_list,
        format=fmt,
        fps=float(settings.get("fps", fps)),
        progress=progress,
        **sample_kwargs,
    )
    # 4. Score what was written (read back from disk, as any other tool's videos would be).
    report = evaluate_videos(
        [m.path for m in made], [m.prompt for m in made], scorer=scorer, progress=progress
    ).to_dict()
    report.update(
        {
            "mode": "generate",
            "motion": motion,
            "out": str(out_dir),
            "prompts_source": source,
            "seeds": seed_list,
            "settings": {**sample_kwargs, "base": engine.base.spec, "format": fmt,
                         "loras": engine.base.record().get("loras", [])},
        }
    )
    atomic_write_text(out_dir / "eval.json", dumps_strict(report, what="eval.json", indent=2, sort_keys=True, default=str) + "\n")
    if json_out:
        emit_json(report)
    else:
        _render_report(report, f"'{motion}' on {len(prompts)} prompts × {len(seed_list)} seeds ({source})")
        info(f"videos and eval.json in {out_dir}")


def cmd_recipes(
    name: str | None = typer.Argument(None, metavar="NAME", help="Show one recipe in full."),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """List the built-in motion recipes (the paper's eight motions), or show one.

    A recipe holds a motion's training prompt, defaults and its six evaluation prompts;
    `lamp train --recipe NAME` and `lamp eval --recipe NAME` use it.

    Examples:

      lamp recipes

      lamp recipes horse_run

      lamp recipes --json
    """
    from ..recipes import list_recipes, load_recipe

    if name is not None:
        r = load_recipe(name)
        if json_out:
            emit_json({"recipe": r.to_dict()})
            return
        out_console.print(f"[bold]{r.name}[/bold]  {r.description}", highlight=False)
        out_console.print(
            f'training prompt "{r.prompt}"; {r.frames} frames, stride {r.stride}, {r.width}x{r.height}, {r.steps} steps',
            highlight=False,
        )
        out_console.print("evaluation prompts:", highlight=False)
        for p in r.eval_prompts:
            out_console.print(f"  {p}", highlight=False)
        return
    recipes = list_recipes()
    if json_out:
        emit_json({"recipes": [r.to_dict() for r in recipes]})
        return
    from rich.table import Table

    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    # The description is left to `lamp recipes NAME` / --json: it does not fit an 80-column row.
    for col in ("NAME", "PROMPT", "FRAMES", "SIZE", "EVAL PROMPTS"):
        table.add_column(col, no_wrap=True)
    for r in recipes:
        table.add_row(r.name, r.prompt, str(r.frames), f"{r.width}x{r.height}", str(len(r.eval_prompts)))
    out_console.print(table)


def register(app: typer.Typer) -> None:
    """Add `eval` and `recipes` to the app."""
    app.command("eval")(cmd_eval)
    app.command("recipes")(cmd_recipes)
