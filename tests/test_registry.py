"""The motion registry: content-addressed blobs, manifests, atomicity, locking, verify, import checks."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lamp_cli import fsutil
from lamp_cli import registry as registry_mod
from lamp_cli.adapter import MotionAdapter, check_adapter_tensors, make_metadata
from lamp_cli.errors import InvalidInput, MotionNotFound, NameTaken, NotFound, RegistryError
from lamp_cli.registry import Registry, validate_name

C = 8  # channels of the toy adapters: tiny, but shaped like real motion layers


def adapter_tensors(
    seed: int = 0, channels: int = C, dtype: torch.dtype = torch.float16
) -> dict[str, torch.Tensor]:
    """One motion-conv site, one temporal-attention block and one to_q delta, as train would write."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g).to(dtype)

    site = "down_blocks.0.resnets.0.conv1"
    blk = "down_blocks.0.attentions.0.transformer_blocks.0"
    return {
        f"{site}.conv1d.weight": r(channels, channels, 3),  # C×C×3 over frames
        f"{site}.conv1d.bias": r(channels),
        f"{site}.conv_gate.weight": r(1, channels, 3, 3),  # 3×3 conv to one gate channel
        f"{site}.conv_gate.bias": r(1),
        f"{blk}.attn_temp.to_q.weight": r(channels, channels),
        f"{blk}.attn_temp.to_out.0.weight": r(channels, channels),
        f"{blk}.attn_temp.to_out.0.bias": r(channels),
        f"{blk}.norm_temp.weight": r(channels),
        f"{blk}.attn1.to_q.weight.delta": r(channels, channels),
    }


def adapter_metadata(name: str = "guitar", architecture: str = "unet2d-test", **train) -> dict[str, str]:
    return make_metadata(
        name=name,
        base_spec="tiny",
        base_fingerprint="f00d",
        architecture=architecture,
        frames=16,
        width=64,
        height=40,
        train={"steps": 12, "prompt": "a bear plays the guitar", **train},
    )


def make_adapter(name: str = "guitar", seed: int = 0, **kw) -> MotionAdapter:
    return MotionAdapter(adapter_tensors(seed, **kw), adapter_metadata(name))


