"""Few-shot motion training (LAMP, docs/method.md): learn a motion from a handful of clips,
publish an adapter.

One run follows this path (`train_motion`):

1. check the inputs (name, options, every clip's length) before any model loads (`_check_run`);
2. encode every frame of every clip once with the frozen VAE (mean and std of its posterior, for the
   frames and their mirror images) and every prompt once with the frozen text encoder (`_load_models`);
3. inflate the base UNet to a `VideoUNet` and train its motion layers (`_loop`): each step draws a
   clip, a window of F frames at `stride`, a flip, a VAE sample, noise and a timestep; frame 0 stays
   clean; the loss is the MSE of the predicted noise on frames 2..F;
4. checkpoint (adapter tensors + optimizer state) every `checkpoint_every` steps and on Ctrl-C;
5. extract the adapter (only the deltas) and publish it to the registry (`_finish`).

Every random draw of step k comes from a generator seeded with (seed, process rank, k), so a resumed
run makes exactly the draws the uninterrupted run would have made.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
import random
import shlex
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .. import settings
from ..adapter import MotionAdapter, check_adapter_dtype, extract, make_metadata
from ..devices import resolve_device, resolve_dtype
from ..errors import Interrupted, InvalidInput, LampError, NameTaken, NotFound, from_os_error
from ..jsonio import dumps_strict
from ..models.base import BaseComponents, architecture_of, canonical_spec, load_base
from ..models.locate import require_base
from ..progress import Reporter, reporter_or_null
from ..recipes import load_recipe
from ..registry import Registry, validate_name
from ..requests import TrainRequest, check_positive, check_size
from . import eval as training_eval
from .data import (
    FLIP_PROBABILITY,
    Batch,
    ClipInfo,
    check_clips,
    diffusion_loss,
    draw_batch,
    encode_clips,
    resolve_prompts,
    step_generator,
    window_span,
)
from .eval import best_name
from .resume import (
    CHECKPOINT_FORMAT,
    check_resume,
    checkpoint_path,
    checkpoint_tensors,
    read_checkpoint_meta,
    restore_checkpoint,
    run_dir,
    save_checkpoint,
)

log = logging.getLogger("lamp")

MIXED_PRECISION_CHOICES = ("auto", "no", "fp16", "bf16")
DEFAULT_CHECKPOINT_EVERY = 1000
LOSS_EMA_BETA = 0.98  # the progress bar's smoothed loss averages over ~50 steps

# The reference recipe (docs/method.md "Training"): AdamW, constant lr, no warm-up, batch 1.
ADAM_BETAS = (0.9, 0.999)
WEIGHT_DECAY = 1e-2
ADAM_EPS = 1e-8
MAX_GRAD_NORM = 1.0


# --------------------------------------------------------------------------------------------
# results


@dataclass
class StepInfo:
    """Passed to `on_step` after every completed step."""

    step: int  # steps done so far (1-based)
    loss: float
    smoothed_loss: float
    batch: Batch


@dataclass
class TrainResult:
    name: str
    manifest: Any  # registry.Manifest, or None when not published (publish=False, non-main process)
    adapter: Any  # MotionAdapter
    losses: list[float]
    steps: int
    seconds: float
    seed: int
    final_loss: float  # smoothed (EMA) loss at the last step
    config: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    resumed_from: int = 0
    video_unet: Any = None  # the trained model (e.g. for DDIM inversion right after training)
    is_main_process: bool = True
    eval: dict[str, Any] | None = None  # train_eval's summary: settings, history, best step
    best_adapter: Any = None  # MotionAdapter of the best evaluated step (published as NAME-best)
    best_manifest: Any = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "digest": self.manifest.digest if self.manifest else None,
            "id": self.manifest.id if self.manifest else None,
            "steps": self.steps,
            "resumed_from": self.resumed_from,
            "final_loss": self.final_loss,
            "seconds": round(self.seconds, 3),
            "seed": self.seed,
            "adapter_bytes": self.manifest.size if self.manifest else self.adapter.nbytes(),
            "adapter_parameters": self.adapter.num_parameters(),
            "adapter_dtype": self.config.get("adapter_dtype"),
            "prompts": self.data.get("prompts"),
            "clips": len(self.data.get("clips", [])),
            "manifest": self.manifest.to_json() if self.manifest else None,
            "num_processes": self.config.get("num_processes", 1),
            "ranks_in_sync": self.config.get("ranks_in_sync"),
            "eval": self._eval_json(),
        }

    def _eval_json(self) -> dict[str, Any] | None:
        if self.eval is None:
            return None
        doc = {k: v for k, v in self.eval.items() if k != "first_frames"}
        if doc.get("best") is not None:
            m = self.best_manifest
            doc["best"] = {
                **doc["best"],
                "name": m.name if m else None,
                "digest": m.digest if m else None,
                "id": m.id if m else None,
            }
        return doc


# --------------------------------------------------------------------------------------------
# devices, precision, accelerate


def resolve_mixed_precision(mixed_precision: str | None, device: str) -> str:
    import torch

    mp = (mixed_precision or "auto").lower()
    if mp not in MIXED_PRECISION_CHOICES:
        raise InvalidInput(f"--mixed-precision must be one of {', '.join(MIXED_PRECISION_CHOICES)}, got '{mp}'")
    kind = device.split(":")[0]
    if mp == "auto":
        if kind == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "no"
    if mp == "fp16" and kind == "cpu":
        raise InvalidInput("fp16 mixed precision needs a GPU", hint="use --mixed-precision bf16 or no on CPU")
    return mp


def _distributed_launch() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def make_accelerator(mixed_precision: str, device: str) -> Any:
    """An `accelerate.Accelerator`; single process unless started by `accelerate launch`."""
    import torch
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    if not _distributed_launch():
        # accelerate keeps one process-wide state; lamp may train several times in one process
        # (tests, benchmarks) with different settings, so start from a clean one.
        AcceleratorState._reset_state(True)
        GradientState._reset_state()
        if device.startswith("cuda:"):
            torch.cuda.set_device(torch.device(device))
    return Accelerator(mixed_precision=mixed_precision, cpu=device == "cpu")


def _ranks_in_sync(accelerator: Any, params: list[Any]) -> bool:
    """Whether every process holds the same trained weights (gradients were synchronised):
    per-tensor float64 sums and sums of squares, gathered from all ranks and compared exactly."""
    import torch

    with torch.no_grad():
        local = torch.stack([t for p in params for t in (p.double().sum(), p.double().square().sum())])
    everyone = accelerator.gather(local.to(accelerator.device)).view(accelerator.num_processes, -1)
    same = bool((everyone == everyone[0]).all())
    if not same:
        log.warning("the processes' trained weights differ: gradients were not synchronised")
    return same


def make_optimizer(params: list[Any], lr: float, device: Any) -> Any:
    """The reference's AdamW; the fused CUDA kernel on GPU (one launch instead of one per tensor)."""
    import torch

    fused = torch.device(device).type == "cuda"
    return torch.optim.AdamW(params, lr=lr, betas=ADAM_BETAS, weight_decay=WEIGHT_DECAY, eps=ADAM_EPS, fused=fused)


