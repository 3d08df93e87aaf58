"""The video UNet: a stock diffusers `UNet2DConditionModel` inflated in place with LAMP's layers.

Wrap, don't fork (docs/method.md). Frames are folded into the batch, (B·F)×C×H×W, so every pretrained
layer runs unchanged; the modules of `models/motion.py` unfold them where time matters:

- every Conv2d except the transformers' 1×1 proj_in/proj_out becomes a `MotionConv`
  (66 sites in SD-1.x: conv_in, ResNet conv1/conv2/conv_shortcut, down/upsamplers, conv_out);
- every transformer block gets temporal attention after its feed-forward (16 in SD-1.x);
- attn1 of every transformer block attends to frame 0 (`first_frame_attention`);
- the ResNets' norm1/norm2 and conv_norm_out normalise over all frames (`frame_norm`).

State-dict keys are the reference's: `down_blocks.0.resnets.0.conv1.conv2d.weight`,
`...conv1.conv1d.weight`, `...conv_gate.weight`, `...transformer_blocks.0.attn_temp.to_q.weight`,
`...transformer_blocks.0.norm_temp.weight`.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.transformers.transformer_2d import Transformer2DModel
from torch import nn

from .motion import (
    FirstFrameAttnProcessor,
    FrameContext,
    FrameGroupNorm,
    MotionConv,
    VideoTransformerBlock,
)

# Parameter-name patterns of what LAMP trains (reference `trainable_modules`); norm_temp is
# added but stays frozen at the identity.
ADDED_MODULES = ("conv1d", "conv_gate", "attn_temp", "norm_temp")
TRAINED_MODULES = ("conv1d", "conv_gate", "attn_temp", "attn1.to_q")


def is_added_key(name: str) -> bool:
    """Whether a state-dict key belongs to a module the inflation added."""
    return any(f".{m}." in f".{name}" for m in ADDED_MODULES)


def is_trainable_key(name: str) -> bool:
    """Whether a parameter is one LAMP trains (conv1d, conv_gate, attn_temp, attn1.to_q)."""
    return any(f".{m}." in f".{name}" for m in TRAINED_MODULES)


def is_tuned_base_key(name: str) -> bool:
    """A pretrained parameter LAMP fine-tunes in place (attn1.to_q); adapters store its delta."""
    return ".attn1.to_q." in f".{name}"


class VideoUNet(nn.Module):
    """A text-to-video UNet: `forward(sample B×C×F×h×w, timestep, text B×L×D) -> B×C×F×h×w`.

    Build it with `VideoUNet.from_unet2d(unet)`. `.unet` is the inflated diffusers model (its
    state-dict keys are the adapter's keys).
    """

    def __init__(
        self, unet: nn.Module, frames: FrameContext, *, first_frame_attention: bool, frame_norm: bool
    ):
        super().__init__()
        self.unet = unet
        self.frames = frames
        self.first_frame_attention = first_frame_attention
        self.frame_norm = frame_norm
        # The pretrained attn1.to_q weights as inflated, so adapters (which store tuned − base)
        # can be applied, blended and removed again any number of times.
        self.base_to_q: dict[str, torch.Tensor] = {
            name: _snapshot(p) for name, p in unet.named_parameters() if is_tuned_base_key(name)
        }
        # (name, weight) of the motions last applied by `adapter.apply`, for records.
        self.motions: list[tuple[str, float]] = []

    # --- building ----------------------------------------------------------------------------
    @classmethod
    def from_unet2d(
        cls,
        unet: nn.Module,
        *,
        first_frame_attention: bool = True,
        frame_norm: bool = True,
        temporal_out_bias: str = "zero",
    ) -> VideoUNet:
        """Inflate a diffusers `UNet2DConditionModel` in place and wrap it.

        `first_frame_attention=False` keeps attn1 per frame and `frame_norm=False` keeps the
        GroupNorms per frame; with both off, a fresh VideoUNet equals the 2-D UNet frame by frame.
        `temporal_out_bias="random"` leaves attn_temp's output bias at nn.Linear's random init as
        the reference code does (we zero it, so a fresh model starts as the identity).
        """
        if isinstance(unet, VideoUNet) or any(isinstance(m, MotionConv) for m in unet.modules()):
            raise ValueError("this UNet is already inflated")
        frames = FrameContext()
        # Collect first, then replace: the module tree must not change while it is walked.
        conv_sites = [
            (parent, attr, child)
            for parent in unet.modules()
            for attr, child in parent._modules.items()
            if isinstance(child, nn.Conv2d) and not _is_transformer_projection(parent, attr)
        ]
        for parent, attr, conv in conv_sites:
            setattr(parent, attr, MotionConv(conv, frames))
        for module in list(unet.modules()):
            if isinstance(module, BasicTransformerBlock):
                VideoTransformerBlock.inflate(module, frames, temporal_out_bias=temporal_out_bias)
                if first_frame_attention:
                    module.attn1.set_processor(FirstFrameAttnProcessor(frames))
        if frame_norm:
            norms = [m.norm1 for m in unet.modules() if isinstance(m, ResnetBlock2D)]
            norms += [m.norm2 for m in unet.modules() if isinstance(m, ResnetBlock2D)]
            norms += (
                [unet.conv_norm_out] if isinstance(getattr(unet, "conv_norm_out", None), nn.GroupNorm) else []
            )
            for norm in norms:
                if isinstance(norm, nn.GroupNorm):
                    FrameGroupNorm.inflate(norm, frames)
        unet.train(unet.training)  # the new modules follow the UNet's train/eval mode
        return cls(unet, frames, first_frame_attention=first_frame_attention, frame_norm=frame_norm)

    # --- running -----------------------------------------------------------------------------
    def forward(
        self,
        sample: torch.Tensor,
        timestep: int | float | torch.Tensor,
        encoder_hidden_states: torch.Tensor,
    ) -> torch.Tensor:
        """Predict noise for B videos of F frames: sample B×C×F×h×w, timestep scalar or B,
        encoder_hidden_states B×L×D (one prompt per video) -> B×C_out×F×h×w."""
        if sample.ndim != 5:
            raise ValueError(f"sample must be B×C×F×h×w, got shape {tuple(sample.shape)}")
        b, c, f, h, w = sample.shape
        if encoder_hidden_states.shape[0] != b:
            raise ValueError(f"{encoder_hidden_states.shape[0]} prompt embeddings for {b} videos")
        self.frames.num_frames = f
        x = sample.transpose(1, 2).reshape(b * f, c, h, w)  # B×C×F×h×w -> (B·F)×C×h×w
        t = torch.as_tensor(timestep, device=sample.device)
        if t.numel() == b and t.ndim == 1:
            t = t.repeat_interleave(f)  # one timestep per video -> per frame
        elif t.numel() != 1:
            raise ValueError(f"timestep must be a scalar or one per video ({b}), got shape {tuple(t.shape)}")
        text = encoder_hidden_states.repeat_interleave(f, dim=0)  # B×L×D -> (B·F)×L×D
        out = self.unet(x, t.reshape(-1) if t.ndim else t, text, return_dict=False)[0]  # (B·F)×C'×h×w
        return out.view(b, f, out.shape[1], h, w).transpose(1, 2)  # -> B×C'×F×h×w

    # --- training ----------------------------------------------------------------------------
    def trainable_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """(name, parameter) of conv1d, conv_gate, attn_temp (q, k, v, out) and attn1.to_q;
        names are keys of `self.unet.state_dict()`."""
        return [(n, p) for n, p in self.unet.named_parameters() if is_trainable_key(n)]

    def freeze_base(self) -> VideoUNet:
        """requires_grad only on the trainable parameters; everything else frozen."""
        self.unet.requires_grad_(False)
        for _, p in self.trainable_parameters():
            p.requires_grad_(True)
        return self

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        """Recompute down/up-block ResNets and transformers in the backward pass (less memory).

        The recomputation reads F from the shared frame context: run backward before the next
        forward with a different number of frames.
        """
        if enabled:
            self.unet.enable_gradient_checkpointing()
        else:
            self.unet.disable_gradient_checkpointing()

    @property
    def gradient_checkpointing(self) -> bool:
        return bool(self.unet.is_gradient_checkpointing)

    # --- introspection -----------------------------------------------------------------------
    def motion_convs(self) -> list[tuple[str, MotionConv]]:
        return [(n, m) for n, m in self.unet.named_modules() if isinstance(m, MotionConv)]

    def temporal_blocks(self) -> list[tuple[str, VideoTransformerBlock]]:
        return [(n, m) for n, m in self.unet.named_modules() if isinstance(m, VideoTransformerBlock)]

    def added_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """(name, parameter) of every module the inflation added (incl. the frozen norm_temp)."""
        return [(n, p) for n, p in self.unet.named_parameters() if is_added_key(n)]

    @property
    def config(self) -> Any:
        return self.unet.config

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device


def _is_transformer_projection(parent: nn.Module, attr: str) -> bool:
    # The transformers' 1×1 proj_in/proj_out stay per-frame Conv2d, as in the reference.
    return isinstance(parent, Transformer2DModel) and attr in ("proj_in", "proj_out")


def _snapshot(p: torch.Tensor) -> torch.Tensor:
    """A detached copy kept off the accelerator (on meta, a meta tensor)."""
    p = p.detach()
    return p.clone() if p.device.type == "meta" else p.to("cpu", copy=True)


__all__ = ["VideoUNet", "is_added_key", "is_trainable_key", "is_tuned_base_key"]
