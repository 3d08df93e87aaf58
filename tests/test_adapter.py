"""Motion adapters and the video UNet: extract, serialise, apply, blend, refuse (adapter.py)."""

from __future__ import annotations

import copy
import logging

import pytest
import torch

from lamp_cli import adapter as adapters
from lamp_cli.adapter import DELTA_SUFFIX, MotionAdapter, make_metadata
from lamp_cli.errors import IncompatibleAdapter
from lamp_cli.models.base import architecture_of
from lamp_cli.models.video_unet import VideoUNet


def fresh(base) -> VideoUNet:
    return VideoUNet.from_unet2d(copy.deepcopy(base.unet)).eval()


def trained(base, seed: int) -> VideoUNet:
    """A video UNet whose trainable tensors moved away from their init, as after training."""
    video = fresh(base)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in video.trainable_parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return video


def metadata(base, name: str, fingerprint: str | None = None) -> dict[str, str]:
    return make_metadata(
        name=name,
        base_spec="tiny",
        base_fingerprint=fingerprint or base.fingerprint,
        architecture=architecture_of(dict(base.unet.config)),
        frames=4,
        width=64,
        height=64,
        train={"steps": 1},
    )


def run(video: VideoUNet, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    sample = torch.randn(1, 4, 4, 8, 8, generator=g)
    text = torch.randn(1, 7, 32, generator=g)
    with torch.no_grad():
        return video(sample, 500, text)


def test_adapter_keys_are_the_added_modules_and_to_q_deltas(tiny_base):
    video = fresh(tiny_base)
    keys = adapters.adapter_keys(video)
    assert keys == sorted(keys) and len(keys) == len(set(keys))
    deltas = [k for k in keys if k.endswith(DELTA_SUFFIX)]
    assert len(deltas) == 4 and all(k.endswith(".attn1.to_q.weight.delta") for k in deltas)
    kinds = {k.split(".")[-2] for k in keys if not k.endswith(DELTA_SUFFIX)}
    assert kinds == {"conv1d", "conv_gate", "norm_temp", "to_q", "to_k", "to_v", "0"}
    # 25 conv sites × 4 tensors, 4 blocks × (3 + 2 + 2) attn_temp/norm_temp tensors, 4 deltas
    assert len(keys) == 25 * 4 + 4 * 7 + 4


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_extract_serialise_apply_reproduces_the_trained_model(tiny_base, dtype):
    tuned = trained(tiny_base, seed=1)
    adapter = adapters.extract(tuned, tiny_base.unet, dtype=dtype, metadata=metadata(tiny_base, "wave"))
    assert sorted(adapter.tensors) == adapters.adapter_keys(tuned)
    assert {t.dtype for t in adapter.tensors.values()} == {dtype}
    n = sum(p.numel() for _, p in tuned.added_parameters()) + sum(
        p.numel() for name, p in tuned.unet.named_parameters() if name.endswith("attn1.to_q.weight")
    )
    assert adapter.num_parameters() == n
    assert adapter.nbytes() == n * (4 if dtype == torch.float32 else 2)
    print(f"tiny adapter: {adapter.num_parameters()} parameters, {adapter.nbytes()} bytes ({dtype})")

    loaded = MotionAdapter.from_bytes(adapter.to_bytes())
    assert loaded.name == "wave" and loaded.architecture == adapter.architecture
    video = fresh(tiny_base)
    adapters.apply(loaded, video, base_fingerprint=tiny_base.fingerprint)
    assert video.motions == [("wave", 1.0)]
    out, ref = run(video), run(tuned)
    if dtype == torch.float32:  # bit for bit
        assert torch.equal(out, ref)
        for (name, p), (_, q) in zip(
            video.unet.named_parameters(), tuned.unet.named_parameters(), strict=True
        ):
            assert torch.equal(p, q), name
    else:  # every added tensor and to_q delta within fp16 rounding (relative 2^-11)
        for (name, p), (_, q) in zip(
            video.unet.named_parameters(), tuned.unet.named_parameters(), strict=True
        ):
            base = video.base_to_q.get(name, torch.zeros(()))
            assert torch.allclose(p - base, q - base, rtol=2**-11, atol=1e-7), name
        print(
            f"fp16 adapter: max output difference {(out - ref).abs().max():.2e} (|out| <= {ref.abs().max():.2f})"
        )
        assert (out - ref).abs().max() < 1e-3 * ref.abs().max()
    assert (run(fresh(tiny_base)) - ref).abs().max() > 1e-2  # the motion does change the output


def test_extract_without_base_uses_the_inflation_snapshot(tiny_base):
    tuned = trained(tiny_base, seed=1)
    a = adapters.extract(tuned, tiny_base.unet, dtype=torch.float32)
    b = adapters.extract(tuned, None, dtype=torch.float32)
    assert a.architecture == architecture_of(dict(tiny_base.unet.config))
    assert all(torch.equal(a.tensors[k], b.tensors[k]) for k in a.tensors)


def test_apply_is_repeatable_and_reset_returns_to_identity(tiny_base):
    a = adapters.extract(trained(tiny_base, seed=1), tiny_base.unet, dtype=torch.float32)
    b = adapters.extract(trained(tiny_base, seed=2), tiny_base.unet, dtype=torch.float32)
    video = fresh(tiny_base)
    identity = run(video)
    adapters.apply(a, video)
    out_a = run(video)
    adapters.apply(b, video)
    adapters.apply(a, video)  # from the base again, not on top of b
    assert (run(video) - out_a).abs().max() < 1e-6
    adapters.apply(a, video, weight=0.0)
    assert (run(video) - identity).abs().max() < 1e-6
    adapters.apply(b, video)
    adapters.reset_motion(video)
    assert (run(video) - identity).abs().max() < 1e-6
    assert video.motions == []


def test_blend_is_the_weighted_sum(tiny_base):
    a = adapters.extract(trained(tiny_base, seed=1), tiny_base.unet, dtype=torch.float32)
    b = adapters.extract(trained(tiny_base, seed=2), tiny_base.unet, dtype=torch.float32)
    with torch.no_grad():  # a non-identity norm_temp, to see it averaged
        key = next(k for k in a.tensors if k.endswith("norm_temp.weight"))
        a.tensors[key] = a.tensors[key] * 2
    video = fresh(tiny_base)
    base_to_q = {k: v.clone() for k, v in video.base_to_q.items()}
    adapters.apply([(a, 0.7), (b, 0.3)], video)
    params = dict(video.unet.named_parameters())
    for k in a.tensors:
        if k.endswith(DELTA_SUFFIX):
            name = k.removesuffix(DELTA_SUFFIX)
            expected = base_to_q[name] + 0.7 * a.tensors[k] + 0.3 * b.tensors[k]
        else:
            name = k
            expected = 0.7 * a.tensors[k] + 0.3 * b.tensors[k]  # weights 0.7 + 0.3 = 1: average = sum
        assert torch.allclose(params[name], expected, atol=1e-6), k
    # a global weight scales every blend weight; norm_temp stays the weighted average
    adapters.apply([(a, 0.7), (b, 0.3)], video, weight=0.5)
    conv = next(k for k in a.tensors if k.endswith("conv1d.weight"))
    assert torch.allclose(params[conv], 0.35 * a.tensors[conv] + 0.15 * b.tensors[conv], atol=1e-6)
    assert torch.allclose(params[key], 0.7 * a.tensors[key] + 0.3 * b.tensors[key], atol=1e-6)
    assert video.motions == [("", 0.35), ("", 0.15)]


def test_mismatched_adapters_are_refused(tiny_base):
    good = adapters.extract(trained(tiny_base, seed=1), tiny_base.unet, metadata=metadata(tiny_base, "wave"))
    video = fresh(tiny_base)
    key = "down_blocks.0.resnets.0.conv1.conv1d.weight"

    bad = MotionAdapter(dict(good.tensors), dict(good.metadata))
    bad.tensors[key] = torch.zeros(16, 16, 3, dtype=torch.float16)
    with pytest.raises(IncompatibleAdapter, match=f"'{key}' has shape \\[16, 16, 3\\]"):
        adapters.apply(bad, video)

    missing = MotionAdapter({k: v for k, v in good.tensors.items() if k != key}, dict(good.metadata))
    with pytest.raises(IncompatibleAdapter, match=f"lacks tensor '{key}'"):
        adapters.apply(missing, video)

    extra = MotionAdapter({**good.tensors, "foo.conv1d.weight": torch.zeros(1)}, dict(good.metadata))
    with pytest.raises(IncompatibleAdapter, match="unexpected tensor 'foo.conv1d.weight'"):
        adapters.apply(extra, video)

    other = MotionAdapter(dict(good.tensors), {**good.metadata, "lamp.architecture": "sd1-unet"})
    with pytest.raises(IncompatibleAdapter, match="'sd1-unet' UNet") as err:
        adapters.apply([(good, 0.5), (other, 0.5)], video)
    assert err.value.hint
    # nothing was changed by the refused calls
    assert (run(video) - run(fresh(tiny_base))).abs().max() == 0


def test_another_base_fingerprint_is_a_note_not_a_warning(tiny_base, caplog):
    """Same architecture, other weights (a fine-tune, a LoRA-styled base): an info note only."""
    adapter = adapters.extract(
        trained(tiny_base, seed=1),
        tiny_base.unet,
        metadata=metadata(tiny_base, "wave", fingerprint="0123456789abcdef"),
    )
    video = fresh(tiny_base)
    with caplog.at_level(logging.INFO, logger="lamp"):
        adapters.apply(adapter, video, base_fingerprint=tiny_base.fingerprint)
    notes = [r for r in caplog.records if "0123456789abcdef" in r.getMessage() and r.name == "lamp"]
    assert notes and all(r.levelno == logging.INFO for r in notes)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="lamp"):
        adapters.apply(adapter, video, base_fingerprint="0123456789abcdef")
    assert not caplog.records
