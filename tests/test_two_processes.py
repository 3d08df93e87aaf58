"""Two processes on the CPU (torchrun / `accelerate launch`, gloo): training resumes
and finishes with both ranks holding the same weights, rank 0 alone publishes; `lamp gen
--prompts-file` writes every video exactly once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

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


def test_two_processes_train_in_sync_publish_once_and_split_gen(clips, capsys, monkeypatch, tiny_base_dir, lamp_env, tmp_path):
    import lamp_cli.train as tr

    # An interrupted run leaves a checkpoint at step 2 (as Ctrl-C would) ...
    real_loss, calls = tr.diffusion_loss, {"n": 0}

    def interrupted_on_third_step(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_loss(*args, **kw)

    monkeypatch.setattr(tr, "diffusion_loss", interrupted_on_third_step)
    with pytest.raises(SystemExit) as e:
        main(["train", str(clips), "--name", "sq", "--base", str(tiny_base_dir), "--steps", "4", *TINY])
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
