"""The toy world (clips with known motions, measuring tools) and the toy base's image quality."""

from __future__ import annotations

import numpy as np
import pytest

from lamp_cli.toy import world

# --------------------------------------------------------------------------------------------
# The world


def test_render_is_deterministic_and_reads_back() -> None:
    rng = np.random.default_rng(3)
    for _ in range(40):
        scene = world.random_scene(rng, radius=(6.0, 16.0))
        frame = world.render(scene)
        assert frame.shape == (64, 64, 3) and frame.dtype == np.uint8
        assert np.array_equal(frame, world.render(scene))
        reading = world.read_frame(frame)
        assert reading.matches(scene.shape, scene.color, scene.background), (scene, reading)
        assert reading.centroid is not None
        assert np.hypot(reading.centroid[0] - scene.cx, reading.centroid[1] - scene.cy) < 0.5


def test_caption_round_trip() -> None:
    assert world.caption("star", "red", "blue") == "a red star on a blue background"
    assert world.parse_caption("a red star on a blue background") == ("star", "red", "blue")
    with pytest.raises(ValueError):
        world.parse_caption("a bear plays the guitar")


def test_every_caption_word_is_one_token() -> None:
    from lamp_cli.testing import tiny_tokenizer

    tok = tiny_tokenizer(world.WORDS)
    ids = tok("a magenta triangle on a cyan background").input_ids
    assert len(ids) == 2 + 7  # start, seven words, end


def test_make_clips_is_seeded_and_varied() -> None:
    a = world.make_clips("slide_right", 8, seed=1)
    b = world.make_clips("slide_right", 8, seed=1)
    c = world.make_clips("slide_right", 8, seed=2)
    assert a == b and a != c
    pairs = {(s.start.shape, s.start.color) for s in a}
    assert len(pairs) == 8  # every clip shows a different shape/colour pair
    excluded = world.make_clips("rise", 8, seed=1, exclude=[("circle", "red"), ("star", "blue")])
    assert not {(s.start.shape, s.start.color) for s in excluded} & {("circle", "red"), ("star", "blue")}


@pytest.mark.parametrize("motion", world.MOTIONS)
def test_clips_stay_in_view_and_measured_path_matches_truth(motion: str) -> None:
    for spec in world.make_clips(motion, 3, seed=5, frames=16):
        frames = world.render_clip(spec)
        assert frames.shape == (16, 64, 64, 3)
        truth = world.centroid_path(spec)
        measured = world.measure_path(frames)
        assert np.abs(measured - truth).max() < 0.5
        # the object never touches the border: the border is pure background in every frame
        bg = np.asarray(world.COLORS[spec.start.background])
        for f in frames:
            border = np.concatenate([f[0], f[-1], f[:, 0], f[:, -1]]).astype(int)
            assert np.abs(border - bg).max() <= 1


def test_motions_have_their_stated_direction_and_speed() -> None:
    d = {m: world.motion_displacement(m, 16) for m in world.MOTIONS}
    step = world.SLIDE_SPEED
    assert np.allclose(np.diff(d["slide_right"], axis=0), [step, 0])
    assert np.allclose(np.diff(d["slide_left"], axis=0), [-step, 0])
    assert np.allclose(np.diff(d["rise"], axis=0), [0, -step])  # image y grows downwards
    assert np.allclose(np.diff(d["fall"], axis=0), [0, step])
    assert np.allclose(d["grow"], 0) and np.allclose(d["spin"], 0)
    assert d["bounce"][:, 1].min() < -10 and abs(d["bounce"][8, 1]) < 1e-9  # hops and lands


def test_grow_and_spin_are_visible() -> None:
    spec = world.make_clips("grow", 1, seed=0)[0]
    frames = world.render_clip(spec)
    areas = [world.read_frame(f).area for f in frames]
    assert areas[-1] > 2.0 * areas[0] and all(b >= a for a, b in zip(areas, areas[1:], strict=False))
    spin = world.make_clips("spin", 1, seed=0)[0]
    assert spin.start.shape != "circle"
    frames = world.render_clip(spin)
    assert np.abs(frames[1].astype(int) - frames[0].astype(int)).sum() > 0
    assert world.read_frame(frames[0]).area == pytest.approx(world.read_frame(frames[5]).area, rel=0.08)


def test_measure_path_recovers_a_known_path_on_noisy_frames() -> None:
    rng = np.random.default_rng(0)
    spec = world.make_clips("bounce", 1, seed=4)[0]
    frames = world.render_clip(spec).astype(np.int16)
    frames += rng.integers(-20, 21, size=frames.shape, dtype=np.int16)  # sensor-like noise
    frames[:, 3, 3] = 255 - frames[:, 3, 3]  # and a speck away from the object
    measured = world.measure_path(np.clip(frames, 0, 255).astype(np.uint8))
    assert np.abs(measured - world.centroid_path(spec)).max() < 0.6


