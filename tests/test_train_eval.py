"""Scoring during training (`lamp train --eval-every`): the engine samples with gen's settings,
CLIP scores, the best step is published beside the last; bad input fails before training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lamp_cli import train as tr
from lamp_cli.train import eval as te
from lamp_cli.cli.app import main
from lamp_cli.engine import Engine
from lamp_cli.errors import InvalidInput, LampError, NameTaken
from lamp_cli.registry import Registry

SIZE, FRAMES = 32, 4
PROMPTS = ["a horse runs", "rain falls"]


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from lamp_cli.video import write_video

    folder = tmp_path_factory.mktemp("data") / "square_moves_right"
    folder.mkdir()
    for k in range(2):
        frames = np.zeros((7, SIZE, SIZE, 3), np.uint8)
        for t in range(7):
            x = (2 * k + 3 * t) % 24
            frames[t, 12:20, x : x + 8] = 255
        write_video(frames, folder / f"c{k}.mp4", fps=8)
    return folder


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from lamp_cli.testing import save_tiny_clip

    return save_tiny_clip(tmp_path_factory.mktemp("tiny_clip"))


@pytest.fixture(autouse=True)
def on_cpu(lamp_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """gen, eval and training on the CPU, as the shared tiny base is, even where a GPU exists."""
    monkeypatch.setenv("LAMP_DEVICE", "cpu")


@pytest.fixture
def sample_spy(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """Every video the engine samples (`Engine.run`, which `Engine.sample` and `lamp gen` call):
    its motions, prompt, first frame, sampling values and frames."""
    calls: list[dict] = []
    real = Engine.run
    keys = ("frames", "width", "height", "steps", "guidance", "negative", "seed", "shared_noise", "adain",
            "histogram_match")

    def spy(self, request, motions, first_frame=None, **kw):
        result = real(self, request, motions, first_frame, **kw)
        calls.append({"motions": motions, "prompt": request.prompt, "first_frame": first_frame,
                      "kw": {k: getattr(request, k) for k in keys}, "frames": result.frames})
        return result

    monkeypatch.setattr(Engine, "run", spy)
    return calls


def train(clips: Path, name: str, base, **kw) -> tr.TrainResult:
    opts = dict(base=base, steps=5, frames=FRAMES, width=SIZE, height=SIZE, seed=7, lr=1e-3, checkpoint_every=0, device="cpu")
    opts.update(kw)
    return tr.train_motion(clips, name, **opts)


def with_eval(clip_dir: Path, **kw) -> dict:
    return dict(eval_every=2, eval_prompts=PROMPTS, eval_steps=2, clip_model=str(clip_dir), **kw)


def test_eval_samples_with_the_engine_at_the_requested_steps_and_scores_them(clips, clip_dir, tiny_base, sample_spy, tmp_path, capsys):
    from lamp_cli.evaluate import Scorer, alignment, consistency

    result = train(clips, "square", tiny_base, **with_eval(clip_dir))
    history = result.eval["history"]
    assert [p["step"] for p in history] == [2, 4, 5]  # every 2 steps, and the last step
    assert len(sample_spy) == 6 and [c["prompt"] for c in sample_spy] == PROMPTS * 3
    expected_kw = {"frames": FRAMES, "width": SIZE, "height": SIZE, "steps": 2, "guidance": 12.5, "negative": "",
                   "seed": 0, "shared_noise": 0.2, "adain": True, "histogram_match": True}
    for c in sample_spy:
        assert c["kw"] == expected_kw
        ((adapter, weight),) = c["motions"]
        assert weight == 1.0 and adapter.frames == FRAMES and adapter.size == (SIZE, SIZE)
    # the first frame of a prompt is the same image at every evaluation (made once, before training)
    for i in range(2):
        assert all(np.array_equal(sample_spy[i]["first_frame"], sample_spy[i + 2 * k]["first_frame"]) for k in (1, 2))
    # the recorded scores are the paper's metrics of the sampled frames, per prompt and as means
    scorer = Scorer(str(clip_dir), device="cpu")
    text = scorer.embed_prompts(PROMPTS)
    for k, point in enumerate(history):
        embeds = [scorer.embed_frames(sample_spy[2 * k + i]["frames"]) for i in range(2)]
        aligns = [alignment(e, text[i]) for i, e in enumerate(embeds)]
        assert [v["alignment"] for v in point["videos"]] == pytest.approx(aligns, abs=1e-6)
        assert point["alignment"] == pytest.approx(np.mean(aligns), abs=1e-6)
        assert point["consistency"] == pytest.approx(np.mean([consistency(e) for e in embeds]), abs=1e-6)
    # the adapters scored are those of steps 2, 4, 5: the last one is the published one, bit for bit
    scored = [c["motions"][0][0] for c in sample_spy[::2]]
    assert len({a.weights_sha256() for a in scored}) == 3
    assert scored[-1].weights_sha256() == Registry().load_adapter("square").weights_sha256()
    md = Registry().load_adapter("square").train_config["eval"]
    assert [p["step"] for p in md["history"]] == [2, 4, 5] and md["steps"] == 2 and md["steps_source"] == "--eval-steps"
    assert md["score"] == "mean_alignment" and md["prompts"] == PROMPTS and md["seed"] == 0
    assert not (tr.run_dir("square") / te.BEST_FILE).exists()

    # `lamp gen` with the published motion makes exactly the video the last evaluation scored
    gen_dir = tmp_path / "gen"
    with pytest.raises(SystemExit) as e:
        main(["gen", "square", PROMPTS[1], "--seed", "0", "--frames", str(FRAMES), "--steps", "2", "--format", "frames", "-o", str(gen_dir)])
    out, err = capsys.readouterr()
    assert e.value.code == 0, err
    assert out.strip() == str(gen_dir) and gen_dir.is_dir()
    gen_call = sample_spy[-1]
    assert gen_call["first_frame"] is None  # gen makes its own text-to-image first frame
    assert {k: gen_call["kw"][k] for k in expected_kw} == expected_kw
    assert np.array_equal(gen_call["frames"], sample_spy[5]["frames"])
    # and `lamp eval` (lossless png frames) gives the last evaluation's numbers
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    with pytest.raises(SystemExit) as e:
        main(["eval", "square", "--prompts-file", str(prompts), "--steps", "2", "--format", "frames",
              "--clip-model", str(clip_dir), "-o", str(tmp_path / "eval"), "--json"])
    out, err = capsys.readouterr()
    assert e.value.code == 0, err
    report = json.loads(out)
    assert report["mean"]["alignment"] == pytest.approx(history[-1]["alignment"], abs=1e-6)
    assert report["mean"]["consistency"] == pytest.approx(history[-1]["consistency"], abs=1e-6)


def test_best_is_published_beside_the_last_with_its_scores(clips, clip_dir, tiny_base, sample_spy, monkeypatch):
    import lamp_cli.evaluate as ev

    real = ev.score_clips
    scripted = iter([10.0, 30.0, 20.0])  # steps 2, 4, 5: the best is step 4, not the last

    def score(*a, **kw):
        report = real(*a, **kw)
        report.mean_alignment = next(scripted)
        return report

    monkeypatch.setattr(te, "score_clips", score)
    result = train(clips, "rain", tiny_base, adapter_dtype="fp32", **with_eval(clip_dir))
    reg = Registry()
    assert sorted(m.name for m in reg.list()) == ["rain", "rain-best"]
    scored = [c["motions"][0][0] for c in sample_spy[::2]]
    best, last = reg.load_adapter("rain-best"), reg.load_adapter("rain")
    for adapter, expected in ((best, scored[1]), (last, scored[2])):
        assert adapter.tensors.keys() == expected.tensors.keys()
        assert all(torch.equal(adapter.tensors[k], expected.tensors[k]) for k in expected.tensors)
    assert best.weights_sha256() != last.weights_sha256()
    assert reg.get("rain-best").steps == 4 and reg.get("rain").steps == 5
    cfg = best.train_config
    assert cfg["selected"] == {"by": "mean_alignment", "step": 4, "run_steps": 5, "last": "rain"}
    assert cfg["eval"]["best"]["step"] == 4 and cfg["eval"]["best"]["alignment"] == 30.0
    assert [p["alignment"] for p in last.train_config["eval"]["history"]] == [10.0, 30.0, 20.0]
    doc = result.to_json()["eval"]
    assert doc["best"]["name"] == "rain-best" and doc["best"]["step"] == 4 and doc["best"]["digest"] == reg.get("rain-best").digest
    assert [p["step"] for p in doc["history"]] == [2, 4, 5]


def test_evaluation_does_not_change_what_is_trained(clips, clip_dir, tiny_base):
    plain = train(clips, "plain", tiny_base, steps=4, adapter_dtype="fp32", publish=False)
    scored = train(clips, "scored", tiny_base, steps=4, adapter_dtype="fp32", publish=False, **with_eval(clip_dir))
    assert [p["step"] for p in scored.eval["history"]] == [2, 4]
    assert scored.losses == plain.losses
    assert all(torch.equal(scored.adapter.tensors[k], v) for k, v in plain.adapter.tensors.items())
    assert scored.best_adapter is not None and scored.best_manifest is None  # publish=False: returned only


def test_resume_continues_the_eval_history_and_keeps_the_best(clips, clip_dir, tiny_base):
    def stop_at_3(info: tr.StepInfo) -> None:
        if info.step == 3:
            raise KeyboardInterrupt

    with pytest.raises(LampError, match="after step 3 of 5"):
        train(clips, "again", tiny_base, on_step=stop_at_3, **with_eval(clip_dir))
    assert (tr.run_dir("again") / te.BEST_FILE).exists()  # step 2's adapter, kept through Ctrl-C
    assert [p["step"] for p in tr.read_checkpoint_meta(tr.checkpoint_path("again"))["eval"]["history"]] == [2]
    with pytest.raises(InvalidInput, match="eval settings"):
        tr.train_motion(clips, "again", base=tiny_base, steps=5, resume=True, eval_every=2, eval_prompts=["other"],
                        clip_model=str(clip_dir), device="cpu")
    resumed = tr.train_motion(clips, "again", base=tiny_base, steps=5, resume=True, device="cpu")  # eval options from the checkpoint
    assert [p["step"] for p in resumed.eval["history"]] == [2, 4, 5]
    assert Registry().exists("again-best") and not tr.run_dir("again").exists()


@pytest.mark.parametrize(
    "case", ["no prompts", "prompts without --eval-every", "zero", "empty prompt", "--eval-steps 0", "name too long",
             "best name taken", "--eval-out without --eval-every", "--eval-out is a file"],
)
def test_bad_eval_options_fail_before_any_model_loads(case, clips, clip_dir, tiny_base, monkeypatch, tmp_path):
    def no_models(*a, **kw):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(tr.loop, "make_accelerator", no_models)
    name, kw = "motion", dict(eval_every=2, eval_prompts=PROMPTS, clip_model=str(clip_dir))
    expected: type[Exception] = InvalidInput
    if case == "no prompts":
        kw["eval_prompts"], match = None, "needs prompts"
    elif case == "prompts without --eval-every":
        kw["eval_every"], match = None, "needs --eval-every"
    elif case == "zero":
        kw["eval_every"], match = 0, "at least 1"
    elif case == "empty prompt":
        kw["eval_prompts"], match = ["ok", "  "], "empty prompt"
    elif case == "--eval-steps 0":
        kw["eval_steps"], match = 0, "--eval-steps must be at least 1"
    elif case == "--eval-out without --eval-every":
        kw = {"eval_out": tmp_path / "out"}
        match = "needs --eval-every"
    elif case == "--eval-out is a file":
        (tmp_path / "file").write_text("x")
        kw["eval_out"], match = tmp_path / "file", "not a folder"
    elif case == "name too long":
        name, match = "m" * 62, "not a valid motion name"
    else:
        from lamp_cli.adapter import MotionAdapter, make_metadata

        md = make_metadata(name="motion-best", base_spec="tiny", base_fingerprint="x", architecture="a", frames=4, width=32, height=32, train={})
        Registry().publish_adapter(MotionAdapter({"a.conv1d.weight": torch.zeros(2, 2, 3)}, md))
        expected, match = NameTaken, "motion-best"
    with pytest.raises(expected, match=match):
        train(clips, name, tiny_base, **kw)


def test_cli_eval_every_json_and_missing_clip_fails_before_training(clips, clip_dir, tiny_base_dir, tmp_path, capsys, monkeypatch):
    import lamp_cli.models.base as base_mod

    tiny = ["--base", str(tiny_base_dir), "--steps", "3", "--frames", str(FRAMES), "--width", str(SIZE), "--height", str(SIZE),
            "--seed", "3", "--checkpoint-every", "0"]

    # a CLIP model that is not in the cache: one error line + hint, before the base even loads
    with monkeypatch.context() as m:
        m.setattr(base_mod, "load_base", lambda *a, **kw: pytest.fail("the base loaded before CLIP was checked"))
        with pytest.raises(SystemExit) as e:
            main(["train", str(clips), "--name", "nope", *tiny, "--eval-every", "2", "--eval-prompts", "rain",
                  "--clip-model", "nobody/no-such-clip"])
    out, err = capsys.readouterr()
    assert e.value.code == 1 and out == ""
    lines = err.strip().splitlines()
    assert lines[-2] == "Error: CLIP model 'nobody/no-such-clip' is not available locally (not in the local Hugging Face cache)"
    assert lines[-1].startswith("Hint: download it once with `hf download nobody/no-such-clip`")
    assert not Registry().exists("nope") and not tr.run_dir("nope").exists()

    # --eval-every without prompts: usage-level error, nothing written
    with pytest.raises(SystemExit) as e:
        main(["train", str(clips), "--name", "nope", *tiny, "--eval-every", "2"])
    assert e.value.code == 1 and "needs prompts" in capsys.readouterr().err

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a horse runs\n\nrain falls\n")
    with pytest.raises(SystemExit) as e:
        main(["train", str(clips), "--name", "square", *tiny, "--eval-every", "2", "--eval-prompts-file", str(prompts),
              "--eval-steps", "2", "--clip-model", str(clip_dir), "--eval-out", str(tmp_path / "evals"), "--json"])
    out, err = capsys.readouterr()
    assert e.value.code == 0, err
    doc = json.loads(out)
    assert [p["step"] for p in doc["eval"]["history"]] == [2, 3] and doc["eval"]["prompts"] == PROMPTS
    assert doc["eval"]["steps"] == 2 and doc["eval"]["best"]["name"] == "square-best"
    assert "eval at step 2" in err
    assert sorted(m.name for m in Registry().list()) == ["square", "square-best"]
    # --eval-out: every evaluation's videos, with sidecars holding the sampling record and the scores
    from lamp_cli.video import read_video

    videos = sorted(p.relative_to(tmp_path / "evals").as_posix() for p in (tmp_path / "evals").rglob("*.mp4"))
    assert videos == ["step-000002/00_a_horse_runs.mp4", "step-000002/01_rain_falls.mp4",
                      "step-000003/00_a_horse_runs.mp4", "step-000003/01_rain_falls.mp4"]
    assert read_video(tmp_path / "evals" / videos[-1]).frames.shape == (FRAMES, SIZE, SIZE, 3)
    side = json.loads((tmp_path / "evals" / (videos[-1] + ".json")).read_text())
    last = doc["eval"]["history"][-1]
    assert side["eval"]["step"] == 3 and side["eval"]["alignment"] == last["videos"][1]["alignment"]
    assert side["steps"] == 2 and side["seed"] == 0 and side["first_frame"]["source"] == "text-to-image"
    assert last["videos_dir"] == str(tmp_path / "evals" / "step-000003")
