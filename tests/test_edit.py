"""`lamp edit`: DDIM inversion, the tuning/inversion caches, the exported first frame, bad input.

Everything runs on the tiny base on CPU: 64×48 pixels (8×6 latents), 4-5 frames, 5 training steps,
20 DDIM steps.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

from lamp_cli.cli.app import main

W, H = 64, 48
SOURCE_PROMPT = "square moves right"


def run_cli(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    try:
        main(args)
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def moving_square(frames: int = 12, width: int = 96, height: int = 64) -> np.ndarray:
    """A yellow square moving right over a blue background, a different position every frame."""
    video = np.zeros((frames, height, width, 3), np.uint8)
    video[...] = (40, 90, 160)
    for t in range(frames):
        x = 4 + 5 * t
        video[t, 20:40, x : x + 20] = (230, 200, 30)
    return video


@pytest.fixture
def square_video(tmp_path: Path) -> Path:
    """A 12-frame 96×64 GIF (aspect 1.5, so the 64×48 window is a center crop plus a resize)."""
    from lamp_cli.video import write_video

    return write_video(moving_square(), tmp_path / "square_moves_right.gif", fps=8)


@pytest.fixture(scope="module")
def engine(tiny_base):
    from lamp_cli.engine import Engine

    return Engine(tiny_base, device="cpu")


def rel_error(a, b) -> float:
    """Relative L2 error over frames 1.. (frame 0 is the clean first frame by construction)."""
    return float((a - b)[:, :, 1:].norm() / b[:, :, 1:].norm())


# --------------------------------------------------------------------------------------------
# inversion as a pure function
# --------------------------------------------------------------------------------------------
def test_inversion_is_the_exact_inverse_for_a_noise_predictor_independent_of_x(tiny_base):
    import torch

    from lamp_cli.inversion import ddim_invert, ddim_sample_from

    gen = torch.Generator().manual_seed(0)
    lat = torch.randn(1, 4, 4, 6, 8, generator=gen)
    fixed = torch.randn(1, 4, 4, 6, 8, generator=gen)

    def predictor(x, t, text):  # depends on t only: DDIM inversion is then exact
        return fixed * torch.cos(t.float() / 300.0)

    x_t = ddim_invert(predictor, lat, tiny_base.ddim(), torch.zeros(1, 77, 32), steps=10)
    assert torch.equal(x_t[:, :, 0], lat[:, :, 0])  # frame 0 kept clean
    assert not torch.allclose(x_t[:, :, 1:], lat[:, :, 1:], atol=0.1)  # the others were noised
    back = ddim_sample_from(predictor, x_t, tiny_base.ddim(), torch.zeros(1, 77, 32), steps=10)
    assert float((back - lat).abs().max()) < 1e-4


def test_refined_inversion_of_a_video_unet_reconstructs_far_better_than_plain(tiny_base):
    import torch

    from lamp_cli.inversion import ddim_invert, ddim_sample_from
    from lamp_cli.models.video_unet import VideoUNet

    unet = VideoUNet.from_unet2d(copy.deepcopy(tiny_base.unet)).eval()
    lat = torch.randn(1, 4, 4, 6, 8, generator=torch.Generator().manual_seed(1)) * 0.8
    text = tiny_base.encode_prompt([""])
    errors = {}
    for refine in (0, 4):
        stats: dict = {}
        x_t = ddim_invert(unet, lat, tiny_base.ddim(), text, steps=20, refine=refine, refine_tol=0.0, stats=stats)
        assert stats["unet_calls"] == 20 * (1 + refine)
        assert torch.equal(x_t[:, :, 0], lat[:, :, 0])
        errors[refine] = rel_error(ddim_sample_from(unet, x_t, tiny_base.ddim(), text, steps=20), lat)
    # Measured: plain 0.54, refined 0.002 (4 iterations, 20 steps).
    assert errors[0] > 0.2
    assert errors[4] < 0.02


# --------------------------------------------------------------------------------------------
# the whole edit, in the library
# --------------------------------------------------------------------------------------------
EDIT_KW = dict(
    frames=4, stride=2, width=W, height=H, train_steps=5, inversion_steps=20, inversion_refine=12, inversion_tol=1e-5,
    guidance=1.0, seed=3, adain=False, histogram_match=False, source_prompt=SOURCE_PROMPT,
)


@pytest.mark.slow
def test_invert_then_sample_with_the_original_first_frame_reconstructs_the_window(engine, square_video):
    import torch

    from lamp_cli.edit import EditWindow, edit_video, encode_window, load_inverted, read_window
    from lamp_cli.registry import Registry

    window = EditWindow(0, 4, 2, W, H)
    pixels, _ = read_window(square_video, window)
    target = encode_window(engine, pixels)  # 1×4×4×6×8

    # Inverted and sampled with the same text (the source prompt), guidance 1, the original frame 0.
    matched = edit_video(square_video, SOURCE_PROMPT, first_frame=pixels[0], inversion_prompt=SOURCE_PROMPT,
                         engine=engine, **EDIT_KW)
    assert matched.trained and not matched.inversion_cached
    assert torch.allclose(matched.latents[:, :, 0], target[:, :, 0], atol=1e-5)
    err_matched = rel_error(matched.latents, target)

    # The reference's empty-prompt inversion, sampled with the empty prompt: same tuned motion.
    inverted = edit_video(square_video, SOURCE_PROMPT, first_frame=pixels[0], engine=engine, **EDIT_KW)
    assert not inverted.trained and not inverted.inversion_cached  # a new inversion key, same motion
    assert inverted.motion == matched.motion
    cached = load_inverted(inverted.inversion_path, tuple(target.shape))
    adapter = Registry().load_adapter(inverted.motion)
    again = engine.sample([(adapter, 1.0)], "", pixels[0], frames=4, width=W, height=H, steps=20, guidance=1.0,
                          seed=3, shared_noise=0.0, adain=False, histogram_match=False, init_latents=cached)
    err_empty = rel_error(again.latents, target)

    # Sampling the empty-prompt inversion with the source prompt instead (the reference's setup at
    # guidance 1): the text mismatch dominates, but it is still far closer than a random start.
    err_mismatch = rel_error(inverted.latents, target)
    noise = torch.randn(tuple(target.shape), generator=torch.Generator().manual_seed(0))
    random_start = engine.sample([(adapter, 1.0)], SOURCE_PROMPT, pixels[0], frames=4, width=W, height=H,
                                 steps=20, guidance=1.0, seed=3, shared_noise=0.0, adain=False,
                                 histogram_match=False, init_latents=noise)
    err_random = rel_error(random_start.latents, target)
    print(f"reconstruction errors: matched {err_matched:.4f}, empty {err_empty:.4f}, "
          f"mismatch {err_mismatch:.3f}, random start {err_random:.3f}")
    # Measured (tiny base, 5 training steps, 20 DDIM steps, up to 12 refinements, tol 1e-5):
    # matched 0.004, empty 0.007, mismatch 13.0 and random start 195 (the tiny VAE's latents are
    # small, std 0.05, and its random text encoder moves the noise prediction a lot).
    assert err_matched < 0.03
    assert err_empty < 0.03
    assert err_mismatch < 0.2 * err_random