def test_colour_purity_counts_smudges_and_not_anti_aliased_edges() -> None:
    rng = np.random.default_rng(7)
    for _ in range(20):  # rendered frames: only the two colours and their mixtures
        scene = world.random_scene(rng, radius=(6.0, 16.0))
        p = world.colour_purity(world.render(scene), scene.color, scene.background)
        assert p.pure == 1.0 and p.smudges == 0
    frame = world.render(world.Scene("square", "red", "green", 32.0, 32.0, 12.0))
    frame[30:33, 28:31] = (90, 30, 110)  # a dark purple smudge inside the object (9 px)
    frame[5, 5] = (255, 255, 255)  # and a single off-palette pixel: noise, not a smudge
    p = world.colour_purity(frame, "red", "green")
    assert p.smudges == 1 and p.pure == pytest.approx(1 - 10 / 64**2)


def test_content_check_and_verdict_on_rendered_clips() -> None:
    from lamp_cli.toy.demo import check_content, check_motion, verdict

    spec = world.ClipSpec("slide_right", world.Scene("square", "red", "green", 14.0, 32.0, 9.0))
    frames = world.render_clip(spec)
    target = ("square", "red", "green")
    content = check_content(frames, target)
    assert (content.shape_kept, content.colour_kept, content.smudges) == (1.0, 1.0, 0)
    assert verdict(check_motion(frames, "slide_right"), content).startswith("transfer:")
    # the same path drawn as discs from frame 2 on: it moves, but the content is not kept
    blobs = np.stack([frames[0]] + [world.render(world.Scene("circle", "red", "green", s.cx, s.cy, s.radius))
                                    for s in spec.scenes()[1:]])
    content = check_content(blobs, target)
    assert content.shape_kept == 0.0 and content.colour_kept == 1.0
    assert verdict(check_motion(blobs, "slide_right"), content) == (
        "no transfer: the square kept in 0.00 of frames < 0.6 (0 new smudges in 0 of 15 frames)")
    # standing still is not the motion
    still = np.repeat(frames[:1], len(frames), axis=0)
    assert "path error" in verdict(check_motion(still, "slide_right"), check_content(still, target))


def test_heldout_triples_are_new_combinations_of_seen_parts() -> None:
    held = world.heldout_triples()
    train = set(world.training_triples())
    assert len(held) == 24 and not set(held) & train
    for s, c, b in held:
        assert any(t[0] == s and t[1] == c for t in train)
        assert any(t[1] == c and t[2] == b for t in train)


def test_write_clips_writes_videos_and_captions(tmp_path) -> None:
    from lamp_cli.video import read_video

    written = world.write_clips("slide_right", tmp_path, n=2, seed=0, fmt="mp4")
    assert len(written) == 2
    for path, spec in written:
        assert path.with_suffix(".txt").read_text().strip() == spec.caption
        clip = read_video(path)
        assert clip.frames.shape == (16, 64, 64, 3)
        # lossy video keeps the motion: the measured path still follows the truth
        assert np.abs(world.measure_path(clip.frames) - world.centroid_path(spec)).max() < 1.0


# --------------------------------------------------------------------------------------------
# The toy base

@pytest.fixture(scope="module")
def toy_base():
    from lamp_cli.models.base import load_base

    return load_base("toy")


def test_toy_base_ships_small_and_loads_through_the_ordinary_loader(toy_base) -> None:
    from lamp_cli.models.base import builtin_dir

    folder = builtin_dir("toy")
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert size < 8e6
    assert not list(folder.rglob("*.bin")) and not list(folder.rglob("*.pt"))  # safetensors only
    assert toy_base.vae_scale_factor == 4  # 64×64 frames -> 16×16 latents
    ids = toy_base.tokenizer("a red circle on a blue background").input_ids
    assert len(ids) == 9  # every world word is one token



