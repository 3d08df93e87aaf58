"""Two processes on the CPU (torchrun / `accelerate launch`, gloo): training resumes
and finishes with both ranks holding the same weights, equal to a one-process run with the same
effective batch; rank 0 alone publishes; `lamp gen
--prompts-file` writes every video exactly once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lamp_cli.cli.app import main

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--frames", "4", "--width", "32", "--height", "32", "--seed", "3", "--checkpoint-every", "0"]


def launch(args: list[str]) -> subprocess.CompletedProcess[str]:
    # torchrun, as `accelerate launch --multi_gpu` runs it (`accelerate launch --cpu` with several
    # processes wants MPI); lamp's Accelerator then runs on the CPU with gloo.
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "lamp_cli", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)


@pytest.fixture
def clips(tmp_path: Path) -> Path:
    from lamp_cli.video import write_video

    folder = tmp_path / "square_moves_right"
    folder.mkdir()
    for k in range(2):
        frames = np.zeros((7, 32, 32, 3), np.uint8)
        for t in range(7):
            frames[t, 12:20, (3 * t + k) % 24 : (3 * t + k) % 24 + 8] = 255
        write_video(frames, folder / f"c{k}.mp4", fps=8)
    return folder


def single_process_reference(clips: Path, base_dir: Path, *, lr: float, ranks_per_step: list[int]) -> dict:
    """The trainer's steps written out in one process, each step on the mean loss of the draws
    of ranks 0..n-1 (seed 3, 4 frames at 32×32 as TINY): the adapter tensors in fp32."""
    import copy

    import torch

    import lamp_cli.train as tr
    from lamp_cli.adapter import extract
    from lamp_cli.models.base import load_base
    from lamp_cli.models.video_unet import VideoUNet

    base = load_base(str(base_dir))
    infos = tr.check_clips(clips, 4, 1)
    prompts = [tr.prompt_from_path(clips)] * len(infos)
    cache = tr.encode_clips(base, infos, prompts, width=32, height=32, need=tr.window_span(4, 1))
    text = base.encode_prompt(prompts[:1]).float()
    torch.manual_seed(3)  # attn_temp's q/k/v start random, from the seeded global generator
    vu = VideoUNet.from_unet2d(copy.deepcopy(base.unet)).freeze_base().train()
    params = [p for _, p in vu.trainable_parameters()]
    optimizer = tr.loop.make_optimizer(params, lr, "cpu")
    scheduler = base.ddpm()
    num_t = int(scheduler.config.num_train_timesteps)
    for step, ranks in enumerate(ranks_per_step):
        losses = []
        for rank in range(ranks):
            b = tr.draw_batch(tr.data.step_generator(3, rank, step), cache, frames=4, stride=1, num_train_timesteps=num_t)
            losses.append(tr.diffusion_loss(vu, scheduler, b.latents, b.noise, torch.tensor([b.timestep]), text))
        (sum(losses) / ranks).backward()
        torch.nn.utils.clip_grad_norm_(params, tr.loop.MAX_GRAD_NORM)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return {k: v.float() for k, v in extract(vu, None, dtype=torch.float32).tensors.items()}


def test_two_processes_train_in_sync_publish_once_and_split_gen(clips, capsys, monkeypatch, tiny_base_dir, lamp_env, tmp_path):
    import lamp_cli.train as tr

    # An interrupted run leaves a checkpoint at step 2 (as Ctrl-C would) ...
    real_loss, calls = tr.diffusion_loss, {"n": 0}

    def interrupted_on_third_step(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_loss(*args, **kw)

    monkeypatch.setattr(tr.loop, "diffusion_loss", interrupted_on_third_step)
    with pytest.raises(SystemExit) as e:
        main(["train", str(clips), "--name", "sq", "--base", str(tiny_base_dir), "--steps", "4", "--lr", "1e-3", *TINY])
    assert e.value.code == 130, capsys.readouterr().err
    assert (lamp_env / "runs" / "sq" / "checkpoint.safetensors").exists()

    # ... which two processes resume and finish.
    run = launch(["train", str(clips), "--name", "sq", "--base", str(tiny_base_dir), "--resume", "--json"])
    assert run.returncode == 0, run.stderr[-3000:]
    docs = [line for line in run.stdout.splitlines() if line.startswith("{")]
    assert len(docs) == 1  # only rank 0 reports
    doc = json.loads(run.stdout[run.stdout.index("{"):])
    assert doc["resumed_from"] == 2 and doc["steps"] == 4
    assert doc["num_processes"] == 2 and doc["ranks_in_sync"] is True  # gradients were synchronised
    from lamp_cli.registry import Registry

    assert [m.name for m in Registry().list()] == ["sq"] and Registry().get("sq").digest == doc["digest"]
    assert not (lamp_env / "runs" / "sq").exists()  # the checkpoint is gone after publishing
    # The same run in one process with the same effective batch: steps 1-2 on rank 0's draws,
    # steps 3-4 on the mean loss of rank 0's and rank 1's draws (what averaged gradients train).
    reference = single_process_reference(clips, tiny_base_dir, lr=1e-3, ranks_per_step=[1, 1, 2, 2])
    published = Registry().load_adapter("sq").tensors
    assert set(published) == set(reference)
    diff = torch.cat([(published[k].float() - ref).flatten() for k, ref in reference.items()])
    size = torch.cat([ref.flatten() for ref in reference.values()])
    # fp16 storage (the adapter dtype) and another summation order. Weights whose gradient is ~0
    # (the gates, while the temporal convs are still ~0) take Adam steps (±lr) whose sign is that
    # noise, so: all weights within the 4 steps' bound 4·lr, 99.9 % within 1e-4 (lr/10), and the
    # whole difference under 2 % of the trained weights' size (L2).
    worst = {k: float((published[k].float() - r).abs().max()) for k, r in reference.items()}
    assert diff.abs().max() <= 4e-3, sorted(worst.items(), key=lambda kv: -kv[1])[:5]
    assert (diff.abs() > 1e-4).float().mean() <= 1e-3
    assert diff.norm() <= 0.02 * size.norm()

    # `lamp gen --prompts-file` under two processes: every prompt's video exactly once.
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\na blue square\na green star\n")
    out = tmp_path / "videos"
    run = launch(["gen", "sq", "--base", str(tiny_base_dir), "--prompts-file", str(prompts), "-o", str(out),
                  "--frames", "4", "--width", "32", "--height", "32", "--steps", "1", "--seed", "1", "--format", "gif"])
    assert run.returncode == 0, run.stderr[-3000:]
    videos = sorted(p.name for p in out.iterdir() if p.suffix == ".gif")
    assert len(videos) == 3 and len(set(videos)) == 3, videos
    for word in ("red", "blue", "green"):
        assert sum(word in v for v in videos) == 1, videos
