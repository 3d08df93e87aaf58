"""The registry commands end to end: output, --json shapes, exit codes, errors on stderr."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import typer

from lamp_cli.adapter import MotionAdapter, make_metadata
from lamp_cli.cli.app import main
from lamp_cli.cli.registry_cmds import human_age, human_size
from lamp_cli.registry import Registry


def make_adapter(name: str, seed: int = 0, channels: int = 8) -> MotionAdapter:
    g = torch.Generator().manual_seed(seed)
    site = "up_blocks.1.resnets.0.conv2"
    tensors = {
        f"{site}.conv1d.weight": torch.randn(channels, channels, 3, generator=g).half(),
        f"{site}.conv1d.bias": torch.randn(channels, generator=g).half(),
        f"{site}.conv_gate.weight": torch.randn(1, channels, 3, 3, generator=g).half(),
        f"{site}.conv_gate.bias": torch.randn(1, generator=g).half(),
    }
    md = make_metadata(
        name=name,
        base_spec="tiny",
        base_fingerprint="beef",
        architecture="unet2d-test",
        frames=8,
        width=64,
        height=40,
        train={"steps": 3, "prompt": f"{name} motion", "lr": 3e-5},
    )
    return MotionAdapter(tensors, md)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run `lamp ARGS` in-process; (exit code, stdout, stderr)."""
    capsys.readouterr()
    try:
        main(list(args))
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    code, out, err = run(capsys, *args, "--json")
    assert code == 0, err
    return json.loads(out)  # exactly one document: json.loads fails on trailing text


MANIFEST_KEYS = {
    "name",
    "id",
    "digest",
    "size",
    "created",
    "base",
    "frames",
    "width",
    "height",
    "steps",
    "prompt",
    "source",
    "blob_path",
    "architecture",
    "weights_sha256",
    "tensors",
    "parameters",
    "dtype",
    "schema_version",
}


@pytest.fixture
def reg() -> Registry:
    r = Registry()
    r.publish_adapter(make_adapter("guitar"), source="train")
    return r


def test_list_table_quiet_and_json(capsys, reg: Registry) -> None:
    reg.publish_adapter(make_adapter("rain", seed=1))
    code, out, err = run(capsys, "list")
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "ID", "SIZE", "FRAMES", "BASE", "CREATED"]
    g = reg.get("guitar")
    assert lines[1].split()[:5] == ["guitar", g.id, *human_size(g.size).split(), "8"]
    assert "just now" in lines[1] and lines[2].startswith("rain")

    code, out, _ = run(capsys, "list", "-q")
    assert out == "guitar\nrain\n"
    code, out, _ = run(capsys, "list", "ra", "-q")
    assert out == "rain\n"

    (reg.root / "manifests" / "broken.json").write_text("{")
    code, out, err = run(capsys, "list", "-q")
    assert code == 0 and out == "guitar\nrain\n" and "broken" in err  # a damaged manifest is skipped, loudly
    (reg.root / "manifests" / "broken.json").unlink()

    doc = run_json(capsys, "list")
    assert set(doc) == {"motions"}
    assert [m["name"] for m in doc["motions"]] == ["guitar", "rain"]
    for m in doc["motions"]:
        assert set(m) == MANIFEST_KEYS
    assert doc["motions"][0]["id"] == g.id and len(g.id) == 12


def test_list_empty(capsys) -> None:
    assert run_json(capsys, "list") == {"motions": []}
    code, out, _ = run(capsys, "list", "-q")
    assert code == 0 and out == ""


