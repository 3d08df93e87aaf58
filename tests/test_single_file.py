"""Single-file SD-1.x checkpoints as bases (`--base model.safetensors`): written from the tiny
base, converted once into lamp's cache, the same video as the folder they came from; and files
that are not SD-1.x checkpoints refused with a message that says what they are."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from motion_helpers import frames_of, publish_motion
from PIL import Image
from safetensors.torch import save_file

from lamp_cli.cli.app import main
from lamp_cli.errors import InvalidInput
from lamp_cli.models import single_file

SMALL = ["--frames", "3", "--steps", "2", "--width", "32", "--height", "32", "--format", "frames", "--seed", "3"]


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        main(argv)
    out, err = capsys.readouterr()
    return int(e.value.code or 0), out, err


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path / "photo.png"
    Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(path)
    return path


def test_single_file_base_gives_the_folder_video_bit_for_bit_and_converts_once(
    tiny_base_dir, tiny_base, photo, tmp_path, capsys
):
    ckpt = single_file.save_single_file(tiny_base_dir, tmp_path / "tiny-finetune.safetensors")
    publish_motion(tiny_base, "wiggle")
    animate = ["animate", str(photo), "-m", "wiggle", *SMALL]
    code, _, err = run([*animate, "--base", str(tiny_base_dir), "-o", str(tmp_path / "folder")], capsys)
    assert code == 0, err
    before = single_file.CONVERSIONS
    code, _, err = run([*animate, "--base", str(ckpt), "-o", str(tmp_path / "file")], capsys)
    assert code == 0, err
    assert single_file.CONVERSIONS == before + 1
    assert "Warning" not in err  # the motion's base and this one are the same weights
    video = frames_of(tmp_path / "file")
    assert video.shape == (3, 32, 32, 3) and np.array_equal(video, frames_of(tmp_path / "folder"))

    # The sidecar names the file and its content hash; the UNet fingerprint is the folder's.
    side = json.loads((tmp_path / "file.json").read_text())
    sha = single_file.file_sha256(ckpt)
    assert side["base"] == {"spec": str(ckpt.resolve()), "fingerprint": tiny_base.fingerprint, "sha256": sha}
    cached = single_file.cache_root() / sha
    stamp = (cached / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns

    # Second use: a cache hit (no conversion, the folder untouched), and the sidecar replays exactly.
    code, _, err = run(["gen", "--from-sidecar", str(tmp_path / "file.json"), "-o", str(tmp_path / "again"),
                        "--format", "frames"], capsys)
    assert code == 0, err
    assert single_file.CONVERSIONS == before + 1
    assert (cached / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns == stamp
    assert np.array_equal(frames_of(tmp_path / "again"), video)

    # A changed or missing checkpoint: the sidecar's video cannot be made again, and says so.
    os.utime(ckpt, ns=(stamp + 10**9, stamp + 10**9))  # new mtime, same bytes: rehashed, still fine
    assert single_file.file_sha256(ckpt) == sha
    save_file({"model.diffusion_model.x": torch.zeros(1)}, str(ckpt))
    code, _, err = run(["gen", "--from-sidecar", str(tmp_path / "file.json"), "-o", str(tmp_path / "x")], capsys)
    assert code == 1 and "changed since the video was made" in err and "Traceback" not in err
    ckpt.unlink()
    code, _, err = run(["gen", "--from-sidecar", str(tmp_path / "file.json"), "-o", str(tmp_path / "x")], capsys)
    assert code == 1 and "missing" in err

    # `lamp gc` removes the converted copy of a checkpoint that no longer exists.
    code, out, _ = run(["gc"], capsys)
    assert code == 0 and str(cached) in out and not cached.exists()


def _fake_checkpoint(path: Path, shapes: dict[str, tuple[int, ...]]) -> Path:
    save_file({k: torch.zeros(s) for k, s in shapes.items()}, str(path))
    return path


SD = "model.diffusion_model."
VAE_TEXT = {"first_stage_model.encoder.conv_in.weight": (1,), "cond_stage_model.transformer.text_model.x": (1,)}


@pytest.mark.parametrize(
    "shapes, needle",
    [
        ({f"{SD}input_blocks.0.0.weight": (2, 9, 3, 3), **VAE_TEXT}, "inpainting model"),
        ({f"{SD}input_blocks.0.0.weight": (2, 4, 3, 3), f"{SD}input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (2, 1024),
          **VAE_TEXT}, "SD-2.x"),
        ({"conditioner.embedders.0.transformer.x": (1,), f"{SD}label_emb.0.0.weight": (2, 2)}, "SDXL"),
        ({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": (2, 2)}, "is a LoRA"),
        ({"down_blocks.0.motion_modules.0.x": (1,)}, "motion module"),
        ({f"{SD}input_blocks.0.0.weight": (2, 4, 3, 3)}, "UNet-only"),
        ({"something.else": (1,)}, "not a Stable Diffusion checkpoint"),
        ({f"{SD}input_blocks.0.0.weight": (2, 4, 3, 3), **VAE_TEXT}, "not an SD-1.x checkpoint"),
    ],
)
def test_files_that_are_not_sd1_checkpoints_are_named(shapes, needle, tmp_path):
    from lamp_cli.models.base import load_base

    path = _fake_checkpoint(tmp_path / "model.safetensors", shapes)
    with pytest.raises(InvalidInput, match=needle):
        load_base(str(path))
    assert not any(p.is_dir() for p in single_file.cache_root().iterdir())  # nothing converted


def test_junk_files_unsafe_pickles_and_missing_files_are_clean_errors(tmp_path):
    import datetime

    from lamp_cli.errors import NotFound
    from lamp_cli.models.base import load_base

    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00not a checkpoint" * 10)
    with pytest.raises(InvalidInput, match="not a readable .safetensors"):
        load_base(str(junk))
    bad = tmp_path / "model.ckpt"  # a pickle holding an object weights_only does not allow
    torch.save({"state_dict": {"x": datetime.date(2020, 1, 1)}}, str(bad))
    with pytest.raises(InvalidInput, match="cannot be read as a plain tensor checkpoint"):
        load_base(str(bad))
    with pytest.raises(NotFound, match="no such file"):
        load_base(str(tmp_path / "nope.safetensors"))


def test_shipped_sd1_configs_fit_the_original_sd1_layout():
    """SD-1.x's configs that ship with lamp, built on the meta device (no memory), written in the
    original layout and read back: every key and shape of the real architecture matches."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    folder = single_file.SD1_CONFIGS
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(json.loads((folder / "unet" / "config.json").read_text()))
        vae = AutoencoderKL.from_config(json.loads((folder / "vae" / "config.json").read_text()))
        text = CLIPTextModel(CLIPTextConfig.from_pretrained(folder / "text_encoder"))
    sd = single_file.to_ldm_state_dict(unet, vae, text)
    assert sd[f"{SD}input_blocks.0.0.weight"].shape == (320, 4, 3, 3)
    assert sd["first_stage_model.encoder.mid.attn_1.q.weight"].shape == (512, 512, 1, 1)  # 1×1 conv
    single_file.classify({k: tuple(v.shape) for k, v in sd.items()}, "sd1")
    family, _, converted = single_file.match_family(sd, "sd1")
    assert family == "sd1" and len(converted["unet"]) == len(unet.state_dict())


