"""Measurements behind docs/compression.md (a script, not a test: minutes of CPU).

    python scripts/bench_compress.py train-toy toy-slide_right.safetensors   # once (~3 min idle)
    python scripts/bench_compress.py sizes                      # SD-1.x file size per rank (meta device)
    python scripts/bench_compress.py spectrum MOTION.safetensors # singular-value decay, layouts
    python scripts/bench_compress.py sd1 --alpha 0.9             # one SD-1.x VideoUNet call, realistic spectra
    python scripts/bench_compress.py toy MOTION.safetensors      # toy base: path error, shape kept vs size

`MOTION.safetensors` is a toy motion trained once and saved (see docs/compression.md for the
command); the `toy` and `spectrum` runs reuse it.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from typing import Any

import torch

from lamp_cli.adapter import DELTA_SUFFIX, MotionAdapter, adapter_keys, apply
from lamp_cli.compress import (
    MIN_FACTOR_NUMEL,
    Spectrum,
    analyse,
    build,
    compress_adapter,
    layouts_for,
    matrix_dims,
    max_paying_rank,
    ranks_for_rank,
)
from lamp_cli.lowrank import from_matrix

RANKS = (4, 8, 16, 32, 64, 96, 128, 256)


def kind_of(key: str) -> str:
    if key.endswith(".conv1d.weight"):
        return "conv1d"
    if key.endswith(DELTA_SUFFIX):
        return "attn1.to_q delta"
    if ".attn_temp.to_out." in key:
        return "attn_temp.to_out"
    if ".attn_temp." in key and key.endswith(".weight"):
        return "attn_temp.to_q/k/v"
    return "other"


def sd1_shapes() -> dict[str, tuple[int, ...]]:
    from lamp_cli.models.video_unet import VideoUNet
    from lamp_cli.testing import random_sd1_unet

    video = VideoUNet.from_unet2d(random_sd1_unet("meta"))
    params = dict(video.unet.named_parameters())
    return {k: tuple(params[k.removesuffix(DELTA_SUFFIX)].shape) for k in adapter_keys(video)}


def file_bytes(shapes: dict[str, tuple[int, ...]], rank: int, element: int = 2, metadata: int = 3000) -> tuple[int, int]:
    """(tensor bytes, whole file bytes) of an SD-1.x motion compressed at `rank` everywhere:
    the safetensors header is written out as safetensors writes it (compact JSON, 8-byte padded);
    `metadata` approximates the lamp.* fields other than lamp.compressed."""
    header: dict[str, Any] = {}
    factors = {}
    offset = 0

    def add(key: str, shape: list[int]) -> None:
        nonlocal offset
        size = math.prod(shape) * element
        header[key] = {"dtype": "F16", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size

    for key, shape in sorted(shapes.items()):
        layouts = layouts_for(key, shape)
        if layouts and math.prod(shape) >= MIN_FACTOR_NUMEL:
            m, n = matrix_dims(shape, layouts[-1])
            r = min(rank, m, n)
            if r <= max_paying_rank(m, n):
                add(key + ".lora_down", [r, n])
                add(key + ".lora_up", [m, r])
                factors[key] = {"error": 0.012345, "layout": layouts[-1], "rank": r, "shape": list(shape)}
                continue
        add(key, list(shape))
    record = json.dumps({"factors": factors, "source": {"digest": "sha256:" + "0" * 64}}, sort_keys=True)
    header["__metadata__"] = {"lamp.compressed": record, "pad": "x" * metadata}
    raw = json.dumps(header, separators=(",", ":")).encode()
    return offset, 8 + len(raw) + (-len(raw) % 8) + offset


def cmd_sizes(_: argparse.Namespace) -> None:
    shapes = sd1_shapes()
    total = sum(math.prod(s) for s in shapes.values())
    by_kind: dict[str, int] = {}
    for k, s in shapes.items():
        by_kind[kind_of(k)] = by_kind.get(kind_of(k), 0) + math.prod(s)
    print(f"SD-1.x motion: {len(shapes)} tensors, {total:,} values, fp16 {total * 2 / 1e6:.1f} MB")
    for k, v in sorted(by_kind.items()):
        print(f"  {k}: {v:,} values ({v * 2 / 1e6:.1f} MB)")
    print("| rank | tensors (MB) | file (MB) | vs dense |")
    for r in RANKS:
        t, f = file_bytes(shapes, r)
        print(f"| {r} | {t / 1e6:.2f} | {f / 1e6:.2f} | {total * 2 / f:.1f}× smaller |")


def power_fit(s: torch.Tensor, upto: int) -> float:
    """α of σ_k ≈ c·k^-α, least squares in log-log over k = 1 … upto."""
    k = torch.arange(1, upto + 1, dtype=torch.float64).log()
    y = s[:upto].double().clamp_min(1e-30).log()
    kc = k - k.mean()
    return float(-(kc * (y - y.mean())).sum() / (kc * kc).sum())


def cmd_spectrum(args: argparse.Namespace) -> None:
    adapter = MotionAdapter.load(args.motion)
    spectra, _ = analyse(adapter)
    rows: dict[str, list[Any]] = {}
    wins: dict[str, int] = {}
    for s in spectra:
        kind = kind_of(s.key)
        res = s.residuals()
        energy8 = 1 - res[min(8, len(s.s))] / res[0]
        alpha = power_fit(s.s, max(2, len(s.s) // 2))
        rows.setdefault(kind, []).append((alpha, energy8, float(s.s[0] ** 2 / res[0])))
        if len(s.alternatives) == 2:
            wins[s.layout] = wins.get(s.layout, 0) + 1
            a, b = s.alternatives["out"], s.alternatives["taps"]
            rows.setdefault("conv1d taps/out summed error", []).append((b / a, 0, 0))
    for kind, vals in sorted(rows.items()):
        n = len(vals)
        mean = [sum(v[i] for v in vals) / n for i in range(3)]
        print(f"{kind}: {n} tensors, mean alpha {mean[0]:.2f}, energy in top 8 {mean[1]:.3f}, top 1 {mean[2]:.3f}")
    print("conv1d layout chosen:", wins)


def realistic_sd1_adapter(alpha: dict[str, float], rms: dict[str, float], seed: int = 0) -> tuple[MotionAdapter, list[Spectrum], dict[str, Any]]:
    """A full-size SD-1.x motion whose big tensors have power-law spectra σ_k ∝ k^-α (α per kind,
    measured on a trained toy motion) and entry RMS `rms[kind]`, in random orthonormal bases;
    attn_temp q/k/v add nn.Linear's default initialisation (they are trained from it).
    Returns (adapter, its exact SVDs, the fresh attn_temp init it was built on)."""
    shapes = sd1_shapes()
    g = torch.Generator().manual_seed(seed)
    tensors, spectra = {}, []
    for key, shape in sorted(shapes.items()):
        kind = kind_of(key)
        layouts = layouts_for(key, shape)
        if not layouts:
            if ".norm_temp." in key:
                tensors[key] = torch.ones(shape) if key.endswith("weight") else torch.zeros(shape)
            else:
                tensors[key] = torch.randn(shape, generator=g) * rms.get("other", 1e-3)
            continue
        layout = layouts[-1]
        m, n = matrix_dims(shape, layout)
        k = min(m, n)
        u, _ = torch.linalg.qr(torch.randn(m, k, generator=g))
        v, _ = torch.linalg.qr(torch.randn(n, k, generator=g))
        s = torch.arange(1, k + 1, dtype=torch.float32) ** -alpha[kind]
        s *= rms[kind] * math.sqrt(m * n) / float(s.norm())
        mat = (u * s) @ v.T
        if kind == "attn_temp.to_q/k/v":
            bound = 1 / math.sqrt(n)  # nn.Linear: kaiming-uniform, a = sqrt(5)
            mat = mat + (torch.rand(m, n, generator=g) * 2 - 1) * bound
            uu, ss, vh = torch.linalg.svd(mat, full_matrices=False)
            spectra.append(Spectrum(key, shape, layout, uu, ss, vh))
        else:
            spectra.append(Spectrum(key, shape, layout, u, s, v.T.contiguous()))
        tensors[key] = from_matrix(mat, shape, layout)
    return MotionAdapter(tensors, {"lamp.name": "sd1-realistic"}), spectra, {}


def cmd_sd1(args: argparse.Namespace) -> None:
    from lamp_cli.models.video_unet import VideoUNet
    from lamp_cli.testing import random_sd1_unet

    torch.set_num_threads(args.threads)
    alpha = json.loads(args.alpha)
    rms = json.loads(args.rms)
    t0 = time.time()
    adapter, spectra, _ = realistic_sd1_adapter(alpha, rms)
    print(f"built the adapter in {time.time() - t0:.0f} s", flush=True)
    video = VideoUNet.from_unet2d(random_sd1_unet("cpu")).eval()
    g = torch.Generator().manual_seed(0)
    sample = torch.randn(1, 4, args.frames, args.latent, args.latent, generator=g)
    text = torch.randn(1, 77, 768, generator=g)

    def call(a: MotionAdapter | None) -> torch.Tensor:
        if a is None:
            from lamp_cli.adapter import reset_motion

            reset_motion(video)
        else:
            apply(a, video)
        with torch.no_grad():
            return video(sample, 500, text)

    base_out = call(None)
    ref = call(MotionAdapter({k: v.half() for k, v in adapter.tensors.items()}, adapter.metadata))
    effect = float((ref - base_out).norm())
    print(f"motion effect |out - out_without_motion| / |out| = {effect / float(ref.norm()):.4f}", flush=True)
    targets: list[tuple[str, dict[str, Any]]] = [(f"rank {r}", {"rank": r}) for r in args.ranks]
    targets += [(f"size {s}", {"size": s}) for s in args.sizes]
    print("| target | file (MB) | error overall | output error (rel. to output) | (rel. to the motion's effect) |")
    for label, target in targets:
        if "rank" in target:
            out = build(adapter, spectra, ranks_for_rank(spectra, target["rank"]), record={"target": target})
        else:
            out = compress_adapter(adapter, size=target["size"], spectra=(spectra, [k for k in adapter.tensors if k not in {s.key for s in spectra}]))
        size = len(out.adapter.to_bytes())
        y = call(out.adapter)
        err = float((y - ref).norm())
        print(f"| {label} | {size / 1e6:.2f} | {out.record['error']['overall']:.3f} | {err / float(ref.norm()):.5f} | {err / effect:.3f} |", flush=True)


def cmd_toy(args: argparse.Namespace) -> None:
    import numpy as np

    from lamp_cli.engine import Engine
    from lamp_cli.models.base import load_base
    from lamp_cli.toy import world
    from lamp_cli.toy.ablation import unseen_targets
    from lamp_cli.toy.demo import (
        DEMO_GUIDANCE,
        DEMO_SAMPLE_STEPS,
        FRAMES,
        check_motion,
        pick_first_frame,
    )

    torch.set_num_threads(args.threads)
    source = MotionAdapter.load(args.motion)
    dense16 = MotionAdapter({k: v.half() for k, v in source.tensors.items()}, source.metadata)
    dense_bytes = len(dense16.to_bytes())
    spectra = analyse(dense16)
    variants: list[tuple[str, MotionAdapter, int]] = [("uncompressed (fp16)", dense16, dense_bytes)]
    for r in args.ranks:
        c = compress_adapter(dense16, rank=r, spectra=spectra)
        variants.append((f"rank {r}", c.adapter, len(c.adapter.to_bytes())))
    for frac in args.fractions:
        c = compress_adapter(dense16, size=int(dense_bytes * frac), spectra=spectra)
        variants.append((f"size {frac:.2f}× ({c.record['ranks'].get('median')} median rank)", c.adapter, len(c.adapter.to_bytes())))
    for e in args.errors:
        c = compress_adapter(dense16, max_error=e, spectra=spectra)
        variants.append((f"max-error {e}", c.adapter, len(c.adapter.to_bytes())))
    motion = args.motion_name
    engine = Engine(load_base("toy"), first_frame_model="base")
    picks = unseen_targets(motion, args.targets, 0)
    firsts = {t: pick_first_frame(engine, world.caption(*t), motion, seed=100 * k, steps=DEMO_SAMPLE_STEPS).first.for_sampling
              for k, t in enumerate(picks)}
    print("| variant | file (kB) | × smaller | weights error | path error (px) | shape kept | content "
          "| path moved vs uncompressed (px) |")
    ref_paths: dict[int, Any] = {}
    for label, adapter, size in variants:
        errors, shapes, contents, moved = [], [], [], []
        t0 = time.time()
        for k, t in enumerate(picks):
            frames = engine.sample([(adapter, 1.0)], world.caption(*t), firsts[t], frames=FRAMES, width=world.SIZE,
                                   height=world.SIZE, steps=DEMO_SAMPLE_STEPS, guidance=DEMO_GUIDANCE, seed=k).frames
            errors.append(check_motion(frames, motion).error)
            path = world.measure_path(frames)
            ref_paths.setdefault(k, path)  # the first variant is the uncompressed motion
            moved.append(float(np.nanmean(np.linalg.norm(path - ref_paths[k], axis=1))))
            readings = [world.read_frame(f) for f in frames]
            shapes.append(float(np.mean([r.shape == t[0] for r in readings])))
            contents.append(float(np.mean([(r.color, r.background) == t[1:] for r in readings])))
        werr = json.loads(adapter.metadata.get("lamp.compressed", "{}")).get("error", {}).get("overall", 0.0)
        print(f"| {label} | {size / 1e3:.1f} | {dense_bytes / size:.1f} | {werr:.3f} | {np.nanmean(errors):.2f} "
              f"| {np.mean(shapes):.2f} | {np.mean(contents):.2f} | {np.nanmean(moved):.2f} |"
              f"  ({time.time() - t0:.0f} s)", flush=True)


def cmd_train_toy(args: argparse.Namespace) -> None:
    """Train the toy motion the `toy` and `spectrum` runs reuse (as `lamp bench toy` trains)."""
    from lamp_cli.models.base import load_base
    from lamp_cli.toy.ablation import unseen_targets
    from lamp_cli.toy.demo import learn_motion

    torch.set_num_threads(args.threads)
    motion = args.motion_name
    picks = unseen_targets(motion, 4, 0)
    t0 = time.time()
    trained, _ = learn_motion(load_base("toy"), motion, "toy-" + motion.replace("_", "-"), seed=0,
                              exclude=[(s, c) for s, c, _ in picks], steps=args.steps, publish=False,
                              adapter_dtype="fp32")
    trained.adapter.save(args.out)
    print(f"trained {args.steps} steps in {time.time() - t0:.0f} s, final loss {trained.final_loss:.4f}: {args.out}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("sizes")
    sp = sub.add_parser("spectrum")
    sp.add_argument("motion")
    sd = sub.add_parser("sd1")
    sd.add_argument("--alpha", default='{"conv1d": 0.9, "attn1.to_q delta": 0.9, "attn_temp.to_out": 0.9, "attn_temp.to_q/k/v": 0.9}')
    sd.add_argument("--rms", default='{"conv1d": 0.01, "attn1.to_q delta": 0.01, "attn_temp.to_out": 0.01, "attn_temp.to_q/k/v": 0.01, "other": 0.01}')
    sd.add_argument("--ranks", type=int, nargs="*", default=[8, 32, 96])
    sd.add_argument("--sizes", nargs="*", default=["60MB", "74MB"])
    sd.add_argument("--frames", type=int, default=4)
    sd.add_argument("--latent", type=int, default=16)
    sd.add_argument("--threads", type=int, default=2)
    ty = sub.add_parser("toy")
    ty.add_argument("motion")
    ty.add_argument("--motion-name", default="slide_right")
    ty.add_argument("--ranks", type=int, nargs="*", default=[1, 2, 4, 8, 16])
    ty.add_argument("--fractions", type=float, nargs="*", default=[0.25])
    ty.add_argument("--errors", type=float, nargs="*", default=[])
    ty.add_argument("--targets", type=int, default=4)
    ty.add_argument("--threads", type=int, default=2)
    tt = sub.add_parser("train-toy")
    tt.add_argument("out")
    tt.add_argument("--motion-name", default="slide_right")
    tt.add_argument("--steps", type=int, default=300)
    tt.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    commands = {"sizes": cmd_sizes, "spectrum": cmd_spectrum, "sd1": cmd_sd1, "toy": cmd_toy,
                "train-toy": cmd_train_toy}
    commands[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
