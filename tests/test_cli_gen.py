"""`lamp gen` / `lamp animate` end to end on the tiny base (CPU), and their input checks."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lamp_cli.cli.app import main

FAST = ["--frames", "4", "--steps", "2"]


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        main(argv)
    out, err = capsys.readouterr()
    return int(e.value.code or 0), out, err


@pytest.fixture
def tiny_home(lamp_env: Path, tiny_base_dir: Path) -> Path:
    """`--base tiny` in this test's LAMP_HOME points at the session's saved tiny base (no rebuild)."""
    (lamp_env / "bases").mkdir(parents=True)
    (lamp_env / "bases" / "tiny").symlink_to(tiny_base_dir, target_is_directory=True)
    return lamp_env


def publish_motion(base, name: str, *, frames: int = 4, seed: int = 0, prompt: str | None = None):
    """A motion on the tiny base: an adapter extracted from a video UNet with randomised
    trainable weights, published to the registry (as `lamp train --base tiny` would)."""
    from lamp_cli.adapter import extract, make_metadata
    from lamp_cli.models.base import architecture_of
    from lamp_cli.models.video_unet import VideoUNet
    from lamp_cli.registry import Registry

    vu = VideoUNet.from_unet2d(copy.deepcopy(base.unet))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in vu.trainable_parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    train = {"steps": 0, **({"prompt": prompt} if prompt else {})}
    md = make_metadata(
        name=name, base_spec="tiny", base_fingerprint=base.fingerprint,
        architecture=architecture_of(dict(base.unet.config)), frames=frames, width=64, height=64, train=train,
    )
    return Registry().publish_adapter(extract(vu, base.unet, metadata=md))


@pytest.fixture
def wiggle(tiny_home, tiny_base):
    return publish_motion(tiny_base, "wiggle")


@pytest.fixture
def no_models(monkeypatch):
    """Fail the test if anything tries to build the engine (load models)."""
    import lamp_cli.engine

    class Forbidden:
        def __init__(self, *a, **k):
            raise AssertionError("models were loaded before the input was checked")

    monkeypatch.setattr(lamp_cli.engine, "Engine", Forbidden)


def write_image(path: Path, mode: str = "RGB", size=(80, 60)) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    w, h = size
    if mode == "RGBA":
        Image.fromarray(rng.integers(0, 256, (h, w, 4), dtype=np.uint8), "RGBA").save(path)
    elif mode == "I;16":
        Image.fromarray(rng.integers(0, 65536, (h, w), dtype=np.uint16)).save(path)
    elif mode == "L":
        Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8), "L").save(path)
    else:
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB").save(path)
    return path


def write_clips(folder: Path, n: int = 2) -> Path:
    """n short clips of a red square sliding right."""
    from lamp_cli.video import write_video

    folder.mkdir()
    for i in range(n):
        f = np.full((8, 64, 64, 3), 30, dtype=np.uint8)
        for k in range(8):
            x = (5 * k + 3 * i) % 44
            f[k, 20:40, x : x + 20] = (200, 50, 50)
        write_video(f, folder / f"clip{i}.mp4", fps=8)
    return folder


def test_train_then_gen_and_animate_write_playable_videos_that_reproduce(tiny_home, tmp_path, capsys, monkeypatch):
    from lamp_cli.video import probe_video, read_video

    monkeypatch.chdir(tmp_path)
    clips = write_clips(tmp_path / "clips")
    code, out, err = run(["train", str(clips), "--name", "slide", "--base", "tiny", "--steps", "2", "--frames", "4",
                          "--width", "64", "--height", "64", "--prompt", "a red square moves right"], capsys)
    assert code == 0, err
    digest = json.loads(run(["show", "slide", "--json"], capsys)[1])["manifest"]["digest"]

    # gen: text-to-image first frame (the tiny base, with a warning), then the motion
    code, out, err = run(["gen", "slide", "a horse runs", *FAST, "--seed", "3", "--fps", "6", "--json"], capsys)
    assert code == 0, err
    (video,) = json.loads(out)["videos"]
    path = Path(video["path"])
    assert path == tmp_path / "a_horse_runs.mp4"  # named from the prompt, in the current folder
    assert "seed 3" in err and "first-frame model" in err
    clip = read_video(path)
    assert clip.frames.shape == (4, 64, 64, 3) and clip.fps == pytest.approx(6)
    info = probe_video(path)
    assert (info.num_frames, info.width, info.height) == (4, 64, 64)
    side = json.loads(Path(video["sidecar"]).read_text())
    assert Path(video["sidecar"]) == tmp_path / "a_horse_runs.mp4.json"
    assert side["seed"] == 3 and side["steps"] == 2 and side["frames"] == 4 and side["command"] == "gen"
    assert side["motions"] == [{"name": "slide", "weight": 1.0, "digest": digest, "frames": 4}]
    assert side["base"]["spec"] == "tiny" and len(side["base"]["fingerprint"]) == 16
    assert side["lamp_version"] and side["timings"]["total_s"] > 0
    assert side["output"] == {"path": str(path), "format": "mp4", "fps": 6.0}
    assert side["first_frame"]["source"] == "text-to-image" and side["first_frame"]["fallback"] is True

    # the same sidecar makes the same file again, under a new name (never overwriting)
    code, out, err = run(["gen", "--from-sidecar", str(path) + ".json"], capsys)
    assert code == 0, err
    again = tmp_path / "a_horse_runs-1.mp4"
    assert out.strip() == str(again)
    assert again.read_bytes() == path.read_bytes()

    # animate: the photo is the first frame; the prompt defaults to the motion's training prompt
    photo = write_image(tmp_path / "photo.jpg")
    code, out, err = run(["animate", str(photo), "-m", "slide", *FAST, "--seed", "4", "--json"], capsys)
    assert code == 0, err
    (video,) = json.loads(out)["videos"]
    assert video["prompt"] == "a red square moves right"
    anim = Path(video["path"])
    assert anim.name == "a_red_square_moves_right.mp4"
    assert read_video(anim).frames.shape == (4, 64, 64, 3)
    code, out, err = run(["gen", "--from-sidecar", video["sidecar"], "-o", "anim2.mp4"], capsys)
    assert code == 0, err
    assert (tmp_path / "anim2.mp4").read_bytes() == anim.read_bytes()


def test_animate_converts_rgba_and_16bit_gray_images(wiggle, tmp_path, capsys, monkeypatch):
    from lamp_cli.video import read_video

    monkeypatch.chdir(tmp_path)
    rgba = write_image(tmp_path / "my_horse.png", "RGBA")
    code, out, err = run(["animate", str(rgba), "--motion", "wiggle", *FAST, "--seed", "1", "-o", "anim.mp4"], capsys)
    assert code == 0, err
    assert read_video(tmp_path / "anim.mp4").frames.shape == (4, 64, 64, 3)
    side = json.loads((tmp_path / "anim.mp4.json").read_text())
    assert side["command"] == "animate" and side["prompt"] == "my horse"  # no training prompt: the file name
    assert side["first_frame"]["source"] == "image" and side["first_frame"]["path"] == str(rgba.resolve())

    gray = write_image(tmp_path / "gray.png", "I;16")
    code, out, err = run(["gen", "wiggle", "a horse", "--first-frame", str(gray), "--frames", "2", "--steps", "1",
                          "--format", "frames"], capsys)
    assert code == 0, err
    folder = tmp_path / "a_horse"
    assert sorted(p.name for p in folder.iterdir()) == ["frame_0000.png", "frame_0001.png"]
    side = json.loads((tmp_path / "a_horse.json").read_text())
    assert side["first_frame"]["source"] == "image" and side["command"] == "gen"
    assert "first-frame model" not in err  # no text-to-image with --first-frame

    # reproducing an animate sidecar reads the image again
    code, out, err = run(["gen", "--from-sidecar", "anim.mp4.json", "-o", "anim2.mp4"], capsys)
    assert code == 0, err
    assert (tmp_path / "anim2.mp4").read_bytes() == (tmp_path / "anim.mp4").read_bytes()


def test_blended_motions_prompts_file_and_switches(wiggle, tiny_base, tmp_path, capsys, monkeypatch):
    import lamp_cli.engine

    other = publish_motion(tiny_base, "sway", seed=1)
    monkeypatch.chdir(tmp_path)
    loads = []
    real = lamp_cli.engine.Engine

    class Counting(real):
        def __init__(self, *a, **k):
            loads.append(1)
            super().__init__(*a, **k)

    monkeypatch.setattr(lamp_cli.engine, "Engine", Counting)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a horse runs\n\n# a comment\na bird flies\n")
    code, out, err = run(["gen", "--motion", "wiggle:0.7", "--motion", "sway:0.3", "--prompts-file", str(prompts),
                          "-o", "vids", "--frames", "3", "--steps", "1", "--seed", "5", "--no-adain",
                          "--no-histogram-match", "--json"], capsys)
    assert code == 0, err
    videos = json.loads(out)["videos"]
    assert [Path(v["path"]).name for v in videos] == ["000-a_horse_runs.mp4", "001-a_bird_flies.mp4"]
    assert len(loads) == 1  # one engine for the whole run
    side = json.loads(Path(videos[1]["sidecar"]).read_text())
    assert [(m["name"], m["weight"], m["digest"]) for m in side["motions"]] == [
        ("wiggle", 0.7, wiggle.digest), ("sway", 0.3, other.digest)]
    assert side["adain"] is False and side["histogram_match"] is False and side["seed"] == 5


@pytest.mark.parametrize(
    "argv, code, needle",
    [
        (["gen", "nosuch", "a horse"], 1, "lamp list"),
        (["gen", "wiggle", "a horse", "--width", "60"], 1, "multiple of 8"),
        (["gen", "wiggle", "a horse", "--frames", "1"], 1, "at least 2"),
        (["gen", "wiggle", "a horse", "--steps", "0"], 1, "--steps"),
        (["gen", "wiggle", "a horse", "-o", "blocker/out.mp4"], 1, "not a folder"),
        (["gen", "wiggle", "a horse", "-o", "clip.avi"], 2, "format"),
        (["gen", "wiggle", "a horse", "--format", "mkv"], 2, "--format"),
        (["gen", "wiggle"], 2, "PROMPT"),
        (["gen", "wiggle", "--prompts-file", "empty.txt"], 1, "no prompts"),
        (["gen", "Bad Name!", "a horse"], 1, "name"),
        (["animate", "notes.png", "-m", "wiggle"], 1, "cannot read image"),
        (["animate", "missing.png", "-m", "wiggle"], 1, "missing.png"),
        (["gen", "--from-sidecar", "notes.png"], 1, "sidecar"),
    ],
)
def test_bad_input_fails_before_models_load_and_leaves_nothing(argv, code, needle, wiggle, no_models, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "blocker").write_text("a file, not a folder")
    (tmp_path / "notes.png").write_text("not an image")
    (tmp_path / "empty.txt").write_text("\n# nothing\n")
    before = sorted(p.name for p in tmp_path.iterdir())
    got, out, err = run(argv, capsys)
    assert got == code, err
    assert needle.lower() in err.lower()
    assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing partial left behind


def test_existing_output_is_not_overwritten_without_flag(wiggle, no_models, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.mp4").write_bytes(b"keep me")
    code, out, err = run(["gen", "wiggle", "a horse", "-o", "x.mp4"], capsys)
    assert code == 1 and "--overwrite" in err
    assert (tmp_path / "x.mp4").read_bytes() == b"keep me"


def test_a_failed_write_leaves_neither_video_nor_sidecar(tmp_path, monkeypatch):
    import lamp_cli.generate
    from lamp_cli.generate import save_video

    def broken(path, text):
        raise OSError("disk full")

    monkeypatch.setattr(lamp_cli.generate, "atomic_write_text", broken)
    frames = np.zeros((2, 16, 16, 3), dtype=np.uint8)
    with pytest.raises(OSError):
        save_video(frames, tmp_path / "new" / "deep" / "v.mp4", fps=8, fmt="mp4", record={"seed": 1})
    assert list(tmp_path.iterdir()) == []


def test_gen_module_does_not_import_torch():
    code = "import sys, lamp_cli.cli.gen_cmd, lamp_cli.cli.bench_gen, lamp_cli.generate; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_bench_gen_reports_times_and_memory(tiny_home, capsys):
    code, out, err = run(["bench", "gen", "--base", "tiny", "--frames", "3", "--width", "64", "--height", "64",
                          "--steps", "2", "--repeats", "1", "--device", "cpu", "--json"], capsys)
    assert code == 0, err
    r = json.loads(out)
    assert r["latent"] == [4, 3, 8, 8] and r["steps"] == 2
    assert r["video_s"] > 0 and r["video_unet_step_s"] > 0 and r["unet2d_step_s"] > 0
    assert r["video_over_2d"] == pytest.approx(r["video_unet_step_s"] / r["unet2d_step_s"])
    assert r["peak_memory_bytes"] > 0 and r["video_unet_parameters"] > r["unet2d_parameters"]