# --------------------------------------------------------------------------------------------
# Ctrl-C: finish the step, checkpoint, exit 130


class _AbortNow(KeyboardInterrupt):
    """A second Ctrl-C: stop at once, without writing a checkpoint."""


class _StopRequest:
    """First Ctrl-C asks the loop to stop after the current step; a second one aborts."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> _StopRequest:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise _AbortNow()
        self.requested = True
        log.warning("stopping after this step to save a checkpoint (Ctrl-C again to abort without saving)")

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


# --------------------------------------------------------------------------------------------
# the training run


@dataclass
class _Options:
    """The resolved options of one run (what lamp.train records, with the data summary)."""

    base: str
    base_fingerprint: str
    clips: str
    clip_files: list[str]
    prompts: list[str]
    recipe: str | None
    steps: int
    frames: int
    stride: int
    width: int
    height: int
    lr: float
    seed: int
    mixed_precision: str
    gradient_checkpointing: bool | None
    checkpoint_every: int
    adapter_dtype: str
    device: str
    min_timestep: int = 0
    flip: bool = True


def _resume_command(clips: str | Path, name: str, base: str) -> str:
    cmd = ["lamp", "train", str(clips), "--name", name]
    if base != settings.get("base"):
        cmd += ["--base", base]
    return shlex.join(cmd + ["--resume"])


def _publish_failed(
    e: BaseException, name: str, steps: int, ckpt: Path, save_final: Callable[[], None] | None, resume: str
) -> LampError:
    """The error of a training whose publish failed (full disk, read-only registry, name taken):
    the trained state is saved (or the last checkpoint kept) and the message says how to publish it."""
    why = from_os_error(e, home=str(settings.lamp_home())).message if isinstance(e, OSError) else e.message  # type: ignore[union-attr]
    kept = None
    if save_final is not None:
        try:
            save_final()
            kept = f"the trained state (step {steps}) is saved in {ckpt}"
        except (OSError, LampError) as e2:
            log.warning("could not save the final checkpoint either: %s", e2)
    if kept is None:
        if ckpt.exists():
            step = read_checkpoint_meta(ckpt).get("step", "?")
            kept = f"the last checkpoint (step {step} of {steps}) is kept in {ckpt}"
        else:
            kept = "no checkpoint could be written (pass --checkpoint-every to keep one during training)"
    return LampError(
        f"training of '{name}' finished but publishing it failed: {why}. {kept}",
        hint=f"fix that, then run `{resume}`: it publishes without training again (or finishes the last steps)",
    )


def _evaluate_safely(evaluator: Any, step: int, video_unet: Any, loss: float) -> None:
    """Score the motion at `step`; a failed evaluation is reported, and training goes on."""
    try:
        evaluator.evaluate(step, video_unet, loss)
    except KeyboardInterrupt:
        raise
    except Exception as e:  # e.g. out of memory while sampling: the run is worth more than one score
        log.warning("evaluation at step %d failed (%s: %s); training goes on", step, type(e).__name__, e)
        evaluator.history.append({"step": step, "error": f"{type(e).__name__}: {e}"})


def _best_adapter(evaluator: Any, train_record: dict[str, Any], md: dict[str, str]) -> Any:
    """NAME-best: the best step's tensors with the run's header, its own name and step count."""
    point = evaluator.best_point
    record = {
        **train_record,
        "steps": point["step"],  # the steps this adapter was trained for (the manifest shows them)
        "final_loss": point["loss"],
        "selected": {"by": evaluator.plan.score, "step": point["step"], "run_steps": train_record["steps"], "last": evaluator.name},
    }
    header = {**md, "lamp.name": best_name(evaluator.name), "lamp.train": dumps_strict(record, what="the training record (lamp.train)", sort_keys=True, default=str)}
    return MotionAdapter(evaluator.best.tensors, header)


@dataclass
class _Run:
    """A checked `TrainRequest` and what checking it found: the registry, the clips, the
    checkpoint (resume), the evaluation plan."""

    request: TrainRequest
    registry: Any
    infos: list[ClipInfo]
    ckpt: Path
    meta: dict[str, Any] | None
    eval_plan: Any
    eval_out: Path | None
    loras: Any = None  # image LoRAs fused into the base: the motion is learned on the styled base


def _checkpoint_state(name: str, *, resume: bool, force: bool) -> tuple[Path, dict[str, Any] | None]:
    """The run's checkpoint path and, with `resume`, its header (an unfinished run is never
    silently overwritten: it needs --resume or --force)."""
    ckpt = checkpoint_path(name)
    if resume:
        if not ckpt.exists():
            raise NotFound(f"no checkpoint to resume for '{name}' (looked for {ckpt})", hint="run without --resume")
        return ckpt, read_checkpoint_meta(ckpt)
    if ckpt.exists():
        if not force:
            step_done = read_checkpoint_meta(ckpt).get("step", "?")
            raise InvalidInput(
                f"an unfinished run of '{name}' has a checkpoint at step {step_done} ({ckpt})",
                hint="pass --resume to continue it, or --force to start over (discards it)",
            )
        ckpt.unlink()
    return ckpt, None


def _check_run(clips: str | Path, name: str, base: Any, kw: dict[str, Any]) -> _Run:
    """Step 1: every check that needs no model. Values left as None come from the checkpoint
    (resume), else the recipe, else the settings."""
    validate_name(name)
    registry = kw["registry"] if kw["registry"] is not None else Registry()
    publish, force = kw["publish"], kw["force"]
    if publish and registry.exists(name) and not force:
        raise NameTaken(name)
    if kw["adapter_dtype"] is not None:
        check_adapter_dtype(kw["adapter_dtype"])
    ckpt, meta = _checkpoint_state(name, resume=kw["resume"], force=force)
    saved = (meta or {}).get("options", {})
    rec = load_recipe(kw["recipe"]) if kw["recipe"] is not None else None

    sources: dict[str, str] = {}
    shown: dict[str, str] = {}

    def pick(key: str, setting: str | None = None) -> Any:
        """CLI > checkpoint (resume) > recipe > LAMP_<KEY> > config.toml > default; records the source."""
        if kw[key] is not None:
            sources[key] = "--" + key.replace("_", "-")
            return kw[key]
        if key in saved:
            sources[key] = f"the checkpoint of '{name}'"
            return saved[key]
        if rec is not None and getattr(rec, key, None) is not None:
            sources[key] = f"recipe '{rec.name}'"
            return getattr(rec, key)
        r = settings.resolve(setting or key)
        sources[key] = r.origin
        shown[key] = setting or key  # LAMP_TRAIN_STEPS / train_steps = ... in config.toml
        return r.value

    def number(key: str, setting: str | None = None, kind: type = int) -> Any:
        value = pick(key, setting)
        return check_positive(shown.get(key, key), value, {shown.get(key, key): sources[key]}, kind)

    if meta is not None:
        check_resume(saved, **{k: kw[k] for k in ("frames", "stride", "width", "height", "lr")})
        check_resume(saved, min_timestep=kw["min_timestep"], flip=kw["flip"], seed=kw["seed"])
    base_spec = base.spec if isinstance(base, BaseComponents) else pick("base")
    if not isinstance(base, BaseComponents):
        require_base(str(base_spec))  # before any model loads: BaseModelMissing with the download hint
    steps = number("steps", "train_steps")
    frames, stride, width, height = number("frames"), number("stride"), number("width"), number("height")
    lr = number("lr", kind=float)
    min_timestep = int(saved.get("min_timestep", 0) if kw["min_timestep"] is None else kw["min_timestep"])
    flip = bool(saved.get("flip", True) if kw["flip"] is None else kw["flip"])
    if not 0 <= min_timestep < 1000:
        raise InvalidInput(f"--min-timestep must be in [0, 1000), got {min_timestep}")
    check_size("width", width, sources)
    check_size("height", height, sources)
    seed = kw["seed"] if kw["seed"] is not None else saved.get("seed", random.SystemRandom().randrange(2**31))
    adapter_dtype = kw["adapter_dtype"] or saved.get("adapter_dtype", "fp16")
    checkpoint_every = kw["checkpoint_every"]
    if checkpoint_every is None:
        checkpoint_every = saved.get("checkpoint_every", DEFAULT_CHECKPOINT_EVERY)
    if checkpoint_every < 0:
        raise InvalidInput(f"--checkpoint-every must be 0 (only on Ctrl-C) or positive, got {checkpoint_every}")
    # a checkpoint at exactly --steps is a finished run whose publish failed: resuming publishes it
    if meta is not None and meta["step"] > steps:
        raise InvalidInput(
            f"the checkpoint of '{name}' is at step {meta['step']}, past --steps {steps}",
            hint=f"pass --steps {meta['step']} or more",
        )
    eval_plan, eval_out = _check_eval(name, registry, kw, rec, meta, frames=frames, width=width, height=height,
                                      steps=steps)
    infos, prompts = _check_data(clips, kw, rec, meta, saved, frames=frames, stride=stride)
    # Last: which devices exist is torch's to say.
    dev = str(resolve_device(kw["device"] or settings.get("device")))  # "cpu", "cuda", "cuda:1", "mps"
    given_mp = kw["mixed_precision"]
    mp = resolve_mixed_precision(given_mp if given_mp is not None else saved.get("mixed_precision"), dev)
    if meta is not None:
        check_resume(saved, mixed_precision=mp if given_mp is not None else None)
    request = TrainRequest(
        name=name, clips=str(clips), base_spec=canonical_spec(str(base_spec)), steps=steps, frames=frames, stride=stride,
        width=width, height=height, lr=lr, seed=seed, min_timestep=min_timestep, flip=flip,
        adapter_dtype=adapter_dtype, checkpoint_every=checkpoint_every, device=dev, mixed_precision=mp,
        prompts=tuple(prompts), clip_files=tuple(str(i.path.name) for i in infos), recipe=kw["recipe"],
        publish=publish, force=force, window_start=kw["window_start"], seed_note=kw["seed_note"],
        gradient_checkpointing=kw["gradient_checkpointing"], sources=dict(sources),
    )
    return _Run(request=request, registry=registry, infos=infos, ckpt=ckpt, meta=meta, eval_plan=eval_plan,
                eval_out=eval_out, loras=kw["loras"])


def _check_eval(name: str, registry: Any, kw: dict[str, Any], rec: Any, meta: dict[str, Any] | None, *,
                frames: int, width: int, height: int, steps: int) -> tuple[Any, Path | None]:
    """The evaluation plan of the run (None: no evaluation during training) and its --eval-out."""
    eval_plan = training_eval.resolve_eval_plan(
        kw["eval_every"], kw["eval_prompts"], frames=frames, width=width, height=height, total_steps=steps,
        eval_steps=kw["eval_steps"], eval_seed=kw["eval_seed"], clip_model=kw["clip_model"],
        recipe_prompts=rec.eval_prompts if rec is not None else None,
        saved=((meta or {}).get("eval") or {}).get("plan"),
    )
    eval_out = kw["eval_out"]
    if eval_plan is not None:
        training_eval.check_best_name(name, registry, publish=kw["publish"], force=kw["force"])
        if eval_out is not None:
            eval_out = training_eval.check_out(eval_out)
    elif eval_out is not None:
        raise InvalidInput("--eval-out needs --eval-every N", hint="e.g. --eval-every 500")
    return eval_plan, eval_out


def _check_data(clips: str | Path, kw: dict[str, Any], rec: Any, meta: dict[str, Any] | None,
                saved: dict[str, Any], *, frames: int, stride: int) -> tuple[list[ClipInfo], list[str]]:
    """Every clip long enough for a window, and each clip's prompt (as trained, on resume)."""
    infos = check_clips(clips, frames, stride)
    window_start = kw["window_start"]
    for info in infos if window_start is not None else []:
        if window_start < 0 or window_start + window_span(frames, stride) > info.num_frames:
            raise InvalidInput(f"clip {info.path} has no window of {frames} frames at stride {stride} from frame {window_start}")
    prompts = resolve_prompts(clips, infos, kw["prompt"], rec.prompt if rec is not None else None)
    if meta is not None:
        if kw["prompt"] is None and rec is None:
            prompts = list(saved.get("prompts", prompts))  # as trained, whatever the folder holds now
        else:
            check_resume(saved, prompts=prompts)
        check_resume(saved, clip_files=[str(i.path.name) for i in infos])
    return infos, prompts


