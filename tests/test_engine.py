"""The inference engine: step functions (pure tensors) and full sampling on the tiny base (CPU)."""

from __future__ import annotations

import copy
import logging

import numpy as np
import pytest
import torch

from lamp_cli import devices
from lamp_cli import engine as eng
from lamp_cli import sampling as smp
from lamp_cli.errors import InvalidInput

# --------------------------------------------------------------------------------------------
# Step functions
# --------------------------------------------------------------------------------------------


def test_shared_noise_statistics_match_the_reference_mix():
    g = torch.Generator().manual_seed(0)
    eps = smp.shared_noise_latents((64, 4, 4, 32, 32), 0.2, g)  # 262k values per frame
    frames = eps[:, :, 1:].permute(2, 0, 1, 3, 4).reshape(3, -1)  # (F-1, N)
    std = frames.std(dim=1)
    assert torch.allclose(std, torch.full_like(std, (0.04 + 0.64) ** 0.5), atol=5e-3)
    corr = torch.corrcoef(frames)
    pairs = corr[torch.triu(torch.ones(3, 3, dtype=torch.bool), diagonal=1)]
    assert torch.allclose(pairs, torch.full_like(pairs, 0.04 / 0.68), atol=0.01)
    # frame 0 is the plain shared draw
    assert abs(float(eps[:, :, 0].std()) - 1.0) < 5e-3


def test_shared_noise_zero_gives_independent_unit_frames():
    g = torch.Generator().manual_seed(1)
    eps = smp.shared_noise_latents((64, 4, 4, 32, 32), 0.0, g)
    frames = eps.permute(2, 0, 1, 3, 4).reshape(4, -1)
    assert torch.allclose(frames.std(dim=1), torch.ones(4), atol=5e-3)
    off = torch.corrcoef(frames)[torch.triu(torch.ones(4, 4, dtype=torch.bool), diagonal=1)]
    assert off.abs().max() < 0.01
    # the same generator state gives the same noise (the seed fully determines it)
    again = smp.shared_noise_latents((64, 4, 4, 32, 32), 0.0, torch.Generator().manual_seed(1))
    assert torch.equal(eps, again)


def _frame_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x.mean(dim=(-2, -1)), x.std(dim=(-2, -1))  # (B, C, F)


def test_adain_matches_per_frame_per_channel_statistics():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 3, 8, 8, generator=g) * 3 + 1
    ref = torch.randn(2, 4, 1, 8, 8, generator=g) * torch.tensor([0.5, 1, 2, 4]).view(1, 4, 1, 1, 1) - 2
    out = smp.adain(x, ref)
    m, s = _frame_stats(out)
    mr, sr = _frame_stats(ref)
    assert torch.allclose(m, mr.expand_as(m), atol=1e-5)
    assert torch.allclose(s, sr.expand_as(s), atol=1e-5)
    # the normalised shape of each frame is kept: correlation with the input is 1
    a, b = x[0, 0, 0].flatten(), out[0, 0, 0].flatten()
    assert float(torch.corrcoef(torch.stack([a, b]))[0, 1]) > 0.9999


def test_adain_schedule_phases():
    g = torch.Generator().manual_seed(0)
    scales = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]).view(1, 1, 5, 1, 1)
    x = torch.randn(1, 4, 5, 8, 8, generator=g) * scales
    early = smp.adain_step(x.clone(), late=False)
    assert torch.equal(early[:, :, :2], x[:, :, :2])  # frames 0 and 1 untouched
    m, s = _frame_stats(early)
    assert torch.allclose(s[..., 2:], s[..., 1:2].expand(-1, -1, 3), atol=1e-5)  # frames 2.. -> frame 1
    late = smp.adain_step(x.clone(), late=True)
    assert torch.equal(late[:, :, 0], x[:, :, 0])
    m, s = _frame_stats(late)
    assert torch.allclose(s, s[..., :1].expand_as(s), atol=1e-5)  # everything -> frame 0
    assert torch.allclose(m, m[..., :1].expand_as(m), atol=1e-5)
    final = smp.adain_final(x.clone())
    m, s = _frame_stats(final)
    assert torch.allclose(s, s[..., :1].expand_as(s), atol=1e-5)


