"""Image (style) LoRAs on a base (`--lora FILE[:WEIGHT]`): a LoRA made with peft on the tiny base
changes the video, weight 0 gives exactly the video of no LoRA, the kohya format fuses to the same
weights as the diffusers one, the sidecar replays exactly, and files that are not LoRAs or fit no
layer are refused."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from motion_helpers import frames_of, publish_motion
from PIL import Image
from safetensors.torch import load_file, save_file

from lamp_cli.cli.app import main
from lamp_cli.errors import InvalidInput

SMALL = ["--frames", "3", "--steps", "2", "--width", "32", "--height", "32", "--format", "frames", "--seed", "5"]


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        main(argv)
    out, err = capsys.readouterr()
    return int(e.value.code or 0), out, err


def make_lora(base_folder: Path, path: Path, seed: int = 0, rank: int = 2) -> Path:
    """A LoRA trained by nobody: peft adapters with random (seeded) A and B on the tiny base's
    attention layers (UNet and text encoder), saved in diffusers' format as training scripts do."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig, inject_adapter_in_model
    from peft.utils import get_peft_model_state_dict
    from transformers import CLIPTextModel

    unet = UNet2DConditionModel.from_pretrained(base_folder / "unet", local_files_only=True)
    text = CLIPTextModel.from_pretrained(base_folder / "text_encoder", local_files_only=True)
    torch.manual_seed(seed)
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights=False,
                                target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights=False,
                                       target_modules=["q_proj", "k_proj", "v_proj", "out_proj"]), text)
    StableDiffusionPipeline.save_lora_weights(
        path.parent, weight_name=path.name,
        unet_lora_layers=convert_state_dict_to_diffusers(get_peft_model_state_dict(unet)),
        text_encoder_lora_layers=convert_state_dict_to_diffusers(get_peft_model_state_dict(text)),
    )
    return path


def to_kohya(diffusers_file: Path, path: Path) -> Path:
    """The same LoRA in kohya's layout: `lora_unet_<module_with_underscores>.lora_down.weight`,
    `.lora_up.weight` and `.alpha` (= rank: scale 1), text encoder as `lora_te_text_model_...`."""
    out = {}
    for key, value in load_file(str(diffusers_file)).items():
        if ".down." not in key and "lora_linear_layer.down" not in key:
            continue
        up = load_file(str(diffusers_file))[key.replace("down.weight", "up.weight")]
        component, module = key.split(".", 1)
        module = module.replace(".lora_linear_layer.down.weight", "").replace(".lora.down.weight", "")
        name = ("lora_unet_" if component == "unet" else "lora_te_text_model_") + module.replace(".", "_")
        out[f"{name}.lora_down.weight"] = value
        out[f"{name}.lora_up.weight"] = up
        out[f"{name}.alpha"] = torch.tensor(float(value.shape[0]))
    save_file(out, str(path))
    return path


@pytest.fixture
def setup(tiny_base_dir, tiny_base, tmp_path):
    rng = np.random.default_rng(0)
    photo = tmp_path / "photo.png"
    Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(photo)
    publish_motion(tiny_base, "wiggle", seed=1)
    lora = make_lora(tiny_base_dir, tmp_path / "style.safetensors")
    return ["animate", str(photo), "-m", "wiggle", "--base", str(tiny_base_dir), *SMALL], lora


def test_lora_changes_the_video_weight_zero_does_not_and_the_sidecar_replays(setup, tmp_path, capsys):
    animate, lora = setup
    videos = {}
    for label, extra in (("plain", []), ("zero", ["--lora", f"{lora}:0"]), ("styled", ["--lora", f"{lora}:0.8"])):
        code, _, err = run([*animate, *extra, "-o", str(tmp_path / label)], capsys)
        assert code == 0, err
        videos[label] = frames_of(tmp_path / label)
    assert np.array_equal(videos["zero"], videos["plain"])
    assert not np.array_equal(videos["styled"], videos["plain"])

    side = json.loads((tmp_path / "styled.json").read_text())
    plain = json.loads((tmp_path / "plain.json").read_text())
    from lamp_cli.lora import file_sha256

    assert side["base"]["loras"] == [{"path": str(lora.resolve()), "sha256": file_sha256(lora), "weight": 0.8}]
    assert side["base"]["fingerprint"] != plain["base"]["fingerprint"]  # edit caches must not mix them
    code, _, err = run(["gen", "--from-sidecar", str(tmp_path / "styled.json"), "-o", str(tmp_path / "again"),
                        "--format", "frames"], capsys)
    assert code == 0, err
    assert np.array_equal(frames_of(tmp_path / "again"), videos["styled"])

    # A LoRA that changed or went away: the video cannot be made again, and lamp says which file.
    make_lora(Path(side["base"]["spec"]), lora, seed=7)  # the same file name, other weights
    code, _, err = run(["gen", "--from-sidecar", str(tmp_path / "styled.json"), "-o", str(tmp_path / "x")], capsys)
    assert code == 1 and "changed since the video was made" in err and str(lora.resolve()) in err
    lora.unlink()
    code, _, err = run(["gen", "--from-sidecar", str(tmp_path / "styled.json"), "-o", str(tmp_path / "x")], capsys)
    assert code == 1 and "missing" in err and "Traceback" not in err


