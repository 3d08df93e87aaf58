"""The layers LAMP adds to a text-to-image UNet so that it sees time (paper Fig. 3(b)).

The pretrained UNet runs on frames folded into the batch: every tensor inside it is (B·F)×…,
video-major (row b·F + f is frame f of video b). The modules here unfold the frame axis to mix
information across frames; they all read F from one shared `FrameContext` that
`VideoUNet.forward` sets before each call.

- `MotionConv`: a pretrained Conv2d followed by a gated, causal temporal conv
  (docs/method.md).
- `FirstFrameAttnProcessor`: the UNet's self-attention (attn1) with keys/values from frame 0.
- `VideoTransformerBlock`: a diffusers `BasicTransformerBlock` plus temporal self-attention after
  its feed-forward (`norm_temp`, `attn_temp`).
- `FrameGroupNorm`: a GroupNorm whose statistics span all frames of a video.

Module and parameter names follow the reference code (`conv2d`, `conv1d`, `conv_gate`,
`attn_temp`, `norm_temp`) so official LAMP checkpoints map onto ours key for key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.attention_processor import Attention
from torch import nn

TEMPORAL_OUT_BIAS_CHOICES = ("zero", "random")


@dataclass
class FrameContext:
    """How many frames each video in the folded batch has; shared by every added module."""

    num_frames: int = 1

    def videos(self, folded_batch: int) -> int:
        """B from a folded batch of B·F rows (an error if it does not divide)."""
        if folded_batch % self.num_frames:
            raise ValueError(
                f"a batch of {folded_batch} rows is not a whole number of {self.num_frames}-frame videos"
            )
        return folded_batch // self.num_frames


class MotionConv(nn.Module):
    """Spatial-temporal motion learning layer: `out = y + sigmoid(conv_gate(y)) * conv1d_time(y)`,
    with `y = conv2d(x)` the pretrained convolution applied to every frame.

    `conv1d` is a dense C→C kernel-3 convolution over frames at each pixel; it is causal as in the
    reference code: output frame t mixes frames t-2, t-1 and t (zeros before frame 0).
    `conv_gate` is a 3×3 convolution to one channel, a per-frame, per-pixel gate shared by all
    channels. Both start at zero, so the layer starts as the identity (gate 0.5 × branch 0).

    The modules hold the reference's parameters (`conv1d.weight` C×C×3, `conv_gate.weight`
    1×C×3×3); `forward` computes the same function in layouts that run at the cost of its FLOPs
    (docs/performance.md): the temporal conv as one (3, 1) convolution over B×C×(2+F)×(H·W) with
    the weight as a view, the gate as a 9-channel 1×1 convolution plus a fixed 3×3 tap sum.
    """

    def __init__(self, conv2d: nn.Conv2d, frames: FrameContext):
        super().__init__()
        c = conv2d.out_channels
        kw = {"device": conv2d.weight.device, "dtype": conv2d.weight.dtype}
        self.conv2d = conv2d
        self.conv_gate = nn.Conv2d(c, 1, kernel_size=3, padding=1, **kw)
        # Applied by `temporal_video` with two zero frames in front (causal); the module is never
        # called itself, it holds the reference's parameters.
        self.conv1d = nn.Conv1d(c, c, kernel_size=3, **kw)
        for p in (*self.conv_gate.parameters(), *self.conv1d.parameters()):
            nn.init.zeros_(p)
        self.frames = frames

    def temporal_video(self, y: torch.Tensor) -> torch.Tensor:
        """The causal conv over frames at every pixel: (B·F)×C×H×W -> B×C×F×(H·W)."""
        num_frames = self.frames.num_frames
        b = self.frames.videos(y.shape[0])
        c, h, w = y.shape[1:]
        # One copy: the frames move next to the pixels behind two zero frames (causal padding),
        # B×C×(2+F)×(H·W); tap k of the C×C×3 weight multiplies frame t-2+k.
        video = y.new_empty(b, c, num_frames + 2, h * w)
        video[:, :, :2] = 0
        video[:, :, 2:] = y.reshape(b, num_frames, c, h * w).transpose(1, 2)
        weight = self.conv1d.weight.unsqueeze(-1)  # C×C×3×1, a view
        return F.conv2d(video, weight, self.conv1d.bias)  # B×C×F×(H·W)

    def temporal(self, y: torch.Tensor) -> torch.Tensor:
        """`conv1d` over frames at every pixel; (B·F)×C×H×W -> same."""
        out = self.temporal_video(y)  # B×C×F×(H·W)
        return out.transpose(1, 2).reshape(y.shape)

    def gate_logits(self, y: torch.Tensor) -> torch.Tensor:
        """`conv_gate(y)`, (B·F)×1×H×W: the 3×3 conv to one channel as a 1×1 conv to its 9 taps
        (a well-shaped matrix product) and a fixed 9→1 3×3 conv that sums each tap's shift."""
        weight = self.conv_gate.weight  # 1×C×3×3
        taps = F.conv2d(y, weight.permute(2, 3, 0, 1).reshape(9, weight.shape[1], 1, 1))  # (B·F)×9×H×W
        return F.conv2d(taps, _tap_selector(taps.dtype, taps.device), self.conv_gate.bias, padding=1)

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        y = self.conv2d(x, *args, **kwargs)  # (B·F)×C×H'×W'
        bf, c, h, w = y.shape
        b = self.frames.videos(bf)
        num_frames = bf // b
        gate = torch.sigmoid(self.gate_logits(y)).view(b, num_frames, 1, h * w)  # shared by channels
        temporal = self.temporal_video(y).transpose(1, 2)  # B×F×C×(H·W), a view
        # y + gate · temporal in one pass; the transpose back is read, not copied.
        out = torch.addcmul(y.reshape(b, num_frames, c, h * w), gate, temporal.to(y.dtype))
        return out.reshape(bf, c, h, w)