def test_show(capsys, reg: Registry) -> None:
    code, out, _ = run(capsys, "show", "guitar")
    assert code == 0
    assert "guitar motion" in out and "float16" in out and "unet2d-test" in out
    assert "training config:" in out and "lr:" in out
    doc = run_json(capsys, "show", "guitar")
    assert set(doc) == {"manifest", "adapter"}
    assert set(doc["manifest"]) == MANIFEST_KEYS
    assert set(doc["adapter"]) == {
        "tensors",
        "parameters",
        "nbytes",
        "dtype",
        "groups",
        "name",
        "architecture",
        "base",
        "frames",
        "size",
        "train",
        "created",
        "lamp_version",
        "format_version",
        "weights_sha256",
        "extra",
    }
    assert doc["adapter"]["parameters"] == 8 * 8 * 3 + 8 + 9 * 8 + 1


def test_show_official_provenance_and_eval_table(capsys) -> None:
    base = make_adapter("official-walk")
    train = {
        "steps": 20, "prompt": "a horse runs", "lr": 3e-5,
        "eval": {
            "prompts": ["a horse runs", "a dog runs"],
            "history": [
                {"step": 10, "loss": 0.25, "alignment": 0.301, "consistency": 0.91, "diversity": 0.1, "videos": []},
                {"step": 20, "loss": 0.125, "alignment": 0.312, "consistency": 0.93, "diversity": 0.2, "videos": []},
            ],
            "best": {"step": 20, "alignment": 0.312, "consistency": 0.93, "loss": 0.125},
        },
    }
    provenance = {"official": True, "source": "/ckpt/horse", "config_class": "UNet3DConditionModel",
                  "weights_file": "diffusion_pytorch_model.bin", "weights_file_sha256": "ab" * 32}
    md = make_metadata(name="official-walk", base_spec="tiny", base_fingerprint="beef", architecture="unet2d-test",
                       frames=8, width=64, height=40, train=train, official=json.dumps(provenance))
    Registry().publish_adapter(MotionAdapter(base.tensors, md))
    code, out, err = run(capsys, "show", "official-walk")
    assert code == 0, err
    lines = out.splitlines()
    assert any(ln.split()[:3] == ["official", "source", "/ckpt/horse"] for ln in lines)
    assert any(ln.split()[:3] == ["config", "class", "UNet3DConditionModel"] for ln in lines)
    assert any(ln.split()[:3] == ["weights", "sha256", "ab" * 32] for ln in lines)
    # the eval history is a table (header + one row per point), not one long JSON line
    assert not any(ln.strip().startswith("eval:") for ln in lines)
    i = lines.index("evaluation (2 points, 2 prompts):")
    assert lines[i + 1].split() == ["step", "loss", "alignment", "consistency", "diversity"]
    assert lines[i + 2].split() == ["10", "0.2500", "0.3010", "0.9100", "0.1000"]
    assert lines[i + 3].split() == ["20", "0.1250", "0.3120", "0.9300", "0.2000", "best"]
    # a motion without either shows neither
    code, out, _ = run(capsys, "show", "official-walk", "--json")
    assert json.loads(out)["adapter"]["train"]["eval"]["best"]["step"] == 20
    Registry().publish_adapter(make_adapter("plain"))
    code, out, _ = run(capsys, "show", "plain")
    assert code == 0 and "official source" not in out and "evaluation" not in out


def test_errors_go_to_stderr_with_hint(capsys) -> None:
    code, out, err = run(capsys, "show", "nope")
    assert code == 1 and out == ""
    assert "Error: no motion named 'nope'" in err and "Hint:" in err
    code, out, err = run(capsys, "show", "nope", "--json")
    assert code == 1 and out == "" and "Hint:" in err
    code, out, err = run(capsys, "cp", "nope", "../x")
    assert code == 1 and "invalid motion name" in err and "Hint:" in err


