"""The CLI surface: fast start without torch, exit codes, error format, `lamp doctor`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lamp_cli.cli.app import main
from lamp_cli.cli.doctor_cmd import collect, model_status

# Runs a command the way the console script does, then reports which heavy modules got imported.
_PROBE = r"""
import json, sys
from lamp_cli.cli.app import main
try:
    main(sys.argv[1:])
except SystemExit as e:
    code = e.code
heavy = sorted(m for m in ("torch", "diffusers", "transformers", "safetensors.torch") if m in sys.modules)
sys.stderr.write("\nPROBE " + json.dumps({"code": code, "heavy": heavy}) + "\n")
"""


def probe(*args: str) -> tuple[dict, str, float]:
    """(probe report, stdout, wall seconds) of `lamp ARGS` in a fresh interpreter."""
    t0 = time.perf_counter()
    p = subprocess.run(
        [sys.executable, "-c", _PROBE, *args],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=60,
    )
    wall = time.perf_counter() - t0
    line = [ln for ln in p.stderr.splitlines() if ln.startswith("PROBE ")][-1]
    return json.loads(line[len("PROBE ") :]), p.stdout, wall


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        main(list(args))
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err


def test_help_is_fast_and_never_imports_torch() -> None:
    # best of two: the first run also warms the OS file cache; a busy CI machine adds noise
    first_wall = probe("--help")[2]
    report, out, wall = probe("--help")
    wall = min(wall, first_wall)
    assert report == {"code": 0, "heavy": []}
    for cmd in ("list", "show", "rm", "cp", "export", "import", "verify", "gc", "doctor"):
        assert cmd in out
    assert wall < 2.0, f"lamp --help took {wall:.2f} s"


def publish_one(name: str = "guitar"):
    import torch

    from lamp_cli.adapter import MotionAdapter, make_metadata
    from lamp_cli.registry import Registry

    site = "mid_block.resnets.0.conv1"
    tensors = {
        f"{site}.conv1d.weight": torch.ones(4, 4, 3, dtype=torch.float16),
        f"{site}.conv_gate.bias": torch.zeros(1),
    }
    md = make_metadata(
        name=name,
        base_spec="tiny",
        base_fingerprint="0",
        architecture="unet2d-t",
        frames=8,
        width=32,
        height=32,
        train={},
    )
    return Registry().publish_adapter(MotionAdapter(tensors, md))


def test_list_is_fast_and_never_imports_torch() -> None:
    m = publish_one("guitar")
    first_wall = probe("list")[2]
    report, out, wall = probe("list")
    wall = min(wall, first_wall)
    assert report == {"code": 0, "heavy": []}
    assert "guitar" in out and m.id in out
    assert wall < 2.0, f"lamp list took {wall:.2f} s"
    report, out, _ = probe("list", "--json")
    assert report["heavy"] == [] and json.loads(out)["motions"][0]["name"] == "guitar"
    report, out, _ = probe("list", "-q")
    assert report["heavy"] == [] and out == "guitar\n"


def test_version_and_module_entry_point() -> None:
    p = subprocess.run(
        [sys.executable, "-m", "lamp_cli", "--version"], capture_output=True, text=True, timeout=60
    )
    assert p.returncode == 0 and p.stdout.startswith("lamp ")


def test_unknown_command_and_bad_option_exit_2(capsys) -> None:
    code, out, err = run(capsys, "frobnicate")
    assert code == 2 and out == "" and "frobnicate" in err
    code, _, err = run(capsys, "doctor", "--frob")
    assert code == 2 and "--frob" in err


def test_debug_env_shows_the_traceback() -> None:
    env = {**os.environ, "LAMP_DEBUG": "1"}
    p = subprocess.run(
        [sys.executable, "-m", "lamp_cli", "show", "nope"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert p.returncode == 1 and "Traceback" in p.stderr and "MotionNotFound" in p.stderr
    p = subprocess.run(
        [sys.executable, "-m", "lamp_cli", "show", "nope"], capture_output=True, text=True, timeout=60
    )
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert p.stderr.splitlines()[0].startswith("Error: ") and p.stderr.splitlines()[1].startswith("Hint: ")


# --- doctor -----------------------------------------------------------------------------------------

DOCTOR_KEYS = {
    "lamp",
    "python",
    "platform",
    "packages",
    "ffmpeg",
    "device",
    "lamp_home",
    "config",
    "settings",
    "models",
    "registry",
}


def test_doctor_json_has_stable_keys_and_sources(
    capsys, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    Path(os.environ["LAMP_CONFIG"]).write_text("fps = 12\n")
    monkeypatch.setenv("LAMP_STEPS", "20")
    monkeypatch.setenv("LAMP_BASE", "tiny")
    publish_one("guitar")
    code, out, err = run(capsys, "doctor", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert set(doc) == DOCTOR_KEYS
    import torch

    assert doc["packages"]["torch"] and doc["packages"]["diffusers"] and doc["packages"]["transformers"]
    assert torch.__version__.startswith(doc["packages"]["torch"].split("+")[0])
    assert set(doc["device"]) == {"cuda", "mps", "gpus", "selected", "setting", "error"}
    assert doc["device"]["selected"] in ("cuda", "mps", "cpu")
    assert doc["device"]["cuda"] == torch.cuda.is_available()
    sources = {s["key"]: (s["value"], s["source"]) for s in doc["settings"]}
    assert sources["fps"] == (12, "config") and sources["steps"] == (20, "env")
    assert sources["frames"] == (16, "default") and sources["base"] == ("tiny", "env")
    assert doc["lamp_home"] == os.environ["LAMP_HOME"]
    models = {m["role"]: m for m in doc["models"]}
    assert set(models) == {"base", "first_frame_model", "clip_model"}
    assert models["base"]["available"] is True  # the built-in tiny base
    assert models["first_frame_model"]["available"] is False  # nothing is in the (offline) cache
    assert "hf download stabilityai/stable-diffusion-xl-base-1.0" in models["first_frame_model"]["detail"]
    assert doc["registry"]["motions"] == 1 and doc["registry"]["ok"] is True
    code, out, _ = run(capsys, "doctor")
    assert code == 0 and "LAMP_HOME" in out and "(config)" in out and "health" in out


def test_doctor_reports_damaged_registry_and_broken_config(capsys) -> None:
    m = publish_one("guitar")
    m.blob_path.write_bytes(m.blob_path.read_bytes()[:-1] + b"x")
    Path(os.environ["LAMP_CONFIG"]).write_text("fps = = 3\n")
    report = collect()
    assert report["registry"]["ok"] is False
    assert [p["name"] for p in report["registry"]["problems"]] == ["guitar"]
    assert "cannot read config file" in report["config"]["error"]
    assert {s["key"] for s in report["settings"]} >= {"base", "frames"}  # still shown, without the file


def test_model_status_finds_cached_and_local_models(tmp_path: Path) -> None:
    # a Hugging Face cache laid out as `hf download` leaves it
    cache = tmp_path / "hub"
    repo = cache / "models--someone--sd-like"
    snap = repo / "snapshots" / ("c" * 40)
    (snap / "unet").mkdir(parents=True)
    (snap / "model_index.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("c" * 40)
    st = model_status("base", "someone/sd-like", cache_dir=cache)
    assert st["available"] is False and "without weights" in st["detail"]
    (snap / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"x")
    st = model_status("base", "someone/sd-like", cache_dir=cache)
    assert st["available"] is True and st["path"] == str(snap)
    assert model_status("base", "someone/absent", cache_dir=cache)["available"] is False

    local = tmp_path / "clip"
    local.mkdir()
    assert model_status("clip_model", str(local))["available"] is False
    (local / "model.safetensors").write_bytes(b"x")
    assert model_status("clip_model", str(local))["available"] is True


def test_doctor_resolves_the_device_setting_as_the_engine_does(capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.setenv("LAMP_DEVICE", "auto")
    code, out, err = run(capsys, "doctor", "--json")
    assert code == 0, err
    assert json.loads(out)["device"] | {"gpus": []} == {
        "cuda": False, "mps": False, "gpus": [], "selected": "cpu", "setting": "auto", "error": None
    }
    # a device that `lamp gen` would refuse is reported as an error, not as "selected" and fine
    monkeypatch.setenv("LAMP_DEVICE", "cuda:1")
    code, out, err = run(capsys, "doctor", "--json")
    assert code == 0, err
    dev = json.loads(out)["device"]
    assert dev["selected"] == "cuda:1" and "CUDA is not available" in dev["error"]