@dataclass
class _Models:
    """Step 2's result: the accelerator, the base, cached latents and text, the model to train."""

    accelerator: Any
    base: Any
    own_base: bool
    cache: Any
    text: Any
    unique_prompts: list[str]
    opts: _Options
    evaluator: Any
    model: Any
    optimizer: Any
    params: list[Any]
    names: list[str]
    scheduler: Any
    losses: list[float]
    start_step: int
    elapsed_before: float
    progress: Any = None  # Reporter (a null one on processes other than the main one)


def _load_models(run: _Run, base: Any, progress: Reporter | None) -> _Models:
    """Step 2: accelerator, seeds, the base, the latents and text cache, the video UNet and its
    optimizer (restored from the checkpoint on resume)."""
    import numpy as np
    import torch


    accelerator = make_accelerator(run.request.mixed_precision, run.request.device)
    is_main = accelerator.is_main_process
    progress = reporter_or_null(progress if is_main else None)
    if is_main:
        log.info("%s", (run.request.seed_note or "seed {seed} (--seed {seed} repeats this run)").format(seed=run.request.seed))
    scorer = None
    if run.eval_plan is not None and is_main:  # a missing CLIP model fails here, before any training
        scorer = training_eval.load_scorer(run.eval_plan, accelerator.device)
    random.seed(run.request.seed)
    np.random.seed(run.request.seed % 2**32)
    torch.manual_seed(run.request.seed)
    own_base = not isinstance(base, BaseComponents)
    if own_base:
        base = load_base(run.request.base_spec, device="cpu", loras=run.loras)  # LoRAs: a styled base
    elif run.loras:
        raise InvalidInput("loras apply when train_motion loads the base", hint="pass them to load_base instead")
    if run.meta is not None:
        check_resume(run.meta.get("options", {}), base_fingerprint=base.fingerprint)
    device_t = accelerator.device
    if own_base:  # the frozen encoders run once on the accelerator, then go back to the CPU
        base.vae.to(device_t)
        base.text_encoder.to(device_t)
    progress.start("encode clips", len(run.infos))
    cache = encode_clips(base, run.infos, run.request.prompts, width=run.request.width, height=run.request.height,
                         need=window_span(run.request.frames, run.request.stride), progress=progress)
    progress.finish()
    unique_prompts = list(dict.fromkeys(run.request.prompts))
    text = base.encode_prompt(unique_prompts).float().to(device_t)  # P×77×D
    if own_base:
        base.vae.to("cpu")
        base.text_encoder.to("cpu")
    r = run.request
    opts = _Options(
        base=r.base_spec, base_fingerprint=base.fingerprint, clips=str(Path(r.clips).expanduser().resolve()),
        clip_files=list(r.clip_files), prompts=list(r.prompts), recipe=r.recipe, steps=r.steps, frames=r.frames,
        stride=r.stride, width=r.width, height=r.height, lr=r.lr, seed=r.seed, mixed_precision=r.mixed_precision,
        gradient_checkpointing=r.gradient_checkpointing, checkpoint_every=r.checkpoint_every,
        adapter_dtype=r.adapter_dtype, device=str(device_t), min_timestep=r.min_timestep, flip=r.flip,
    )
    evaluator = None
    if run.meta is None and is_main:
        training_eval.discard_stale_best(run_dir(run.request.name))
    if scorer is not None:  # built before the base UNet is inflated: its engine needs the 2-D UNet
        evaluator = training_eval.TrainingEvaluator.start(
            run.eval_plan, scorer, base, own_base=own_base, base_spec=run.request.base_spec, device=device_t,
            name=run.request.name, folder=run_dir(run.request.name), adapter_dtype=resolve_dtype(run.request.adapter_dtype), out=run.eval_out,
        )
        evaluator.restore((run.meta or {}).get("eval"))
    m = _inflate(run, base, own_base, accelerator, cache, text, unique_prompts, opts, evaluator)
    m.progress = progress
    return m


