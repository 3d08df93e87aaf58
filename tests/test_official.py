"""`lamp import --official`: released LAMP checkpoints become delta adapters, and lamp's model and
engine reproduce the reference code number for number (oracle: tests/reference_lamp.py)."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import reference_lamp as ref  # noqa: E402

from lamp_cli.adapter import DELTA_SUFFIX, adapter_keys, apply, extract  # noqa: E402
from lamp_cli.errors import IncompatibleAdapter, InvalidInput, NameTaken  # noqa: E402
from lamp_cli.official import import_official  # noqa: E402
from lamp_cli.registry import Registry  # noqa: E402

# 5 frames: more than the causal conv's 3 taps, so later frames use all of them.
FRAMES, H, W = 5, 8, 16


class NotATensor:
    """Something a malicious pickle could hold (weights_only loading must refuse it)."""

    def __reduce__(self):  # pragma: no cover - never unpickled by lamp
        return (print, ("unpickled!",))


@pytest.fixture(scope="module")
def official(tiny_base) -> tuple[dict[str, torch.Tensor], dict]:
    """A tuned official-format state dict of the tiny base and its config.json."""
    state = ref.official_state_dict_from_2d(tiny_base.unet.state_dict(), seed=7)
    return state, ref.official_config_from_2d(dict(tiny_base.unet.config))


@pytest.fixture
def ckpt_dir(tmp_path: Path, official) -> Path:
    state, config = official
    return ref.write_official_checkpoint(tmp_path / "horse_run" / "unet", state, config)


def video_unet_of(base):
    from lamp_cli.models.video_unet import VideoUNet

    return VideoUNet.from_unet2d(copy.deepcopy(base.unet)).eval()


def registry_is_empty(registry: Registry) -> bool:
    blobs = list(registry.blobs_dir.glob("*")) if registry.blobs_dir.exists() else []
    return registry.list() == [] and blobs == []


# ------------------------------------------------------------------------------------------
# the oracle itself
# ------------------------------------------------------------------------------------------
def test_oracle_matches_diffusers_2d_unet_when_temporal_parts_are_inert(tiny_base):
    """With zero temporal weights (and output bias) and identical frames, the reference UNet is
    its 2-D base on every frame: checks the oracle's plumbing independently of lamp."""
    unet = tiny_base.unet
    state = ref.official_state_dict_from_2d(unet.state_dict(), zero=True)
    for k in state:
        if k.endswith("attn_temp.to_out.0.bias"):
            state[k] = torch.zeros_like(state[k])
    config = ref.official_config_from_2d(dict(unet.config))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 1, H, W, generator=g)
    text = torch.randn(2, 7, 32, generator=g)
    with torch.no_grad():
        expected = unet(x[:, :, 0], 321, encoder_hidden_states=text).sample
        got = ref.reference_unet3d_forward(state, config, x.repeat(1, 1, 3, 1, 1), 321, text)
    assert (got - expected[:, :, None]).abs().max() < 1e-5
    # the random, non-zero output bias of the reference's init alone makes it differ (§2.4)
    state_init = ref.official_state_dict_from_2d(unet.state_dict(), zero=True)
    with torch.no_grad():
        got_init = ref.reference_unet3d_forward(state_init, config, x.repeat(1, 1, 3, 1, 1), 321, text)
    assert (got_init - expected[:, :, None]).abs().max() > 1e-3


