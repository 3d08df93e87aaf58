#!/usr/bin/env python
"""Train the toy base (`--base toy`) on the toy world's images and captions, on CPU.

    python scripts/train_toy_base.py                      # writes lamp_cli/toy/base/
    python scripts/train_toy_base.py --out /tmp/toy --unet-steps 200   # a quick smoke run

Seeded and single-threaded, so the same command gives the same weights on the same software.
Three stages:
  1. a small AutoencoderKL (64×64 RGB -> 4×16×16, downsampling 4) learns to reconstruct the
     world's images, shapes at any angle and radius 6–18 px (MSE + 0.5·L1 + a small KL term that
     keeps its latents near the origin),
     starting from a near-deterministic posterior;
  2. every training image is encoded once (posterior mean) and the latents' std sets the VAE's
     `scaling_factor`, so scaled latents have unit variance, as SD's do;
  3. a UNet2DConditionModel learns ε-prediction under SD-1.4's noise schedule, conditioned on a
     frozen CLIPTextModel initialised so each caption word stays distinguishable (--text-init),
     on upright shapes of radius 7–13 px (--upright, --radius: a caption does not say how a
     shape is turned, and a model that must spread a "square" over all angles draws round
     blobs; objects of the clips' size leave room for a 30 px slide in a 64 px frame), with
     the loss on the object's latent cells weighted 5× (--object-weight), offset noise, min-SNR-5
     weighting, 10% empty captions for classifier-free guidance and an EMA of its weights (the
     EMA is what ships). Every 100 steps it logs the "caption effect": how much the predicted
     image changes when captions are swapped (0 = text ignored).
The held-out captions (`world.heldout_triples()`) are never shown; the run ends by drawing them
and reporting how many came out with the asked shape and colours.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lamp_cli.models.tiny import SD_SCHEDULER_CONFIG, save_components, tiny_text_encoder, tiny_tokenizer  # noqa: E402
from lamp_cli.toy import world  # noqa: E402
from lamp_cli.toy.base_config import TOY_UNET_CONFIG, TOY_VAE_CONFIG  # noqa: E402


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def make_dataset(n: int, seed: int, *, upright: bool = False,
                 radius: tuple[float, float] = (6.0, 18.0)) -> tuple[np.ndarray, list[str], np.ndarray]:
    """`n` random scenes of the training triples: N×64×64×3 uint8, their captions, and where the
    object lies on the 16×16 latent grid (N×16×16 bool: any cover in a 4×4 cell, grown by one cell)."""
    rng = np.random.default_rng(seed)
    triples = world.training_triples()
    images = np.empty((n, world.SIZE, world.SIZE, 3), np.uint8)
    cells = world.SIZE // 4
    where = np.zeros((n, cells, cells), bool)
    captions: list[str] = []
    for i in range(n):
        scene = world.random_scene(rng, pairs=triples, radius=radius)
        if upright:
            scene = replace(scene, angle=0.0)
        images[i] = world.render(scene)
        captions.append(scene.caption)
        cover = world._draw_mask(scene.shape, scene.cx, scene.cy, scene.radius, scene.angle) > 0
        cell = cover.reshape(cells, 4, cells, 4).any(axis=(1, 3))
        grown = np.pad(cell, 1)
        where[i] = np.logical_or.reduce([grown[1 + dy : 1 + dy + cells, 1 + dx : 1 + dx + cells]
                                         for dy in (-1, 0, 1) for dx in (-1, 0, 1)])
    return images, captions, where


def to_tensor(images: np.ndarray) -> torch.Tensor:
    # N×H×W×3 uint8 -> N×3×H×W in [-1, 1]
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train_vae(images: np.ndarray, steps: int, batch: int, seed: int, init: Path | None = None, lr: float = 1e-3):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    if init is not None:  # continue an earlier run's VAE
        vae = AutoencoderKL.from_pretrained(init / "vae")
        vae.train().requires_grad_(True)
    else:
        vae = AutoencoderKL(**TOY_VAE_CONFIG)
        # Start the posterior's log-variance at -10 (std 0.007): training begins as a plain
        # autoencoder and learns in minutes. From a random log-variance (std ~1) the decoder must
        # first learn to ignore sampling noise, and short runs end with blurred, off-colour blobs.
        c = TOY_VAE_CONFIG["latent_channels"]
        with torch.no_grad():
            vae.quant_conv.weight[c:] = 0
            vae.quant_conv.bias[c:] = -10.0
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    rng = np.random.default_rng(seed)
    t0 = time.time()
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, lr, 50)
        x = to_tensor(images[rng.integers(len(images), size=batch)])
        posterior = vae.encode(x).latent_dist
        rec = vae.decode(posterior.sample()).sample
        mse = torch.nn.functional.mse_loss(rec, x)
        kl = posterior.kl().mean()  # summed over the 4×16×16 latent, averaged over the batch
        # L1 on top of MSE: flat colours with sharp edges; MSE alone settles for blurred edges,
        # which is what turns small triangles and stars into blobs.
        loss = mse + 0.5 * (rec - x).abs().mean() + 1e-6 * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == steps - 1:
            log(f"vae {step:5d}/{steps}  mse {mse.item():.5f}  kl {kl.item():.1f}  {time.time() - t0:.0f}s")
    vae.eval().requires_grad_(False)
    return vae


@torch.no_grad()
def encode_all(vae, images: np.ndarray, batch: int = 250) -> torch.Tensor:
    out = [vae.encode(to_tensor(images[i : i + batch])).latent_dist.mean for i in range(0, len(images), batch)]
    return torch.cat(out)  # N×4×16×16, unscaled


def build_text(seed: int, init: str = "words", max_length: int = 16):
    """The toy tokenizer (captions padded to `max_length`) and a frozen CLIPTextModel.

    init="random": CLIP's own random initialisation. Its 0.02-scale token embeddings are swamped
    by the layers' attention outputs, which average over the prefix, so every caption comes out
    nearly the same and the UNet learns to ignore the text (the first shipped base did).
    init="words": the same class and config, initialised so that its output at each position is
    LayerNorm(token + position): orthogonal unit-scale token embeddings, smaller random position
    embeddings (so "red" as the object's colour and "red" as the background differ), and each
    layer's residual branches zeroed (out_proj and fc2), so the layers pass the stream through.
    """
    tokenizer = tiny_tokenizer(world.WORDS)
    tokenizer.model_max_length = max_length
    text_encoder = tiny_text_encoder(tokenizer, seed + 2)
    if init == "words":
        gen = torch.Generator().manual_seed(seed + 5)
        tm = getattr(text_encoder, "text_model", text_encoder)  # transformers 4 nests it, 5 does not
        emb = tm.embeddings
        vocab, width = emb.token_embedding.weight.shape
        with torch.no_grad():
            table = torch.randn(vocab, width, generator=gen)
            ids = sorted({tokenizer.convert_tokens_to_ids(t) for t in tokenizer.tokenize(" ".join(world.WORDS))}
                         | {tokenizer.bos_token_id, tokenizer.eos_token_id})
            q, _ = torch.linalg.qr(torch.randn(width, width, generator=gen))
            table[ids] = q[: len(ids)]  # orthonormal rows for the caption words
            emb.token_embedding.weight.copy_(table / table.norm(dim=1, keepdim=True) * width**0.5)
            pos = torch.randn(emb.position_embedding.weight.shape, generator=gen)
            emb.position_embedding.weight.copy_(pos / pos.norm(dim=1, keepdim=True) * 0.6 * width**0.5)
            for layer in tm.encoder.layers:
                for lin in (layer.self_attn.out_proj, layer.mlp.fc2):
                    lin.weight.zero_()
                    lin.bias.zero_()
    elif init != "random":
        raise ValueError(f"unknown text init {init!r}")
    return tokenizer, text_encoder.eval().requires_grad_(False)


@torch.no_grad()
def embed(tokenizer, text_encoder, prompts: list[str]) -> torch.Tensor:
    tok = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt")
    return text_encoder(tok.input_ids)[0]  # N×77×D


def caption_probe(latents: torch.Tensor, cap_idx: torch.Tensor, table: torch.Tensor, seed: int, n: int = 16):
    """A cheap early signal of whether the UNet reads the caption.

    For `n` fixed training latents noised to t = 700, the relative change of the predicted x0 when
    each latent's caption is replaced by another image's: ~0 while the text is ignored.
    `table` holds caption embeddings (frozen encoder) or token ids (trained encoder).
    """
    from diffusers import DDPMScheduler

    gen = torch.Generator().manual_seed(seed + 6)
    idx = torch.randperm(len(latents), generator=gen)[:n]
    x0, rows = latents[idx], cap_idx[idx]
    sched = DDPMScheduler.from_config(SD_SCHEDULER_CONFIG)
    t = torch.full((n,), 700)
    a = sched.alphas_cumprod[700]
    xt = sched.add_noise(x0, torch.randn(x0.shape, generator=gen), t)

    @torch.no_grad()
    def probe(unet, text_encoder=None) -> float:
        def x0_pred(r):
            cond = text_encoder(table[r])[0] if text_encoder is not None else table[r]
            eps = unet(xt, t, cond).sample
            return (xt - (1 - a).sqrt() * eps) / a.sqrt()

        right, wrong = x0_pred(rows), x0_pred(rows.roll(1))
        return ((right - wrong).norm() / right.norm()).item()

    return probe


def train_unet(latents: torch.Tensor, captions: list[str], tokenizer, text_encoder, *, steps: int, batch: int,
               seed: int, lr: float, on_checkpoint=None, checkpoint_every: int = 0, stop_after: int | None = None,
               init: Path | None = None, text_lr: float | None = None, ema_decay: float = 0.999,
               snr_gamma: float = 5.0, offset_noise: float = 0.0, unet_config: dict | None = None,
               object_cells: torch.Tensor | None = None, object_weight: float = 0.0):
    """Train the UNet (and, if `text_lr` is given, the text encoder with it); returns the EMA copies.

    Returns (ema_unet, ema_text_encoder); the second is `text_encoder` itself when it stays frozen.
    """
    import copy

    from diffusers import DDPMScheduler, UNet2DConditionModel

    vocab = sorted(set(captions))
    prompts = [""] + vocab  # row 0 = empty caption
    index = {c: i + 1 for i, c in enumerate(vocab)}
    cap_idx = torch.tensor([index[c] for c in captions])
    tok_ids = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                        return_tensors="pt").input_ids  # (1+K)×77
    train_text = text_lr is not None
    if train_text:
        # A frozen random CLIP (width 32, LayerNorm'd) gives nearly the same features for every
        # caption, and the UNet learned to ignore them; training it jointly lets the caption's
        # words pull apart in the space the cross-attention reads.
        text_encoder.train().requires_grad_(True)
        ema_text = copy.deepcopy(text_encoder).eval().requires_grad_(False)
        table = None
    else:
        # The encoder is frozen, so each distinct caption (256 + the empty one) is embedded once.
        table = embed(tokenizer, text_encoder, prompts)  # (1+K)×77×D
        ema_text = text_encoder

    torch.manual_seed(seed + 3)
    unet_config = unet_config or TOY_UNET_CONFIG
    unet = UNet2DConditionModel(**unet_config)
    if init is not None:  # continue an earlier run's UNet (its EMA weights)
        unet.load_state_dict(UNet2DConditionModel.from_pretrained(init / "unet").state_dict())
    ema = UNet2DConditionModel(**unet_config)
    ema.load_state_dict(unet.state_dict())
    ema.eval().requires_grad_(False)
    noise_sched = DDPMScheduler.from_config(SD_SCHEDULER_CONFIG)
    # Min-SNR-γ weighting for ε-prediction: w(t) = min(SNR, γ) / SNR. ε-loss at low noise says
    # little about the image (the noisy input already shows it) and at high noise it is nearly
    # blind to the caption (an x0 error is scaled by SNR ≈ 0.005 there); this weighting moves the
    # effort to the noise levels where colour and layout are decided.
    snr = noise_sched.alphas_cumprod / (1 - noise_sched.alphas_cumprod)
    weight = snr.clamp(max=snr_gamma) / snr if snr_gamma else None
    probe = caption_probe(latents, cap_idx, tok_ids if train_text else table, seed)
    groups = [{"params": list(unet.parameters()), "peak": lr, "weight_decay": 1e-2}]
    if train_text:
        groups.append({"params": list(text_encoder.parameters()), "peak": text_lr, "weight_decay": 0.0})
    opt = torch.optim.AdamW(groups, lr=lr)
    gen = torch.Generator().manual_seed(seed + 4)
    t0 = time.time()
    running = None
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, g["peak"], 200)
        idx = torch.randint(len(latents), (batch,), generator=gen)
        x0 = latents[idx]
        rows = cap_idx[idx].clone()
        rows[torch.rand(batch, generator=gen) < 0.1] = 0  # classifier-free guidance dropout
        noise = torch.randn(x0.shape, generator=gen)
        if offset_noise:
            # Offset noise: SD's schedule leaves 0.068·x0 in x_T, and on a 16×16 latent the noise's
            # per-channel mean (std 1/16) is no bigger than that leak, so without this the UNet
            # learns to read the background colour off the noise instead of the caption.
            noise = noise + offset_noise * torch.randn(x0.shape[:2] + (1, 1), generator=gen)
        t = torch.randint(0, noise_sched.config.num_train_timesteps, (batch,), generator=gen)
        xt = noise_sched.add_noise(x0, noise, t)
        cond = text_encoder(tok_ids[rows])[0] if train_text else table[rows]  # B×77×D
        sq = (unet(xt, t, cond).sample - noise).pow(2)
        if object_weight and object_cells is not None:
            # The object and a one-cell ring around it (where its outline is decided) count
            # 1 + object_weight times; the flat background is most of the latent and easy.
            w = 1 + object_weight * object_cells[idx].unsqueeze(1).float()  # B×1×16×16
            err = (sq * w).sum(dim=(1, 2, 3)) / (w.sum(dim=(1, 2, 3)) * sq.shape[1])
        else:
            err = sq.mean(dim=(1, 2, 3))
        loss = (err * weight[t]).mean() if snr_gamma else err.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        if train_text:
            torch.nn.utils.clip_grad_norm_(text_encoder.parameters(), 1.0)
        opt.step()
        decay = min(ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), unet.parameters(), strict=True):
                pe.lerp_(p, 1 - decay)
            if train_text:
                for pe, p in zip(ema_text.parameters(), text_encoder.parameters(), strict=True):
                    pe.lerp_(p, 1 - decay)
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if step % 100 == 0 or step == steps - 1:
            rate = (step + 1) / (time.time() - t0)
            sens = probe(ema, ema_text if train_text else None)
            log(f"unet {step:5d}/{steps}  loss {running:.4f}  caption effect {sens:.3f}  {rate:.2f} it/s  "
                f"eta {(steps - step - 1) / rate / 60:.1f} min")
        if on_checkpoint and checkpoint_every and step and step % checkpoint_every == 0:
            on_checkpoint(ema, ema_text, step)
        if stop_after is not None and step + 1 >= stop_after:
            log(f"stopping after {step + 1} of {steps} steps (--stop-after)")
            break
    return ema, ema_text


def evaluate(folder: Path, seeds: int = 2, steps: int = 25, guidance: float = 5.0) -> dict:
    """Draw every held-out caption with `seeds` seeds; count how many read back right."""
    from lamp_cli.models.base import load_base
    from lamp_cli.toy.sample import text_to_image

    base = load_base(str(folder))
    held = world.heldout_triples()
    prompts = [world.caption(*t) for t in held]
    results = {"shape": 0, "color": 0, "background": 0, "all": 0, "n": 0}
    sheets = []
    for seed in range(seeds):
        images = text_to_image(base, prompts, steps=steps, guidance=guidance, seed=seed)
        sheets.append(np.concatenate(list(images), axis=1))
        for (shape, color, bg), img in zip(held, images, strict=True):
            r = world.read_frame(img)
            results["shape"] += r.shape == shape
            results["color"] += r.color == color
            results["background"] += r.background == bg
            results["all"] += r.matches(shape, color, bg)
            results["n"] += 1
    frac = {k: round(v / results["n"], 3) for k, v in results.items() if k != "n"}
    return {"n": results["n"], **frac, "sheet": np.concatenate(sheets, axis=0)}


def unet_config(attn_levels: int) -> dict:
    if attn_levels == 1:  # the tiny test UNet's layout: no cross-attention at the 8×8 level
        return {**TOY_UNET_CONFIG, "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
                "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D")}
    return dict(TOY_UNET_CONFIG)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "lamp_cli" / "toy" / "base")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--images", type=int, default=12000)
    p.add_argument("--vae-steps", type=int, default=3600)
    p.add_argument("--vae-batch", type=int, default=16)
    p.add_argument("--vae-lr", type=float, default=1e-3)
    p.add_argument("--vae-init", type=Path, default=None, help="start the VAE from this base's VAE and train it further")
    p.add_argument("--vae-from", type=Path, default=None, help="take this base's VAE as it is (no VAE training)")
    p.add_argument("--text-init", choices=("words", "random"), default="words",
                   help="how the frozen text encoder is initialised (see build_text)")
    p.add_argument("--max-length", type=int, default=16, help="the tokenizer's padded length for captions")
    p.add_argument("--offset-noise", type=float, default=0.15, help="per-channel constant noise added in training")
    p.add_argument("--attn-levels", type=int, choices=(1, 2), default=2,
                   help="UNet levels with cross-attention (1: the tiny test UNet's layout)")
    p.add_argument("--snr-gamma", type=float, default=5.0, help="min-SNR-γ loss weighting (0: plain ε MSE)")
    p.add_argument("--upright", action=argparse.BooleanOptionalAction, default=True,
                   help="draw every training shape upright (angle 0); --no-upright: turned at random")
    p.add_argument("--radius", type=float, nargs=2, default=(7.0, 13.0), metavar=("MIN", "MAX"),
                   help="circumradius range of the training shapes, in px")
    p.add_argument("--object-weight", type=float, default=4.0,
                   help="extra loss weight on the latent cells the object covers, plus a one-cell ring")
    p.add_argument("--unet-steps", type=int, default=4500)
    p.add_argument("--unet-batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--stop-after", type=int, default=None,
                   help="stop the UNet after this many updates, keeping the LR schedule of --unet-steps")
    p.add_argument("--checkpoint-every", type=int, default=0, help="also save the EMA UNet to OUT.ckpt every N steps")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--train-text-encoder", action="store_true",
                   help="train the text encoder jointly with the UNet (else it stays random and frozen)")
    p.add_argument("--text-lr", type=float, default=1e-3, help="peak LR of the text encoder (--train-text-encoder)")
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--sheet", type=Path, default=None, help="write the held-out captions' images to this PNG")
    p.add_argument("--resume-from", type=Path, default=None,
                   help="continue a finished run: reuse its VAE and start the UNet from its weights")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    from diffusers import DDIMScheduler

    from lamp_cli.models.base import quiet_hf_progress

    quiet_hf_progress()
    start = time.time()
    log(f"rendering {args.images} images")
    images, captions, object_cells = make_dataset(args.images, args.seed, upright=args.upright,
                                                  radius=tuple(args.radius))

    if args.resume_from is not None or args.vae_from is not None:
        from diffusers import AutoencoderKL

        source = args.vae_from or args.resume_from
        log(f"stage 1: VAE from {source}")
        vae = AutoencoderKL.from_pretrained(source / "vae").eval().requires_grad_(False)
        latents = encode_all(vae, images)
        std, mean = latents.std().item(), latents.mean().item()
        scaling = float(vae.config.scaling_factor)
    else:
        log("stage 1: VAE")
        # The VAE must also encode the clips' turned shapes (and `grow`'s small starts): it learns
        # from shapes at any angle and the full radius range, whatever the UNet's images are.
        vae_images = make_dataset(args.images, args.seed, upright=False, radius=(6.0, 18.0))[0]
        vae = train_vae(vae_images, args.vae_steps, args.vae_batch, args.seed, init=args.vae_init, lr=args.vae_lr)
        latents = encode_all(vae, images)
        std, mean = latents.std().item(), latents.mean().item()
        scaling = 1.0 / std
        vae.register_to_config(scaling_factor=scaling)
    log(f"latents: mean {mean:.3f} std {std:.3f} -> scaling_factor {scaling:.4f}")
    vae_seconds = time.time() - start

    tokenizer, text_encoder = build_text(args.seed, args.text_init, args.max_length)

    def save(unet, text_encoder, folder: Path) -> None:
        tmp = Path(tempfile.mkdtemp(prefix=".toy-", dir=folder.parent))
        save_components(
            {"unet": unet, "vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer,
             "scheduler": DDIMScheduler(**SD_SCHEDULER_CONFIG)},
            tmp,
        )
        for cfg in tmp.glob("*/config.json"):  # a VAE loaded from another run remembers its temp path
            data = json.loads(cfg.read_text())
            if data.pop("_name_or_path", None) is not None:
                cfg.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        for path in [tmp, *tmp.rglob("*")]:  # mkdtemp's 0700 would hide the shipped files from other users
            path.chmod(0o755 if path.is_dir() else 0o644)
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)

    ckpt = args.out.with_name(args.out.name + ".ckpt")
    args.out.parent.mkdir(parents=True, exist_ok=True)  # checkpoints are written beside OUT

    def on_checkpoint(ema, ema_text, step: int) -> None:
        save(ema, ema_text, ckpt)
        log(f"checkpoint at step {step} -> {ckpt}")

    log("stage 2: UNet")
    unet, text_encoder = train_unet(latents * scaling, captions, tokenizer, text_encoder, steps=args.unet_steps,
                      batch=args.unet_batch, seed=args.seed, lr=args.lr, on_checkpoint=on_checkpoint,
                      checkpoint_every=args.checkpoint_every, stop_after=args.stop_after,
                      init=args.resume_from, ema_decay=args.ema_decay, snr_gamma=args.snr_gamma,
                      offset_noise=args.offset_noise, unet_config=unet_config(args.attn_levels),
                      object_cells=torch.from_numpy(object_cells), object_weight=args.object_weight,
                      text_lr=args.text_lr if args.train_text_encoder else None)
    train_seconds = time.time() - start
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save(unet, text_encoder, args.out)
    if ckpt.exists():
        shutil.rmtree(ckpt)
    log(f"saved {args.out} after {train_seconds / 60:.1f} min (VAE {vae_seconds / 60:.1f} min)")

    report = evaluate(args.out)
    sheet = report.pop("sheet")
    from PIL import Image

    if args.sheet is not None:
        Image.fromarray(sheet).save(args.sheet)
    summary = {"seconds": round(train_seconds), "vae_seconds": round(vae_seconds), "latent_std": std,
               "latent_mean": mean, "heldout": report, "args": {k: str(v) for k, v in vars(args).items()}}
    log("held-out captions: " + json.dumps(report))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
