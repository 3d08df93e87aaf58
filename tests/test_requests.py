"""Requests resolved once: every default in one place (and shown in help), bad values named by
their source, errors that need no model returned before torch is imported, and the library
example of docs/api.md."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lamp_cli import settings
from lamp_cli.cli.app import main
from lamp_cli.errors import InvalidInput
from lamp_cli.requests import SampleRequest

ROOT = Path(__file__).resolve().parent.parent
SAMPLING_OPTIONS = {  # option -> setting
    "--fps": "fps", "--frames": "frames", "--steps": "steps", "--guidance": "guidance",
    "--shared-noise": "shared_noise", "--device": "device", "--dtype": "dtype", "--width": "width",
    "--height": "height", "--base": "base",
}


def help_text(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit):
        main([*argv, "--help"])
    out = capsys.readouterr().out
    return re.sub(r"[\s│]+", " ", out)  # one line, without the boxes' borders


def option_help(text: str, option: str) -> str:
    """The help of `option` in a flattened help text (up to the next option)."""
    m = re.search(re.escape(option) + r" (?:-\w )?<\w+> (.*?)(?= --[a-z]|$)", text)
    assert m, option
    return m.group(1)


def test_sample_request_defaults_are_the_settings():
    r = SampleRequest(prompt="x")
    assert (r.frames, r.width, r.height, r.steps, r.guidance, r.shared_noise) == tuple(
        settings.DEFAULTS[k] for k in ("frames", "width", "height", "steps", "guidance", "shared_noise"))


@pytest.mark.parametrize("command", ["gen", "animate"])
def test_help_shows_each_settings_effective_default_and_follows_config(command, capsys, lamp_env, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # no wrapped or shortened paths
    monkeypatch.setenv("TERMINAL_WIDTH", "400")
    text = help_text([command], capsys)
    for option, key in SAMPLING_OPTIONS.items():
        assert str(settings.DEFAULTS[key]) in option_help(text, option), option
    assert "toy" in option_help(text, "--base") and "--prompts-file" not in (text if command == "animate" else "")
    config = Path(settings.config_path())
    config.write_text('steps = 30\nguidance = 7.0\nbase = "toy"\nfps = 12.0\n')
    text = help_text([command], capsys)
    assert f"(default: 30, from {config})" in option_help(text, "--steps")
    assert f"7.0, from {config}" in option_help(text, "--guidance")
    assert f"else toy, from {config}" in option_help(text, "--base")
    assert "(default: 50" not in option_help(text, "--steps")


def test_gen_and_animate_share_one_declaration_of_their_options():
    from lamp_cli.cli import gen_cmd

    assert len(gen_cmd.SAMPLE_OPTIONS) == 21  # with --lora
    import inspect

    assert "opts" in inspect.signature(gen_cmd.gen).parameters  # own options only, plus the shared ones
    assert len(inspect.signature(gen_cmd.animate).parameters) == 4


def test_a_value_that_is_not_finite_is_refused_everywhere(monkeypatch):
    for bad in (math.nan, math.inf):
        with pytest.raises(InvalidInput, match="finite"):
            SampleRequest(prompt="x", guidance=bad)
        with pytest.raises(InvalidInput, match="finite"):
            SampleRequest(prompt="x", shared_noise=bad)
    with pytest.raises(InvalidInput, match="finite"):
        SampleRequest(prompt="x", motions=(("guitar", math.nan),))
    monkeypatch.setenv("LAMP_GUIDANCE", "nan")
    with pytest.raises(InvalidInput, match="LAMP_GUIDANCE must be a finite number"):
        settings.resolve("guidance")
    assert json.loads(json.dumps(SampleRequest(prompt="x", seed=3).to_json(), allow_nan=False))["seed"] == 3


# One subprocess runs every case, so that "torch was not imported" is true of lamp, not of pytest.
SCRIPT = r"""
import contextlib, io, json, os, sys, time
from lamp_cli.cli.app import main
results = []
for case in json.loads(sys.argv[1]):
    os.environ.pop("LAMP_STEPS", None)
    os.environ.pop("LAMP_TRAIN_STEPS", None)
    os.environ.update(case.get("env", {}))
    os.environ["LAMP_CONFIG"] = case["config"]
    err = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            main(case["argv"])
            code = 0
        except SystemExit as e:
            code = e.code
    results.append({"code": code, "err": err.getvalue(), "torch": "torch" in sys.modules,
                    "seconds": time.perf_counter() - t0})
