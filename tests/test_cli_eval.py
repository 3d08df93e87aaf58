"""`lamp eval` and `lamp recipes` end to end (in-process), with a tiny CLIP built in code."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lamp_cli.cli.app import main


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from lamp_cli.testing import save_tiny_clip

    return save_tiny_clip(tmp_path_factory.mktemp("tiny_clip"))


def run(capsys, *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def frames(t: int = 6, seed: int = 0, h: int = 48, w: int = 64) -> np.ndarray:
    """A moving gradient (codec-friendly), different per seed."""
    y, x = np.mgrid[0:h, 0:w]
    out = [
        np.stack(
            [(x * 4 + 9 * i + 50 * seed) % 256, (y * 5 + 30 * seed) % 256, np.full_like(x, 60 * seed % 256)],
            -1,
        )
        for i in range(t)
    ]
    return np.asarray(out, dtype=np.uint8)


# ---------------------------------------------------------------------------------------
# recipes


def test_recipes_list_json_and_show(capsys):
    code, out, _ = run(capsys, "recipes", "--json")
    assert code == 0
    doc = json.loads(out)
    assert len(doc["recipes"]) == 8
    assert {"name", "prompt", "description", "frames", "stride", "width", "height", "eval_prompts"} <= set(
        doc["recipes"][0]
    )
    code, out, _ = run(capsys, "recipes")
    assert code == 0 and "play_the_guitar" in out and "turn to smile" in out
    code, out, _ = run(capsys, "recipes", "firework")
    assert code == 0 and "fireworks over the mountains" in out
    code, _, err = run(capsys, "recipes", "moonwalk")
    assert code == 1 and "no recipe named 'moonwalk'" in err and "lamp recipes" in err


# ---------------------------------------------------------------------------------------
# eval --videos


def test_eval_videos_written_by_lamp(capsys, tmp_path, tiny_clip_dir):
    from lamp_cli.evaluate import evaluate_videos
    from lamp_cli.video import write_video

    folder = tmp_path / "vids"
    names = ["a.mp4", "b.gif", "c.webm", "d"]
    for i, name in enumerate(names):
        write_video(frames(seed=i), folder / name, fps=8, format="frames" if name == "d" else None)
    prompts = ["a horse runs on the grass", "rain", "a red horse", "birds fly"]
    pf = tmp_path / "prompts.txt"
    pf.write_text("\n".join(prompts) + "\n")

    code, out, _ = run(
        capsys, "eval", "--videos", folder, "--prompts-file", pf, "--clip-model", tiny_clip_dir, "--json"
    )
    assert code == 0
    doc = json.loads(out)
    assert doc["mode"] == "videos" and doc["count"] == 4
    assert [Path(v["file"]).name for v in doc["videos"]] == names
    assert [v["prompt"] for v in doc["videos"]] == prompts
    assert all(v["frames"] == 6 for v in doc["videos"])
    # the CLI reports exactly what the library computes
    lib = evaluate_videos([folder / n for n in names], prompts, clip_model=str(tiny_clip_dir), device="cpu")
    for row, v in zip(doc["videos"], lib.videos, strict=True):
        assert row["alignment"] == pytest.approx(v.alignment, abs=1e-6)
        assert row["consistency"] == pytest.approx(v.consistency, abs=1e-6)
    assert doc["mean"]["alignment"] == pytest.approx(
        np.mean([v["alignment"] for v in doc["videos"]]), abs=1e-9
    )
    assert doc["diversity"] == pytest.approx(lib.diversity, abs=1e-6)

    code, out, _ = run(
        capsys, "eval", "--videos", folder, "--prompts-file", pf, "--clip-model", tiny_clip_dir
    )
    assert code == 0
    assert "b.gif" in out and "mean of 4" in out and "diversity" in out


def test_eval_external_videos_made_with_imageio(capsys, tmp_path, tiny_clip_dir):
    import imageio.v3 as iio

    folder = tmp_path / "other_tool"
    folder.mkdir()
    iio.imwrite(folder / "1_clip.mp4", frames(8, seed=1), plugin="FFMPEG", fps=10, macro_block_size=1)
    iio.imwrite(folder / "2_clip.gif", frames(5, seed=2), duration=100, loop=0)
    pf = tmp_path / "p.txt"
    pf.write_text("a car in rain\nrainy mountain\n")
    code, out, _ = run(
        capsys, "eval", "--videos", folder, "--prompts-file", pf, "--clip-model", tiny_clip_dir, "--json"
    )
    assert code == 0
    doc = json.loads(out)
    assert [v["frames"] for v in doc["videos"]] == [8, 5]
    assert [v["prompt"] for v in doc["videos"]] == ["a car in rain", "rainy mountain"]
    assert all(-100 <= v["alignment"] <= 100 and -100 <= v["consistency"] <= 100 for v in doc["videos"])


def test_eval_videos_bad_input(capsys, tmp_path, tiny_clip_dir):
    from lamp_cli.video import write_video

    folder = tmp_path / "vids"
    for i in range(3):
        write_video(frames(seed=i), folder / f"v{i}.gif", fps=8)
    pf = tmp_path / "p.txt"
    pf.write_text("one\ntwo\n")
    code, out, err = run(
        capsys, "eval", "--videos", folder, "--prompts-file", pf, "--clip-model", tiny_clip_dir
    )
    assert code == 1 and out == ""
    assert "3 videos" in err and "2 prompts" in err and "fewer prompts than videos" in err

    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run(capsys, "eval", "--videos", empty, "--prompts-file", pf, "--clip-model", tiny_clip_dir)
    assert code == 1 and "no videos in" in err

    # the default CLIP is not in this machine's cache: the hint says how to get it
    pf.write_text("one\ntwo\nthree\n")
    code, out, err = run(capsys, "eval", "--videos", folder, "--prompts-file", pf, "--json")
    assert code == 1 and out == ""
    assert "openai/clip-vit-large-patch14" in err and "hf download openai/clip-vit-large-patch14" in err

    code, _, err = run(capsys, "eval", "--videos", folder, "--clip-model", tiny_clip_dir)
    assert code == 2 and "--prompts-file" in err
    code, _, err = run(capsys, "eval", "--videos", folder, "--recipe", "rain", "--prompts-file", pf)
    assert code == 2 and "not both" in err
    code, _, err = run(capsys, "eval", "somemotion", "--videos", folder)
    assert code == 2
    code, _, err = run(capsys, "eval")
    assert code == 2


# ---------------------------------------------------------------------------------------
# eval MOTION: generate with the engine, then score


@pytest.fixture
def tiny_motion(tiny_base, tiny_base_dir) -> str:
    """A fresh (untrained) motion for the tiny base, published as 'wave' (4 frames, 64×64)."""
    import copy

    from lamp_cli import adapter
    from lamp_cli.models.base import architecture_of
    from lamp_cli.models.video_unet import VideoUNet
    from lamp_cli.registry import Registry

    video_unet = VideoUNet.from_unet2d(copy.deepcopy(tiny_base.unet))
    metadata = adapter.make_metadata(
        name="wave",
        base_spec=str(tiny_base_dir),
        base_fingerprint=tiny_base.fingerprint,
        architecture=architecture_of(tiny_base.unet.config),
        frames=4,
        width=64,
        height=64,
        train={},
    )
    Registry().publish_adapter(adapter.extract(video_unet, tiny_base.unet, metadata=metadata))
    return "wave"


def test_eval_motion_generates_then_scores(capsys, tmp_path, tiny_clip_dir, tiny_motion, tiny_base_dir):
    pf = tmp_path / "p.txt"
    pf.write_text("a horse runs\nrain\n")
    out_dir = tmp_path / "run"
    code, out, _ = run(
        capsys, "eval", tiny_motion, "--prompts-file", pf, "--seeds", "2", "--seed", "5",
        "--steps", "1", "--clip-model", tiny_clip_dir, "--out", out_dir,
        "--device", "cpu", "--format", "gif", "--json",
    )  # fmt: skip
    assert code == 0
    doc = json.loads(out)
    assert doc["mode"] == "generate" and doc["motion"] == "wave" and doc["seeds"] == [5, 6]
    assert doc["count"] == 4 and doc["diversity"] is not None
    assert [v["prompt"] for v in doc["videos"]] == ["a horse runs", "a horse runs", "rain", "rain"]
    assert [Path(v["file"]).name for v in doc["videos"]] == [
        "00_a_horse_runs_seed5.gif",
        "00_a_horse_runs_seed6.gif",
        "01_rain_seed5.gif",
        "01_rain_seed6.gif",
    ]
    assert all(v["frames"] == 4 for v in doc["videos"])  # the motion's trained length by default
    assert (doc["settings"]["width"], doc["settings"]["height"], doc["settings"]["steps"]) == (64, 64, 1)
    assert doc["settings"]["base"] == str(tiny_base_dir)  # the motion's own base, without --base
    assert json.loads((out_dir / "eval.json").read_text()) == doc
    # the folder re-scores to the same numbers through --videos and its prompts.txt
    code, out2, _ = run(
        capsys, "eval", "--videos", out_dir, "--prompts-file", out_dir / "prompts.txt",
        "--clip-model", tiny_clip_dir, "--json",
    )  # fmt: skip
    assert code == 0
    again = json.loads(out2)
    assert [v["alignment"] for v in again["videos"]] == pytest.approx(
        [v["alignment"] for v in doc["videos"]], abs=1e-6
    )


def test_eval_unknown_motion_fails_before_loading_models(capsys, tmp_path):
    code, out, err = run(
        capsys, "eval", "nosuchmotion", "--recipe", "rain", "--clip-model", tmp_path / "nope"
    )
    assert code == 1 and out == ""
    assert "no motion named 'nosuchmotion'" in err


def test_eval_motion_without_prompts_is_a_usage_error(capsys, tiny_motion):
    code, _, err = run(capsys, "eval", tiny_motion)
    assert code == 2 and "--prompts-file" in err
