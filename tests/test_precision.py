"""Mixed precision on CPU: bf16 training step and sampling agree with fp32; fp16 adapters apply.

Tolerances (stated, checked): a bf16-autocast training step's loss within 5 % of fp32's and its
gradient within cosine 0.98 of fp32's; a bf16 video's latents within 5 % relative L2 error of
the fp32 video's; an adapter applied to an fp16 VideoUNet holds the fp16-rounded tensors
(attn1.to_q within one fp16 rounding of base + delta) and its output is within 2 % relative L2 error of fp32's.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from lamp_cli import engine as eng
from lamp_cli.adapter import apply, extract, make_metadata
from lamp_cli.models.base import architecture_of
from lamp_cli.models.motion import MotionConv
from lamp_cli.models.video_unet import VideoUNet
from lamp_cli.train import diffusion_loss


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


@pytest.fixture(scope="module")
def trained_like(tiny_base):
    """A VideoUNet on the tiny base with every trainable tensor perturbed (a trained motion)."""
    vu = VideoUNet.from_unet2d(copy.deepcopy(tiny_base.unet))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _, p in vu.trainable_parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return vu


def test_bf16_autocast_training_step_agrees_with_fp32(tiny_base, trained_like):
    vu = copy.deepcopy(trained_like).freeze_base().train()
    scheduler = tiny_base.ddpm()
    g = torch.Generator().manual_seed(1)
    latents = torch.randn(1, 4, 4, 8, 8, generator=g)
    noise = torch.randn(latents.shape, generator=g)
    text = torch.randn(1, 77, int(tiny_base.unet.config.cross_attention_dim), generator=g)
    t = torch.tensor([400])
    params = [p for _, p in vu.trainable_parameters()]
    seen: set[torch.dtype] = set()
    hooks = [m.register_forward_hook(lambda m, i, o: seen.add(o.dtype)) for m in vu.modules() if isinstance(m, MotionConv)]

    def step(bf16: bool) -> tuple[float, torch.Tensor]:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = diffusion_loss(vu, scheduler, latents, noise, t, text)
        grads = torch.autograd.grad(loss, params)
        return float(loss.detach()), torch.cat([gr.float().flatten() for gr in grads])

    loss32, grad32 = step(False)
    seen.clear()
    loss16, grad16 = step(True)
    for h in hooks:
        h.remove()
    assert seen == {torch.bfloat16}  # the motion layers really ran in bf16
    assert abs(loss16 - loss32) <= 0.05 * loss32
    cos = torch.nn.functional.cosine_similarity(grad16, grad32, dim=0)
    assert cos >= 0.98 and grad16.abs().max() > 0


def _motion(tiny_base, vu):
    md = make_metadata(
        name="m", base_spec=tiny_base.spec, base_fingerprint=tiny_base.fingerprint,
        architecture=architecture_of(dict(tiny_base.unet.config)), frames=4, width=64, height=64,
        train={"steps": 0}, prompt="a horse runs",
    )
    return extract(vu, tiny_base.unet, metadata=md)


def test_bf16_sampling_agrees_with_fp32(tiny_base, trained_like):
    motion = _motion(tiny_base, trained_like)
    image = np.random.default_rng(0).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    kw = {"frames": 4, "width": 64, "height": 64, "steps": 3, "seed": 2}
    fp32 = eng.Engine(tiny_base, dtype="fp32").sample([(motion, 1.0)], "a horse runs", image, **kw)
    bf16_engine = eng.Engine(tiny_base, dtype="bf16")
    assert bf16_engine.video_unet.dtype == torch.bfloat16
    bf16 = bf16_engine.sample([(motion, 1.0)], "a horse runs", image, **kw)
    assert torch.isfinite(bf16.latents).all()
    assert 0 < _rel(bf16.latents, fp32.latents) <= 0.05


def test_fp16_adapter_application(tiny_base, trained_like):
    motion = _motion(tiny_base, trained_like)
    vu16 = VideoUNet.from_unet2d(copy.deepcopy(tiny_base.unet).half()).eval()
    vu32 = VideoUNet.from_unet2d(copy.deepcopy(tiny_base.unet)).eval()
    apply(motion, vu16)
    apply(motion, vu32)
    p16, p32 = dict(vu16.unet.named_parameters()), dict(vu32.unet.named_parameters())
    for name, _ in vu16.trainable_parameters():
        assert p16[name].dtype == torch.float16
        if ".attn1.to_q." in name:  # base (kept in fp16) + delta: within one fp16 rounding
            assert torch.allclose(p16[name].float(), p32[name], rtol=1e-3, atol=1e-4), name
        else:  # the adapter's tensors, rounded once
            assert torch.equal(p16[name], p32[name].half()), name
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 4, 4, 8, 8, generator=g)
    text = torch.randn(1, 77, int(tiny_base.unet.config.cross_attention_dim), generator=g)
    with torch.no_grad():
        out16 = vu16(x.half(), 500, text.half())
        out32 = vu32(x, 500, text)
    assert out16.dtype == torch.float16 and torch.isfinite(out16).all()
    assert _rel(out16, out32) <= 0.02