def test_toy_vae_reconstructs_world_images(toy_base) -> None:
    """The VAE keeps colours and positions (measured: mean abs error 7.8/255, centroids ~1 px)."""
    import torch

    rng = np.random.default_rng(5)
    scenes = [world.random_scene(rng) for _ in range(16)]
    images = np.stack([world.render(s) for s in scenes])
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1  # N×H×W×3 -> N×3×H×W
    with torch.no_grad():
        rec = toy_base.vae.decode(toy_base.vae.encode(x).latent_dist.mean).sample
    rec = ((rec.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    assert np.abs(rec.astype(int) - images).mean() < 12
    backgrounds = [world.dominant_colors(r)[1] for r in rec]
    assert np.mean([b == s.background for b, s in zip(backgrounds, scenes, strict=True)]) >= 0.75
    shifts = [np.hypot(*np.subtract(world.read_frame(r).centroid, (s.cx, s.cy))) for r, s in zip(rec, scenes, strict=True)]
    assert np.median(shifts) < 2.0


def test_text_to_image_draws_the_requested_size(toy_base) -> None:
    from lamp_cli.toy.sample import text_to_image

    a = text_to_image(toy_base, ["a red circle on a blue background"], steps=3, seed=1)
    b = text_to_image(toy_base, ["a red circle on a blue background"], steps=3, seed=1)
    assert a.shape == (1, 64, 64, 3) and a.dtype == np.uint8 and np.array_equal(a, b)


# Measured on the shipped base with exactly this evaluation (docs/toy.md): background 1.00,
# object colour 1.00, shape 0.69 (chance: 0.20; the VAE alone reads back 0.66-0.87 of shapes,
# depending on their size). The floors leave a margin for other CPUs' float rounding; a retrained
# base that follows its captions worse fails here.
HELDOUT_MIN = {"background": 0.9, "color": 0.9, "shape": 0.55}


def test_toy_base_draws_held_out_captions(toy_base) -> None:
    """Captions the base never saw: simple image analysis reads back the asked shape and colours.

    The 24 held-out (shape, colour, background) triples, 2 seeds, 25 DDIM steps, guidance 5 —
    the same evaluation scripts/train_toy_base.py reports at the end of training.
    """
    from lamp_cli.toy.sample import text_to_image

    held = world.heldout_triples()
    prompts = [world.caption(*t) for t in held]
    readings = []
    for seed in (0, 1):
        images = text_to_image(toy_base, prompts, steps=25, guidance=5.0, seed=seed)
        readings += [(world.read_frame(img), t) for img, t in zip(images, held, strict=True)]
    frac = {
        "background": np.mean([r.background == t[2] for r, t in readings]),
        "color": np.mean([r.color == t[1] for r, t in readings]),
        "shape": np.mean([r.shape == t[0] for r, t in readings]),
    }
    for key, floor in HELDOUT_MIN.items():
        assert frac[key] >= floor, f"{key}: {frac[key]:.2f} of held-out images (need {floor})"


# --------------------------------------------------------------------------------------------
# Motion transfer: what `lamp demo` shows, asserted with the demo's own bars


@pytest.fixture(scope="module")
def slide_demo(toy_base, tmp_path_factory):
    """One default `lamp demo` run (slide_right, seed 0), shared by the tests that read it: 8 clips
    -> `train_motion` on the toy base -> `Engine.sample` (first frame from the base's text-to-
    image, as `lamp gen`) for a shape/colour pair none of the clips showed."""
    from lamp_cli.registry import Registry
    from lamp_cli.toy.demo import run_demo

    tmp = tmp_path_factory.mktemp("slide-demo")
    registry = Registry(tmp / "registry")
    return run_demo("slide_right", out=tmp / "out", base=toy_base, registry=registry, seed=0), registry


@pytest.mark.slow
def test_a_motion_learned_from_toy_clips_moves_an_unseen_pair_and_keeps_it(slide_demo) -> None:
    """The demo's bars (docs/toy.md "What counts"): path error <= 3 px, frame 1's shape kept in
    >= 0.6 of the moving frames, prompted colours in >= 0.95 of frames, colour purity >= 0.99.
    Measured on the shipped base with seed 0 (docs/toy.md, the demo's table)."""
    from lamp_cli.toy import demo

    result, registry = slide_demo
    shape, color, _ = result.target
    assert (shape, color) not in result.training_pairs  # unseen pair
    assert result.check.found == len(result.check.measured)  # the object is found in every frame
    assert result.check.error <= demo.PATH_ERROR_MAX, result.check.to_json()
    vx, vy = result.check.velocity
    assert 1.4 <= vx <= 2.6 and abs(vy) <= 0.6, (vx, vy)  # right, at the trained 2 px/frame
    c = result.content
    assert c.shape == shape  # frame 1 shows the prompted shape
    assert c.shape_kept >= demo.SHAPE_KEPT_MIN, c.to_json()
    assert c.colour_kept >= demo.COLOUR_KEPT_MIN, c.to_json()
    assert c.purity >= demo.PURITY_MIN, c.to_json()  # no frame lost to noise or blotches
    assert result.verdict.startswith("transfer:"), result.verdict
    assert not registry.exists(result.name)  # the demo cleans up


@pytest.mark.slow
def test_demo_writes_its_measurements_and_a_sheet_with_a_training_clip_above_the_video(slide_demo) -> None:
    import json

    from PIL import Image

    result, _ = slide_demo
    doc = json.loads(result.files["json"].read_text())
    for key in ("path_error_px", "shape_kept", "colour_kept", "video", "verdict", "artefacts"):
        assert key in doc, key
    assert doc["path_error_px"] == pytest.approx(result.check.error, abs=1e-3)
    assert doc["shape_kept"] == pytest.approx(result.content.shape_kept, abs=1e-3)
    assert doc["video"] == str(result.files["mp4"]) and result.files["mp4"].exists()
    sheet = np.asarray(Image.open(result.files["contact_sheet"]).convert("RGB"))
    # two rows of 16 frames (each 2x) under their labels: the clip's frames, then the video's
    assert sheet.shape[0] >= 2 * 128 and sheet.shape[1] >= 16 * 128
    video_row = sheet[-130:-2, 2:130]  # the generated video's frame 1, enlarged 2x
    assert world.dominant_colors(video_row[::2, ::2]) == result.target[1:]


def test_room_to_move_prefers_first_frames_with_space_for_the_motion() -> None:
    from lamp_cli.toy.demo import room_to_move

    left = world.read_frame(world.render(world.Scene("circle", "red", "blue", 16.0, 32.0, 8.0)))
    right = world.read_frame(world.render(world.Scene("circle", "red", "blue", 48.0, 32.0, 8.0)))
    # slide_right carries the object 30 px: from x=16 it stays in view, from x=48 it leaves
    assert room_to_move(left, "slide_right") > 0 > room_to_move(right, "slide_right")
    assert room_to_move(right, "slide_left") > 0 > room_to_move(left, "slide_left")
    low = world.read_frame(world.render(world.Scene("circle", "red", "blue", 32.0, 50.0, 8.0)))
    assert room_to_move(low, "rise") > 0 > room_to_move(low, "fall")
    empty = world.read_frame(np.full((64, 64, 3), 90, np.uint8))
    assert room_to_move(empty, "rise") == float("-inf")


class _CannedFirstFrames:
    """An engine stand-in whose text-to-image draws a fixed scene per seed."""

    def __init__(self, scenes: dict[int, world.Scene]):
        self.scenes = scenes

    def first_frames(self):
        from lamp_cli.first_frame import FirstFrame

        def draw(prompt, *, width, height, steps, seed):
            return FirstFrame(world.render(self.scenes[seed]), {})

        return draw


def test_pick_first_frame_keeps_a_candidate_that_shows_the_prompt_then_the_one_with_most_room() -> None:
    from lamp_cli.toy.demo import pick_first_frame

    scenes = {s: world.Scene("circle", "red", "green", 14.0, 32.0, 9.0) for s in range(32)}  # wrong shape, room
    scenes[5] = world.Scene("square", "red", "green", 40.0, 32.0, 9.0)  # right, no room for 30 px
    scenes[6] = world.Scene("square", "red", "green", 20.0, 32.0, 9.0)  # right, room
    engine = _CannedFirstFrames(scenes)
    pick = pick_first_frame(engine, "a red square on a green background", "slide_right", seed=0, steps=1)
    assert (pick.seed, pick.matching, pick.drawn) == (6, 2, 8)
    assert world.read_frame(pick.first.image).matches("square", "red", "green")
    # no candidate shows the prompt: more are drawn (up to 32), then the one with most room, and none counted
    pick = pick_first_frame(engine, "a blue cross on a green background", "slide_right", seed=0, steps=1)
    assert (pick.seed, pick.matching, pick.drawn) == (6, 0, 32)
    # none of the first 8 fits the motion: more are drawn until one does, and that one is kept
    scenes = {s: world.Scene("square", "red", "green", 44.0, 32.0, 9.0) for s in range(32)}  # no room
    scenes[11] = world.Scene("square", "red", "green", 16.0, 32.0, 9.0)
    pick = pick_first_frame(_CannedFirstFrames(scenes), "a red square on a green background", "slide_right",
                            seed=0, steps=1)
    assert (pick.seed, pick.matching, pick.drawn) == (11, 12, 12)


def test_demo_and_ablation_run_end_to_end_on_the_tiny_base(tiny_base, tmp_path) -> None:
    """The plumbing, fast: 1 training step, 2 sampling steps (numbers meaningless on a random base)."""
    from lamp_cli.registry import Registry
    from lamp_cli.toy.ablation import VARIANTS, markdown_table, run_ablation
    from lamp_cli.toy.demo import run_demo

    registry = Registry(tmp_path / "registry")
    demo = run_demo("slide_right", out=tmp_path / "out", base=tiny_base, registry=registry, steps=1, sample_steps=2)
    assert {"mp4", "gif", "contact_sheet", "json"} <= set(demo.files) and all(p.exists() for p in demo.files.values())
    drawn = demo.to_json()["first_frame"]["candidates"]  # 8, more (up to 32) while none fits
    assert 8 <= drawn <= 32 and demo.record["first_frame"]["candidates"] == drawn
    assert demo.record["first_frame"]["seed"] in range(drawn) and not registry.exists(demo.name)
    assert 0 <= demo.to_json()["first_frame"]["candidates_matching_prompt"] <= drawn
    assert demo.to_json()["train_steps"] == 1
    rows, record = run_ablation(("rise",), train_steps=1, targets=1, sample_steps=2, base=tiny_base)
    assert [r.variant for r in rows] == list(VARIANTS) and all(r.videos == 1 for r in rows)
    assert record["videos"][VARIANTS.index("no first frame")]["variant"] == "no first frame"
    assert markdown_table(rows).count("\n") == len(rows) + 1


def test_room_to_move_uses_the_objects_extent_its_growth_and_the_clips_margin() -> None:
    from lamp_cli.toy.demo import room_to_move

    assert world.size_factors("grow")[-1] == pytest.approx(1 + world.GROW_RATE * 15)
    assert np.all(world.size_factors("slide_right") == 1.0)
    small = world.read_frame(world.render(world.Scene("circle", "red", "blue", 32.0, 32.0, 8.0)))
    big = world.read_frame(world.render(world.Scene("circle", "red", "blue", 32.0, 32.0, 19.0)))
    # radius 8 grows to 12.8 and stays inside; 19 grows to 30.4 and would cross the border
    assert room_to_move(small, "grow") > 0 > room_to_move(big, "grow")
    assert room_to_move(big, "spin") > 0  # the same object, not growing, fits
    # a square reaches further than a disc of its area: the extent decides, with the clips' 2 px margin
    square = world.read_frame(world.render(world.Scene("square", "red", "blue", 24.0, 32.0, 9.0)))
    x_max = square.extent[1]
    assert room_to_move(square, "slide_right") == pytest.approx(world.SIZE - 1 - (x_max + 30) - world.CLIP_MARGIN, abs=0.01)


def test_shape_table_sums_up_the_full_methods_videos_by_shape() -> None:
    from lamp_cli.toy.ablation import shape_table

    def video(shape, err, kept, verdict, variant="full"):
        return {"variant": variant, "target": (shape, "red", "blue"), "error_px": err, "shape_kept": kept,
                "colour_kept": 1.0, "verdict": verdict}

    table = shape_table([video("square", 1.0, 1.0, "transfer: ok"), video("square", 3.0, 0.5, "no transfer: x"),
                         video("star", float("nan"), 0.0, "no transfer: y"), video("circle", 9.0, 0.0, "x", "no AdaIN")])
    rows = {line.split(" | ")[0].strip("| "): line for line in table.splitlines()[2:]}
    assert set(rows) == {"square", "star"}  # shapes in order, only the full method's videos
    assert rows["square"] == "| square | 2 | 2.00 | 0.75 | 1.00 | 0.50 |"
    assert rows["star"].startswith("| star | 1 | nan | 0.00 |")


def test_demo_and_bench_defaults_are_the_recipes() -> None:
    from typer.main import get_command

    from lamp_cli.cli.app import app
    from lamp_cli.toy import recipe

    root = get_command(app)
    for path, want in ((("demo",), recipe.DEMO_TRAIN_STEPS), (("bench", "toy"), recipe.TRAIN_STEPS)):
        cmd = root
        for name in path:
            cmd = cmd.commands[name]
        steps = next(p for p in cmd.params if p.name == "steps")
        assert steps.default == want, path


def test_unmeasured_values_are_written_as_null_not_refused() -> None:
    """`lamp bench toy --json` / `lamp demo --json`: a variant that draws no object has no path (NaN);
    its JSON says null there instead of refusing the whole document."""
    import json

    from lamp_cli.jsonio import dumps_strict, nulls_for_unmeasured

    doc = {"rows": [{"motion_error": float("nan"), "shape": 0.5}], "v": (1.0, float("inf")), "n": 3}
    out = json.loads(dumps_strict(nulls_for_unmeasured(doc)))
    assert out == {"rows": [{"motion_error": None, "shape": 0.5}], "v": [1.0, None], "n": 3}
