"""The layers LAMP adds (models/motion.py), one at a time: what each frame of the output may see."""

from __future__ import annotations

import torch
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from torch import nn

from lamp_cli.models.motion import (
    FirstFrameAttnProcessor,
    FrameContext,
    FrameGroupNorm,
    MotionConv,
    VideoTransformerBlock,
    motion_conv_parameters,
    reference_temporal,
)

B, F, C, H, W = 2, 6, 8, 5, 4


def changed_frames(a: torch.Tensor, b: torch.Tensor, frames: int) -> list[int]:
    """Frames (of video 0) in which two folded (B·F)×… outputs differ."""
    diff = (a - b).abs().reshape(-1, frames, *a.shape[1:])[0]
    return [f for f in range(frames) if diff[f].max() > 1e-6]


def motion_conv(frames: FrameContext, *, random: bool = True, stride: int = 1) -> MotionConv:
    torch.manual_seed(0)
    layer = MotionConv(nn.Conv2d(4, C, 3, stride=stride, padding=1), frames)
    if random:
        with torch.no_grad():
            for p in (*layer.conv1d.parameters(), *layer.conv_gate.parameters()):
                p.normal_(0, 0.3)
    return layer


def test_motion_conv_starts_as_the_pretrained_conv():
    frames = FrameContext(F)
    layer = motion_conv(frames, random=False)
    x = torch.randn(B * F, 4, H, W)
    assert torch.equal(layer(x), layer.conv2d(x))
    # shapes and init as the reference: conv1d C→C kernel 3, gate C→1 3×3, both zero
    assert layer.conv1d.weight.shape == (C, C, 3) and layer.conv_gate.weight.shape == (1, C, 3, 3)
    added = sum(p.numel() for n, p in layer.named_parameters() if not n.startswith("conv2d."))
    assert added == motion_conv_parameters(C)
    assert all(not p.any() for n, p in layer.named_parameters() if not n.startswith("conv2d."))


def test_motion_conv_temporal_branch_matches_the_reference_conv1d():
    frames = FrameContext(F)
    layer = motion_conv(frames)
    y = torch.randn(B * F, C, H, W)
    fast = layer.temporal(y)
    ref = reference_temporal(layer.conv1d, y, F)
    assert (fast - ref).abs().max() < 1e-5
    # and the whole layer: y + sigmoid(gate(y)) * temporal(y), y = conv2d(x)
    x = torch.randn(B * F, 4, H, W)
    y = layer.conv2d(x)
    expected = y + torch.sigmoid(layer.conv_gate(y)) * reference_temporal(layer.conv1d, y, F)
    assert (layer(x) - expected).abs().max() < 1e-5


def test_motion_conv_is_causal_over_three_frames():
    # Perturbing input frame k changes output frames k, k+1, k+2 and no others.
    frames = FrameContext(F)
    layer = motion_conv(frames, stride=2)  # also through a downsampling site
    x = torch.randn(B * F, 4, H, W)
    with torch.no_grad():
        out = layer(x)
        for k in range(F):
            x2 = x.clone()
            x2[k] += torch.randn_like(x2[k])
            assert changed_frames(layer(x2), out, F) == [t for t in (k, k + 1, k + 2) if t < F]
            # the other video in the batch is untouched
            assert torch.equal(layer(x2)[F:], out[F:])


def test_motion_conv_gradients_equal_the_reference_formulation():
    # The fast layouts (temporal conv over B×C×(2+F)×(H·W), gate via its 9 taps) train exactly as
    # `y + sigmoid(conv_gate(y)) * conv1d_time(y)` written plainly: same gradients everywhere.
    frames = FrameContext(F)
    layer = motion_conv(frames)
    x = torch.randn(B * F, 4, H, W, requires_grad=True)
    weights = torch.randn(B * F, C, H, W)

    def grads(fast: bool) -> list[torch.Tensor]:
        if fast:
            out = layer(x)
        else:
            y = layer.conv2d(x)
            out = y + torch.sigmoid(layer.conv_gate(y)) * reference_temporal(layer.conv1d, y, F)
        params = [x, *layer.parameters()]
        return list(torch.autograd.grad((out * weights).sum(), params))

    for fast, ref in zip(grads(True), grads(False), strict=True):
        assert fast.shape == ref.shape
        assert (fast - ref).abs().max() <= 1e-5 * max(1.0, ref.abs().max().item())


def test_motion_conv_handles_one_and_two_frames():
    for n in (1, 2):
        frames = FrameContext(n)
        layer = motion_conv(frames)
        y = torch.randn(B * n, C, H, W)
        assert (layer.temporal(y) - reference_temporal(layer.conv1d, y, n)).abs().max() < 1e-5