print(json.dumps(results))
"""


def publish_fake(name: str, base_spec: str, *, width: int = 64, height: int = 64) -> None:
    import torch

    from lamp_cli.adapter import MotionAdapter, make_metadata
    from lamp_cli.registry import Registry

    md = make_metadata(name=name, base_spec=base_spec, base_fingerprint="x", architecture="a", frames=4,
                       width=width, height=height, train={})
    Registry().publish_adapter(MotionAdapter({"a.conv1d.weight": torch.zeros(2, 2, 3)}, md))


def test_errors_that_need_no_model_come_before_torch_and_name_their_source(lamp_env, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    publish_fake("wiggle", "tiny")
    publish_fake("faraway", "nobody/absent-base")
    (tmp_path / "blocker").write_text("a file")
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "a.mp4").write_text("not a video")
    none = str(tmp_path / "none.toml")
    steps0 = tmp_path / "steps0.toml"
    steps0.write_text("steps = 0\n")
    lr0 = tmp_path / "lr0.toml"
    lr0.write_text("lr = -1.0\n")
    cases = {
        "motion not in the registry": (["gen", "nosuch", "a horse"], {}, none, "no motion named 'nosuch'"),
        "a built-in recipe": (["gen", "horse_run", "a horse"], {}, none, "lamp train CLIPS --recipe horse_run"),
        "a released motion": (["gen", "guitar", "a bear"], {}, none, "lamp import --official ./my_weight/play_the_guitar"),
        "base not on disk": (["gen", "faraway", "a horse"], {}, none, "'nobody/absent-base' is not available locally"),
        "image missing": (["animate", "missing.png", "-m", "wiggle"], {}, none, "missing.png"),
        "output not writable": (["gen", "wiggle", "a horse", "-o", "blocker/out.mp4"], {}, none, "not a folder"),
        "--steps 0": (["gen", "wiggle", "a horse", "--steps", "0"], {}, none, "--steps 0"),
        "LAMP_STEPS=0": (["gen", "wiggle", "a horse"], {"LAMP_STEPS": "0"}, none, "LAMP_STEPS=0"),
        "config steps = 0": (["gen", "wiggle", "a horse"], {}, str(steps0), f"steps = 0 in {steps0}"),
        "weight nan": (["gen", "-m", "wiggle:nan", "a horse"], {}, none, "finite"),
        "train: missing clips": (["train", "nowhere", "--name", "m", "--base", "tiny"], {}, none, "no such file"),
        "train: bad name": (["train", "clips", "--name", "Bad Name!", "--base", "tiny"], {}, none, "invalid motion name"),
        "train: base not on disk": (["train", "clips", "--name", "m", "--base", "nobody/absent"], {}, none,
                                    "not available locally"),
        "train: --width 100": (["train", "clips", "--name", "m", "--base", "tiny", "--width", "100"], {}, none,
                               "--width 100 is not a multiple of 8"),
        "train: LAMP_TRAIN_STEPS=0": (["train", "clips", "--name", "m", "--base", "tiny"], {"LAMP_TRAIN_STEPS": "0"},
                                      none, "LAMP_TRAIN_STEPS=0"),
        "train: config lr": (["train", "clips", "--name", "m", "--base", "tiny"], {}, str(lr0), f"lr = -1.0 in {lr0}"),
    }
    payload = [{"argv": argv, "env": env, "config": cfg} for argv, env, cfg, _ in cases.values()]
    env = {k: v for k, v in __import__("os").environ.items()}
    run = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(payload)], capture_output=True, text=True,
                         env=env, cwd=tmp_path, timeout=120)
    assert run.returncode == 0, run.stderr
    results = json.loads(run.stdout.strip().splitlines()[-1])
    for (case, (_, _, _, needle)), got in zip(cases.items(), results, strict=True):
        assert got["code"] in (1, 2), (case, got)
        assert needle in got["err"], (case, got["err"])
        assert "Traceback" not in got["err"], case
        assert got["torch"] is False, f"{case}: torch was imported before the error"
    assert not any((tmp_path / "lamp_home").rglob("runs/*")) if (tmp_path / "lamp_home").exists() else True


def test_toy_base_needs_no_sdxl_and_warns_about_prompts_it_cannot_draw(lamp_env, tmp_path, caplog):
    from lamp_cli.first_frame import FirstFrameGenerator
    from lamp_cli.resolve import gen_request

    publish_fake("slide", "toy")
    request, _ = gen_request("gen", ["slide"], ["a red circle on a blue background"], cli={})
    assert request.base == "toy" and request.first_frame_model == "base"
    assert not caplog.records
    assert FirstFrameGenerator(type("B", (), {"spec": "toy"})(), None, model=request.first_frame_model).uses_base()
    photo = tmp_path / "my_dog.png"
    from PIL import Image

    Image.new("RGB", (64, 64), "white").save(photo)
    request, _ = gen_request("animate", ["slide"], [None], cli={}, image=photo)
    assert request.samples[0].prompt == "my dog"
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert "knows no word of the prompt 'my dog'" in warning and "file name" in warning and "circle" in warning


def test_the_library_example_in_docs_api_md_runs(tmp_path, monkeypatch, lamp_env, tiny_base_dir, tiny_base):
    from test_cli_gen import publish_motion

    (lamp_env / "bases").mkdir(parents=True)
    (lamp_env / "bases" / "tiny").symlink_to(tiny_base_dir, target_is_directory=True)
    publish_motion(tiny_base, "wiggle")
    monkeypatch.chdir(tmp_path)
    doc = (ROOT / "docs" / "api.md").read_text()
    example = re.search(r"```python\n(.*?)```", doc, re.S).group(1)
    assert len(example.strip().splitlines()) < 15
    exec(compile(example, "docs/api.md", "exec"), {})
    from lamp_cli.video import read_video

    assert read_video(tmp_path / "wiggle.mp4").frames.shape == (4, 64, 64, 3)