# ------------------------------------------------------------------------------------------
# importing
# ------------------------------------------------------------------------------------------
def test_import_holds_exactly_the_delta(tiny_base, tiny_base_dir, official, ckpt_dir, caplog):
    state, _ = official
    registry = Registry()
    with caplog.at_level(logging.WARNING, logger="lamp"):
        manifest = import_official(
            ckpt_dir, name="horse-run", base=str(tiny_base_dir), registry=registry, dtype="fp32"
        )
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], "same base: no warning expected"
    assert manifest.name == "horse-run"
    assert manifest.prompt == "horse run"  # the motion folder's name, `_` -> space
    assert manifest.source.startswith("official:") and str(ckpt_dir.resolve()) in manifest.source
    assert manifest.frames == 16 and (manifest.width, manifest.height) == (512, 320)

    adapter = registry.load_adapter("horse-run")
    video = video_unet_of(tiny_base)
    assert sorted(adapter.tensors) == adapter_keys(video)
    base_sd = tiny_base.unet.state_dict()
    for key, t in adapter.tensors.items():
        assert t.dtype == torch.float32
        if key.endswith(DELTA_SUFFIX):
            k = key.removesuffix(DELTA_SUFFIX)
            assert k.endswith("attn1.to_q.weight")
            torch.testing.assert_close(t, state[k] - base_sd[k], rtol=0, atol=0)
            assert t.abs().max() > 0
        else:
            torch.testing.assert_close(t, state[key], rtol=0, atol=0)
    # the trained temporal output bias is carried, not zeroed
    biases = [t for k, t in adapter.tensors.items() if k.endswith("attn_temp.to_out.0.bias")]
    assert biases and all(b.abs().max() > 0 for b in biases)

    # provenance in the header
    prov = json.loads(adapter.metadata["lamp.official"])
    weights = ckpt_dir / "diffusion_pytorch_model.bin"
    assert prov["official"] is True
    assert prov["config_class"] == "UNet3DConditionModel"
    assert prov["tensors"] == len(state)
    assert prov["weights_file_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert prov["base_mismatch"]["tensors"] == 0
    assert json.loads(adapter.metadata["lamp.train"])["official"] is True


def test_apply_then_extract_round_trips_and_rebuilds_the_checkpoint(
    tiny_base, tiny_base_dir, official, ckpt_dir
):
    state, _ = official
    registry = Registry()
    import_official(ckpt_dir, name="horse", base=str(tiny_base_dir), registry=registry, dtype="fp32")
    adapter = registry.load_adapter("horse")
    video = video_unet_of(tiny_base)
    apply(adapter, video)
    again = extract(video, tiny_base.unet, dtype=torch.float32)
    assert sorted(again.tensors) == sorted(adapter.tensors)
    for key in adapter.tensors:
        torch.testing.assert_close(again.tensors[key], adapter.tensors[key], rtol=0, atol=1e-7)
    # base + adapter is the released UNet, key for key: every untouched base tensor equal too
    rebuilt = video.unet.state_dict()
    assert sorted(rebuilt) == sorted(state)
    for key, value in state.items():
        torch.testing.assert_close(rebuilt[key], value, rtol=0, atol=1e-6, msg=key)


def test_default_fp16_adapter_and_pipeline_folder_with_safetensors(tiny_base_dir, official, tmp_path):
    state, config = official
    pipeline = tmp_path / "birds_fly"
    ref.write_official_checkpoint(pipeline, state, config, fmt="safetensors", pipeline=True)
    registry = Registry()
    m = import_official(pipeline, name="birds", base=str(tiny_base_dir), registry=registry)
    adapter = registry.load_adapter("birds")
    assert {t.dtype for t in adapter.tensors.values()} == {torch.float16}
    assert m.prompt == "birds fly"
    prov = json.loads(adapter.metadata["lamp.official"])
    assert prov["weights_file"] == "diffusion_pytorch_model.safetensors"
    key = next(k for k in adapter.tensors if k.endswith("conv1d.weight"))
    assert (adapter.tensors[key].float() - state[key]).abs().max() < 1e-3


def test_tampered_base_tensor_warns(tiny_base_dir, official, tmp_path, caplog):
    state, config = official
    tampered = dict(state)
    key = "mid_block.resnets.0.conv1.conv2d.weight"
    tampered[key] = state[key] + 0.01
    folder = ref.write_official_checkpoint(tmp_path / "rain" / "unet", tampered, config)
    with caplog.at_level(logging.WARNING, logger="lamp"):
        import_official(folder, name="rain", base=str(tiny_base_dir), registry=Registry(), dtype="fp32")
    warnings = [r.getMessage() for r in caplog.records if r.name == "lamp" and r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "1 of" in warnings[0] and "0.01" in warnings[0] and key in warnings[0]
    assert "another base" in warnings[0]


def test_fp16_rounding_of_the_base_is_not_a_difference(tiny_base_dir, official, tmp_path, caplog):
    state, config = official
    rounded = {k: v.half().float() for k, v in state.items()}
    folder = ref.write_official_checkpoint(tmp_path / "fw" / "unet", rounded, config)
    with caplog.at_level(logging.WARNING, logger="lamp"):
        import_official(folder, name="firework", base=str(tiny_base_dir), registry=Registry())
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_pickle_with_a_non_tensor_object_is_refused(tiny_base_dir, official, tmp_path, capsys):
    _, config = official
    folder = tmp_path / "evil" / "unet"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config))
    torch.save({"x": torch.zeros(1), "evil": NotATensor()}, folder / "diffusion_pytorch_model.bin")
    registry = Registry()
    with pytest.raises(InvalidInput, match="refused to load .*other than tensors"):
        import_official(folder, name="evil", base=str(tiny_base_dir), registry=registry)
    assert "unpickled!" not in capsys.readouterr().out
    assert registry_is_empty(registry)
    # plain values that weights_only allows are still not tensors
    torch.save({"x": torch.zeros(1), "n": 3}, folder / "diffusion_pytorch_model.bin")
    with pytest.raises(InvalidInput, match="'n' is a int, not a tensor"):
        import_official(folder, name="evil", base=str(tiny_base_dir), registry=registry)
    assert registry_is_empty(registry)