def _inflate(run: _Run, base: Any, own_base: bool, accelerator: Any, cache: Any, text: Any,
             unique_prompts: list[str], opts: _Options, evaluator: Any) -> _Models:
    """The video UNet to train and its optimizer, restored from the checkpoint on resume."""
    from ..models.video_unet import VideoUNet

    device_t = accelerator.device
    # A passed-in base is shared (e.g. by an Engine): inflate a copy, never the caller's UNet.
    unet2d = base.unet if own_base else copy.deepcopy(base.unet)
    video_unet = VideoUNet.from_unet2d(unet2d.to(device_t)).freeze_base()
    gc = run.request.gradient_checkpointing
    use_ckpt = device_t.type == "cuda" if gc is None else bool(gc)
    opts.gradient_checkpointing = use_ckpt
    video_unet.set_gradient_checkpointing(use_ckpt)
    video_unet.train()
    trainable = video_unet.trainable_parameters()
    names = [n for n, _ in trainable]
    optimizer = make_optimizer([p for _, p in trainable], run.request.lr, device_t)
    losses: list[float] = []
    start_step, elapsed_before = 0, 0.0
    meta = run.meta
    if meta is not None:
        restore_checkpoint(run.ckpt, video_unet, optimizer, names, meta)
        start_step, elapsed_before = int(meta["step"]), float(meta["seconds"])
        losses = [math.nan if v is None else v for v in meta["losses"]]
        if accelerator.is_main_process:
            log.info("resuming '%s' at step %d of %d", run.request.name, start_step, run.request.steps)
    model, optimizer = accelerator.prepare(video_unet, optimizer)
    if meta is not None and meta.get("scaler") and accelerator.scaler is not None:
        accelerator.scaler.load_state_dict(meta["scaler"])
    return _Models(
        accelerator=accelerator, base=base, own_base=own_base, cache=cache, text=text,
        unique_prompts=unique_prompts, opts=opts, evaluator=evaluator, model=model, optimizer=optimizer,
        params=[p for _, p in trainable], names=names, scheduler=base.ddpm(), losses=losses,
        start_step=start_step, elapsed_before=elapsed_before,
    )