def test_kohya_format_fuses_to_the_same_weights_and_loras_blend(tiny_base_dir, tmp_path):
    from lamp_cli.models.base import load_base

    lora = make_lora(tiny_base_dir, tmp_path / "a.safetensors")
    kohya = to_kohya(lora, tmp_path / "a_kohya.safetensors")
    plain = load_base(str(tiny_base_dir))
    styled = load_base(str(tiny_base_dir), loras=[f"{lora}:0.5"])
    from_kohya = load_base(str(tiny_base_dir), loras=[f"{kohya}:0.5"])
    for name in ("unet", "text_encoder"):
        a, b, p = (getattr(x, name).state_dict() for x in (styled, from_kohya, plain))
        assert set(a) == set(p)  # fused: no adapter layers left
        changed = [k for k in a if not torch.equal(a[k], p[k])]
        assert changed and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    # Two halves of the same LoRA blend to the whole of it.
    twice = load_base(str(tiny_base_dir), loras=[(lora, 0.5), (kohya, 0.5)])
    whole = load_base(str(tiny_base_dir), loras=[(lora, 1.0)])
    u1, u2 = twice.unet.state_dict(), whole.unet.state_dict()
    assert all(torch.allclose(u1[k], u2[k], atol=1e-5) for k in u1)


def test_files_that_are_not_loras_or_fit_no_layer_are_refused(setup, tiny_base_dir, tmp_path, capsys):
    from lamp_cli.models.base import load_base
    from lamp_cli.models.single_file import save_single_file

    animate, lora = setup
    # A key naming a layer the base does not have.
    nowhere = tmp_path / "nowhere.safetensors"
    save_file({"lora_unet_no_such_block_to_q.lora_down.weight": torch.ones(2, 8),
               "lora_unet_no_such_block_to_q.lora_up.weight": torch.ones(8, 2)}, str(nowhere))
    with pytest.raises(InvalidInput, match="nowhere.safetensors"):
        load_base(str(tiny_base_dir), loras=[nowhere])
    # A base checkpoint given as a LoRA, and a LoRA given as a base: each says what it is.
    ckpt = save_single_file(tiny_base_dir, tmp_path / "model.safetensors")
    code, _, err = run([*animate, "--lora", str(ckpt), "-o", str(tmp_path / "a")], capsys)
    assert code == 1 and "is not a LoRA" in err and "--base" in err
    code, _, err = run([*animate[:4], "--base", str(lora), *SMALL, "-o", str(tmp_path / "b")], capsys)
    assert code == 1 and "is a LoRA, not a base model" in err and "Traceback" not in err
    # A missing file fails before any model loads.
    code, _, err = run([*animate, "--lora", str(tmp_path / "gone.safetensors"), "-o", str(tmp_path / "c")], capsys)
    assert code == 1 and "not found" in err
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()


def test_train_with_a_lora_learns_the_motion_on_the_styled_base(tiny_base_dir, tiny_base, tmp_path, capsys):
    from lamp_cli.models.base import load_base
    from lamp_cli.video import write_video

    lora = make_lora(tiny_base_dir, tmp_path / "style.safetensors")
    clips = tmp_path / "clips"
    clips.mkdir()
    f = np.full((4, 32, 32, 3), 30, dtype=np.uint8)
    for k in range(4):
        f[k, 8:20, 4 * k : 4 * k + 12] = (200, 50, 50)
    write_video(f, clips / "clip.mp4", fps=8)
    code, _, err = run(["train", str(clips), "--name", "styled", "--base", str(tiny_base_dir), "--lora", f"{lora}:0.7",
                        "--steps", "1", "--frames", "4", "--width", "32", "--height", "32", "--seed", "3",
                        "--checkpoint-every", "0", "--prompt", "a red square moves right"], capsys)
    assert code == 0, err
    shown = json.loads(run(["show", "styled", "--json"], capsys)[1])["manifest"]
    styled = load_base(str(tiny_base_dir), loras=[(lora, 0.7)])
    assert shown["base"]["fingerprint"] == styled.fingerprint != tiny_base.fingerprint


def test_lora_specs_from_the_command_line_environment_and_config(tmp_path, monkeypatch):
    from lamp_cli.errors import NotFound
    from lamp_cli.lora import LoraSpec, parse_lora, resolve_loras

    assert parse_lora("a/b.safetensors:0.25") == LoraSpec(Path("a/b.safetensors"), 0.25)
    assert parse_lora("C:/x/style.safetensors") == LoraSpec(Path("C:/x/style.safetensors"), 1.0)
    (tmp_path / "style.safetensors").write_bytes(b"x")
    Path(os.environ["LAMP_CONFIG"]).write_text('lora = ["style.safetensors:0.5"]\n')
    assert resolve_loras(None) == [LoraSpec(tmp_path / "style.safetensors", 0.5)]  # beside config.toml
    assert resolve_loras(["none"]) == []  # the command line turns the config's off
    monkeypatch.setenv("LAMP_LORA", f"{tmp_path / 'style.safetensors'}:0.1,{tmp_path / 'gone.safetensors'}")
    with pytest.raises(NotFound, match="gone.safetensors"):
        resolve_loras(None)


def test_a_styled_base_draws_its_own_first_frames_unless_told_otherwise(tiny_base_dir, tmp_path, monkeypatch):
    from lamp_cli.engine import Engine

    lora = make_lora(tiny_base_dir, tmp_path / "style.safetensors")
    assert not Engine(str(tiny_base_dir), loras=[(lora, 0)]).first_frames().uses_base()  # SDXL, the default
    assert Engine(str(tiny_base_dir), loras=[(lora, 0.5)]).first_frames().uses_base()
    monkeypatch.setenv("LAMP_FIRST_FRAME_MODEL", "stabilityai/stable-diffusion-xl-base-1.0")
    assert not Engine(str(tiny_base_dir), loras=[(lora, 0.5)]).first_frames().uses_base()