def _malformed(kind: str, state: dict, config: dict, root: Path, base_unet) -> tuple[Path, str]:
    """A broken checkpoint folder and the words its error must contain."""
    state, config = dict(state), dict(config)
    folder = root / kind / "unet"
    if kind == "no-config":
        ref.write_official_checkpoint(folder, state, config)
        (folder / "config.json").unlink()
        return folder.parent, "no config.json"
    if kind == "wrong-class":
        config["_class_name"] = "UNet2DConditionModel"
        return ref.write_official_checkpoint(
            folder, state, config
        ), "UNet2DConditionModel, not a LAMP UNet3DConditionModel"
    if kind == "missing-key":
        del state["up_blocks.1.resnets.0.conv2.conv1d.weight"]
        return ref.write_official_checkpoint(
            folder, state, config
        ), "1 missing tensor.*up_blocks.1.resnets.0.conv2.conv1d.weight"
    if kind == "wrong-shape":
        key = "down_blocks.0.attentions.0.transformer_blocks.0.attn_temp.to_q.weight"
        state[key] = torch.zeros(32, 16)
        return ref.write_official_checkpoint(
            folder, state, config
        ), f"wrong shape.*{key} \\[32, 16\\] \\(expected \\[32, 32\\]\\)"
    if kind == "plain-2d":
        return ref.write_official_checkpoint(folder, dict(base_unet.state_dict()), config), "missing tensor"
    if kind == "tune-a-video":
        tav = dict(base_unet.state_dict())
        tav.update({k: v for k, v in state.items() if "_temp." in k})
        return ref.write_official_checkpoint(folder, tav, config), "missing tensor"
    if kind == "no-weights":
        ref.write_official_checkpoint(folder, state, config)
        (folder / "diffusion_pytorch_model.bin").unlink()
        return folder, "no weights"
    if kind == "garbage-bin":
        ref.write_official_checkpoint(folder, state, config)
        (folder / "diffusion_pytorch_model.bin").write_bytes(b"\x80\x02garbage" * 10)
        return folder, "not a readable PyTorch weights file"
    if kind == "not-json":
        ref.write_official_checkpoint(folder, state, config)
        (folder / "config.json").write_text("{nope")
        return folder, "not a readable JSON"
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind",
    [
        "no-config",
        "wrong-class",
        "missing-key",
        "wrong-shape",
        "plain-2d",
        "tune-a-video",
        "no-weights",
        "garbage-bin",
        "not-json",
    ],
)
def test_malformed_checkpoint_is_refused_and_nothing_stored(
    kind, tiny_base, tiny_base_dir, official, tmp_path
):
    state, config = official
    folder, words = _malformed(kind, state, config, tmp_path, tiny_base.unet)
    registry = Registry()
    with pytest.raises(InvalidInput, match=words) as info:
        import_official(folder, name="broken", base=str(tiny_base_dir), registry=registry)
    if kind == "plain-2d":
        assert "2-D UNet" in (info.value.hint or "")
    if kind == "tune-a-video":
        assert "Tune-A-Video" in (info.value.hint or "")
    assert registry_is_empty(registry)