def files_under(root: Path) -> list[str]:
    """Every file except the lock, relative to the registry root."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name != ".lock")


@pytest.fixture
def reg(lamp_env: Path) -> Registry:
    return Registry()


# --- names --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["guitar", "a", "rain-v2", "walk_0.3", "0abc", "x" * 64])
def test_valid_names(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "../x", "a/b", "Guitar", "-x", ".hidden", "_x", "x" * 65, "a b", "a\\b", "é", "guitar.json/"]
)
def test_invalid_names_say_the_rule(name: str) -> None:
    with pytest.raises(InvalidInput) as e:
        validate_name(name)
    assert "lowercase letters, digits" in e.value.message


def test_registry_rejects_path_names_everywhere(reg: Registry) -> None:
    reg.publish_adapter(make_adapter("guitar"))
    for bad in ("../x", "a/b", "Guitar"):
        with pytest.raises(InvalidInput):
            reg.copy("guitar", bad)
        with pytest.raises(InvalidInput):
            reg.get(bad)
        with pytest.raises(InvalidInput):
            reg.publish_adapter(make_adapter("guitar"), name=bad)
    assert reg.names() == ["guitar"]
    assert not (reg.root.parent / "x.json").exists()


# --- publish / get / list / show ------------------------------------------------------------------


def test_publish_layout_and_manifest(reg: Registry) -> None:
    m = reg.publish(adapter_tensors(), adapter_metadata("guitar"), source="train")
    blob = reg.root / "blobs" / f"sha256-{m.hexdigest}.safetensors"
    assert m.blob_path == blob and blob.exists()
    # content-addressed: the file name is the sha256 of the file's bytes
    import hashlib

    assert hashlib.sha256(blob.read_bytes()).hexdigest() == m.hexdigest
    assert m.size == blob.stat().st_size
    doc = json.loads((reg.root / "manifests" / "guitar.json").read_text())
    assert doc["schema_version"] == 1
    assert doc["name"] == "guitar" and doc["digest"] == f"sha256:{m.hexdigest}"
    assert doc["base"] == {"spec": "tiny", "fingerprint": "f00d"}
    assert (doc["frames"], doc["width"], doc["height"]) == (16, 64, 40)
    assert doc["steps"] == 12 and doc["prompt"] == "a bear plays the guitar"
    assert doc["source"] == "train" and doc["architecture"] == "unet2d-test"
    assert doc["tensors"] == 9 and doc["dtype"] == "float16"
    assert doc["parameters"] == sum(t.numel() for t in adapter_tensors().values())
    assert m.id == m.hexdigest[:12]


def test_get_and_load_adapter_round_trip_tensors(reg: Registry) -> None:
    a = make_adapter("guitar", dtype=torch.bfloat16)
    reg.publish_adapter(a)
    assert reg.get("guitar").dtype == "bfloat16"
    b = reg.load_adapter("guitar")
    assert b.name == "guitar" and b.frames == 16 and b.size == (64, 40)
    assert set(b.tensors) == set(a.tensors)
    for k in a.tensors:
        assert torch.equal(a.tensors[k], b.tensors[k]) and b.tensors[k].dtype == torch.bfloat16
    assert b.metadata["lamp.weights_sha256"] == a.weights_sha256()


def test_publish_name_argument_renames_header(reg: Registry) -> None:
    m = reg.publish(adapter_tensors(), adapter_metadata("whatever"), name="rain")
    assert m.name == "rain" and reg.load_adapter("rain").name == "rain"
    assert not reg.exists("whatever")


def test_publish_existing_name_needs_force(reg: Registry) -> None:
    first = reg.publish_adapter(make_adapter("guitar", seed=0))
    with pytest.raises(NameTaken):
        reg.publish_adapter(make_adapter("guitar", seed=1))
    assert reg.get("guitar").digest == first.digest
    second = reg.publish_adapter(make_adapter("guitar", seed=1), force=True)
    assert second.digest != first.digest and reg.get("guitar").digest == second.digest
    assert not first.blob_path.exists(), "the replaced blob is no longer referenced"
    assert reg.verify() == []


def test_list_prefix_sorted_and_missing(reg: Registry) -> None:
    assert reg.list() == []
    for n in ("rain", "guitar", "guitar-v2"):
        reg.publish_adapter(make_adapter(n))
    assert [m.name for m in reg.list()] == ["guitar", "guitar-v2", "rain"]
    assert [m.name for m in reg.list("gui")] == ["guitar", "guitar-v2"]
    with pytest.raises(MotionNotFound) as e:
        reg.get("nope")
    assert "lamp list" in e.value.hint


def test_show_summarises_header(reg: Registry) -> None:
    reg.publish_adapter(make_adapter("guitar"))
    info = reg.show("guitar")
    a = info["adapter"]
    assert a["tensors"] == 9 and a["dtype"] == "float16"
    assert a["groups"] == {"conv1d": 2, "conv_gate": 2, "attn_temp": 3, "norm_temp": 1, "delta": 1}
    assert a["train"]["steps"] == 12 and a["base"]["spec"] == "tiny"
    assert info["manifest"]["name"] == "guitar"


# --- cp / rm / gc ---------------------------------------------------------------------------------


def test_copy_shares_the_blob_and_rm_keeps_it_until_last(reg: Registry) -> None:
    m = reg.publish_adapter(make_adapter("guitar"))
    c = reg.copy("guitar", "guitar-v1")
    assert c.digest == m.digest and c.blob_path == m.blob_path
    assert len(list((reg.root / "blobs").iterdir())) == 1
    assert c.source == "cp:guitar"
    with pytest.raises(NameTaken):
        reg.copy("guitar", "guitar-v1")
    with pytest.raises(MotionNotFound):
        reg.copy("nope", "other")

    r = reg.remove("guitar")
    assert not r.removed_blob and m.blob_path.exists()
    assert reg.load_adapter("guitar-v1").weights_sha256() == m.weights_sha256
    r = reg.remove("guitar-v1")
    assert r.removed_blob and r.freed_bytes == m.size
    assert files_under(reg.root) == []
    with pytest.raises(MotionNotFound):
        reg.remove("guitar-v1")


def test_gc_removes_stale_temp_files_and_orphans_only(reg: Registry) -> None:
    m = reg.publish_adapter(make_adapter("guitar"))
    orphan = reg.root / "blobs" / ("sha256-" + "0" * 64 + ".safetensors")
    orphan.write_bytes(b"left by a killed publish")
    stale = reg.root / "blobs" / f"{fsutil.TMP_PREFIX}x.123.abc"
    stale.write_bytes(b"half")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    fresh = reg.root / "manifests" / f"{fsutil.TMP_PREFIX}y.456.def"
    fresh.write_bytes(b"a writer may still be here")

    dry = reg.gc(dry_run=True)
    assert dry.removed_blobs == [str(orphan)] and dry.removed_temp == [str(stale)]
    assert orphan.exists() and stale.exists()

    report = reg.gc()
    assert report.removed_blobs == [str(orphan)] and report.removed_temp == [str(stale)]
    assert report.freed_bytes == len(b"left by a killed publish") + 4
    assert not orphan.exists() and not stale.exists() and fresh.exists()
    assert m.blob_path.exists() and reg.verify() == []


def test_remove_deletes_the_edit_cache_of_that_name_only(reg: Registry) -> None:
    reg.publish_adapter(make_adapter("edit-aaa"))
    reg.publish_adapter(make_adapter("edit-bbb", seed=1))
    for n in ("edit-aaa", "edit-bbb"):
        (reg.root / "edits" / n).mkdir(parents=True)
        (reg.root / "edits" / n / "tuning.json").write_text("{}")
        (reg.root / "edits" / n / "0123456789abcdef.safetensors").write_bytes(b"x" * 10)
    r = reg.remove("edit-aaa")
    assert r.removed_edits and r.to_json()["removed_edits"] is True
    assert not (reg.root / "edits" / "edit-aaa").exists()
    assert sorted(p.name for p in (reg.root / "edits").iterdir()) == ["edit-bbb"]  # nothing set aside is left
    assert (reg.root / "edits" / "edit-bbb" / "tuning.json").exists()
    reg.publish_adapter(make_adapter("plain", seed=2))
    assert not reg.remove("plain").removed_edits


def test_gc_removes_edit_caches_of_deleted_motions(reg: Registry) -> None:
    reg.publish_adapter(make_adapter("edit-kept"))
    edits = reg.root / "edits"
    kept, gone = edits / "edit-kept", edits / "edit-gone"
    aside = edits / f"{fsutil.TMP_PREFIX}edit-x.1.2"  # left by a remove killed mid-delete
    for d in (kept, gone, aside):
        d.mkdir(parents=True)
        (d / "tuning.json").write_bytes(b"1234")
    (edits / "notes.txt").write_text("not a cache folder")

    dry = reg.gc(dry_run=True)
    assert sorted(dry.removed_edits) == sorted([str(gone), str(aside)]) and dry.freed_bytes == 8
    assert gone.exists() and aside.exists()
    report = reg.gc()
    assert sorted(report.removed_edits) == sorted([str(gone), str(aside)])
    assert report.to_json()["removed_edits"] == report.removed_edits
    assert not gone.exists() and not aside.exists()
    assert (kept / "tuning.json").exists() and (edits / "notes.txt").exists()


# --- verify / damage --------------------------------------------------------------------------------


def test_verify_catches_a_flipped_byte_and_get_refuses(reg: Registry) -> None:
    m = reg.publish_adapter(make_adapter("guitar"))
    reg.publish_adapter(make_adapter("rain", seed=3))
    assert reg.verify() == []
    data = bytearray(m.blob_path.read_bytes())
    data[-5] ^= 0x01  # one bit of tensor data
    m.blob_path.write_bytes(bytes(data))

    problems = reg.verify()
    assert [p.name for p in problems] == ["guitar"]
    assert "does not match" in problems[0].problem
    assert reg.verify("rain") == []
    with pytest.raises(RegistryError) as e:
        reg.get("guitar")
    assert "guitar" in e.value.message and "lamp verify" in e.value.hint
    with pytest.raises(RegistryError):
        reg.load_adapter("guitar")
    with pytest.raises(RegistryError):
        reg.export("guitar", reg.root.parent / "out.safetensors")
    assert not (reg.root.parent / "out.safetensors").exists()


def test_publishing_identical_bytes_repairs_a_damaged_blob(reg: Registry) -> None:
    a = make_adapter("guitar")
    data = a.to_bytes()
    m = reg.publish_bytes(data)
    reg.copy("guitar", "guitar-v1")
    m.blob_path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    assert {p.name for p in reg.verify()} == {"guitar", "guitar-v1"}
    assert reg.publish_bytes(data, force=True).digest == m.digest
    assert reg.verify() == [] and m.blob_path.read_bytes() == data


def test_verify_reports_missing_blob_and_broken_manifest(reg: Registry) -> None:
    m = reg.publish_adapter(make_adapter("guitar"))
    reg.publish_adapter(make_adapter("rain", seed=1))
    m.blob_path.unlink()
    (reg.root / "manifests" / "rain.json").write_text("{not json")
    problems = {p.name: p.problem for p in reg.verify()}
    assert set(problems) == {"guitar", "rain"}
    assert "missing" in problems["guitar"] and "unreadable" in problems["rain"]
    with pytest.raises(MotionNotFound):
        reg.verify("nope")
    # a broken manifest can still be removed
    assert reg.remove("rain").digest is None


# --- export / import --------------------------------------------------------------------------------


def test_export_rm_import_round_trips_bytes(reg: Registry, tmp_path: Path) -> None:
    m = reg.publish_adapter(make_adapter("guitar"))
    blob_bytes = m.blob_path.read_bytes()
    out = reg.export("guitar", tmp_path / "guitar.safetensors")
    assert out.read_bytes() == blob_bytes
    assert (
        reg.export("guitar", tmp_path) == tmp_path / "guitar.safetensors"
    )  # a folder gets <name>.safetensors
    reg.remove("guitar")
    assert files_under(reg.root) == []
    back = reg.import_file(out)
    assert back.name == "guitar" and back.digest == m.digest
    assert back.blob_path.read_bytes() == blob_bytes
    assert back.source.startswith("import:")


def test_import_under_another_name_rewrites_header(reg: Registry, tmp_path: Path) -> None:
    m = reg.publish_adapter(make_adapter("guitar"))
    out = reg.export("guitar", tmp_path / "g.safetensors")
    n = reg.import_file(out, name="guitar-friend")
    assert n.digest != m.digest  # the header differs, so the blob does
    a = reg.load_adapter("guitar-friend")
    assert a.name == "guitar-friend"
    assert a.weights_sha256() == m.weights_sha256 == a.metadata["lamp.weights_sha256"]
    # the rewritten file is itself a valid import
    again = reg.export("guitar-friend", tmp_path / "f.safetensors")
    reg.remove("guitar-friend")
    assert reg.import_file(again).digest == n.digest


def test_import_existing_name_needs_force(reg: Registry, tmp_path: Path) -> None:
    reg.publish_adapter(make_adapter("guitar", seed=0))
    other = make_adapter("guitar", seed=5).save(tmp_path / "other.safetensors")
    with pytest.raises(NameTaken):
        reg.import_file(other)
    before = reg.get("guitar").digest
    assert reg.get("guitar").digest == before
    m = reg.import_file(other, force=True)
    assert m.digest != before and reg.verify() == []
    assert len(list((reg.root / "blobs").iterdir())) == 1


def _refused(reg: Registry, path: Path, match: str, **kw) -> InvalidInput:
    with pytest.raises(InvalidInput) as e:
        reg.import_file(path, **kw)
    assert match in e.value.message, e.value.message
    assert e.value.hint, "every refusal says what to do"
    assert files_under(reg.root) == [], "nothing is stored"
    return e.value


def test_import_refuses_non_safetensors(reg: Registry, tmp_path: Path) -> None:
    p = tmp_path / "notes.safetensors"
    p.write_text("these are just some words, not tensors at all\n" * 3)
    _refused(reg, p, "not a valid safetensors file")
    tiny = tmp_path / "tiny.safetensors"
    tiny.write_bytes(b"abc")
    _refused(reg, tiny, "not a safetensors file")


def test_import_refuses_truncated_file(reg: Registry, tmp_path: Path) -> None:
    good = make_adapter("guitar").save(tmp_path / "g.safetensors")
    data = good.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) - 100])
    _refused(reg, cut, "truncated")
    cut.write_bytes(data[:20])
    _refused(reg, cut, "header claims")


def test_import_refuses_huge_header_length(reg: Registry, tmp_path: Path) -> None:
    p = tmp_path / "huge.safetensors"
    p.write_bytes((1 << 40).to_bytes(8, "little") + b'{"__metadata__":{}}' + b"\0" * 64)
    _refused(reg, p, "header claims 1099511627776 bytes")


def test_import_refuses_safetensors_without_lamp_metadata(reg: Registry, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    p = tmp_path / "plain.safetensors"
    save_file(adapter_tensors(), str(p), metadata={"format": "pt"})
    e = _refused(reg, p, "not a lamp motion adapter")
    assert "--official" in e.hint
    md = adapter_metadata("guitar")
    del md["lamp.frames"]
    save_file(adapter_tensors(), str(p), metadata={**md, "format": "pt"})
    _refused(reg, p, "lamp.frames")


def test_import_refuses_bad_names(reg: Registry, tmp_path: Path) -> None:
    good = make_adapter("guitar").save(tmp_path / "g.safetensors")
    for bad in ("../x", "a/b", "Guitar", ""):
        with pytest.raises(InvalidInput):
            reg.import_file(good, name=bad)
    # a file whose own header carries a path-like name
    evil = MotionAdapter(adapter_tensors(), adapter_metadata("../evil")).save(tmp_path / "evil.safetensors")
    with pytest.raises(InvalidInput) as e:
        reg.import_file(evil)
    assert "--name" in e.value.hint
    assert files_under(reg.root) == []
    assert reg.import_file(evil, name="evil").name == "evil"


def test_import_refuses_edited_tensor_data(reg: Registry, tmp_path: Path) -> None:
    p = make_adapter("guitar").save(tmp_path / "g.safetensors")
    data = bytearray(p.read_bytes())
    data[-3] ^= 0x10
    p.write_bytes(bytes(data))
    _refused(reg, p, "lamp.weights_sha256")


@pytest.mark.parametrize(
    "change, match",
    [
        ({"down_blocks.0.resnets.0.conv1.conv1d.weight": torch.zeros(8, 8, 5, dtype=torch.float16)}, "C×C×3"),
        (
            {"down_blocks.0.resnets.0.conv1.conv_gate.weight": torch.zeros(2, 8, 3, 3, dtype=torch.float16)},
            "1×C×3×3",
        ),
        (
            {"down_blocks.0.resnets.0.conv1.conv_gate.weight": torch.zeros(1, 4, 3, 3, dtype=torch.float16)},
            "disagree",
        ),
        ({"down_blocks.0.resnets.0.conv1.conv1d.weight": torch.zeros(8, 8, 3, dtype=torch.int64)}, "dtype"),
        (
            {"down_blocks.0.resnets.0.conv1.conv2d.weight": torch.zeros(8, 8, 3, 3, dtype=torch.float16)},
            "unexpected",
        ),
        ({"mid_block.attentions.0.transformer_blocks.0.norm_temp.weight": torch.zeros(2, 8)}, "LayerNorm"),
    ],
)
def test_import_refuses_implausible_tensors(reg: Registry, tmp_path: Path, change: dict, match: str) -> None:
    p = MotionAdapter({**adapter_tensors(), **change}, adapter_metadata("guitar")).save(
        tmp_path / "bad.safetensors"
    )
    _refused(reg, p, match)


def test_sd1_architecture_requires_sd1_channels(reg: Registry, tmp_path: Path) -> None:
    p = MotionAdapter(adapter_tensors(), adapter_metadata("guitar", architecture="sd1-unet")).save(
        tmp_path / "bad.safetensors"
    )
    _refused(reg, p, "sd1-unet")
    site = "down_blocks.0.resnets.0.conv1"
    sd1 = {
        f"{site}.conv1d.weight": torch.zeros(320, 320, 3, dtype=torch.float16),
        f"{site}.conv_gate.bias": torch.zeros(1),
    }
    ok = MotionAdapter(sd1, adapter_metadata("guitar", architecture="sd1-unet")).save(
        tmp_path / "ok.safetensors"
    )
    assert reg.import_file(ok).architecture == "sd1-unet"


def test_check_adapter_tensors_works_from_header_alone() -> None:
    from lamp_cli.adapter import read_header_bytes

    header = read_header_bytes(make_adapter("guitar").to_bytes())
    s = check_adapter_tensors(header)
    assert s.tensors == 9 and s.nbytes == sum(t.numel() * 2 for t in adapter_tensors().values())
    header["down_blocks.0.resnets.0.conv1.conv1d.bias"]["data_offsets"][1] += 2
    with pytest.raises(InvalidInput, match="claims"):
        check_adapter_tensors(header)


def test_import_missing_file(reg: Registry, tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        reg.import_file(tmp_path / "nope.safetensors")


# --- atomicity -------------------------------------------------------------------------------------


def test_failed_blob_write_leaves_nothing(reg: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    def half_then_fail(path, data):
        with fsutil.atomic_writer(path) as f:
            f.write(data[: len(data) // 2])
            raise OSError("disk full")

    monkeypatch.setattr(registry_mod, "atomic_write_bytes", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        reg.publish_adapter(make_adapter("guitar"))
    assert files_under(reg.root) == []
    assert not reg.exists("guitar")


def test_failed_manifest_write_removes_the_new_blob(reg: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    real_replace = os.replace

    def replace(src, dst):
        if str(dst).endswith(".json"):
            raise OSError("killed before the manifest landed")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="killed"):
        reg.publish_adapter(make_adapter("guitar"))
    assert files_under(reg.root) == []
    monkeypatch.setattr(os, "replace", real_replace)
    # a forced re-publish that fails keeps the old version intact
    m = reg.publish_adapter(make_adapter("guitar"))
    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError):
        reg.publish_adapter(make_adapter("guitar", seed=9), force=True)
    assert files_under(reg.root) == sorted(["manifests/guitar.json", str(m.blob_path.relative_to(reg.root))])
    assert reg.get("guitar").digest == m.digest


_KILLED_CHILD = r"""
import os, sys, time
from pathlib import Path
from lamp_cli import fsutil, registry
def slow(path, data):
    with fsutil.atomic_writer(path) as f:
        f.write(data[: len(data) // 2]); f.flush()
        Path(sys.argv[2]).write_text("half written")
        time.sleep(60)
        f.write(data[len(data) // 2 :])
registry.atomic_write_bytes = slow
registry.Registry().publish_bytes(Path(sys.argv[1]).read_bytes())
"""


def test_killed_publish_leaves_no_manifest_and_no_blob(reg: Registry, tmp_path: Path) -> None:
    src = make_adapter("guitar").save(tmp_path / "g.safetensors")
    marker = tmp_path / "marker"
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_CHILD, str(src), str(marker)], env=os.environ.copy()
    )
    try:
        deadline = time.time() + 30
        while not marker.exists():
            assert proc.poll() is None, "child died early"
            assert time.time() < deadline
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
    left = files_under(reg.root)
    assert not reg.exists("guitar") and reg.list() == []
    assert not any(f.startswith("blobs/sha256-") for f in left)
    assert len(left) == 1 and Path(left[0]).name.startswith(fsutil.TMP_PREFIX)  # only the half temp file
    # the dead process's lock is released; gc removes its temp file once stale
    tmp_file = reg.root / left[0]
    os.utime(tmp_file, (time.time() - 3600,) * 2)
    assert reg.gc().removed_temp == [str(tmp_file)]
    assert reg.import_file(src).name == "guitar"
    assert reg.verify() == []


# --- locking ----------------------------------------------------------------------------------------


def test_lock_timeout_says_waiting_then_fails(reg: Registry) -> None:
    messages: list[str] = []

    class Grab(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    logger = logging.getLogger("lamp")
    handler = Grab()
    logger.addHandler(handler)
    try:
        other = Registry(reg.root, lock_timeout=0.3)
        with reg.lock():
            t0 = time.perf_counter()
            with pytest.raises(RegistryError) as e:
                other.publish_adapter(make_adapter("guitar"))
            assert 0.25 < time.perf_counter() - t0 < 10
        assert "lock" in e.value.message and e.value.hint
        assert any("waiting for another lamp process" in m for m in messages)
        assert other.publish_adapter(make_adapter("guitar")).name == "guitar"  # free again
    finally:
        logger.removeHandler(handler)


_RACER = r"""
import sys
from pathlib import Path
from lamp_cli.errors import NameTaken
from lamp_cli.registry import Registry
reg = Registry()
assert not reg.exists("guitar")
Path(sys.argv[2]).write_text("ready")  # past the early name check; now blocks on the lock
try:
    reg.publish_bytes(Path(sys.argv[1]).read_bytes())
except NameTaken as e:
    print("TAKEN", e.message)
    sys.exit(3)
print("WON")
"""


def test_two_processes_publish_the_same_name(reg: Registry, tmp_path: Path) -> None:
    files = [make_adapter("guitar", seed=s).save(tmp_path / f"g{s}.safetensors") for s in (1, 2)]
    markers = [tmp_path / f"ready{s}" for s in (1, 2)]
    with reg.lock():  # hold the lock so both racers get past their early check before either writes
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", _RACER, str(f), str(m)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=os.environ.copy(),
            )
            for f, m in zip(files, markers, strict=True)
        ]
        deadline = time.time() + 60
        while not all(m.exists() for m in markers):
            assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
            assert time.time() < deadline
            time.sleep(0.05)
        time.sleep(0.3)
    outs = [p.communicate(timeout=60) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 3], outs
    loser = outs[[p.returncode for p in procs].index(3)][0]
    assert "already exists" in loser
    assert reg.names() == ["guitar"] and reg.verify() == []
    assert len(list((reg.root / "blobs").iterdir())) == 1