def test_rm_confirmation_rules(capsys, reg: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    reg.copy("guitar", "guitar-v1")
    # not a terminal and no --yes: refuse (usage error), delete nothing
    monkeypatch.setattr(sys.stdin, "isatty", lambda: False, raising=False)
    code, _, err = run(capsys, "rm", "guitar")
    assert code == 2 and "--yes" in err and reg.exists("guitar")
    # a terminal: ask; "no" keeps it
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True, raising=False)
    monkeypatch.setattr(typer, "confirm", lambda *a, **k: False)
    code, _, _ = run(capsys, "rm", "guitar")
    assert code == 1 and reg.exists("guitar")
    monkeypatch.setattr(typer, "confirm", lambda *a, **k: True)
    code, out, _ = run(capsys, "rm", "guitar")
    assert code == 0 and out == "deleted 'guitar'\n" and not reg.exists("guitar")
    blob = reg.get("guitar-v1").blob_path
    assert blob.exists()  # still used by guitar-v1
    # all or nothing: one unknown name deletes none
    code, _, err = run(capsys, "rm", "guitar-v1", "nope", "--yes")
    assert code == 1 and "nope" in err and reg.exists("guitar-v1")
    m = reg.get("guitar-v1")
    doc = run_json(capsys, "rm", "guitar-v1", "--yes")
    assert doc == {
        "deleted": [{"name": "guitar-v1", "digest": m.digest, "removed_blob": True, "freed_bytes": m.size,
                     "removed_edits": False}],
        "freed_bytes": m.size,
    }
    assert not blob.exists()


def test_cp_export_rm_import_round_trip(capsys, reg: Registry, tmp_path: Path) -> None:
    original = reg.get("guitar")
    code, out, _ = run(capsys, "cp", "guitar", "guitar-v1")
    assert code == 0 and out == "copied 'guitar' to 'guitar-v1'\n"
    assert reg.get("guitar-v1").blob_path == original.blob_path
    code, _, err = run(capsys, "cp", "guitar", "guitar-v1")
    assert code == 1 and "already exists" in err and "--force" in err

    dest = tmp_path / "g.safetensors"
    code, out, _ = run(capsys, "export", "guitar", "-o", str(dest))
    assert code == 0 and out.startswith("exported 'guitar' to")
    assert dest.read_bytes() == original.blob_path.read_bytes()
    code, _, err = run(capsys, "export", "guitar", "-o", str(dest))
    assert code == 1 and "already exists" in err and "--force" in err
    code, _, err = run(capsys, "export", "nope", "-o", str(dest))
    assert code == 1 and "no motion named 'nope'" in err
    doc = run_json(capsys, "export", "guitar", "-o", str(dest), "--force")
    assert doc == {"name": "guitar", "path": str(dest), "digest": original.digest, "size": original.size}

    run(capsys, "rm", "guitar", "guitar-v1", "--yes")
    assert reg.names() == []
    code, out, _ = run(capsys, "import", str(dest))
    assert code == 0 and out == f"imported 'guitar' ({original.id}, {human_size(original.size)})\n"
    assert reg.get("guitar").blob_path.read_bytes() == dest.read_bytes()

    code, _, err = run(capsys, "import", str(dest))
    assert code == 1 and "already exists" in err
    doc = run_json(capsys, "import", str(dest), "--name", "guitar-friend")
    assert set(doc) == {"imported"} and set(doc["imported"]) == MANIFEST_KEYS
    assert doc["imported"]["name"] == "guitar-friend"
    code, _, err = run(capsys, "import", str(dest), "--name", "../x")
    assert code == 1 and "invalid motion name" in err


def test_import_refusals_on_the_command_line(capsys, tmp_path: Path) -> None:
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 3)
    code, out, err = run(capsys, "import", str(junk))
    assert code == 1 and out == "" and "not a safetensors file" in err and "Hint:" in err
    code, _, err = run(capsys, "import", str(tmp_path / "missing.safetensors"))
    assert code == 1 and "no such file" in err
    assert Registry().names() == []


