"""Scoring a motion while it trains (`lamp train --eval-every N`) and keeping its best step.

Validation samples that differ from what users later generate mislead more than they help, so
every sample here comes from the inference engine itself, with the settings of `lamp gen`:

1. before training (`resolve_eval_plan`, then `TrainingEvaluator.start`): check the options,
   load CLIP (a missing model fails now, not after hours of training), build one `Engine` for the
   run's base the way `lamp gen` builds it (same loader, device and dtype), and make each eval
   prompt's text-to-image first frame once: it depends on the prompt and seed, not on the motion;
2. every N steps and at the last step (`evaluate`): extract the adapter exactly as it would be
   published (same dtype), apply it to the engine, sample one video per prompt with the fixed
   seed, and score each with CLIP (evaluate.py): text alignment and frame consistency;
3. the score to maximise is the mean text alignment over the prompts: the paper's measure of
   whether a motion carries over to new subjects. Consistency is reported but not maximised (a
   video that does not move at all scores highest on it). Ties keep the earlier step;
4. the best adapter so far is kept in the run folder (`LAMP_HOME/runs/NAME/best.safetensors`), so
   an interrupted run keeps it; at the end train.py publishes the last adapter as NAME and the
   best as NAME-best, both carrying the eval history in `lamp.train["eval"]`.

Each video equals `lamp gen NAME PROMPT --seed SEED --frames F --steps K` with the adapter of that
step (same device and dtype). Scores are computed on the frames in memory (no codec), so
`lamp eval NAME --format frames` with the same prompts, seed and steps reproduces the last step's.
Evaluation never touches the training's random state: a run with evaluation trains exactly the
adapter the same run without it would.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import settings
from ..adapter import MotionAdapter, extract, make_metadata
from ..engine import Engine
from ..errors import InvalidInput, LampError, NameTaken
from ..evaluate import Scorer, score_clips, slug
from ..first_frame import FirstFrameGenerator
from ..generate import check_writable, save_video
from ..models.base import architecture_of
from ..registry import validate_name
from ..requests import SampleRequest

log = logging.getLogger("lamp")

BEST_SUFFIX = "-best"
BEST_FILE = "best.safetensors"
SCORE = "mean_alignment"  # what "best" maximises (see the module docstring)
DEFAULT_EVAL_SEED = 0  # as `lamp eval --seed 0`: the two can be compared prompt for prompt


def best_name(name: str) -> str:
    """The registry name of a run's best adapter: NAME-best."""
    return name + BEST_SUFFIX