class _LossEMA:
    """The progress bar's smoothed loss (bias-corrected EMA)."""

    def __init__(self, losses: list[float]):
        self.ema = 0.0
        for value in losses:
            self.add(value)

    def add(self, value: float) -> None:
        self.ema = LOSS_EMA_BETA * self.ema + (1 - LOSS_EMA_BETA) * value

    def value(self, n: int) -> float:
        return self.ema / (1 - LOSS_EMA_BETA**n) if n else float("nan")


def _write_checkpoint(run: _Run, m: _Models, step_done: int, seconds: float) -> None:
    """Save the run at `step_done` (main process; every process waits for it)."""
    import numpy as np

    accelerator = m.accelerator
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(m.model)
        py = random.getstate()
        np_state = np.random.get_state()
        meta_out = {
            "format": CHECKPOINT_FORMAT,
            "name": run.request.name,
            "step": step_done,
            "seconds": seconds,
            "losses": m.losses,
            "options": asdict(m.opts),
            "param_groups": [
                {k: v for k, v in g.items() if k != "params"} for g in m.optimizer.state_dict()["param_groups"]
            ],
            "scaler": accelerator.scaler.state_dict() if accelerator.scaler is not None else None,
            "python_rng": [py[0], list(py[1]), py[2]],
            "numpy_rng": [np_state[0], *np_state[2:]],
            "eval": m.evaluator.state() if m.evaluator is not None else None,
        }
        save_checkpoint(run.ckpt, checkpoint_tensors(unwrapped, m.optimizer, m.names), meta_out)
    accelerator.wait_for_everyone()