def test_import_official_is_routed_and_validated(
    capsys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, _, err = run(capsys, "import", "--official", str(tmp_path))
    assert code == 2 and "--name" in err
    code, _, err = run(capsys, "import", str(tmp_path), "--base", "x")
    assert code == 2 and "--official" in err

    # the converter is another module; the command hands it path, name, base, registry, force
    import types

    calls = {}

    def fake_import_official(path, *, name, base, registry, force, prompt, dtype):
        calls.update(path=path, name=name, base=base, force=force, prompt=prompt, dtype=dtype)
        return registry.publish_adapter(make_adapter(name, seed=4), source=f"official:{path}")

    monkeypatch.setitem(
        sys.modules, "lamp_cli.official", types.SimpleNamespace(import_official=fake_import_official)
    )
    doc = run_json(
        capsys, "import", "--official", str(tmp_path), "--name", "horse-run", "--base", "my/base",
        "--prompt", "horse run", "--dtype", "fp32",
    )
    assert calls == {
        "path": tmp_path, "name": "horse-run", "base": "my/base", "force": False,
        "prompt": "horse run", "dtype": "fp32",
    }
    assert doc["imported"]["name"] == "horse-run" and doc["imported"]["source"].startswith("official:")
    code, _, err = run(capsys, "import", str(tmp_path), "--prompt", "x")
    assert code == 2 and "--official" in err


def test_verify_ok_and_damaged(capsys, reg: Registry) -> None:
    code, out, _ = run(capsys, "verify")
    assert code == 0 and out == "ok: 1 motion verified\n"
    assert run_json(capsys, "verify") == {"checked": 1, "ok": True, "problems": []}

    blob = reg.get("guitar").blob_path
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    blob.write_bytes(bytes(data))
    code, out, err = run(capsys, "verify", "--json")
    assert code == 1
    doc = json.loads(out)
    assert doc["ok"] is False and doc["checked"] == 1
    assert [set(p) for p in doc["problems"]] == [{"name", "problem", "path"}]
    assert doc["problems"][0]["name"] == "guitar"
    assert "failed verification" in err and "Hint:" in err
    code, out, err = run(capsys, "verify", "guitar")
    assert code == 1 and out.startswith("guitar: ")
    code, _, err = run(capsys, "show", "guitar")
    assert code == 1 and "damaged" in err and "lamp verify" in err


def test_gc(capsys, reg: Registry) -> None:
    orphan = reg.root / "blobs" / ("sha256-" + "a" * 64 + ".safetensors")
    orphan.write_bytes(b"12345")
    doc = run_json(capsys, "gc", "--dry-run")
    assert doc == {
        "dry_run": True, "freed_bytes": 5, "removed_blobs": [str(orphan)], "removed_edits": [], "removed_temp": [],
        "removed_runs": [],
        "removed_bases": [], "converted_bases": [],
    }
    assert orphan.exists()
    code, out, _ = run(capsys, "gc")
    assert code == 0 and "removed 0 temp file(s), 1 unused blob(s), 0 edit cache(s) of deleted motions and 0 empty run folder(s), 5 B" in out
    assert not orphan.exists() and reg.verify() == []


def test_usage_errors_exit_2(capsys) -> None:
    for args in (["list", "--bogus"], ["rm"], ["export", "guitar"], ["cp", "only-one"], ["nosuchcommand"]):
        code, out, err = run(capsys, *args)
        assert code == 2, args
        assert out == "" and err


def test_help_has_examples(capsys) -> None:
    for cmd in ("list", "show", "rm", "cp", "export", "import", "verify", "gc"):
        code, out, _ = run(capsys, cmd, "--help")
        assert code == 0 and "lamp " + cmd in out, cmd


def test_human_formats() -> None:
    import datetime as dt

    assert (
        human_size(999) == "999 B" and human_size(1500) == "1.5 kB" and human_size(512_000_000) == "512.0 MB"
    )
    now = dt.datetime(2026, 1, 10, tzinfo=dt.timezone.utc)
    assert human_age("2026-01-10T00:00:00+00:00", now) == "just now"
    assert human_age("2026-01-09T23:55:00+00:00", now) == "5 minutes ago"
    assert human_age("2026-01-08T00:00:00+00:00", now) == "2 days ago"
    assert human_age("garbage", now) == "garbage"
