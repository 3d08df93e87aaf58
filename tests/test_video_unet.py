"""The inflated video UNet (models/video_unet.py) on the tiny base, and its size on SD-1.x's config."""

from __future__ import annotations

import copy

import pytest
import torch
from diffusers import UNet2DConditionModel
from reference_lamp import official_state_dict_from_2d, reference_unet3d_forward

from lamp_cli.models.base import fingerprint
from lamp_cli.models.motion import FirstFrameAttnProcessor, FrameGroupNorm, MotionConv
from lamp_cli.models.video_unet import VideoUNet
from lamp_cli.testing import SD1_UNET_CONFIG


def inputs(unet, b: int = 2, f: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    sample = torch.randn(b, unet.config.in_channels, f, 8, 8, generator=g)
    text = torch.randn(b, 7, unet.config.cross_attention_dim, generator=g)
    return sample, torch.tensor([10, 700][:b]), text


def per_frame(unet2d, sample, t, text):
    """The 2-D UNet run on each frame separately: B×C×F×h×w."""
    with torch.no_grad():
        return torch.stack([unet2d(sample[:, :, i], t, text).sample for i in range(sample.shape[2])], dim=2)


def randomize_motion(video: VideoUNet, seed: int = 0, scale: float = 0.05) -> None:
    """Give every trainable parameter a random non-zero value, as training would."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in video.trainable_parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)


def test_fresh_video_unet_reproduces_the_2d_unet_frame_by_frame(tiny_base):
    video = VideoUNet.from_unet2d(
        copy.deepcopy(tiny_base.unet), first_frame_attention=False, frame_norm=False
    )
    sample, t, text = inputs(tiny_base.unet)
    with torch.no_grad():
        out = video(sample, t, text)
    assert out.shape == sample.shape
    assert (out - per_frame(tiny_base.unet, sample, t, text)).abs().max() < 1e-5


def test_inflation_sites_and_keys(tiny_base):
    video = VideoUNet.from_unet2d(copy.deepcopy(tiny_base.unet))
    unet = video.unet
    convs = dict(video.motion_convs())
    # every Conv2d but the transformers' proj_in/proj_out (tiny base: conv_in/out, 8 ResNets with
    # conv1/conv2, 5 shortcuts (1 down, 4 up), 1 downsampler, 1 upsampler)
    assert len(convs) == 2 + 8 * 2 + 5 + 1 + 1
    plain = [
        n
        for n, m in unet.named_modules()
        if type(m) is torch.nn.Conv2d and not n.endswith((".conv2d", ".conv_gate"))
    ]
    assert plain and all(n.endswith((".proj_in", ".proj_out")) for n in plain)
    assert len(video.temporal_blocks()) == 4
    keys = set(unet.state_dict())
    for k in (
        "conv_in.conv2d.weight",
        "down_blocks.0.resnets.0.conv1.conv1d.weight",
        "up_blocks.0.resnets.0.conv_shortcut.conv_gate.bias",
        "down_blocks.0.downsamplers.0.conv.conv2d.weight",
        "up_blocks.0.upsamplers.0.conv.conv1d.bias",
        "conv_out.conv_gate.weight",
        "down_blocks.0.attentions.0.transformer_blocks.0.attn_temp.to_q.weight",
        "down_blocks.0.attentions.0.transformer_blocks.0.attn_temp.to_out.0.bias",
        "mid_block.attentions.0.transformer_blocks.0.norm_temp.weight",
        "mid_block.resnets.0.norm1.weight",
    ):
        assert k in keys, k
    assert "conv_in.weight" not in keys
    norms = [n for n, m in unet.named_modules() if isinstance(m, FrameGroupNorm)]
    assert len(norms) == 8 * 2 + 1 and "conv_norm_out" in norms
    procs = [m.attn1.processor for _, m in video.temporal_blocks()]
    assert all(isinstance(p, FirstFrameAttnProcessor) for p in procs)
    assert all(m.frames is video.frames for m in convs.values())
    # base.fingerprint skips the added tensors: a fresh video UNet has its base's fingerprint
    assert fingerprint(unet) == tiny_base.fingerprint
    with pytest.raises(ValueError, match="already inflated"):
        VideoUNet.from_unet2d(unet)


def test_first_frame_is_the_2d_model_and_conditions_the_rest(tiny_base):
    # Per-frame GroupNorm: frame 0 attends to itself and the causal convs see nothing before it,
    # so with zero temporal layers frame 0 is exactly the 2-D model's output.
    video = VideoUNet.from_unet2d(copy.deepcopy(tiny_base.unet), frame_norm=False)
    sample, t, text = inputs(tiny_base.unet)
    with torch.no_grad():
        out = video(sample, t, text)
        ref = per_frame(tiny_base.unet, sample, t, text)
        assert (out[:, :, 0] - ref[:, :, 0]).abs().max() < 1e-5
        assert (out[:, :, 1:] - ref[:, :, 1:]).abs().amax(dim=(0, 1, 3, 4)).min() > 1e-4
        # frames >= 1 depend on frame 0's input ...
        s2 = sample.clone()
        s2[:, :, 0] += 1
        changed = (video(s2, t, text) - out).abs().amax(dim=(0, 1, 3, 4))
        assert (changed > 1e-4).all()
        # ... and not on each other while the temporal layers are zero
        s3 = sample.clone()
        s3[:, :, 2] += 1
        changed = (video(s3, t, text) - out).abs().amax(dim=(0, 1, 3, 4))
        assert changed.tolist()[:2] == [0, 0] and changed[2] > 1e-4 and changed[3] == 0


def test_videos_in_a_batch_do_not_interact(tiny_base):
    video = VideoUNet.from_unet2d(copy.deepcopy(tiny_base.unet))
    randomize_motion(video)
    sample, t, text = inputs(tiny_base.unet, b=2, f=3)
    with torch.no_grad():
        both = video(sample, t, text)
        one = video(sample[1:], t[1:], text[1:])
        scalar = video(sample[:1], int(t[0]), text[:1])
    assert (both[1:] - one).abs().max() < 1e-5
    assert (both[:1] - scalar).abs().max() < 1e-5


def test_matches_the_reference_oracle(tiny_base):
    """A trained, official-format state dict gives the reference's output (independent oracle)."""
    state = official_state_dict_from_2d(tiny_base.unet.state_dict(), seed=3)
    video = VideoUNet.from_unet2d(copy.deepcopy(tiny_base.unet), temporal_out_bias="random")
    video.unet.load_state_dict(state, strict=True)  # the reference's keys, one for one
    sample, t, text = inputs(tiny_base.unet, b=2, f=5)
    with torch.no_grad():
        out = video(sample, t, text)
        ref = reference_unet3d_forward(state, dict(tiny_base.unet.config), sample, t, text)
    assert (out - ref).abs().max() < 1e-5


def test_random_sd1_builders_make_sd1_shapes_on_the_given_device_and_dtype():
    from lamp_cli.models.base import architecture_of
    from lamp_cli.testing import random_sd1_base, random_sd1_unet

    base = random_sd1_base("meta", torch.float16)  # the `--full-sd` benchmark base, without allocating
    assert architecture_of(dict(base.unet.config)) == "sd1-unet" and base.vae_scale_factor == 8
    assert sum(p.numel() for p in base.unet.parameters()) == 859_520_964
    for m in (base.unet, base.vae, base.text_encoder):
        p = next(m.parameters())
        assert p.device.type == "meta" and p.dtype == torch.float16 and not p.requires_grad and not m.training
    assert base.text_encoder.config.hidden_size == 768 and base.vae.config.latent_channels == 4
    unet = random_sd1_unet("meta")  # the training benchmark's: fp32, trainable base for VideoUNet to freeze
    assert next(unet.parameters()).dtype == torch.float32 and dict(unet.config) == dict(base.unet.config)


def test_sd1_architecture_has_the_reference_parameter_counts():
    with torch.device("meta"):  # SD-1.x shapes without allocating a byte
        unet = UNet2DConditionModel(**SD1_UNET_CONFIG)
        base = sum(p.numel() for p in unet.parameters())
        video = VideoUNet.from_unet2d(unet)
    total = sum(p.numel() for p in video.parameters())
    assert base == 859_520_964
    assert total - base == 241_570_394 == sum(p.numel() for _, p in video.added_parameters())
    assert sum(p.numel() for _, p in video.trainable_parameters()) == 253_935_834
    assert len(video.motion_convs()) == 66 and len(video.temporal_blocks()) == 16
    groups = {"conv1d": 0, "conv_gate": 0, "attn_temp": 0, "attn1.to_q": 0}
    for name, p in video.trainable_parameters():
        groups[next(g for g in groups if f".{g}." in f".{name}")] += p.numel()
    assert groups == {
        "conv1d": 191_444_212,
        "conv_gate": 527_142,
        "attn_temp": 49_574_080,
        "attn1.to_q": 12_390_400,
    }
    assert video.device.type == "meta" and video.dtype == torch.float32


def trainable_groups_only(video: VideoUNet) -> None:
    trainable = {n for n, _ in video.trainable_parameters()}
    for name, p in video.unet.named_parameters():
        assert p.requires_grad == (name in trainable), name
        if name in trainable:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name


def test_only_the_trainable_groups_get_gradients(tiny_base):
    video = VideoUNet.from_unet2d(copy.deepcopy(tiny_base.unet)).freeze_base()
    randomize_motion(video)  # at init conv_gate and attn_temp q/k/v get exactly zero gradient
    video.train()
    sample, t, text = inputs(tiny_base.unet)
    video(sample, t, text).square().mean().backward()
    trainable_groups_only(video)
    names = {n.split(".")[-2] if ".to_q." not in n else "to_q" for n, _ in video.trainable_parameters()}
    assert {"conv1d", "conv_gate", "to_q", "to_k", "to_v", "0"} == names


def test_gradient_checkpointing_gives_the_same_gradients(tiny_base):
    video = VideoUNet.from_unet2d(copy.deepcopy(tiny_base.unet)).freeze_base()
    randomize_motion(video)
    video.train()
    sample, t, text = inputs(tiny_base.unet)

    def grads() -> dict[str, torch.Tensor]:
        video.unet.zero_grad(set_to_none=True)
        video(sample, t, text).square().mean().backward()
        return {n: p.grad.clone() for n, p in video.trainable_parameters()}

    plain = grads()
    video.set_gradient_checkpointing(True)
    assert video.gradient_checkpointing
    checkpointed = grads()
    trainable_groups_only(video)
    video.set_gradient_checkpointing(False)
    assert not video.gradient_checkpointing
    for name, g in plain.items():
        assert torch.allclose(checkpointed[name], g, atol=1e-6, rtol=1e-4), name


def test_moves_between_dtypes_and_copies(tiny_base):
    video = VideoUNet.from_unet2d(copy.deepcopy(tiny_base.unet))
    randomize_motion(video)
    sample, t, text = inputs(tiny_base.unet, b=1, f=3)
    with torch.no_grad():
        ref = video(sample, t, text)
        clone = copy.deepcopy(video)
        # the copy's layers share the copy's frame context, not the original's
        assert all(m.frames is clone.frames for _, m in clone.motion_convs())
        clone.to(torch.float64)
        assert clone.dtype == torch.float64 and video.dtype == torch.float32
        out64 = clone(sample.double(), t, text.double())
    assert (out64.float() - ref).abs().max() < 1e-4
    assert isinstance(clone.unet.conv_in, MotionConv)
