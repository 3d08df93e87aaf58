"""`lamp train` and `lamp bench train` through the CLI: bad input, --json, Ctrl-C and --resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lamp_cli.cli.app import main


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        main(argv)
    out, err = capsys.readouterr()
    return e.value.code, out, err


def write_square_clip(path: Path, num_frames: int) -> Path:
    from lamp_cli.video import write_video

    frames = np.zeros((num_frames, 32, 32, 3), np.uint8)
    for t in range(num_frames):
        frames[t, 12:20, 3 * t % 24 : 3 * t % 24 + 8] = 255
    return write_video(frames, path, fps=8)


def registry_files(home: Path) -> list[str]:
    return sorted(str(p.relative_to(home)) for p in home.rglob("*") if p.is_file()) if home.exists() else []


@pytest.fixture
def clips(tmp_path: Path) -> Path:
    folder = tmp_path / "square_moves_right"
    folder.mkdir()
    for k in range(2):
        write_square_clip(folder / f"c{k}.mp4", 7)
    return folder


TINY = ["--frames", "4", "--width", "32", "--height", "32", "--seed", "3", "--checkpoint-every", "0"]


def _publish_existing(name: str) -> None:
    import torch

    from lamp_cli.adapter import MotionAdapter, make_metadata
    from lamp_cli.registry import Registry

    md = make_metadata(
        name=name, base_spec="tiny", base_fingerprint="x", architecture="a", frames=4, width=32, height=32, train={}
    )
    Registry().publish_adapter(MotionAdapter({"a.conv1d.weight": torch.zeros(2, 2, 3)}, md))


@pytest.mark.parametrize(
    "case",
    ["missing folder", "empty folder", "text file named .mp4", "5-frame clip, --frames 16", "invalid name",
     "existing name", "width not a multiple of 8"],
)
def test_bad_input_is_one_line_error_with_hint_and_writes_nothing(case, tmp_path, capsys, lamp_env, tiny_base_dir):
    folder = tmp_path / "clips"
    folder.mkdir()
    name, extra = "motion", []
    if case == "missing folder":
        folder = tmp_path / "nowhere"
    elif case == "text file named .mp4":
        (folder / "clip.mp4").write_text("definitely not a video\n")
    elif case == "5-frame clip, --frames 16":
        write_square_clip(folder / "short.mp4", 5)
        extra = ["--frames", "16"]
    elif case == "invalid name":
        write_square_clip(folder / "ok.mp4", 6)
        name = "../Bad Name"
    elif case == "existing name":
        write_square_clip(folder / "ok.mp4", 6)
        _publish_existing("motion")
    elif case == "width not a multiple of 8":
        write_square_clip(folder / "ok.mp4", 6)
        extra = ["--width", "100"]
    before = registry_files(lamp_env)
    code, out, err = run(["train", str(folder), "--name", name, "--base", str(tiny_base_dir), *extra], capsys)
    assert code == 1, err
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("Error: ") and lines[1].startswith("Hint: "), err
    expected = {
        "missing folder": "no such file or folder",
        "empty folder": "no videos in",
        "text file named .mp4": "clip.mp4",
        "5-frame clip, --frames 16": "short.mp4 has 5 frames",
        "invalid name": "invalid motion name",
        "existing name": "already exists",
        "width not a multiple of 8": "not a multiple of 8",
    }[case]
    assert expected in lines[0]
    assert registry_files(lamp_env) == before  # no manifest, blob, run folder or checkpoint


def test_train_json_publishes_the_motion(clips, capsys, tiny_base_dir):
    code, out, err = run(
        ["train", str(clips), "--name", "square", "--base", str(tiny_base_dir), "--steps", "2", *TINY, "--json"], capsys
    )
    assert code == 0, err
    doc = json.loads(out)
    assert doc["name"] == "square" and doc["steps"] == 2 and doc["seed"] == 3 and doc["clips"] == 2
    assert doc["digest"].startswith("sha256:") and doc["adapter_bytes"] > 0 and doc["adapter_dtype"] == "fp16"
    assert doc["prompts"] == ["square moves right"] and np.isfinite(doc["final_loss"]) and doc["seconds"] > 0
    from lamp_cli.registry import Registry

    assert [m.name for m in Registry().list()] == ["square"] and Registry().get("square").digest == doc["digest"]


def test_ctrl_c_exits_130_with_the_resume_command_and_resume_finishes(clips, capsys, monkeypatch, tiny_base_dir, lamp_env):
    import lamp_cli.train as tr

    calls = {"n": 0}
    real_loss = tr.diffusion_loss

    def interrupted_on_third_step(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # as if Ctrl-C arrived during the forward pass of step 3
        return real_loss(*args, **kw)

    monkeypatch.setattr(tr.loop, "diffusion_loss", interrupted_on_third_step)
    argv = ["train", str(clips), "--name", "sq", "--base", str(tiny_base_dir), "--steps", "4", *TINY]
    code, out, err = run(argv, capsys)
    assert code == 130, err
    assert "interrupted after step 2 of 4" in err
    resume_cmd = f"lamp train {clips} --name sq --base {tiny_base_dir} --resume"
    assert resume_cmd in err.replace("\n", "")
    assert (lamp_env / "runs" / "sq" / "checkpoint.safetensors").exists()
    assert not (lamp_env / "manifests" / "sq.json").exists()

    monkeypatch.setattr(tr.loop, "diffusion_loss", real_loss)
    code, out, err = run([*resume_cmd.split()[1:], "--steps", "4", "--json"], capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["resumed_from"] == 2 and doc["steps"] == 4 and doc["seed"] == 3
    assert not (lamp_env / "runs" / "sq").exists()


def test_python_m_lamp_cli_train_help_does_not_import_torch():
    code = "import sys, runpy; sys.argv=['lamp','train','--help']\ntry:\n runpy.run_module('lamp_cli', run_name='__main__')\nexcept SystemExit: pass\nprint('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 0, proc.stderr
    assert "--checkpoint-every" in proc.stdout and "--resume" in proc.stdout and "--mixed-precision" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1] == "False"


def test_bench_train_json_on_the_tiny_base(capsys):
    code, out, err = run(
        ["bench", "train", "--steps", "2", "--warmup", "1", "--frames", "3", "--width", "32", "--height", "32", "--device", "cpu", "--json"],
        capsys,
    )
    assert code == 0, err
    doc = json.loads(out)
    assert doc["steps"] == 2 and doc["latent"] == [4, 3, 4, 4] and doc["device"] == "cpu"
    assert doc["ms_per_step"] > 0 and doc["peak_memory_bytes"] > 0 and doc["trainable_parameters"] > 0