def test_adain_switch_reproduces_the_reference_split():
    assert smp.adain_switch_index(50, eng.DEFAULT_ADAIN_SWITCH) == 31  # i <= 30 early: 31 / 19
    assert smp.adain_switch_index(4, 0.5) == 2
    assert smp.adain_switch_index(10, 0.0) == 0


def test_ddim_step_never_touches_frame_zero(tiny_base):
    sched = tiny_base.ddim()
    sched.set_timesteps(4)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 3, 4, 4, generator=g)
    before = x.clone()
    eps = torch.randn(1, 4, 3, 4, 4, generator=g)
    smp.ddim_step_frames(sched, eps, sched.timesteps[0], x)
    assert torch.equal(x[:, :, 0], before[:, :, 0])
    ref = sched.step(eps[:, :, 1:], sched.timesteps[0], before[:, :, 1:].clone(), eta=0.0).prev_sample
    assert torch.equal(x[:, :, 1:], ref)


def test_guided_noise_is_classifier_free_guidance():
    u, c = torch.randn(1, 4, 2, 2, 2), torch.randn(1, 4, 2, 2, 2)
    out = smp.guided_noise(torch.cat([u, c]), 12.5)
    assert torch.allclose(out, u + 12.5 * (c - u))


def _reference_lut(src: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Brute force: lut[v] = the first r with CDF_ref(r) >= CDF_src(v), compared as exact fractions."""
    from fractions import Fraction

    cs, cr = np.cumsum(np.bincount(src.ravel(), minlength=256)), np.cumsum(np.bincount(ref.ravel(), minlength=256))
    cdf_ref = [Fraction(int(c), int(cr[-1])) for c in cr]
    lut = np.zeros(256, dtype=np.uint8)
    r = 0
    for v in range(256):  # CDF_src is non-decreasing in v, so r only moves forward
        target = Fraction(int(cs[v]), int(cs[-1]))
        while cdf_ref[r] < target:
            r += 1
        lut[v] = r
    return lut


def test_histogram_match_exact_cdf_lookup():
    rng = np.random.default_rng(0)
    f0 = rng.normal(120, 40, size=(24, 32, 3)).clip(0, 255).astype(np.uint8)
    f1 = rng.normal(60, 10, size=(24, 32, 3)).clip(0, 255).astype(np.uint8)
    f2 = rng.integers(100, 200, size=(24, 32, 3), dtype=np.uint8)
    frames = np.stack([f0, f1, f2])
    out = smp.histogram_match(frames)
    assert np.array_equal(out[0], f0)
    for f in (1, 2):
        for ch in range(3):
            lut = _reference_lut(frames[f, :, :, ch], f0[:, :, ch])
            assert np.array_equal(out[f, :, :, ch], lut[frames[f, :, :, ch]])
            # so the output's CDF sits at or below the reference's, by less than one source bin
            n = out[f, :, :, ch].size
            cdf_out = np.cumsum(np.bincount(out[f, :, :, ch].ravel(), minlength=256))
            cdf_ref = np.cumsum(np.bincount(f0[:, :, ch].ravel(), minlength=256))
            gap = cdf_ref - cdf_out  # same pixel count in both frames
            assert gap.min() >= 0
            assert gap.max() <= np.bincount(frames[f, :, :, ch].ravel()).max()
            assert cdf_out[-1] == n


def test_histogram_match_is_exact_for_a_reordering():
    # A frame whose pixels are a monotone re-mapping of the reference's gets its histogram exactly.
    rng = np.random.default_rng(1)
    ref = rng.integers(0, 128, size=(16, 16, 3), dtype=np.uint8)
    perm = rng.permutation(16 * 16)
    src = (ref.reshape(-1, 3)[perm] * 2 + 1).reshape(16, 16, 3).astype(np.uint8)  # strictly increasing map
    out = smp.histogram_match(np.stack([ref, src]))
    for ch in range(3):
        assert np.array_equal(
            np.bincount(out[1, :, :, ch].ravel(), minlength=256), np.bincount(ref[:, :, ch].ravel(), minlength=256)
        )
    assert np.array_equal(smp.histogram_match(np.stack([ref, ref]))[1], ref)  # identity on itself


def test_plan_windows_covers_the_video_once():
    plans = smp.plan_windows(40, 16, 4)
    assert plans[0] == smp.Window(0, 16, 1)
    covered = np.zeros(40, dtype=int)
    covered[0] = 1
    for w in plans:
        assert 2 <= w.length <= 16
        covered[w.start + w.context : w.start + w.length] += 1  # the frames each window makes new
        assert w.start + w.length <= 40
    assert np.all(covered == 1)
    assert plans[-1].start + plans[-1].length == 40
    assert smp.plan_windows(8, 16, 4) == [smp.Window(0, 8, 1)]
    assert len(smp.plan_windows(10, 2, 1)) == 9
    with pytest.raises(InvalidInput):
        smp.plan_windows(10, 4, 4)


@pytest.mark.parametrize(
    "kw",
    [
        {"frames": 1},
        {"width": 60},
        {"height": 0},
        {"steps": 0},
        {"shared_noise": 1.5},
        {"guidance": -1.0},
        {"adain_switch": 2.0},
        {"seed": -3},
    ],
)
def test_check_sample_args_rejects(kw):
    args = {"frames": 4, "width": 64, "height": 64, "steps": 2, "guidance": 7.5, "shared_noise": 0.2}
    args.update(kw)
    with pytest.raises(InvalidInput):
        eng.check_sample_args(**args)


# --------------------------------------------------------------------------------------------
# Sampling on the tiny base (CPU): 64×64 pixels, 8×8 latents, a few frames, 2-3 steps
# --------------------------------------------------------------------------------------------
SIZE = {"width": 64, "height": 64}


def random_motion(base, *, frames: int = 4, seed: int = 0, name: str = "wiggle", scale: float = 0.05):
    """An adapter extracted from a video UNet whose trainable weights were randomised."""
    from lamp_cli.adapter import extract, make_metadata
    from lamp_cli.models.base import architecture_of
    from lamp_cli.models.video_unet import VideoUNet

    vu = VideoUNet.from_unet2d(copy.deepcopy(base.unet))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in vu.trainable_parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    md = make_metadata(
        name=name, base_spec=base.spec, base_fingerprint=base.fingerprint,
        architecture=architecture_of(dict(base.unet.config)), frames=frames, width=64, height=64,
        train={"steps": 0}, prompt="a horse runs",
    )
    return extract(vu, base.unet, metadata=md)


@pytest.fixture(scope="module")
def engine(tiny_base):
    return eng.Engine(tiny_base)


@pytest.fixture(scope="module")
def motion(tiny_base):
    return random_motion(tiny_base, frames=4)


@pytest.fixture(scope="module")
def first_image():
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:72, 0:96]
    img = np.stack([x * 2, y * 3, (x + y)], axis=-1) + rng.integers(0, 40, size=(72, 96, 3))
    return img.clip(0, 255).astype(np.uint8)


def test_first_frame_latent_is_held_clean_through_the_loop(engine, motion, first_image):
    seen = []
    res = engine.sample(
        [(motion, 1.0)], "a horse runs", first_image, frames=4, steps=3, seed=3,
        callback=lambda i, t, lat: seen.append(lat[:, :, 0].clone()), **SIZE,
    )
    z0 = smp.encode_first_frame(engine.base.vae, first_image, 64, 64, engine.base.latent_scale)
    assert res.latents.shape == (1, 4, 4, 8, 8)
    assert torch.equal(res.latents[:, :, 0], z0)
    assert len(seen) == 3 and all(torch.equal(s, z0) for s in seen)
    # the first output frame is the VAE round trip of the (cropped, resized) input
    expected = smp.decode_latents(engine.base.vae, z0[:, :, None], engine.base.latent_scale)[0]
    assert np.array_equal(res.frames[0], expected)
    assert res.frames.shape == (4, 64, 64, 3) and res.frames.dtype == np.uint8


def test_adain_gives_every_frame_the_first_frames_statistics(engine, motion, first_image):
    def spread(lat):
        m, s = _frame_stats(lat)
        return float((m - m[..., :1]).abs().max()), float((s - s[..., :1]).abs().max())

    on = engine.sample([(motion, 1.0)], "a horse runs", first_image, frames=4, steps=2, seed=5, **SIZE)
    dm, ds = spread(on.latents)
    assert dm < 1e-5 and ds < 1e-5
    off = engine.sample([(motion, 1.0)], "a horse runs", first_image, frames=4, steps=2, seed=5, adain=False, **SIZE)
    dm, ds = spread(off.latents)
    assert max(dm, ds) > 1e-2
    assert off.record["adain"] is False and on.record["adain"] is True


def test_without_a_clean_first_frame_frame_zero_is_denoised_too(engine, motion, first_image):
    """The ablation switch: frame 0 starts as noise and moves; no first frame is made or needed."""
    seen = []
    res = engine.sample(
        [(motion, 1.0)], "a horse runs", None, frames=4, steps=3, seed=3, clean_first_frame=False,
        callback=lambda i, t, lat: seen.append(lat[:, :, 0].clone()), **SIZE,
    )
    assert len(seen) == 3 and not torch.equal(seen[0], seen[1]) and not torch.equal(seen[1], seen[2])
    assert torch.equal(res.latents[:, :, 0], seen[-1])
    assert res.record["clean_first_frame"] is False and res.record["first_frame"]["source"].startswith("none")
    with_first = engine.sample([(motion, 1.0)], "a horse runs", first_image, frames=4, steps=3, seed=3, **SIZE)
    assert "clean_first_frame" not in with_first.record
    with pytest.raises(InvalidInput, match="one window"):
        engine.sample([(motion, 1.0)], "a horse runs", None, frames=9, steps=2, seed=3, clean_first_frame=False,
                      **SIZE)


def test_same_seed_same_video_other_seed_other_video(engine, motion, first_image):
    kw = {"frames": 4, "steps": 2, **SIZE}
    a = engine.sample([(motion, 1.0)], "a horse runs", first_image, seed=11, **kw)
    b = engine.sample([(motion, 1.0)], "a horse runs", first_image, seed=11, **kw)
    c = engine.sample([(motion, 1.0)], "a horse runs", first_image, seed=12, **kw)
    assert np.array_equal(a.frames, b.frames) and torch.equal(a.latents, b.latents)
    assert not np.array_equal(a.frames[1:], c.frames[1:])
    assert a.record["seed"] == 11
    r = engine.sample([(motion, 1.0)], "a horse runs", first_image, seed=None, **kw)
    assert isinstance(r.record["seed"], int)  # a random seed is still recorded
    again = engine.sample([(motion, 1.0)], "a horse runs", first_image, seed=r.record["seed"], **kw)
    assert np.array_equal(r.frames, again.frames)


def test_long_video_chains_trained_length_windows(engine, motion, first_image):
    kw = {"steps": 2, "seed": 7, **SIZE}
    long = engine.sample([(motion, 1.0)], "a horse runs", first_image, frames=40, **kw)
    assert long.frames.shape == (40, 64, 64, 3) and long.latents.shape[2] == 40
    assert long.record["window"] == 4 and long.record["windows"] == len(smp.plan_windows(40, 4, 1))
    # The first window is exactly the 4-frame video of the same seed: windows are chained, not joint.
    short = engine.sample([(motion, 1.0)], "a horse runs", first_image, frames=4, **kw)
    assert torch.equal(long.latents[:, :, :4], short.latents)
    # AdaIN carries frame 0's statistics through every window
    m, s = _frame_stats(long.latents)
    assert float((s - s[..., :1]).abs().max()) < 1e-4


def test_overlapping_windows_keep_context_frames(engine, tiny_base, first_image):
    m8 = random_motion(tiny_base, frames=8, seed=1, name="eight")
    res = engine.sample([(m8, 1.0)], "a horse runs", first_image, frames=14, steps=2, seed=1, **SIZE)
    assert res.record["overlap"] == 2 and res.record["windows"] == 2
    plans = smp.plan_windows(14, 8, 2)
    assert plans[1] == smp.Window(6, 8, 2)
    short = engine.sample([(m8, 1.0)], "a horse runs", first_image, frames=8, steps=2, seed=1, **SIZE)
    assert torch.equal(res.latents[:, :, :8], short.latents)


def test_blending_motions_changes_the_video_and_is_recorded(engine, tiny_base, motion, first_image):
    other = random_motion(tiny_base, frames=4, seed=9, name="other", scale=0.2)
    kw = {"frames": 4, "steps": 2, "seed": 2, **SIZE}
    one = engine.sample([(motion, 1.0)], "a horse runs", first_image, **kw)
    mix = engine.sample([(motion, 0.7), (other, 0.3)], "a horse runs", first_image, **kw)
    back = engine.sample([(motion, 1.0)], "a horse runs", first_image, **kw)
    assert not torch.equal(one.latents, mix.latents)
    assert torch.equal(one.latents, back.latents)  # switching motions back restores the first exactly
    assert [(m["name"], m["weight"]) for m in mix.record["motions"]] == [("wiggle", 0.7), ("other", 0.3)]
    assert mix.record["motions"][1]["digest"] == other.weights_sha256()


def test_motion_by_registry_name(engine, motion, first_image):
    from lamp_cli.errors import InvalidInput, MotionNotFound
    from lamp_cli.registry import Registry
    from lamp_cli.resolve import load_motion

    manifest = Registry().publish_adapter(motion)
    res = engine.sample([(load_motion(manifest.name), 1.0)], "a horse runs", first_image, frames=3, steps=1, seed=0,
                        **SIZE)
    assert res.record["motions"][0]["digest"] == manifest.digest
    with pytest.raises(MotionNotFound):
        load_motion("no-such-motion")
    with pytest.raises(InvalidInput, match="adapters, not names"):  # the engine does not read the registry
        engine.sample([(manifest.name, 1.0)], "x", first_image, frames=3, steps=1, seed=0, **SIZE)


def test_text_to_image_first_frame_falls_back_to_the_base_with_a_warning(engine, motion, caplog):
    with caplog.at_level(logging.WARNING, logger="lamp"):
        res = engine.sample([(motion, 1.0)], "a horse runs", None, frames=3, steps=2, seed=4, **SIZE)
    assert any("first-frame model" in r.getMessage() and "base model" in r.getMessage() for r in caplog.records)
    info = res.record["first_frame"]
    assert info["source"] == "text-to-image" and info["fallback"] is True
    again = engine.sample([(motion, 1.0)], "a horse runs", None, frames=3, steps=2, seed=4, **SIZE)
    assert np.array_equal(res.frames, again.frames)


def test_a_first_frame_the_base_draws_starts_the_video_without_a_vae_round_trip(engine, tiny_base, motion):
    """Frame 1 is the image the base drew (its latent kept), not that image encoded and decoded again;
    `first_frame_round_trip` (replaying an earlier version's sidecar) encodes it again, as before."""
    kw = dict(frames=3, steps=2, seed=4, histogram_match=False, **SIZE)
    made = engine.first_frames()("a horse runs", width=64, height=64, steps=2, seed=4)
    assert made.latent is not None and made.latent.shape == (1, 4, 8, 8)
    res = engine.sample([(motion, 1.0)], "a horse runs", None, **kw)
    assert res.record["first_frame"]["vae_round_trip"] is False
    assert np.abs(res.frames[0].astype(int) - made.image).max() <= 1
    old = eng.Engine(tiny_base, first_frame_round_trip=True)
    again = old.sample([(motion, 1.0)], "a horse runs", None, **kw)
    assert again.record["first_frame"]["vae_round_trip"] is True
    z = smp.encode_first_frame(engine.base.vae, made.image, 64, 64, engine.base.latent_scale)
    trip = smp.decode_latents(engine.base.vae, z[:, :, None], engine.base.latent_scale)[0]
    assert np.abs(again.frames[0].astype(int) - trip).max() <= 1
    assert np.abs(trip.astype(int) - made.image).max() > 1  # the tiny VAE's round trip is lossy


def test_image_to_image_strength(engine, first_image):
    from lamp_cli.first_frame import image_to_image

    same = image_to_image(engine.base, engine.place, first_image, "a red horse", strength=0.0, steps=4, width=64, height=64)
    z = smp.encode_first_frame(engine.base.vae, first_image, 64, 64, engine.base.latent_scale)
    assert np.array_equal(same, smp.decode_latents(engine.base.vae, z[:, :, None], engine.base.latent_scale)[0])
    a = image_to_image(engine.base, engine.place, first_image, "a red horse", strength=0.5, steps=4, seed=1, width=64, height=64)
    b = image_to_image(engine.base, engine.place, first_image, "a red horse", strength=0.5, steps=4, seed=1, width=64, height=64)
    assert a.shape == (64, 64, 3) and np.array_equal(a, b) and not np.array_equal(a, same)


def test_init_latents_replace_shared_noise(engine, motion, first_image):
    init = torch.randn(1, 4, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    a = engine.sample([(motion, 1.0)], "a horse runs", first_image, frames=4, steps=2, seed=1, init_latents=init, **SIZE)
    b = engine.sample([(motion, 1.0)], "a horse runs", first_image, frames=4, steps=2, seed=2, init_latents=init, **SIZE)
    assert torch.equal(a.latents, b.latents)  # the seed no longer matters: no noise is drawn
    assert a.record["init_latents"] is True and a.record["shared_noise"] is None
    with pytest.raises(InvalidInput):
        engine.sample([(motion, 1.0)], "x", first_image, frames=5, steps=1, init_latents=init, **SIZE)


def test_engine_rejects_bad_first_frames(engine, tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    with pytest.raises(InvalidInput):
        engine.sample([], "x", bad, frames=2, steps=1, **SIZE)
    with pytest.raises(InvalidInput):
        engine.sample([], "x", np.zeros((8, 8), dtype=np.float32), frames=2, steps=1, **SIZE)


def test_one_device_and_dtype_resolver_serves_engine_and_training(monkeypatch):
    from lamp_cli import settings, train
    from lamp_cli.bench import train as bench_train

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert devices.resolve_device("auto") == devices.resolve_device(None) == torch.device("cpu")
    assert devices.resolve_device(" CPU ") == torch.device("cpu")
    # an explicit accelerator that is not there is refused up front, for the engine as for training
    for bad, why in (("cuda", "CUDA is not available"), ("cuda:1", "CUDA is not available"),
                     ("mps", "MPS is not available"), ("tpu", "unknown device"), ("meta", "unknown device")):
        with pytest.raises(InvalidInput, match=why):
            devices.resolve_device(bad)
    assert train.loop.resolve_device is devices.resolve_device  # training uses the same function, not a copy
    monkeypatch.setattr(settings, "get", lambda key, value=None: "mps" if key == "device" else value)
    with pytest.raises(InvalidInput, match="MPS is not available"):  # the device setting, through train
        bench_train.benchmark_training(steps=1, warmup=0, frames=2, width=64, height=64, device=None)
    # dtypes: auto follows the device; adapter precisions resolve without one
    assert devices.resolve_dtype("auto", torch.device("cuda")) == torch.float16
    assert devices.resolve_dtype("auto") == devices.resolve_dtype(None, torch.device("cpu")) == torch.float32
    assert [devices.resolve_dtype(d) for d in ("fp16", "bf16", "fp32")] == [torch.float16, torch.bfloat16, torch.float32]
    with pytest.raises(InvalidInput, match="unknown dtype"):
        devices.resolve_dtype("int8")