def test_other_architecture_is_refused(tiny_base_dir, official, tmp_path):
    state, config = official
    config = {**config, "block_out_channels": [32, 96]}
    folder = ref.write_official_checkpoint(tmp_path / "x" / "unet", state, config)
    registry = Registry()
    with pytest.raises(IncompatibleAdapter, match=r"block_out_channels \[32, 96\] vs \[32, 64\]"):
        import_official(folder, name="x", base=str(tiny_base_dir), registry=registry)
    assert registry_is_empty(registry)


def test_name_taken_needs_force(tiny_base_dir, ckpt_dir):
    registry = Registry()
    first = import_official(ckpt_dir, name="horse", base=str(tiny_base_dir), registry=registry)
    with pytest.raises(NameTaken):
        import_official(ckpt_dir, name="horse", base=str(tiny_base_dir), registry=registry)
    again = import_official(
        ckpt_dir, name="horse", base=str(tiny_base_dir), registry=registry, force=True, prompt="a horse runs"
    )
    assert again.prompt == "a horse runs" and first.prompt == "horse run"
    with pytest.raises(InvalidInput, match="invalid motion name"):
        import_official(ckpt_dir, name="Horse/Run", base=str(tiny_base_dir), registry=registry)


def test_cli_import_official_end_to_end(tiny_base_dir, ckpt_dir, capsys):
    """`lamp import --official` as a user runs it: the motion lands in the registry with its prompt."""
    from lamp_cli.cli.app import main

    def run(*argv: str) -> int:
        with pytest.raises(SystemExit) as exc:
            main(list(argv))
        return exc.value.code

    code = run("import", "--official", str(ckpt_dir.parent), "--name", "horse-run",
               "--base", str(tiny_base_dir), "--dtype", "fp32", "--json")
    out = capsys.readouterr().out
    assert code == 0
    doc = json.loads(out)["imported"]
    assert doc["name"] == "horse-run" and doc["prompt"] == "horse run" and doc["source"].startswith("official:")
    adapter = Registry().load_adapter("horse-run")
    assert {str(t.dtype) for t in adapter.tensors.values()} == {"torch.float32"}
    assert run("import", "--official", str(ckpt_dir.parent), "--name", "horse-run", "--base", str(tiny_base_dir)) == 1
    assert "already exists" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------
# lamp's model and engine against the oracle
# ------------------------------------------------------------------------------------------
def _imported(tiny_base, tiny_base_dir, ckpt_dir, dtype: str):
    registry = Registry()
    import_official(ckpt_dir, name=f"m-{dtype}", base=str(tiny_base_dir), registry=registry, dtype=dtype)
    return registry.load_adapter(f"m-{dtype}")


