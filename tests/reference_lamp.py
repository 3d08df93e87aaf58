"""An independent oracle of the LAMP reference code, for tests only.

Written from the reference model's published behaviour (docs/method.md, docs/official-motions.md; diffusers' documented
SD-1.x UNet layout), with plain torch functional ops on an *official-format* state dict: it
shares no code with `lamp_cli.models`, so a test that compares the two catches a mistake in
either. It covers what the tiny SD-1.x-shaped config needs: CrossAttnDownBlock, DownBlock,
UNetMidBlockCrossAttn, UpBlock, CrossAttnUpBlock (2-D or 3-D block names).

Also here: a writer of official-format checkpoints (`official_state_dict_from_2d`,
`write_official_checkpoint`) — the reference saves a full `UNet3DConditionModel` whose inflated
convs nest the 2-D conv under `<site>.conv2d.*` beside `conv1d` and `conv_gate`, and whose
transformer blocks carry `attn_temp`/`norm_temp`. Writing a pickle with `torch.save` is for
tests only; lamp itself only *reads* these, with `weights_only=True`.

Shapes: B batch, C channels, F frames, H×W latent size, L text tokens, D text width.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

Tensor = torch.Tensor
StateDict = dict[str, Tensor]

# ------------------------------------------------------------------------------------------------
# The forward pass of the reference UNet3DConditionModel
# ------------------------------------------------------------------------------------------------


def timestep_embedding(
    t: Tensor, dim: int, *, flip_sin_to_cos: bool = True, freq_shift: float = 0.0
) -> Tensor:
    """SD's sinusoidal timestep features: exp(-ln(1e4)·k/(half−shift)), [cos, sin] when flipped."""
    half = dim // 2
    k = torch.arange(half, dtype=torch.float32)
    freqs = torch.exp(-math.log(10000.0) * k / (half - freq_shift))
    args = t.float()[:, None] * freqs[None, :]  # (B, half)
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=-1)
    if flip_sin_to_cos:
        emb = torch.cat([emb[:, half:], emb[:, :half]], dim=-1)
    return emb


def inflated_conv(sd: StateDict, site: str, x: Tensor, *, stride: int = 1) -> Tensor:
    """One motion-conv site (§1.2): spatial conv, then + sigmoid(gate(y)) · causal_conv1d_time(y)."""
    b, c, f, h, w = x.shape
    weight = sd[f"{site}.conv2d.weight"]
    pad = weight.shape[-1] // 2
    # (B, C, F, H, W) -> (B*F, C, H, W): the pretrained conv sees frames as a batch
    frames = x.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
    y = F.conv2d(frames, weight, sd[f"{site}.conv2d.bias"], stride=stride, padding=pad)  # (B*F, C', H', W')
    cout, ho, wo = y.shape[1:]
    gate = torch.sigmoid(F.conv2d(y, sd[f"{site}.conv_gate.weight"], sd[f"{site}.conv_gate.bias"], padding=1))
    # gate: (B*F, 1, H', W'), one scalar per frame and pixel, broadcast over channels
    # (B*F, C', H', W') -> (B*H'*W', C', F): each pixel becomes a sequence over time
    seq = y.reshape(b, f, cout, ho, wo).permute(0, 3, 4, 2, 1).reshape(b * ho * wo, cout, f)
    # padding 2 on both ends, keep the first F outputs: output t sees inputs t-2, t-1, t
    temporal = F.conv1d(seq, sd[f"{site}.conv1d.weight"], sd[f"{site}.conv1d.bias"], padding=2)[:, :, :f]
    temporal = temporal.reshape(b, ho, wo, cout, f).permute(0, 4, 3, 1, 2).reshape(b * f, cout, ho, wo)
    out = y + gate * temporal  # (B*F, C', H', W')
    return out.reshape(b, f, cout, ho, wo).permute(0, 2, 1, 3, 4)  # (B, C', F, H', W')


def video_group_norm(sd: StateDict, prefix: str, x: Tensor, groups: int, eps: float) -> Tensor:
    """GroupNorm on the 5-D tensor: statistics over (C/G)×F×H×W, i.e. across all frames (§2.5)."""
    return F.group_norm(x, groups, sd[f"{prefix}.weight"], sd[f"{prefix}.bias"], eps)