def _train_step(run: _Run, m: _Models, step: int, rank: int, num_t: int) -> tuple[Any, Batch]:
    """Draw step `step`'s batch, compute its loss and gradients (the update is the caller's)."""
    import torch

    device_t = m.accelerator.device
    batch = draw_batch(
        step_generator(run.request.seed, rank, step), m.cache, frames=run.request.frames, stride=run.request.stride,
        num_train_timesteps=num_t, window_start=run.request.window_start,
        flip_probability=FLIP_PROBABILITY if run.request.flip else 0.0, min_timestep=run.request.min_timestep,
    )
    timestep = torch.tensor([batch.timestep], device=device_t)
    loss = diffusion_loss(
        m.model, m.scheduler, batch.latents.to(device_t), batch.noise.to(device_t), timestep,
        m.text[batch.prompt_index : batch.prompt_index + 1],
    )
    m.accelerator.backward(loss)
    m.accelerator.clip_grad_norm_(m.params, MAX_GRAD_NORM)
    return loss, batch


def _loop(run: _Run, m: _Models, progress: Reporter, on_step: Callable[[StepInfo], None] | None) -> float:
    """Step 3: train from the checkpoint's step (or 0) to `run.request.steps`; Ctrl-C checkpoints and
    raises Interrupted with the resume command. Returns the loop's seconds (resumed ones included)."""
    accelerator = m.accelerator
    rank = accelerator.process_index
    num_t = int(m.scheduler.config.num_train_timesteps)
    ema = _LossEMA(m.losses)
    t_loop = time.perf_counter()
    progress.start("train", run.request.steps - m.start_step)
    step_done = m.start_step
    in_update = False
    try:
        with _StopRequest() as stop:
            for step in range(m.start_step, run.request.steps):
                loss, batch = _train_step(run, m, step, rank, num_t)
                in_update = True  # a raw interrupt from here on may leave parameters half-updated
                m.optimizer.step()
                m.optimizer.zero_grad(set_to_none=True)
                in_update = False
                if accelerator.num_processes > 1:
                    loss = accelerator.reduce(loss.detach(), reduction="mean")
                value = float(loss.detach())
                m.losses.append(value)
                step_done = step + 1
                ema.add(value)
                smoothed = ema.value(len(m.losses))
                progress.advance(1, step=f"{step_done}/{run.request.steps}", loss=smoothed)
                if on_step is not None:
                    on_step(StepInfo(step_done, value, smoothed, batch))
                if stop.requested:
                    raise KeyboardInterrupt
                if run.eval_plan is not None and run.eval_plan.due(step_done, run.request.steps):
                    accelerator.wait_for_everyone()
                    if m.evaluator is not None:
                        _evaluate_safely(m.evaluator, step_done, accelerator.unwrap_model(m.model), smoothed)
                    accelerator.wait_for_everyone()
                    if stop.requested:  # Ctrl-C while sampling: stop now, with the score kept
                        raise KeyboardInterrupt
                if run.request.checkpoint_every and step_done % run.request.checkpoint_every == 0 and step_done < run.request.steps:
                    _write_checkpoint(run, m, step_done, m.elapsed_before + time.perf_counter() - t_loop)
    except _AbortNow:
        progress.finish()
        raise
    except KeyboardInterrupt:
        progress.finish()
        if in_update:
            log.warning("interrupted inside an optimizer update; not saving a checkpoint")
            raise
        _write_checkpoint(run, m, step_done, m.elapsed_before + time.perf_counter() - t_loop)
        raise Interrupted(
            f"training of '{run.request.name}' interrupted after step {step_done} of {run.request.steps}; checkpoint saved to {run.ckpt}",
            hint=f"resume with: {_resume_command(run.request.clips, run.request.name, run.request.base_spec)}",
        ) from None
    progress.finish()
    return m.elapsed_before + time.perf_counter() - t_loop