def test_video_unet_matches_reference_forward(tiny_base, tiny_base_dir, official, ckpt_dir):
    state, config = official
    g = torch.Generator().manual_seed(3)
    sample = torch.randn(2, 4, FRAMES, H, W, generator=g)
    text = torch.randn(2, 7, 32, generator=g)
    with torch.no_grad():
        expected = ref.reference_unet3d_forward(state, config, sample, 541, text)
    video = video_unet_of(tiny_base)
    with torch.no_grad():
        fresh = video(sample, 541, text)
    # the motion is what makes the difference: without it lamp's model is far from the reference
    assert (fresh - expected).abs().max() > 1e-2

    apply(_imported(tiny_base, tiny_base_dir, ckpt_dir, "fp32"), video)
    with torch.no_grad():
        got = video(sample, 541, text)
        got_per_sample_t = video(sample, torch.tensor([541, 541]), text)
    diff = (got - expected).abs().max().item()
    print(f"fp32 adapter: max |lamp - reference| = {diff:.3g} (|out| max {expected.abs().max():.3g})")
    assert diff <= 1e-4
    assert (got_per_sample_t - expected).abs().max() <= 1e-4

    apply(_imported(tiny_base, tiny_base_dir, ckpt_dir, "fp16"), video)
    with torch.no_grad():
        diff16 = (video(sample, 541, text) - expected).abs().max().item()
    print(f"fp16 adapter: max |lamp - reference| = {diff16:.3g}")
    assert diff16 <= 1e-2


def _per_frame_group_norm(sd, prefix, x, groups, eps):
    b, c, f, h, w = x.shape
    frames = x.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
    out = torch.nn.functional.group_norm(frames, groups, sd[f"{prefix}.weight"], sd[f"{prefix}.bias"], eps)
    return out.reshape(b, f, c, h, w).permute(0, 2, 1, 3, 4)


@pytest.mark.parametrize("mutation", ["groupnorm-per-frame", "attn1-per-frame", "zero-temporal-bias"])
def test_the_comparison_would_catch_a_wrong_reference_fact(
    mutation, tiny_base, tiny_base_dir, official, ckpt_dir, monkeypatch
):
    """Each reference fact lamp must reproduce moves the output far beyond the 1e-4 tolerance."""
    state, config = official
    video = video_unet_of(tiny_base)
    apply(_imported(tiny_base, tiny_base_dir, ckpt_dir, "fp32"), video)
    g = torch.Generator().manual_seed(3)
    sample = torch.randn(1, 4, FRAMES, H, W, generator=g)
    text = torch.randn(1, 7, 32, generator=g)
    if mutation == "groupnorm-per-frame":
        monkeypatch.setattr(ref, "video_group_norm", _per_frame_group_norm)
    elif mutation == "attn1-per-frame":
        attention = ref.attention
        monkeypatch.setattr(ref, "attention", lambda *a, kv_frame0_of=0: attention(*a))
    else:
        state = {
            k: (torch.zeros_like(v) if k.endswith("attn_temp.to_out.0.bias") else v) for k, v in state.items()
        }
    with torch.no_grad():
        mutant = ref.reference_unet3d_forward(state, config, sample, 541, text)
        got = video(sample, 541, text)
    assert (got - mutant).abs().max() > 1e-2


def test_sd1_topology_loads_key_for_key_and_matches_reference():
    """SD-1.x's layout (3 cross-attention down blocks + 1 plain, 2 layers, 8 heads, 3 up/down
    samplers) at a tiny width: the official state dict loads strictly into a VideoUNet and both
    compute the same prediction."""
    from diffusers import UNet2DConditionModel

    from lamp_cli.models.video_unet import VideoUNet

    config = dict(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(16, 32, 32, 32),
        layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=16,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**config).eval()
    state = ref.official_state_dict_from_2d(unet.state_dict(), seed=5)
    video = VideoUNet.from_unet2d(unet).eval()
    video.unet.load_state_dict(state, strict=True)
    g = torch.Generator().manual_seed(1)
    sample = torch.randn(1, 4, 4, 8, 16, generator=g)
    text = torch.randn(1, 5, 16, generator=g)
    with torch.no_grad():
        expected = ref.reference_unet3d_forward(state, ref.official_config_from_2d(config), sample, 999, text)
        got = video(sample, 999, text)
    diff = (got - expected).abs().max().item()
    print(f"SD-1.x topology: max |lamp - reference| = {diff:.3g}")
    assert diff <= 1e-4


