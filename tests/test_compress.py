"""`lamp compress`: low-rank motion adapters round-trip, apply, meet targets, refuse bad files."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from lamp_cli import adapter as adapters
from lamp_cli.adapter import MotionAdapter, expand_adapter, make_metadata
from lamp_cli.cli.app import main
from lamp_cli.compress import compress_adapter, compress_motion, parse_size
from lamp_cli.errors import InvalidInput, LampError
from lamp_cli.lowrank import DOWN_SUFFIX, FIELD, UP_SUFFIX, from_matrix, layouts_for
from lamp_cli.models.base import architecture_of
from lamp_cli.models.video_unet import VideoUNet
from lamp_cli.registry import Registry

RANK = 3


def low_rank_adapter(base, name: str, seed: int = 0, rank: int = RANK) -> MotionAdapter:
    """An fp16 adapter for the tiny base whose big tensors have rank `rank` exactly (conv kernels
    in the `taps` reading), the rest random: what a full-rank compression must reproduce."""
    video = VideoUNet.from_unet2d(copy.deepcopy(base.unet))
    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for key in adapters.adapter_keys(video):
        shape = tuple(dict(video.unet.named_parameters())[key.removesuffix(".delta")].shape)
        layouts = layouts_for(key, shape)
        if layouts:
            layout = layouts[-1]
            m = shape[0] * (3 if layout == "taps" else 1)
            n = shape[1]
            mat = torch.randn(m, rank, generator=g) @ torch.randn(rank, n, generator=g) * 0.02
            t = from_matrix(mat, shape, layout)
        else:
            t = torch.randn(shape, generator=g) * 0.02
        tensors[key] = t.half()
    md = make_metadata(
        name=name, base_spec="tiny", base_fingerprint=base.fingerprint,
        architecture=architecture_of(dict(base.unet.config)), frames=4, width=64, height=64,
        train={"steps": 1, "prompt": "x"},
    )
    return MotionAdapter(tensors, md)


def output(base, items) -> torch.Tensor:
    video = VideoUNet.from_unet2d(copy.deepcopy(base.unet)).eval()
    if items:
        adapters.apply(items, video)
    g = torch.Generator().manual_seed(0)
    sample, text = torch.randn(1, 4, 4, 8, 8, generator=g), torch.randn(1, 7, 32, generator=g)
    with torch.no_grad():
        return video(sample, 500, text)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_full_rank_round_trips_registry_export_import_and_reproduces_the_output(tiny_base, tmp_path):
    dense = low_rank_adapter(tiny_base, "lr")
    reg = Registry()
    src = reg.publish_adapter(dense)
    m, out = compress_motion("lr", "lr-small", rank=RANK, registry=reg)
    assert m.size < src.size / 2 and m.source == "compress:lr"
    record = json.loads(reg.load_adapter("lr-small").metadata[FIELD])
    assert record["source"]["digest"] == src.digest and record["target"] == {"rank": RANK}
    assert record["error"]["max"] < 2e-3  # only fp16 rounding of the factors is lost
    # every factored conv kernel was read in the layout it is low-rank in
    assert {f["layout"] for k, f in record["factors"].items() if "conv1d" in k} == {"taps"}
    # export, import under another name, load: the factors apply like the dense tensors
    path = reg.export("lr-small", tmp_path / "lr-small.safetensors")
    reg.import_file(path, name="lr-copy")
    loaded = reg.load_adapter("lr-copy")
    assert any(k.endswith(UP_SUFFIX) for k in loaded.tensors)
    ref = output(tiny_base, dense)
    got = output(tiny_base, loaded)
    fp32_vs_fp16 = rel(output(tiny_base, MotionAdapter({k: v.float() for k, v in dense.tensors.items()},
                                                        dense.metadata)), ref)
    assert rel(got, ref) < max(4 * fp32_vs_fp16, 1e-3)
    assert rel(ref, output(tiny_base, [])) > 0.05  # the motion does change the output


def test_size_target_is_met_and_ranks_follow_energy(tiny_base):
    g = torch.Generator().manual_seed(1)
    dense = low_rank_adapter(tiny_base, "mix", rank=2)
    # one tensor of flat spectrum (noise, big norm): a rank of it buys little of its energy,
    # so it gets the bytes only once the rank-2 tensors are exact
    flat = "mid_block.attentions.0.transformer_blocks.0.attn_temp.to_v.weight"
    dense.tensors[flat] = (torch.randn(64, 64, generator=g) * 0.5).half()
    full = len(dense.to_bytes())
    target = full // 6
    out = compress_adapter(dense, size=target)
    assert len(out.adapter.to_bytes()) <= target
    others = {k: f for k, f in out.factors.items() if k != flat}
    assert all(f["rank"] >= 2 and f["error"] < 2e-3 for f in others.values())
    assert out.factors[flat]["rank"] > 2 and out.factors[flat]["error"] > 0.1
    # a bigger budget loses less
    bigger = compress_adapter(dense, size=2 * target)
    assert bigger.record["error"]["overall"] < out.record["error"]["overall"]
    with pytest.raises(InvalidInput, match="too small"):
        compress_adapter(dense, size="20kB")
    assert parse_size("60MB") == 60_000_000 and parse_size("1MiB") == 2**20


def test_max_error_and_layers_that_do_not_pay_stay_dense(tiny_base):
    dense = low_rank_adapter(tiny_base, "e", rank=RANK)
    noisy = "mid_block.attentions.0.transformer_blocks.0.attn_temp.to_k.weight"
    dense.tensors[noisy] = torch.randn(64, 64, generator=torch.Generator().manual_seed(2)).half()
    out = compress_adapter(dense, max_error=0.01)
    assert noisy not in out.factors and noisy in out.adapter.tensors  # full-rank noise: dense
    assert out.record["error"]["max"] <= 0.01
    assert all(f["rank"] == RANK for f in out.factors.values())
    # biases, norms and gates are never factored
    assert not any(k.endswith((".bias",)) or ".norm_temp." in k or ".conv_gate." in k for k in out.factors)


def test_blend_of_compressed_and_dense(tiny_base):
    a = low_rank_adapter(tiny_base, "a", seed=0)
    b = low_rank_adapter(tiny_base, "b", seed=1)
    small = compress_adapter(a, rank=RANK).adapter
    got = output(tiny_base, [(small, 0.5), (b, 0.5)])
    assert rel(got, output(tiny_base, [(expand_adapter(small), 0.5), (b, 0.5)])) < 1e-6
    assert rel(got, output(tiny_base, [(a, 0.5), (b, 0.5)])) < 5e-3


def _broken(good: MotionAdapter, how: str) -> MotionAdapter:
    tensors, md = dict(good.tensors), dict(good.metadata)
    record = json.loads(md[FIELD])
    key = sorted(record["factors"])[0]
    if how == "missing factor":
        del tensors[key + DOWN_SUFFIX]
    elif how == "wrong rank":
        record["factors"][key]["rank"] += 1
    elif how == "stray factor":
        tensors["mid_block.resnets.0.conv1.conv_gate.weight" + UP_SUFFIX] = torch.zeros(2, 2).half()
    elif how == "no record":
        del md[FIELD]
    elif how == "rank too big":
        record["factors"][key]["rank"] = 10_000
    elif how == "nan":
        t = tensors[key + UP_SUFFIX].clone()
        t[0, 0] = float("nan")
        tensors[key + UP_SUFFIX] = t
    if how != "no record":
        md[FIELD] = json.dumps(record)
    return MotionAdapter(tensors, md)


@pytest.mark.parametrize(
    "how, message",
    [
        ("missing factor", "lacks its factor"),
        ("wrong rank", "has shape"),
        ("stray factor", "no entry in lamp.compressed"),
        ("no record", "no lamp.compressed record"),
        ("rank too big", "has rank 10000"),
        ("nan", "non-finite"),
    ],
)
def test_inconsistent_factor_files_are_refused_at_import_and_at_load(tiny_base, tmp_path, how, message):
    good = compress_adapter(low_rank_adapter(tiny_base, "g"), rank=RANK).adapter
    bad = _broken(good, how)
    path = bad.save(tmp_path / "bad.safetensors")  # a consistent weights hash: only the factors are wrong
    with pytest.raises(InvalidInput, match=message):
        Registry().import_file(path)
    assert Registry().names() == []
    with pytest.raises(LampError, match=message):
        output(tiny_base, MotionAdapter.load(path))


def test_cli_compress_show_and_refusals(tiny_base, capsys):
    reg = Registry()
    reg.publish_adapter(low_rank_adapter(tiny_base, "walk"))
    with pytest.raises(SystemExit) as e:
        main(["compress", "walk", "--name", "walk-small", "--rank", str(RANK), "--json"])
    assert e.value.code == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["compressed"]["name"] == "walk-small" and doc["record"]["source"]["name"] == "walk"
    with pytest.raises(SystemExit) as e:
        main(["show", "walk-small"])
    shown = capsys.readouterr().out
    assert "compressed from  walk (" in shown and f"factored, rank {RANK};" in shown and "% overall" in shown
    for argv, code in (
        (["compress", "walk", "--name", "walk-small", "--rank", "2"], 1),  # exists, no --force
        (["compress", "walk", "--name", "w2", "--rank", "2", "--size", "1MB"], 1),  # two targets
        (["compress", "walk", "--name", "w2"], 1),  # no target
    ):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == code
        assert "Error:" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["compress", "walk", "--name", "walk-small", "--size", "90kB", "--force"])
    assert e.value.code == 0
    assert Path(reg.get("walk-small").blob_path).stat().st_size <= 90_000