def _train_record(run: _Run, m: _Models, seconds: float, final_loss: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """What `lamp.train` records about the run, and its data summary."""
    scheduler = m.scheduler
    data = {
        "clips": [dict(i.summary(), prompt=p) for i, p in zip(run.infos, run.request.prompts, strict=True)],
        "total_frames": sum(i.num_frames for i in run.infos),
        "prompts": m.unique_prompts,
    }
    record = {
        **{k: v for k, v in asdict(m.opts).items() if k not in ("clip_files", "device")},
        "prompt": m.unique_prompts[0] if len(m.unique_prompts) == 1 else None,
        "optimizer": {
            "name": "AdamW",
            "betas": list(ADAM_BETAS),
            "weight_decay": WEIGHT_DECAY,
            "eps": ADAM_EPS,
            "max_grad_norm": MAX_GRAD_NORM,
            "batch_size": 1,
        },
        "flip_probability": FLIP_PROBABILITY if run.request.flip else 0.0,
        "window_start": run.request.window_start,
        "first_frame": "clean latent, excluded from the loss",
        "noise_scheduler": {k: scheduler.config[k] for k in ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "prediction_type") if k in scheduler.config},
        "trainable_parameters": int(sum(p.numel() for p in m.params)),
        "num_processes": m.accelerator.num_processes,
        # a collective: every rank must reach it
        "ranks_in_sync": _ranks_in_sync(m.accelerator, m.params) if m.accelerator.num_processes > 1 else None,
        "data": data,
        "final_loss": final_loss,
        "seconds": round(seconds, 3),
        "started_from_step": m.start_step,
    }
    if m.evaluator is not None:
        record["eval"] = m.evaluator.summary()
    return record, data


