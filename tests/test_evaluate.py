"""The paper's metrics against hand computations, and the CLIP scorer on a tiny CLIP built in code."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from lamp_cli import evaluate as ev
from lamp_cli.errors import InvalidInput, LampError
from lamp_cli.prompts import read_prompts_file

# ---------------------------------------------------------------------------------------
# metrics on fixed embeddings


def test_alignment_by_hand():
    frames = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    text = np.array([2.0, 0.0])  # length does not matter: cosines
    expected = 100 * (1 + 0 + 1 / math.sqrt(2)) / 3  # 56.9035...
    assert ev.alignment(frames, text) == pytest.approx(expected, abs=1e-5)
    assert ev.alignment(frames * 7.5, text[None]) == pytest.approx(expected, abs=1e-5)


def test_consistency_by_hand():
    frames = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    # pairs (0,1): 0, (0,2): 1/sqrt2, (1,2): 1/sqrt2
    expected = 100 * (0 + 2 / math.sqrt(2)) / 3  # 47.1404...
    assert ev.consistency(frames) == pytest.approx(expected, abs=1e-5)
    # opposite frames: cos -1
    assert ev.consistency(np.array([[1.0, 2.0], [-1.0, -2.0]])) == pytest.approx(-100.0, abs=1e-5)


def test_consistency_of_identical_frames_is_100():
    rng = np.random.default_rng(0)
    frame = rng.normal(size=(1, 768))
    assert ev.consistency(np.repeat(frame, 16, axis=0)) == pytest.approx(100.0, abs=1e-5)


def test_diversity_by_hand():
    a = np.array([[1.0, 0.0], [0.0, 1.0]])  # mean of unit rows: (0.5, 0.5)
    b = np.array([[3.0, 0.0], [1.0, 0.0]])  # (1, 0): each row normalised first
    c = np.array([[0.0, 2.0], [0.0, 5.0]])  # (0, 1)
    # pairs: a·b = 0.5, a·c = 0.5, b·c = 0 -> mean 1/3
    assert ev.diversity([a, b, c]) == pytest.approx(100 / 3, abs=1e-5)
    np.testing.assert_allclose(ev.video_embedding(a), [0.5, 0.5])


def test_diversity_of_identical_videos_is_maximal():
    rng = np.random.default_rng(1)
    frame = rng.normal(size=(1, 64))
    same = [np.repeat(frame, 8, axis=0)] * 4
    assert ev.diversity(same) == pytest.approx(100.0, abs=1e-5)  # the largest value possible
    varied = [rng.normal(size=(8, 64)) for _ in range(4)]
    assert ev.diversity(varied) < ev.diversity(same) - 50


def test_metrics_accept_torch_tensors():
    import torch

    frames = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    assert ev.alignment(frames, torch.tensor([1.0, 0.0])) == pytest.approx(
        100 * (1 + 1 / math.sqrt(2)) / 3, abs=1e-5
    )
    assert ev.consistency(frames) == pytest.approx(ev.consistency(frames.numpy()), abs=1e-9)


def test_metric_errors():
    with pytest.raises(InvalidInput, match="at least 2 frames"):
        ev.consistency(np.ones((1, 4)))
    with pytest.raises(InvalidInput, match="at least 2 videos"):
        ev.diversity([np.ones((3, 4))])
    with pytest.raises(InvalidInput, match="all zeros"):
        ev.alignment(np.zeros((2, 4)), np.ones(4))
    with pytest.raises(InvalidInput, match="-d"):
        ev.alignment(np.ones((2, 4)), np.ones(3))


# ---------------------------------------------------------------------------------------
# the scorer on a tiny CLIP, loaded by path through the real loader


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from lamp_cli.testing import save_tiny_clip

    return save_tiny_clip(tmp_path_factory.mktemp("tiny_clip"))


@pytest.fixture(scope="module")
def scorer(tiny_clip_dir: Path) -> ev.Scorer:
    return ev.Scorer(str(tiny_clip_dir), device="cpu")


def clip_frames(t: int = 8, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(t, 48, 64, 3), dtype=np.uint8)


class CallCounter:
    def __init__(self, module):
        self.calls = 0
        self.handle = module.register_forward_hook(self)

    def __call__(self, *args):
        self.calls += 1


def test_frames_are_embedded_in_batches(scorer):
    frames = clip_frames(8)
    counter = CallCounter(scorer.clip.model.vision_model)
    try:
        batched = scorer.embed_frames(frames)
        assert counter.calls == 1  # 8 frames, one forward pass
        small = ev.Scorer(scorer.clip, batch_size=3)
        chunked = small.embed_frames(frames)
        assert counter.calls == 1 + 3  # 3 + 3 + 2
    finally:
        counter.handle.remove()
    assert batched.shape == (8, 16)
    np.testing.assert_allclose(chunked, batched, atol=1e-5)
    # the frames really matter: a different video embeds differently
    assert np.abs(scorer.embed_frames(clip_frames(8, seed=1)) - batched).max() > 1e-3


def test_prompts_are_embedded_once(scorer):
    counter = CallCounter(scorer.clip.model.text_model)
    try:
        clips = [clip_frames(4, seed=i) for i in range(3)]
        report = ev.score_clips(scorer, clips, ["a horse runs", "rain", "a horse runs"], ["a", "b", "c"])
    finally:
        counter.handle.remove()
    assert counter.calls == 1
    assert [v.prompt for v in report.videos] == ["a horse runs", "rain", "a horse runs"]
    # the report's numbers are the metric functions applied to the scorer's embeddings
    e = scorer.embed_frames(clips[1])
    t = scorer.embed_prompts(["rain"])[0]
    assert report.videos[1].alignment == pytest.approx(ev.alignment(e, t), abs=1e-4)
    assert report.videos[1].consistency == pytest.approx(ev.consistency(e), abs=1e-4)
    assert report.mean_alignment == pytest.approx(np.mean([v.alignment for v in report.videos]), abs=1e-9)
    assert report.diversity == pytest.approx(ev.diversity([scorer.embed_frames(c) for c in clips]), abs=1e-4)


def test_video_of_identical_frames_scores_consistency_100(scorer):
    frames = np.repeat(clip_frames(1), 16, axis=0)
    report = ev.score_clips(scorer, [frames, frames], ["rain", "rain"], ["a", "b"])
    assert report.videos[0].consistency == pytest.approx(100.0, abs=1e-4)
    assert report.diversity == pytest.approx(100.0, abs=1e-4)


def test_evaluate_videos_reads_files(scorer, tmp_path):
    from lamp_cli.video import write_video

    paths = [write_video(clip_frames(6, seed=i), tmp_path / f"v{i}.gif", fps=8) for i in range(2)]
    report = ev.evaluate_videos(paths, ["rain", "a horse runs"], scorer=scorer)
    d = report.to_dict()
    assert d["count"] == 2 and d["clip_model"] == scorer.model_name
    assert [v["frames"] for v in d["videos"]] == [6, 6]
    assert set(d) == {"clip_model", "count", "videos", "mean", "diversity"}
    with pytest.raises(InvalidInput, match="fewer prompts than videos"):
        ev.evaluate_videos(paths, ["rain"], scorer=scorer)


def test_missing_clip_model_names_hf_download():
    with pytest.raises(LampError) as err:
        ev.Scorer("openai/clip-vit-large-patch14", device="cpu")
    assert "not available locally" in err.value.message
    assert "hf download openai/clip-vit-large-patch14" in err.value.hint


def test_clip_folder_that_is_missing_or_incomplete(tmp_path):
    with pytest.raises(LampError, match="does not exist"):
        ev.load_clip(str(tmp_path / "nope"), device="cpu")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")
    with pytest.raises(LampError, match="cannot load a CLIP model"):
        ev.load_clip(str(tmp_path / "half"), device="cpu")


def test_find_videos_and_prompts_file(tmp_path):
    from lamp_cli.video import write_video

    for name in ("v10.mp4", "v2.gif", "v1.webm"):
        write_video(clip_frames(3), tmp_path / name, fps=8)
    write_video(clip_frames(3), tmp_path / "v3", fps=8, format="frames")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / ".hidden.mp4").write_text("x")
    assert [p.name for p in ev.find_videos(tmp_path)] == ["v1.webm", "v2.gif", "v3", "v10.mp4"]
    pf = tmp_path / "prompts.txt"
    pf.write_text("a horse runs\n\n  rain  \n# a comment\n")
    assert read_prompts_file(pf) == ["a horse runs", "rain"]  # the one reader of gen, eval and train
    pf.write_text("\n\n")
    with pytest.raises(InvalidInput, match="has no prompts"):
        read_prompts_file(pf)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InvalidInput, match="no videos"):
        ev.find_videos(empty)


def test_slug():
    from lamp_cli.generate import slugify

    assert ev.slug("birds fly in the sky, over the sea") == "birds_fly_in_the_sky_over_the_sea"
    assert ev.slug("!!!") == "prompt"
    # one slug rule for every file named after a prompt; eval's names are shorter and say "prompt"
    long = "a horse runs on the beach at sunset with waves and birds in the sky"
    assert ev.slug(long) == slugify(long, max_len=48, empty="prompt") == slugify(long)[:48].rstrip("_")
    assert slugify("!!!") == "video" and slugify("!!!", empty="prompt") == "prompt"