def attention_layer(frames: FrameContext) -> Attention:
    torch.manual_seed(1)
    attn = Attention(query_dim=C, heads=2, dim_head=C // 2)
    attn.set_processor(FirstFrameAttnProcessor(frames))
    return attn


def test_first_frame_attention_sees_only_frame_zero():
    frames = FrameContext(F)
    attn = attention_layer(frames)
    n = H * W
    x = torch.randn(B * F, n, C)
    with torch.no_grad():
        out = attn(x)
        for j in range(1, F):
            x2 = x.clone()
            x2[j] += torch.randn_like(x2[j])
            assert changed_frames(attn(x2), out, F) == [j]
        x2 = x.clone()
        x2[0] += torch.randn_like(x2[0])
        assert changed_frames(attn(x2), out, F) == list(range(F))
        assert torch.equal(attn(x2)[F:], out[F:])  # video 1 keeps its own frame 0


def test_first_frame_attention_equals_attention_to_frame_zero_tokens():
    frames = FrameContext(F)
    attn = attention_layer(frames)
    x = torch.randn(B * F, H * W, C)
    with torch.no_grad():
        out = attn(x)
        # The same thing the slow way: every frame cross-attends to its video's frame-0 tokens.
        attn.set_processor(AttnProcessor2_0())
        frame0 = x.view(B, F, H * W, C)[:, :1].expand(B, F, H * W, C).reshape(B * F, H * W, C)
        slow = attn(x, encoder_hidden_states=frame0)
        plain = attn(x)  # ordinary per-frame self-attention
    assert (out - slow).abs().max() < 1e-5
    first = out.view(B, F, H * W, C)[:, 0]
    assert (first - plain.view(B, F, H * W, C)[:, 0]).abs().max() < 1e-5  # frame 0 attends to itself
    assert (out - plain).abs().max() > 1e-3


def transformer_block(frames: FrameContext, out_bias: str = "zero") -> VideoTransformerBlock:
    torch.manual_seed(2)
    block = BasicTransformerBlock(C, 2, C // 2, cross_attention_dim=6)
    return VideoTransformerBlock.inflate(block, frames, temporal_out_bias=out_bias)


def test_temporal_attention_layout_and_init():
    frames = FrameContext(F)
    block = transformer_block(frames)
    keys = set(block.state_dict())
    assert {"attn_temp.to_q.weight", "attn_temp.to_k.weight", "attn_temp.to_v.weight"} <= keys
    assert {
        "attn_temp.to_out.0.weight",
        "attn_temp.to_out.0.bias",
        "norm_temp.weight",
        "norm_temp.bias",
    } <= keys
    assert "attn_temp.to_q.bias" not in keys
    assert not block.attn_temp.to_out[0].weight.any() and not block.attn_temp.to_out[0].bias.any()
    x = torch.randn(B * F, H * W, C)
    assert torch.equal(block.temporal_attention(x), x)  # starts as the identity
    # the reference's random output bias (temporal_out_bias="random") adds a constant vector
    ref = transformer_block(frames, "random")
    bias = ref.attn_temp.to_out[0].bias
    assert bias.abs().max() > 0
    assert (ref.temporal_attention(x) - (x + bias)).abs().max() < 1e-6


def test_temporal_attention_mixes_frames_at_one_position_only():
    frames = FrameContext(F)
    block = transformer_block(frames)
    with torch.no_grad():
        block.attn_temp.to_out[0].weight.normal_(0, 0.3)
    x = torch.randn(B * F, H * W, C)
    with torch.no_grad():
        out = block.temporal_attention(x)
        x2 = x.clone()
        x2[3, 7] += torch.randn(C)  # frame 3, token 7 of video 0
        diff = (block.temporal_attention(x2) - out).abs().amax(-1).view(B, F, H * W)
    changed = diff > 1e-6
    assert changed[0, :, 7].all()  # every frame (no causal mask), even earlier ones
    changed[0, :, 7] = False
    assert not changed.any()  # no other position, no other video
    # the whole block: temporal attention runs after the feed-forward
    text = torch.randn(B * F, 3, 6)
    with torch.no_grad():
        full = block(x, encoder_hidden_states=text)
        spatial = BasicTransformerBlock.forward(block, x, encoder_hidden_states=text)
    assert (full - block.temporal_attention(spatial)).abs().max() < 1e-6


def test_frame_group_norm_spans_all_frames_of_a_video():
    frames = FrameContext(F)
    gn = nn.GroupNorm(4, C)
    with torch.no_grad():
        gn.weight.normal_()
        gn.bias.normal_()
    weight = gn.weight
    norm = FrameGroupNorm.inflate(gn, frames)
    assert norm.weight is weight and set(norm.state_dict()) == {"weight", "bias"}
    x = torch.randn(B * F, C, H, W)
    video = x.view(B, F, C, H, W).transpose(1, 2)  # B×C×F×H×W, as the reference normalises
    expected = nn.functional.group_norm(video, 4, norm.weight, norm.bias, norm.eps).transpose(1, 2)
    assert (norm(x) - expected.reshape(B * F, C, H, W)).abs().max() < 1e-5
    # frame 0's output depends on the other frames of its video, not on the other video
    x2 = x.clone()
    x2[F - 1] *= 3
    assert changed_frames(norm(x2), norm(x), F) == list(range(F))
    assert torch.equal(norm(x2)[F:], norm(x)[F:])
    frames.num_frames = 1  # one frame: the ordinary GroupNorm
    assert torch.equal(norm(x), nn.functional.group_norm(x, 4, norm.weight, norm.bias, norm.eps))