def test_sd1_video_unet_has_the_reference_keys_shapes_and_counts():
    """At full SD-1.x size (on the meta device: no memory, no weights), lamp's VideoUNet has the
    reference checkpoint's keys and shapes exactly, 66 motion-conv sites and its parameter counts
    (docs/official-motions.md)."""
    from diffusers import UNet2DConditionModel

    from lamp_cli.models.video_unet import VideoUNet

    sd1 = dict(
        sample_size=64,
        block_out_channels=(320, 640, 1280, 1280),
        layers_per_block=2,
        cross_attention_dim=768,
        attention_head_dim=8,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    )
    with torch.device("meta"):
        unet = UNet2DConditionModel(**sd1)
    shapes_2d = {k: tuple(v.shape) for k, v in unet.state_dict().items()}
    expected = ref.official_shapes_from_2d(shapes_2d)
    assert len(ref.conv_sites(unet.state_dict())) == 66
    assert sum(math.prod(s) for s in shapes_2d.values()) == 859_520_964
    video = VideoUNet.from_unet2d(unet)
    got = {k: tuple(v.shape) for k, v in video.unet.state_dict().items()}
    assert got == expected
    assert sum(math.prod(s) for s in got.values()) == 1_101_091_358
    assert sum(p.numel() for _, p in video.trainable_parameters()) == 253_935_834


@pytest.mark.parametrize("steps", [8, pytest.param(50, marks=pytest.mark.slow)])
def test_engine_matches_reference_pipeline(steps, tiny_base, tiny_base_dir, official, ckpt_dir):
    """Same first-frame latent, initial noise (seeded generator), steps, guidance; no histogram
    matching: lamp's engine and the reference loop give the same latents. 50 steps is the
    reference's exact schedule (AdaIN switch after step index 30), 8 steps lamp's scaled one."""
    from lamp_cli.engine import Engine

    state, config = official
    adapter = _imported(tiny_base, tiny_base_dir, ckpt_dir, "fp32")
    engine = Engine(tiny_base, device="cpu", dtype="fp32")
    g = torch.Generator().manual_seed(11)
    first = torch.randn(1, 4, H, W, generator=g)
    seed, guidance, prompt = 1234, 12.5, "a horse runs"
    result = engine.sample(
        [(adapter, 1.0)],
        prompt,
        first,
        frames=FRAMES,
        width=W * 8,
        height=H * 8,
        steps=steps,
        guidance=guidance,
        seed=seed,
        histogram_match=False,
    )
    # the engine draws the initial noise 1×4×F×h×w from a CPU generator seeded with `seed`
    noise = torch.randn((1, 4, FRAMES, H, W), generator=torch.Generator("cpu").manual_seed(seed))
    uncond, text = tiny_base.encode_prompt(["", prompt]).chunk(2)
    expected = ref.reference_sample(
        state, config, first[:, :, None], noise, text, uncond, steps=steps, guidance=guidance
    )
    diff = (result.latents - expected).abs().max().item()
    print(
        f"{steps} steps: max |engine - reference| latents = {diff:.3g} (|x| max {expected.abs().max():.3g})"
    )
    assert torch.equal(result.latents[:, :, 0], first)
    assert diff <= 1e-4

    # editing mode: given initial latents, no shared noise
    if steps == 8:
        result = engine.sample(
            [(adapter, 1.0)],
            prompt,
            first,
            frames=FRAMES,
            width=W * 8,
            height=H * 8,
            steps=steps,
            guidance=guidance,
            seed=seed,
            histogram_match=False,
            init_latents=noise,
        )
        expected = ref.reference_sample(
            state,
            config,
            first[:, :, None],
            noise,
            text,
            uncond,
            steps=steps,
            guidance=guidance,
            shared_ratio=None,
        )
        diff = (result.latents - expected).abs().max().item()
        print(f"init_latents: max |engine - reference| latents = {diff:.3g}")
        assert diff <= 1e-4