@dataclass
class EvalPlan:
    """What is sampled and scored during training, fixed for the whole run (and its resumes)."""

    every: int  # evaluate after every `every` steps, and after the last step
    prompts: list[str]
    seed: int  # the same seed for every prompt, as `lamp eval --seed`
    steps: int  # DDIM steps (setting 'steps', as `lamp gen`, unless --eval-steps)
    steps_source: str  # "setting" or "--eval-steps"
    guidance: float
    shared_noise: float
    frames: int  # the motion's trained length and size, as `lamp eval` defaults to
    width: int
    height: int
    clip_model: str
    score: str = SCORE

    def due(self, step: int, total: int) -> bool:
        return step % self.every == 0 or step == total

    def sample_request(self, prompt: str) -> SampleRequest:
        """One eval video's request: what `lamp gen` makes when no option changes it (checked)."""
        sources = {"steps": "--eval-steps" if self.steps_source == "--eval-steps" else "setting 'steps'"}
        return SampleRequest(
            prompt=prompt, frames=self.frames, width=self.width, height=self.height, steps=self.steps,
            guidance=self.guidance, seed=self.seed, shared_noise=self.shared_noise, sources=sources,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _clean_prompts(prompts: Sequence[str], what: str) -> list[str]:
    cleaned = [" ".join(str(p).split()) for p in prompts]
    if any(not p for p in cleaned):
        raise InvalidInput(f"{what} holds an empty prompt", hint="give each eval prompt some text")
    return cleaned


def resolve_eval_plan(
    eval_every: int | None,
    eval_prompts: Sequence[str] | None,
    *,
    frames: int,
    width: int,
    height: int,
    total_steps: int,
    eval_steps: int | None = None,
    eval_seed: int | None = None,
    clip_model: str | None = None,
    recipe_prompts: Sequence[str] | None = None,
    saved: dict[str, Any] | None = None,
) -> EvalPlan | None:
    """Check the eval options (no model is loaded); None when evaluation is off.

    Prompts: `eval_prompts`, else the recipe's eval prompts. `saved`: the plan of the checkpoint
    being resumed; options not given are taken from it, and what the scores depend on (prompts,
    seed, sampling settings, CLIP) must match it: scores made differently cannot pick a best.
    Only `every` may change on resume.
    """

    if saved is not None:  # resuming an evaluated run: what is not given comes from its checkpoint
        eval_every = saved["every"] if eval_every is None else eval_every
        eval_prompts = eval_prompts or saved["prompts"]
        if eval_steps is None and saved.get("steps_source") == "--eval-steps":
            eval_steps = saved["steps"]
        eval_seed = saved["seed"] if eval_seed is None else eval_seed
        clip_model = clip_model or saved["clip_model"]
    if eval_every is None:
        if eval_prompts:
            raise InvalidInput("--eval-prompts needs --eval-every N", hint="e.g. --eval-every 500: score the motion every 500 steps")
        for value, flag in ((eval_steps, "--eval-steps"), (eval_seed, "--eval-seed")):
            if value is not None:
                raise InvalidInput(f"{flag} needs --eval-every N", hint="e.g. --eval-every 500")
        return None
    try:
        every = int(eval_every)
    except (TypeError, ValueError):
        raise InvalidInput(f"--eval-every must be a whole number of steps, got {eval_every!r}") from None
    if every < 1:
        raise InvalidInput(f"--eval-every must be at least 1, got {every}")
    if eval_prompts:
        prompts = _clean_prompts(eval_prompts, "--eval-prompts")
    elif recipe_prompts:
        prompts = _clean_prompts(recipe_prompts, "the recipe's eval_prompts")
    else:
        raise InvalidInput(
            "--eval-every needs prompts to sample the motion with",
            hint='pass --eval-prompts "a horse runs on the grass" (repeat it), --eval-prompts-file F, '
            "or a --recipe that has eval prompts",
        )
    if eval_steps is not None and int(eval_steps) < 1:
        raise InvalidInput(f"--eval-steps must be at least 1, got {eval_steps}")
    if eval_seed is not None and not 0 <= int(eval_seed) < 2**63:
        raise InvalidInput(f"--eval-seed must be in [0, 2^63-1], got {eval_seed}")
    steps = int(settings.get("steps", eval_steps))
    guidance = float(settings.get("guidance"))
    shared_noise = float(settings.get("shared_noise"))
    seed = DEFAULT_EVAL_SEED if eval_seed is None else int(eval_seed)
    plan = EvalPlan(
        every=every,
        prompts=prompts,
        seed=seed,
        steps=steps,
        steps_source="--eval-steps" if eval_steps is not None else "setting",
        guidance=guidance,
        shared_noise=shared_noise,
        frames=frames,
        width=width,
        height=height,
        clip_model=str(settings.get("clip_model", clip_model)),
    )
    plan.sample_request("")  # the values are checked here, once, before training
    if saved is not None:
        fixed = ("prompts", "seed", "steps", "guidance", "shared_noise", "frames", "width", "height", "clip_model")
        differ = [k for k in fixed if saved.get(k) != getattr(plan, k)]
        if differ:
            raise InvalidInput(
                f"the eval settings ({', '.join(differ)}) differ from the checkpoint's",
                hint="resume with the same --eval-* options (or leave them out), or start over with --force",
            )
    if every > total_steps:
        log.warning("--eval-every %d is more than --steps %d: the motion is scored once, at the end", every, total_steps)
    return plan


def check_best_name(name: str, registry: Any, *, publish: bool, force: bool) -> str:
    """NAME-best must be a valid name, and free unless --force (checked before training)."""

    try:
        best = validate_name(best_name(name))
    except InvalidInput as e:
        raise InvalidInput(
            f"the best adapter's name '{best_name(name)}' is not a valid motion name ({e.message})",
            hint=f"use a --name of at most {64 - len(BEST_SUFFIX)} characters",
        ) from None
    if publish and registry.exists(best) and not force:
        raise NameTaken(best)
    return best


def check_out(out: str | Path) -> Path:
    """The --eval-out folder must be creatable and writable (checked before training)."""

    path = Path(out).expanduser()
    if path.exists() and not path.is_dir():
        raise InvalidInput(f"--eval-out {path} exists and is not a folder", hint="pass a folder for the eval videos")
    check_writable(path / "step-000000")
    return path


@contextlib.contextmanager
def isolated_rng(device: Any) -> Iterator[None]:
    """Run a block without changing torch's, numpy's or Python's global random state."""
    import torch

    py_state, np_state = random.getstate(), np.random.get_state()
    devices = []
    if device.type == "cuda":
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


def load_scorer(plan: EvalPlan, device: Any) -> Any:
    """CLIP for scoring: a missing model raises (with the `hf download` hint) before training.

    Loaded on the CPU: between evaluations its memory (1.7 GB for ViT-L/14) stays off the
    training device; `TrainingEvaluator` moves it there only to score.
    """

    with isolated_rng(device):
        return Scorer(plan.clip_model, device="cpu")


def make_engine(base: Any, *, own_base: bool, base_spec: str, device: Any) -> Any:
    """The engine that samples the eval videos, built as `lamp gen` builds its own.

    `own_base` (train_motion loaded the base itself, in fp32, and inflates its UNet in place):
    the engine loads the base again with gen's device and dtype; on an accelerator it keeps its
    models on the CPU between evaluations (offload), so training keeps the device's memory.
    A base passed in by the caller is shared, as `Engine(base)` always does.
    """

    with isolated_rng(device):  # inflating the engine's UNet draws random initial weights
        if own_base:
            loras = [(x["path"], x["weight"]) for x in base.extra.get("loras", [])]  # the same styled base
            return Engine(base_spec, device=device, dtype=settings.get("dtype"), offload=device.type != "cpu",
                          loras=loras)
        return Engine(base, dtype=settings.get("dtype"))


@dataclass
class TrainingEvaluator:
    """Samples and scores the adapter during training; remembers the history and the best step."""

    plan: EvalPlan
    scorer: Any  # evaluate.Scorer
    engine: Any  # engine.Engine
    name: str
    folder: Path  # the run folder: best.safetensors lives here
    adapter_dtype: Any  # torch dtype of the published adapter
    metadata: dict[str, str]  # lamp.* header of every scored adapter (name, base, frames, size)
    out: Path | None = None  # where to write each evaluation's videos (None: nowhere)
    first_frames: list[Any] = field(default_factory=list)  # images, or latents the base drew (as Engine.sample uses them)
    first_frame_info: list[dict[str, Any]] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    best: Any = None  # MotionAdapter of the best step so far
    best_point: dict[str, Any] | None = None

    @classmethod
    def start(
        cls,
        plan: EvalPlan,
        scorer: Any,
        base: Any,
        *,
        own_base: bool,
        base_spec: str,
        device: Any,
        name: str,
        folder: Path,
        adapter_dtype: Any,
        out: str | Path | None = None,
    ) -> TrainingEvaluator:
        """Build the engine and make the prompts' first frames (before the base is inflated)."""

        engine = make_engine(base, own_base=own_base, base_spec=base_spec, device=device)
        metadata = make_metadata(
            name=name,
            base_spec=base_spec,
            base_fingerprint=engine.base.fingerprint,
            architecture=architecture_of(dict(engine.video_unet.config)),
            frames=plan.frames,
            width=plan.width,
            height=plan.height,
            train={},
        )
        ev = cls(plan, scorer, engine, name, Path(folder), adapter_dtype, metadata, Path(out) if out is not None else None)
        ev.make_first_frames()
        return ev

    def make_first_frames(self) -> None:
        """Each prompt's text-to-image first frame, once: exactly the image `Engine.sample` would
        make itself for this prompt and seed (same generator call, same steps)."""

        t0 = time.perf_counter()
        # The generator `Engine.first_frames()` builds, held only here: once the frames are made,
        # the text-to-image model (SDXL by default) is freed instead of staying for the whole run.
        make = FirstFrameGenerator(self.engine.base, self.engine.place, model=self.engine.first_frame_model)
        with isolated_rng(self.engine.device):
            for prompt in self.plan.prompts:
                made = make(
                    prompt, width=self.plan.width, height=self.plan.height, steps=self.plan.steps,
                    negative="", seed=self.plan.seed,
                )
                self.first_frames.append(made.for_sampling)  # as `Engine.sample` would start from it
                self.first_frame_info.append({"source": "text-to-image", **made.info})
        del make
        if self.engine.device.type == "cuda":
            import torch

            torch.cuda.empty_cache()
        log.info("eval: %d first frames made in %.1f s", len(self.first_frames), time.perf_counter() - t0)

    # ---- one evaluation -------------------------------------------------------------------
    def candidate(self, video_unet: Any, step: int) -> Any:
        """The adapter of the training model now, exactly as it would be published (same dtype)."""

        return extract(video_unet, None, dtype=self.adapter_dtype, metadata={**self.metadata, "lamp.eval_step": str(step)})

    def evaluate(self, step: int, video_unet: Any, loss: float | None = None) -> dict[str, Any]:
        """Sample one video per prompt with the current adapter, score them, keep the best."""

        t0 = time.perf_counter()
        adapter = self.candidate(video_unet, step)
        clips, records = [], []
        with isolated_rng(self.engine.device):
            for prompt, image in zip(self.plan.prompts, self.first_frames, strict=True):
                result = self.engine.run(self.plan.sample_request(prompt), [(adapter, 1.0)], image)
                clips.append(result.frames)
                records.append(result.record)
            with self._clip_on_device():
                report = score_clips(
                    self.scorer, clips, self.plan.prompts, [f"{i:02d}" for i in range(len(clips))]
                )
        point = {
            "step": int(step),
            "alignment": report.mean_alignment,
            "consistency": report.mean_consistency,
            "diversity": report.diversity,
            "loss": loss,
            "seconds": round(time.perf_counter() - t0, 3),
            "videos": [
                {"prompt": v.prompt, "seed": self.plan.seed, "alignment": v.alignment, "consistency": v.consistency}
                for v in report.videos
            ],
        }
        if self.out is not None:
            point["videos_dir"] = str(self._write_videos(step, clips, records, report))
        self.history.append(point)
        if self.best_point is None or point["alignment"] > self.best_point["alignment"]:
            self.best, self.best_point = adapter, point
            self.folder.mkdir(parents=True, exist_ok=True)
            adapter.save(self.folder / BEST_FILE)  # atomic; survives Ctrl-C and crashes
        log.info(
            "eval at step %d: alignment %.2f, consistency %.2f (best: step %d, %.2f) in %.1f s",
            step, point["alignment"], point["consistency"], self.best_point["step"],
            self.best_point["alignment"], point["seconds"],
        )
        return point

    @contextlib.contextmanager
    def _clip_on_device(self) -> Iterator[None]:
        """CLIP on the training device while it scores, back on the CPU afterwards."""
        import torch

        clip, device = self.scorer.clip, self.engine.device
        if device.type == "cpu":
            yield
            return
        clip.model.to(device)
        clip.device = device
        try:
            yield
        finally:
            clip.model.to("cpu")
            clip.device = torch.device("cpu")
            if device.type == "cuda":
                torch.cuda.empty_cache()

    def _write_videos(self, step: int, clips: list[np.ndarray], records: list[dict[str, Any]], report: Any) -> Path:
        """`OUT/step-000500/00_<prompt>.mp4` with a sidecar: the record and the video's scores."""

        folder = self.out / f"step-{step:06d}"
        for i, (frames, record, score) in enumerate(zip(clips, records, report.videos, strict=True)):
            doc = {
                **record,
                "command": "train --eval-every",
                "first_frame": {**record.get("first_frame", {}), **self.first_frame_info[i]},
                "eval": {"motion": self.name, "step": step, "alignment": score.alignment, "consistency": score.consistency},
            }
            path = folder / f"{i:02d}_{slug(record['prompt'])}.mp4"
            save_video(frames, path, fps=float(settings.get("fps")), fmt="mp4", record=doc, overwrite=True)
        return folder

    # ---- state: checkpoints, metadata, --json ----------------------------------------------
    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps (the best adapter itself is in the run folder)."""
        return {"plan": self.plan.to_dict(), "history": self.history}

    def restore(self, state: dict[str, Any] | None) -> None:
        """Continue the history of a resumed run; reload its best adapter from the run folder."""
        if not state:
            return

        self.history = list(state.get("history", []))
        scored = [p for p in self.history if "alignment" in p and not p.get("discarded")]
        if not scored:
            return
        point = max(scored, key=lambda p: p["alignment"])  # max keeps the earliest of ties
        path = self.folder / BEST_FILE
        try:
            adapter = MotionAdapter.load(path)
            saved_step = int(adapter.metadata.get("lamp.eval_step", "-1"))
        except (OSError, ValueError, LampError):  # missing or damaged: the best is lost, not the run
            adapter, saved_step = None, -1
        if adapter is None or saved_step != point["step"]:
            log.warning(
                "the best adapter of the resumed run (step %d) is not in %s; the best is picked from "
                "the evaluations still to come", point["step"], path,
            )
            self.history = [dict(p, discarded=True) for p in self.history]
            return
        self.best, self.best_point = adapter, point

    def summary(self) -> dict[str, Any]:
        """The record for lamp.train["eval"] and `--json`."""
        best = None
        if self.best_point is not None:
            best = {k: self.best_point[k] for k in ("step", "alignment", "consistency", "loss")}
        return {
            **self.plan.to_dict(),
            "sampled_with": "lamp_cli.engine.Engine.sample, as lamp gen",
            "first_frames": self.first_frame_info,
            "history": self.history,
            "best": best,
        }

    def cleanup(self) -> None:
        """Delete the best adapter's file from the run folder (once published or returned)."""
        (self.folder / BEST_FILE).unlink(missing_ok=True)


def discard_stale_best(folder: Path) -> None:
    """A fresh run (not a resume) starts without a best adapter left by an earlier one."""
    (Path(folder) / BEST_FILE).unlink(missing_ok=True)