def test_fingerprint_samples_tensors_larger_than_float32_counts_exactly():
    """SD-1.x's largest UNet convolutions have 29,491,200 weights; float32 cannot count that far."""
    from types import SimpleNamespace

    from lamp_cli.models.base import fingerprint

    big = torch.zeros(29491200, dtype=torch.float16)
    big[-1] = 1.0
    unet = SimpleNamespace(config={"block_out_channels": [1280]}, state_dict=lambda: {"w": big})
    changed = SimpleNamespace(config=unet.config, state_dict=lambda: {"w": torch.zeros_like(big)})
    assert fingerprint(unet) != fingerprint(changed)  # the last weight is sampled, and no IndexError


def test_doctor_reports_a_single_file_base_and_its_conversion(tiny_base_dir, tmp_path):
    from lamp_cli.cli.doctor_cmd import model_status

    ckpt = single_file.save_single_file(tiny_base_dir, tmp_path / "m.safetensors")
    before = model_status("base", str(ckpt))
    assert before["available"] and "on first use" in before["detail"]
    from lamp_cli.models.base import resolve_base_path

    folder = resolve_base_path(str(ckpt))  # converts
    assert model_status("base", str(ckpt))["detail"].endswith(str(folder))


def test_gc_keeps_a_conversion_still_being_written_and_removes_an_abandoned_one():
    """A conversion's temp folder names its process: gc leaves a live writer's folder alone."""
    import os
    import time

    root = single_file.cache_root()
    live = root / f".tmp-{'a' * 16}.{os.getpid()}.x1"
    dead = root / f".tmp-{'b' * 16}.999999999.x2"
    for p in (live, dead):
        (p / "unet").mkdir(parents=True)
        (p / "unet" / "w.bin").write_bytes(b"0" * 10)
        old = time.time() - 600
        os.utime(p, (old, old))
    removed, _ = single_file.gc_conversions()
    assert removed == [str(dead)] and live.is_dir() and not dead.exists()