def resnet(sd: StateDict, p: str, x: Tensor, temb: Tensor, groups: int, eps: float) -> Tensor:
    h = F.silu(video_group_norm(sd, f"{p}.norm1", x, groups, eps))
    h = inflated_conv(sd, f"{p}.conv1", h)
    t = F.linear(F.silu(temb), sd[f"{p}.time_emb_proj.weight"], sd[f"{p}.time_emb_proj.bias"])  # (B, C)
    h = h + t[:, :, None, None, None]
    h = F.silu(video_group_norm(sd, f"{p}.norm2", h, groups, eps))
    h = inflated_conv(sd, f"{p}.conv2", h)
    if f"{p}.conv_shortcut.conv2d.weight" in sd:
        x = inflated_conv(sd, f"{p}.conv_shortcut", x)
    return x + h


def attention(
    sd: StateDict, p: str, q_in: Tensor, kv_in: Tensor, heads: int, *, kv_frame0_of: int = 0
) -> Tensor:
    """Multi-head softmax attention with the reference's projections (no bias on q/k/v).

    q_in: (N, Lq, C); kv_in: (N, Lk, Ck). With `kv_frame0_of=F`, N = B*F and every frame's keys and
    values are replaced by those of frame 0 of its video (attn1, §2.1).
    """
    q = F.linear(q_in, sd[f"{p}.to_q.weight"])
    k = F.linear(kv_in, sd[f"{p}.to_k.weight"])
    v = F.linear(kv_in, sd[f"{p}.to_v.weight"])
    if kv_frame0_of:
        n, lk, ck = k.shape
        f = kv_frame0_of
        # (B*F, Lk, C) -> (B, F, Lk, C), take frame 0 for every frame
        k = k.reshape(n // f, f, lk, ck)[:, [0] * f].reshape(n, lk, ck)
        v = v.reshape(n // f, f, lk, ck)[:, [0] * f].reshape(n, lk, ck)
    n, lq, c = q.shape
    d = c // heads
    # (N, L, C) -> (N, heads, L, d)
    qh = q.reshape(n, lq, heads, d).transpose(1, 2)
    kh = k.reshape(n, -1, heads, d).transpose(1, 2)
    vh = v.reshape(n, -1, heads, d).transpose(1, 2)
    weights = torch.softmax(qh @ kh.transpose(-1, -2) * d**-0.5, dim=-1)
    out = (weights @ vh).transpose(1, 2).reshape(n, lq, c)
    return F.linear(out, sd[f"{p}.to_out.0.weight"], sd[f"{p}.to_out.0.bias"])


def layer_norm(sd: StateDict, p: str, x: Tensor) -> Tensor:
    return F.layer_norm(x, x.shape[-1:], sd[f"{p}.weight"], sd[f"{p}.bias"], 1e-5)


def transformer_block(sd: StateDict, p: str, h: Tensor, text: Tensor, heads: int, frames: int) -> Tensor:
    """h: (B*F, H*W, C); text: (B*F, L, D). attn1 (K/V of frame 0), attn2, GEGLU FF, temporal attn."""
    x = layer_norm(sd, f"{p}.norm1", h)
    h = attention(sd, f"{p}.attn1", x, x, heads, kv_frame0_of=frames) + h
    h = attention(sd, f"{p}.attn2", layer_norm(sd, f"{p}.norm2", h), text, heads) + h
    x = F.linear(
        layer_norm(sd, f"{p}.norm3", h), sd[f"{p}.ff.net.0.proj.weight"], sd[f"{p}.ff.net.0.proj.bias"]
    )
    value, gate = x.chunk(2, dim=-1)
    h = F.linear(value * F.gelu(gate), sd[f"{p}.ff.net.2.weight"], sd[f"{p}.ff.net.2.bias"]) + h
    # temporal attention after the FF: (B*F, HW, C) -> (B*HW, F, C), no positions, no mask
    bf, hw, c = h.shape
    seq = h.reshape(bf // frames, frames, hw, c).transpose(1, 2).reshape(-1, frames, c)
    x = layer_norm(sd, f"{p}.norm_temp", seq)
    seq = attention(sd, f"{p}.attn_temp", x, x, heads) + seq
    return seq.reshape(bf // frames, hw, frames, c).transpose(1, 2).reshape(bf, hw, c)


def transformer(sd: StateDict, p: str, x: Tensor, text: Tensor, heads: int, groups: int) -> Tensor:
    """Transformer3DModel: per-frame GroupNorm (eps 1e-6), 1×1 proj_in/out, blocks, residual."""
    b, c, f, hh, ww = x.shape
    frames = x.permute(0, 2, 1, 3, 4).reshape(b * f, c, hh, ww)  # (B*F, C, H, W)
    h = F.group_norm(frames, groups, sd[f"{p}.norm.weight"], sd[f"{p}.norm.bias"], 1e-6)
    h = F.conv2d(h, sd[f"{p}.proj_in.weight"], sd[f"{p}.proj_in.bias"])
    h = h.permute(0, 2, 3, 1).reshape(b * f, hh * ww, -1)  # (B*F, H*W, C)
    text_per_frame = text.repeat_interleave(f, dim=0)  # (B, L, D) -> (B*F, L, D)
    i = 0
    while f"{p}.transformer_blocks.{i}.norm1.weight" in sd:
        h = transformer_block(sd, f"{p}.transformer_blocks.{i}", h, text_per_frame, heads, f)
        i += 1
    h = h.reshape(b * f, hh, ww, -1).permute(0, 3, 1, 2)
    h = F.conv2d(h, sd[f"{p}.proj_out.weight"], sd[f"{p}.proj_out.bias"]) + frames
    return h.reshape(b, f, c, hh, ww).permute(0, 2, 1, 3, 4)


def _heads(config: dict[str, Any], block: int) -> int:
    heads = config.get("attention_head_dim", 8)  # diffusers' legacy name: the number of heads
    return int(heads[block] if isinstance(heads, (list, tuple)) else heads)


def reference_unet3d_forward(
    state_dict: StateDict, config: dict[str, Any], sample: Tensor, t: int | float | Tensor, text: Tensor
) -> Tensor:
    """The reference UNet3DConditionModel's noise prediction.

    state_dict: official-format keys; config: its config.json; sample: (B, 4, F, H, W);
    t: a scalar timestep or one per sample; text: (B, L, D). Returns (B, 4, F, H, W).
    """
    sd = state_dict
    groups = int(config.get("norm_num_groups", 32))
    eps = float(config.get("norm_eps", 1e-5))
    layers = int(config["layers_per_block"])
    b = sample.shape[0]
    t = torch.as_tensor(t).reshape(-1).expand(b)

    # 1. time embedding
    temb = timestep_embedding(
        t,
        int(config["block_out_channels"][0]),
        flip_sin_to_cos=bool(config.get("flip_sin_to_cos", True)),
        freq_shift=float(config.get("freq_shift", 0)),
    )
    temb = F.linear(temb, sd["time_embedding.linear_1.weight"], sd["time_embedding.linear_1.bias"])
    temb = F.linear(F.silu(temb), sd["time_embedding.linear_2.weight"], sd["time_embedding.linear_2.bias"])

    # 2. down
    h = inflated_conv(sd, "conv_in", sample)
    skips = [h]
    for i, kind in enumerate(config["down_block_types"]):
        p = f"down_blocks.{i}"
        for j in range(layers):
            h = resnet(sd, f"{p}.resnets.{j}", h, temb, groups, eps)
            if kind.startswith("CrossAttn"):
                h = transformer(sd, f"{p}.attentions.{j}", h, text, _heads(config, i), groups)
            skips.append(h)
        if f"{p}.downsamplers.0.conv.conv2d.weight" in sd:
            h = inflated_conv(sd, f"{p}.downsamplers.0.conv", h, stride=2)
            skips.append(h)

    # 3. mid
    h = resnet(sd, "mid_block.resnets.0", h, temb, groups, eps)
    h = transformer(sd, "mid_block.attentions.0", h, text, _heads(config, -1), groups)
    h = resnet(sd, "mid_block.resnets.1", h, temb, groups, eps)

    # 4. up: each resnet concatenates the latest skip along channels
    n_blocks = len(config["up_block_types"])
    for i, kind in enumerate(config["up_block_types"]):
        p = f"up_blocks.{i}"
        for j in range(layers + 1):
            h = torch.cat([h, skips.pop()], dim=1)
            h = resnet(sd, f"{p}.resnets.{j}", h, temb, groups, eps)
            if kind.startswith("CrossAttn"):
                h = transformer(sd, f"{p}.attentions.{j}", h, text, _heads(config, n_blocks - 1 - i), groups)
        if f"{p}.upsamplers.0.conv.conv2d.weight" in sd:
            h = F.interpolate(h, scale_factor=(1.0, 2.0, 2.0), mode="nearest")  # H, W only
            h = inflated_conv(sd, f"{p}.upsamplers.0.conv", h)
    assert not skips, "skip connections left over: config and state dict disagree"

    # 5. out
    h = F.silu(video_group_norm(sd, "conv_norm_out", h, groups, eps))
    return inflated_conv(sd, "conv_out", h)


# ------------------------------------------------------------------------------------------------
# The reference pipeline's latent loop (§5), without decoding or histogram matching
# ------------------------------------------------------------------------------------------------


def sd14_alphas_cumprod(num_train_timesteps: int = 1000) -> Tensor:
    """ᾱ_t of SD-1.4's scaled_linear schedule (β from 0.00085 to 0.012), in float32 as the reference."""
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, num_train_timesteps, dtype=torch.float32) ** 2
    return torch.cumprod(1.0 - betas, dim=0)


def ddim_timesteps(steps: int, num_train_timesteps: int = 1000, steps_offset: int = 1) -> list[int]:
    """DDIM's "leading" spacing with SD-1.4's offset: 981, 961, …, 1 for 50 steps."""
    ratio = num_train_timesteps // steps
    return [i * ratio + steps_offset for i in reversed(range(steps))]


def adain(x: Tensor, ref: Tensor) -> Tensor:
    """x, ref: (B, C, H, W); per sample and channel over H×W, unbiased variance + 1e-8."""
    mu_x, mu_r = x.mean(dim=(2, 3), keepdim=True), ref.mean(dim=(2, 3), keepdim=True)
    sd_x = (x.var(dim=(2, 3), keepdim=True) + 1e-8).sqrt()
    sd_r = (ref.var(dim=(2, 3), keepdim=True) + 1e-8).sqrt()
    return (x - mu_x) / sd_x * sd_r + mu_r


def shared_noise(noise: Tensor, ratio: float = 0.2) -> Tensor:
    """n_f <- ratio·n_0 + (1−ratio)·n_f for f ≥ 1 (not renormalised); frame 0 is replaced later."""
    out = noise.clone()
    out[:, :, 1:] = ratio * noise[:, :, :1] + (1.0 - ratio) * noise[:, :, 1:]
    return out


@torch.no_grad()
def reference_sample(
    state_dict: StateDict,
    config: dict[str, Any],
    first_latent: Tensor,
    noise: Tensor,
    text: Tensor,
    uncond: Tensor,
    *,
    steps: int = 50,
    guidance: float = 12.5,
    shared_ratio: float | None = 0.2,
    switch_after: int | None = None,
    adain_on: bool = True,
) -> Tensor:
    """The reference pipeline's latents after the loop and the final AdaIN.

    first_latent: (B, 4, 1, H, W) the clean (scaled) first-frame latent; noise: (B, 4, F, H, W) the
    initial Gaussian draw (frame 0's slice only feeds shared noise); text/uncond: (B, L, D).
    `shared_ratio=None` skips shared-noise mixing (editing mode: `noise` are inverted latents).
    AdaIN: early phase while i <= switch_after (reference: `i > 30` switches, so 31 of 50 steps are
    early; the default keeps that share, round(31/50 · steps) early steps, for other step counts),
    late phase after; once more after the loop.
    """
    if switch_after is None:
        switch_after = round(31 * steps / 50) - 1
    acp = sd14_alphas_cumprod()
    final_acp = acp[0]  # set_alpha_to_one False
    ratio = 1000 // steps
    latents = shared_noise(noise, shared_ratio) if shared_ratio is not None else noise.clone()
    latents[:, :, :1] = first_latent
    embeddings = torch.cat([uncond, text])  # (2B, L, D)
    for i, t in enumerate(ddim_timesteps(steps)):
        eps_all = reference_unet3d_forward(state_dict, config, torch.cat([latents, latents]), t, embeddings)
        eps_u, eps_c = eps_all.chunk(2)
        eps = eps_u + guidance * (eps_c - eps_u)
        # DDIM, eta 0, on frames 1..F-1 only; frame 0 stays the clean latent
        a_t = acp[t]
        a_prev = acp[t - ratio] if t - ratio >= 0 else final_acp
        x, e = latents[:, :, 1:], eps[:, :, 1:]
        x0 = (x - (1 - a_t).sqrt() * e) / a_t.sqrt()
        latents[:, :, 1:] = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * e
        if adain_on:
            frames = latents.shape[2]
            if i <= switch_after:  # frames 2.. take frame 1's statistics; frame 1 untouched
                for f in range(2, frames):
                    latents[:, :, f] = adain(latents[:, :, f], latents[:, :, 1])
            else:  # frame 1 takes frame 0's; the others take the new frame 1's
                latents[:, :, 1] = adain(latents[:, :, 1], latents[:, :, 0])
                for f in range(2, frames):
                    latents[:, :, f] = adain(latents[:, :, f], latents[:, :, 1])
    if adain_on:
        for f in range(1, latents.shape[2]):
            latents[:, :, f] = adain(latents[:, :, f], latents[:, :, 0])
    return latents


# ------------------------------------------------------------------------------------------------
# Official-format checkpoints (writer, for tests)
# ------------------------------------------------------------------------------------------------

_BLOCK_3D = {
    "CrossAttnDownBlock2D": "CrossAttnDownBlock3D",
    "DownBlock2D": "DownBlock3D",
    "CrossAttnUpBlock2D": "CrossAttnUpBlock3D",
    "UpBlock2D": "UpBlock3D",
    "UNetMidBlock2DCrossAttn": "UNetMidBlock3DCrossAttn",
}

# The SD-1.x config fields a diffusers-0.11.1-era UNet3DConditionModel config carries.
_CONFIG_FIELDS = (
    "act_fn", "attention_head_dim", "block_out_channels", "center_input_sample", "cross_attention_dim",
    "downsample_padding", "dual_cross_attention", "flip_sin_to_cos", "freq_shift", "in_channels",
    "layers_per_block", "mid_block_scale_factor", "norm_eps", "norm_num_groups", "num_class_embeds",
    "only_cross_attention", "out_channels", "resnet_time_scale_shift", "sample_size",
    "upcast_attention", "use_linear_projection",
)  # fmt: skip


def official_config_from_2d(config_2d: dict[str, Any]) -> dict[str, Any]:
    """The config.json the reference writes for a UNet inflated from `config_2d`."""
    cfg: dict[str, Any] = {"_class_name": "UNet3DConditionModel", "_diffusers_version": "0.11.1"}
    for key in _CONFIG_FIELDS:
        if key in config_2d:
            value = config_2d[key]
            cfg[key] = list(value) if isinstance(value, tuple) else value
    cfg["down_block_types"] = [_BLOCK_3D[b] for b in config_2d["down_block_types"]]
    cfg["up_block_types"] = [_BLOCK_3D[b] for b in config_2d["up_block_types"]]
    cfg["mid_block_type"] = _BLOCK_3D[config_2d.get("mid_block_type") or "UNetMidBlock2DCrossAttn"]
    return cfg


def conv_sites(state_dict_2d: StateDict) -> list[str]:
    """Every Conv2d of the 2-D UNet except the transformers' 1×1 proj_in/proj_out (§1.1)."""
    sites = []
    for key, value in state_dict_2d.items():
        if key.endswith(".weight") and value.ndim == 4:
            site = key[: -len(".weight")]
            if not site.endswith(("proj_in", "proj_out")):
                sites.append(site)
    return sites


def transformer_blocks(state_dict_2d: StateDict) -> list[str]:
    return sorted({k.split(".attn1.")[0] for k in state_dict_2d if ".attn1.to_q.weight" in k})


def official_shapes_from_2d(shapes_2d: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the reference UNet3DConditionModel inflated from a 2-D UNet (§1.2, §2.4)."""
    sites = {k[: -len(".weight")] for k, s in shapes_2d.items() if k.endswith(".weight") and len(s) == 4}
    sites = {s for s in sites if not s.endswith(("proj_in", "proj_out"))}
    out: dict[str, tuple[int, ...]] = {}
    for key, shape in shapes_2d.items():
        site, _, leaf = key.rpartition(".")
        out[f"{site}.conv2d.{leaf}" if site in sites else key] = tuple(shape)
    for site in sites:
        c = shapes_2d[f"{site}.weight"][0]
        out.update({f"{site}.conv1d.weight": (c, c, 3), f"{site}.conv1d.bias": (c,),
                    f"{site}.conv_gate.weight": (1, c, 3, 3), f"{site}.conv_gate.bias": (1,)})  # fmt: skip
    for key, shape in shapes_2d.items():
        if key.endswith(".attn1.to_q.weight"):
            p, c = key[: -len(".attn1.to_q.weight")], shape[0]
            out.update({f"{p}.attn_temp.{n}.weight": (c, c) for n in ("to_q", "to_k", "to_v", "to_out.0")})
            out.update(
                {
                    f"{p}.attn_temp.to_out.0.bias": (c,),
                    f"{p}.norm_temp.weight": (c,),
                    f"{p}.norm_temp.bias": (c,),
                }
            )
    return out


def official_state_dict_from_2d(
    state_dict_2d: StateDict,
    *,
    seed: int = 0,
    scale: float = 0.05,
    to_q_scale: float = 0.05,
    zero: bool = False,
) -> StateDict:
    """A tuned LAMP UNet's full state dict in the reference's key layout.

    Every conv site nests its 2-D weights under `.conv2d.`; added `conv1d` (C×C×3), `conv_gate`
    (1×C×3×3) and per transformer block `attn_temp` (q/k/v without bias, to_out with bias) and
    `norm_temp` get random non-zero values (`zero=True`: the reference's init, with its random
    to_out bias), and `attn1.to_q.weight` is perturbed, as training would leave them.
    """
    g = torch.Generator().manual_seed(seed)

    def rand(*shape: int, s: float = scale) -> Tensor:
        return torch.randn(*shape, generator=g) * s

    sites = set(conv_sites(state_dict_2d))
    out: StateDict = {}
    for key, value in state_dict_2d.items():
        site, _, leaf = key.rpartition(".")
        out[f"{site}.conv2d.{leaf}" if site in sites else key] = value.detach().clone().float()
    for site in sorted(sites):
        c = state_dict_2d[f"{site}.weight"].shape[0]
        out[f"{site}.conv1d.weight"] = torch.zeros(c, c, 3) if zero else rand(c, c, 3)
        out[f"{site}.conv1d.bias"] = torch.zeros(c) if zero else rand(c)
        out[f"{site}.conv_gate.weight"] = torch.zeros(1, c, 3, 3) if zero else rand(1, c, 3, 3)
        out[f"{site}.conv_gate.bias"] = torch.zeros(1) if zero else rand(1)
    for p in transformer_blocks(state_dict_2d):
        c = state_dict_2d[f"{p}.attn1.to_q.weight"].shape[0]
        for proj in ("to_q", "to_k", "to_v"):
            out[f"{p}.attn_temp.{proj}.weight"] = rand(c, c, s=c**-0.5)
        out[f"{p}.attn_temp.to_out.0.weight"] = torch.zeros(c, c) if zero else rand(c, c)
        # the reference leaves this bias at its random init, and training moves it: never zero
        out[f"{p}.attn_temp.to_out.0.bias"] = (torch.rand(c, generator=g) * 2 - 1) * c**-0.5
        out[f"{p}.norm_temp.weight"] = torch.ones(c) if zero else 1 + rand(c)
        out[f"{p}.norm_temp.bias"] = torch.zeros(c) if zero else rand(c)
        if not zero:
            out[f"{p}.attn1.to_q.weight"] = out[f"{p}.attn1.to_q.weight"] + rand(c, c, s=to_q_scale)
    return out


def write_official_checkpoint(
    folder: str | Path,
    state_dict: StateDict,
    config: dict[str, Any],
    *,
    fmt: str = "bin",
    pipeline: bool = False,
) -> Path:
    """Write `folder/unet/` (pipeline=True) or `folder/` as the reference's `save_pretrained` does.

    fmt "bin": `diffusion_pytorch_model.bin` via torch.save (a pickle: tests only);
    fmt "safetensors": `diffusion_pytorch_model.safetensors`. Returns the unet folder.
    """
    folder = Path(folder)
    unet_dir = folder / "unet" if pipeline else folder
    unet_dir.mkdir(parents=True, exist_ok=True)
    (unet_dir / "config.json").write_text(json.dumps(config, indent=2))
    tensors = {k: v.contiguous() for k, v in state_dict.items()}
    if fmt == "bin":
        torch.save(tensors, unet_dir / "diffusion_pytorch_model.bin")
    elif fmt == "safetensors":
        from safetensors.torch import save_file

        save_file(tensors, str(unet_dir / "diffusion_pytorch_model.safetensors"))
    else:
        raise ValueError(fmt)
    if pipeline:
        (folder / "model_index.json").write_text(
            json.dumps({"_class_name": "LAMPPipeline", "unet": ["lamp", "UNet3DConditionModel"]})
        )
    return unet_dir