def _finish(run: _Run, m: _Models, seconds: float) -> TrainResult:
    """Step 4: extract the adapter (and NAME-best), publish, remove the checkpoint."""

    accelerator, evaluator = m.accelerator, m.evaluator
    ema = _LossEMA(m.losses)
    final_loss = ema.value(len(m.losses))
    trained = accelerator.unwrap_model(m.model, keep_fp32_wrapper=False)
    train_record, data = _train_record(run, m, seconds, final_loss)
    md = make_metadata(
        name=run.request.name, base_spec=run.request.base_spec, base_fingerprint=m.base.fingerprint,
        architecture=architecture_of(dict(trained.config)), frames=run.request.frames, width=run.request.width,
        height=run.request.height, train=train_record,
    )
    adapter = extract(trained, None, dtype=resolve_dtype(run.request.adapter_dtype), metadata=md)
    manifest = best_adapter = best_manifest = None
    if evaluator is not None and evaluator.best is not None:
        best_adapter = _best_adapter(evaluator, train_record, md)
    is_main = accelerator.is_main_process
    if is_main:
        source = f"lamp train {m.opts.clips}"
        if run.request.publish:
            try:
                manifest = run.registry.publish_adapter(adapter, force=run.request.force, source=source)
                if best_adapter is not None:
                    best_manifest = run.registry.publish_adapter(
                        best_adapter, force=run.request.force, source=f"{source} (best of '{run.request.name}')"
                    )
            except (OSError, LampError) as e:
                req = run.request
                single = accelerator.num_processes == 1
                final = (lambda: _write_checkpoint(run, m, req.steps, seconds)) if single else None
                resume = _resume_command(req.clips, req.name, req.base_spec)
                raise _publish_failed(e, req.name, req.steps, run.ckpt, final, resume) from None
        if evaluator is not None:
            evaluator.cleanup()
        run.ckpt.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            run.ckpt.parent.rmdir()
    accelerator.wait_for_everyone()
    return TrainResult(
        name=run.request.name, manifest=manifest, adapter=adapter, losses=m.losses, steps=run.request.steps, seconds=seconds,
        seed=run.request.seed, final_loss=final_loss, config=train_record, data=data, resumed_from=m.start_step,
        video_unet=trained, is_main_process=is_main, eval=train_record.get("eval"), best_adapter=best_adapter,
        best_manifest=best_manifest,
    )


def train_motion(
    clips: str | Path,
    name: str,
    *,
    base: Any = None,
    prompt: str | None = None,
    recipe: str | None = None,
    steps: int | None = None,
    frames: int | None = None,
    stride: int | None = None,
    width: int | None = None,
    height: int | None = None,
    lr: float | None = None,
    seed: int | None = None,
    mixed_precision: str | None = None,
    gradient_checkpointing: bool | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    force: bool = False,
    registry: Any = None,
    device: str | None = "auto",
    progress: Reporter | None = None,
    adapter_dtype: str | None = None,
    publish: bool = True,
    eval_every: int | None = None,
    eval_prompts: list[str] | None = None,
    eval_steps: int | None = None,
    eval_seed: int | None = None,
    clip_model: str | None = None,
    eval_out: str | Path | None = None,
    on_step: Callable[[StepInfo], None] | None = None,
    window_start: int | None = None,
    flip: bool | None = None,
    seed_note: str | None = None,
    min_timestep: int | None = None,
    loras: Any = None,
) -> TrainResult:
    """Learn a motion from `clips` (a folder of videos, or one video) and publish it as `name`.

    Options left as None come from, in order: the checkpoint (with `resume`), the `recipe`, the
    settings (`lamp doctor` shows them: base, frames, width, height, stride, lr, train_steps).
    `mixed_precision`: "auto" (bf16/fp16 on CUDA, none elsewhere), "no", "fp16", "bf16".
    `gradient_checkpointing`: None = on for CUDA, off elsewhere. `checkpoint_every`: None =
    every 1000 steps, 0 = only on Ctrl-C. `adapter_dtype`: fp16 (default), bf16 or fp32.
    `force` replaces a motion of that name and discards an unfinished run's checkpoint.
    `on_step(StepInfo)` is called after every step. `window_start` fixes every step's window
    start and `flip=False` turns off the random horizontal flip (default on, as the reference):
    needed for one-video tuning (`lamp edit`) and for motions with a left/right direction, which a
    mirror image reverses.
    `min_timestep`: train only on noise levels t >= this (default 0: all, as the reference); the
    motion of frames 2.. is decided at high noise, where ε-prediction's loss is weakest.
    `seed_note`: the line logged about the seed, `{seed}` replaced (default: `lamp train`'s
    "seed N (--seed N repeats this run)"; `lamp edit` says its tuning seed is not its --seed).
    The checkpoint is deleted once the adapter is published (or returned, with `publish=False`).
    `eval_every` N with `eval_prompts` (else the recipe's): every N steps and at the end, sample
    the prompts with the engine as `lamp gen` does (`eval_steps` DDIM steps, default setting
    'steps'; seed `eval_seed`, default 0) and score them with CLIP (`clip_model`); the best step
    by mean text alignment is published as NAME-best beside NAME (see lamp_cli/train/eval.py).
    `loras`: image LoRAs (`FILE[:WEIGHT]` or (path, weight)) fused into the base before training.
    `eval_out`: a folder for each evaluation's videos (`step-000500/00_<prompt>.mp4`, with sidecars).
    """
    kw = {k: v for k, v in locals().items() if k not in ("clips", "name", "progress", "on_step")}
    run = _check_run(clips, name, base, kw)
    models = _load_models(run, base, progress)
    seconds = _loop(run, models, models.progress, on_step)
    return _finish(run, models, seconds)