def _tap_selector(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """1×9×3×3 one-hot kernel: output pixel p sums channel 3i+j at p + (i-1, j-1). Built per call
    (one small op), so that it is never shared across devices, dtypes or fake-tensor modes."""
    return torch.eye(9, dtype=dtype, device=device).view(1, 9, 3, 3)


def reference_temporal(conv1d: nn.Conv1d, y: torch.Tensor, num_frames: int) -> torch.Tensor:
    """`MotionConv.temporal` written as the reference code computes it (for tests and checks):
    (B·F)×C×H×W -> (B·H·W)×C×F -> conv1d with padding 2 -> keep the first F -> (B·F)×C×H×W."""
    bf, c, h, w = y.shape
    b = bf // num_frames
    seq = y.view(b, num_frames, c, h, w).permute(0, 3, 4, 2, 1).reshape(b * h * w, c, num_frames)
    out = F.conv1d(seq, conv1d.weight, conv1d.bias, padding=2)[..., :num_frames]  # (B·H·W)×C×F
    return out.view(b, h, w, c, num_frames).permute(0, 4, 3, 1, 2).reshape(bf, c, h, w)


class FirstFrameAttnProcessor:
    """attn1 of every transformer block: queries from every frame, keys and values from frame 0.

    K and V are computed for frame 0 only. All F·N queries of one video attend to the same N keys,
    so they go into one SDPA call as a single sequence: q B×heads×(F·N)×d, k/v B×heads×N×d.
    """

    def __init__(self, frames: FrameContext):
        self.frames = frames

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        if encoder_hidden_states is not None or attention_mask is not None:
            raise ValueError("first-frame attention is self-attention without a mask")
        if attn.spatial_norm is not None or attn.group_norm is not None or hidden_states.ndim != 3:
            raise ValueError("first-frame attention supports the plain transformer-block attention only")
        residual = hidden_states
        num_frames = self.frames.num_frames
        bf, n, c = hidden_states.shape  # (B·F)×N×C, N = H·W tokens per frame
        b = self.frames.videos(bf)
        heads = attn.heads

        frame0 = hidden_states.view(b, num_frames, n, c)[:, 0]  # B×N×C
        query = attn.to_q(hidden_states).view(b, num_frames * n, heads, -1).transpose(1, 2)  # B×h×(F·N)×d
        key = attn.to_k(frame0).view(b, n, heads, -1).transpose(1, 2)  # B×h×N×d
        value = attn.to_v(frame0).view(b, n, heads, -1).transpose(1, 2)  # B×h×N×d
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        out = F.scaled_dot_product_attention(query, key, value, scale=attn.scale)  # B×h×(F·N)×d
        out = out.transpose(1, 2).reshape(bf, n, -1).to(query.dtype)  # (B·F)×N×(h·d)
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


class VideoTransformerBlock(BasicTransformerBlock):
    """A diffusers `BasicTransformerBlock` followed by temporal self-attention.

    After the block's feed-forward, every spatial position attends over the F frames of its video:
    `h = h + attn_temp(norm_temp(h))` on (B·N)×F×C sequences. No positional encoding and no mask,
    as in the reference: frame order reaches the network only through the causal `MotionConv`s.
    Made by `VideoTransformerBlock.inflate(block, frames)`, which keeps the block's own modules and
    adds `norm_temp` and `attn_temp` as attributes of the block (the reference's key names).
    """

    norm_temp: nn.LayerNorm
    attn_temp: Attention
    frames: FrameContext

    @classmethod
    def inflate(
        cls, block: BasicTransformerBlock, frames: FrameContext, *, temporal_out_bias: str = "zero"
    ) -> VideoTransformerBlock:
        """Turn `block` into a VideoTransformerBlock in place (its class changes, weights stay)."""
        if temporal_out_bias not in TEMPORAL_OUT_BIAS_CHOICES:
            raise ValueError(f"temporal_out_bias must be one of {TEMPORAL_OUT_BIAS_CHOICES}")
        ref = block.norm1 if getattr(block.norm1, "weight", None) is not None else block.attn1.to_q
        kw = {"device": ref.weight.device, "dtype": ref.weight.dtype}
        dim, heads = block.dim, block.num_attention_heads
        block.__class__ = cls
        block.norm_temp = nn.LayerNorm(dim, **kw)
        with torch.device(kw["device"]):  # built where the block is (also under FakeTensorMode)
            block.attn_temp = Attention(query_dim=dim, heads=heads, dim_head=dim // heads, bias=False, out_bias=True)
        if block.attn_temp.to_q.weight.dtype != kw["dtype"]:
            block.attn_temp.to(dtype=kw["dtype"])
        # Zero output projection: the block starts as its 2-D self. The reference zeroes the weight
        # only and leaves the bias at nn.Linear's random init ("random" reproduces that).
        nn.init.zeros_(block.attn_temp.to_out[0].weight)
        if temporal_out_bias == "zero":
            nn.init.zeros_(block.attn_temp.to_out[0].bias)
        block.frames = frames
        return block

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        hidden_states = super().forward(hidden_states, *args, **kwargs)
        return self.temporal_attention(hidden_states)

    def temporal_attention(self, hidden_states: torch.Tensor) -> torch.Tensor:
        num_frames = self.frames.num_frames
        bf, n, c = hidden_states.shape
        b = self.frames.videos(bf)
        # (B·F)×N×C -> (B·N)×F×C: one length-F sequence per spatial position
        seq = hidden_states.view(b, num_frames, n, c).transpose(1, 2).reshape(b * n, num_frames, c)
        seq = self.attn_temp(self.norm_temp(seq))
        # (B·N)×F×C -> (B·F)×N×C
        return hidden_states + seq.view(b, n, num_frames, c).transpose(1, 2).reshape(bf, n, c)


class FrameGroupNorm(nn.GroupNorm):
    """GroupNorm with statistics over all frames of a video, as the reference code's GroupNorm
    on B×C×F×H×W tensors: each group is normalised over (C/G)×F×H×W.

    This couples the clean first frame with the noisy ones during training and sampling; the
    reference code does it (inherited from Tune-A-Video) and trained checkpoints depend on it.
    Made from an existing GroupNorm by `FrameGroupNorm.inflate`, which keeps its `weight`/`bias`.
    """

    frames: FrameContext

    @classmethod
    def inflate(cls, norm: nn.GroupNorm, frames: FrameContext) -> FrameGroupNorm:
        norm.__class__ = cls
        norm.frames = frames
        return norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        num_frames = self.frames.num_frames
        if num_frames == 1:
            return super().forward(x)
        bf, c = x.shape[:2]
        b = self.frames.videos(bf)
        # (B·F)×C×H×W -> B×C×F×H×W, normalise, and back
        video = x.view(b, num_frames, c, *x.shape[2:]).transpose(1, 2)
        out = F.group_norm(video, self.num_groups, self.weight, self.bias, self.eps)
        return out.transpose(1, 2).reshape(x.shape)


def motion_conv_parameters(channels: int) -> int:
    """Parameters one `MotionConv` adds: conv1d 3C²+C and conv_gate 9C+1."""
    return 3 * channels * channels + channels + 9 * channels + 1


__all__ = [
    "FirstFrameAttnProcessor",
    "FrameContext",
    "FrameGroupNorm",
    "MotionConv",
    "VideoTransformerBlock",
    "motion_conv_parameters",
    "reference_temporal",
]
