"""No traceback, no lost work, no silent junk: one test (or a few) per item of the hardening issue.

Typed header/manifest schema, strict JSON, OS errors as one `Error:` line, hostile images and
videos, settings from file and environment, official configs and pickles, gc of leftovers,
messages that do not mislead, progress without a terminal, and the last line of defence.
"""

from __future__ import annotations

import errno
import json
import math
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from lamp_cli import registry as registry_mod
from lamp_cli.adapter import MotionAdapter, encode_header, read_header_bytes
from lamp_cli.cli.app import main
from lamp_cli.errors import InvalidInput, LampError, RegistryError
from lamp_cli.jsonio import dumps_strict, loads_strict
from lamp_cli.registry import Registry
from tests.test_registry import adapter_tensors, files_under, make_adapter

REPO = Path(__file__).resolve().parents[1]


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err


def with_metadata(tmp_path: Path, **fields: str) -> Path:
    """A valid adapter file whose header fields are replaced by `fields` (tensor bytes intact)."""
    data = make_adapter("guitar").to_bytes()
    header = read_header_bytes(data)
    start = 8 + int.from_bytes(data[:8], "little")
    header["__metadata__"] = {**header["__metadata__"], **fields}
    path = tmp_path / "edited.safetensors"
    path.write_bytes(encode_header(header) + data[start:])
    return path


# --- 1. adapter headers and manifests: one typed schema, checked on import and on every read ---


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("lamp.size", "[80000, 80000]", "lamp.size must be [width, height] with multiples of 8 in 8..4096, got [80000, 80000]"),
        ("lamp.size", "[63, 65]", "multiples of 8"),
        ("lamp.size", "[64]", "header field lamp.size must be [width, height] with multiples of 8 in 8..4096, got [64]"),
        ("lamp.frames", "1" * 23, "lamp.frames must be a whole number in 2..1024"),
        ("lamp.train", "[" * 5000 + "]" * 5000, "lamp.train must be a JSON object"),
        ("lamp.train", '{"final_loss": NaN}', "lamp.train must be a JSON object"),
        ("lamp.base", '{"spec": 3}', 'lamp.base must be a JSON object {"spec"'),
        ("lamp.architecture", "", "lamp.architecture must be"),
    ],
)
def test_import_refuses_every_malformed_header_field_with_its_expected_form(tmp_path, capsys, lamp_env, field, value, words):
    path = with_metadata(tmp_path, **{field: value})
    code, out, err = run(capsys, "import", path)
    assert code == 1 and out == "" and "Traceback" not in err
    assert words in err.replace("\n", " "), err
    assert not (lamp_env / "manifests").exists() or not list((lamp_env / "manifests").iterdir())


def test_a_manifest_edited_on_disk_is_refused_on_read(capsys, lamp_env):
    reg = Registry()
    reg.publish_adapter(make_adapter("guitar"))
    reg.publish_adapter(make_adapter("rain", seed=1))
    path = reg.manifest_path("guitar")
    doc = json.loads(path.read_text())
    path.write_text(json.dumps({**doc, "frames": 10**22}))
    code, out, err = run(capsys, "list", "-q")
    assert code == 0 and out == "rain\n"  # the bad one is skipped with a warning, not printed
    assert "manifest field frames must be a whole number in 2..1024" in err
    code, _, err = run(capsys, "show", "guitar")
    assert code == 1 and "frames must be a whole number" in err and "Traceback" not in err
    path.write_text("[" * 100_000 + "]" * 100_000)  # deeper than Python's recursion limit
    with pytest.raises(RegistryError, match="nested deeper"):
        reg.manifest("guitar")


def test_motion_adapter_fields_are_checked_when_read() -> None:
    a = MotionAdapter(adapter_tensors(), {"lamp.name": "x", "lamp.size": "[80000, 8]"})
    with pytest.raises(InvalidInput, match="lamp.size must be"):
        _ = a.size


def test_the_weights_hash_has_one_definition() -> None:
    """The in-memory hash and the one computed from file bytes are the same function."""
    import io

    from lamp_cli.adapter import header_weights_sha256, weights_sha256

    data = make_adapter("guitar").to_bytes()
    header = read_header_bytes(data)
    with io.BytesIO(data) as f:
        from_file = header_weights_sha256(header, f, 8 + int.from_bytes(data[:8], "little"))
    assert from_file == weights_sha256(adapter_tensors()) == header["__metadata__"]["lamp.weights_sha256"]


def test_registry_md_documents_every_schema_field() -> None:
    from lamp_cli import schema

    doc = (REPO / "docs" / "registry.md").read_text()
    for f in schema.ADAPTER_HEADER + schema.MANIFEST:
        assert f"| `{f.key}` |" in doc, f.key
        assert f.expected.split(" (")[0][:30] in doc.replace("\\|", "|"), f.key


# --- 2. strict JSON -----------------------------------------------------------------------------


def test_json_in_and_out_is_strict(capsys) -> None:
    with pytest.raises(InvalidInput, match="losses\\[1\\] = nan is not a finite number"):
        dumps_strict({"losses": [0.5, math.nan]}, what="the report")
    with pytest.raises(InvalidInput, match="not valid JSON"):
        loads_strict('{"x": Infinity}', what="doc")
    from lamp_cli.cli.render import emit_json

    with pytest.raises(InvalidInput):
        emit_json({"score": math.inf})
    assert capsys.readouterr().out == ""  # nothing half-written on stdout


# --- 3. OS errors: one Error line naming the path and what to do --------------------------------


def test_lamp_home_that_is_a_file_is_an_error_not_an_empty_table(tmp_path, capsys, monkeypatch):
    home = tmp_path / "home-file"
    home.write_text("not a folder")
    monkeypatch.setenv("LAMP_HOME", str(home))
    for args in (["list"], ["list", "--json"], ["gc"], ["rm", "x", "--yes"], ["show", "x"]):
        code, out, err = run(capsys, *args)
        assert code == 1 and out == "", args
        assert f"LAMP_HOME {home} is not a folder" in err and "Traceback" not in err, args


def _read_only(monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
    """Make writes under `root` fail as on a read-only mount (root ignores permission bits)."""
    root_s = str(root)

    def guard(fn, writes=lambda *a: True):
        def wrapped(path, *args, **kw):
            if str(path).startswith(root_s) and writes(*args):
                raise OSError(errno.EROFS, "Read-only file system", str(path))
            return fn(path, *args, **kw)

        return wrapped

    monkeypatch.setattr(os, "open", guard(os.open, lambda flags, *a: bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))))
    for name in ("mkdir", "unlink", "rmdir", "replace", "rename", "remove"):
        monkeypatch.setattr(os, name, guard(getattr(os, name)))


def test_read_only_registry_gives_one_line_per_mutating_command(tmp_path, capsys, lamp_env, monkeypatch):
    reg = Registry()
    reg.publish_adapter(make_adapter("guitar"))
    exported = reg.export("guitar", tmp_path / "guitar.safetensors")
    before = files_under(lamp_env)
    _read_only(monkeypatch, lamp_env)
    for args in (["import", exported, "--name", "other"], ["rm", "guitar", "--yes"], ["cp", "guitar", "g2"], ["gc"]):
        code, out, err = run(capsys, *args)
        lines = err.strip().splitlines()
        assert code == 1 and len(lines) == 1, (args, err)
        assert lines[0].startswith("Error: cannot write ") and "read-only" in lines[0] and str(lamp_env) in lines[0]
        assert "LAMP_HOME" in lines[0]  # what to do
    code, out, _ = run(capsys, "list", "-q")  # reading still works
    assert code == 0 and out == "guitar\n"
    monkeypatch.undo()
    assert files_under(lamp_env) == before


@pytest.mark.parametrize(
    ("code", "words"),
    [(errno.ENOSPC, "no space left on the device"), (errno.EACCES, "permission denied"), (errno.ENOTDIR, "is a file, not a folder")],
)
def test_os_errors_become_one_line_naming_the_path(capsys, monkeypatch, code, words):
    def fail(self, prefix=None):
        raise OSError(code, os.strerror(code), "/some/where/manifests")

    monkeypatch.setattr(Registry, "list", fail)
    rc, out, err = run(capsys, "list")
    assert rc == 1 and out == "" and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and "/some/where/manifests" in lines[0], err


def write_square_clip(path: Path, num_frames: int, size: int = 32) -> Path:
    from lamp_cli.video import write_video

    frames = np.zeros((num_frames, size, size, 3), np.uint8)
    for t in range(num_frames):
        frames[t, 12:20, 3 * t % 24 : 3 * t % 24 + 8] = 255
    return write_video(frames, path, fps=8)


@pytest.mark.slow
def test_publish_on_a_full_disk_keeps_the_run_and_says_how_to_publish_it(tmp_path, capsys, lamp_env, monkeypatch, tiny_base_dir):
    clips = tmp_path / "square_moves_right"
    clips.mkdir()
    for k in range(2):
        write_square_clip(clips / f"c{k}.mp4", 6)
    real = registry_mod.atomic_write_bytes

    def full_disk(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(registry_mod, "atomic_write_bytes", full_disk)
    argv = ["train", clips, "--name", "sq", "--base", tiny_base_dir, "--steps", "2", "--frames", "4",
            "--width", "32", "--height", "32", "--seed", "3", "--checkpoint-every", "0"]
    code, out, err = run(capsys, *argv)
    flat = " ".join(err.split())
    assert code == 1 and "Traceback" not in err
    ckpt = lamp_env / "runs" / "sq" / "checkpoint.safetensors"
    assert "publishing it failed: no space left on the device" in flat
    assert f"the trained state (step 2) is saved in {ckpt}" in flat
    resume = f"lamp train {clips} --name sq --base {tiny_base_dir} --resume"
    assert resume in flat and ckpt.exists()
    assert not (lamp_env / "manifests" / "sq.json").exists()
    monkeypatch.setattr(registry_mod, "atomic_write_bytes", real)
    code, out, err = run(capsys, *resume.split()[1:], "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["resumed_from"] == 2 and doc["steps"] == 2  # published without training again
    assert Registry().get("sq").digest == doc["digest"] and not ckpt.exists()


# --- 4. hostile images and videos ---------------------------------------------------------------


def write_png_header_bomb(path: Path, width: int, height: int) -> Path:
    """A valid 1-bit PNG of width×height (all black), written row by row in small memory."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    comp = zlib.compressobj(9)
    row = b"\0" * (1 + (width + 7) // 8)
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def test_a_20000_pixel_square_png_is_refused_in_bounded_memory(tmp_path):
    bomb = write_png_header_bomb(tmp_path / "bomb.png", 20000, 20000)
    wide = write_png_header_bomb(tmp_path / "wide.png", 17000, 8)  # under Pillow's limit, over lamp's
    code = textwrap.dedent(
        f"""
        import json, resource, sys
        import PIL.Image, numpy
        from lamp_cli.errors import LampError
        from lamp_cli.video import load_image, probe_image
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out = []
        for fn in (load_image, probe_image):
            for p in ({str(bomb)!r}, {str(wide)!r}):
                try:
                    fn(p)
                    out.append("accepted")
                except LampError as e:
                    out.append(e.message)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({{"messages": out, "grew_kb": after - before}}))
        """
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
    doc = json.loads(p.stdout)
    assert doc["grew_kb"] < 64 * 1024, doc  # 20000² pixels would need 400 MB (1.2 GB as RGB)
    bomb_msg, wide_msg = doc["messages"][0], doc["messages"][1]
    assert "bomb.png is 20000x20000 pixels, too large to read (lamp reads sides up to 16384 px" in bomb_msg
    assert "is 17000x8 pixels, too large to read (lamp reads sides up to 16384 px" in wide_msg
    assert doc["messages"][2:] == doc["messages"][:2]


def test_large_frames_are_resized_while_decoding(tmp_path, monkeypatch):
    from lamp_cli import video

    clip = write_square_clip(tmp_path / "big.mp4", 6, size=96)
    one_full_frame = 96 * 96 * 3
    monkeypatch.setattr(video, "MAX_CLIP_BYTES", 3 * one_full_frame)  # less than the clip at full size
    small = video.read_video(clip, size=(32, 32))  # each frame shrinks before the next is decoded
    assert small.frames.shape == (6, 32, 32, 3)
    with pytest.raises(InvalidInput, match="frames need more than .* decoded") as e:
        video.read_video(clip)
    assert "ffmpeg -i IN -t 10 OUT" in e.value.hint
    monkeypatch.setattr(video, "MAX_CLIP_BYTES", 1 << 30)
    whole = video.read_video(clip)
    assert np.array_equal(small.frames, video.resize_center_crop(whole.frames, 32, 32))


# --- 5. settings and environment ----------------------------------------------------------------


def test_non_utf8_config_is_a_clean_error(tmp_path, capsys, monkeypatch):
    cfg = tmp_path / "config.toml"
    cfg.write_bytes(b'base = "caf\xe9"\n')
    monkeypatch.setenv("LAMP_CONFIG", str(cfg))
    from lamp_cli import settings

    with pytest.raises(InvalidInput, match=f"cannot read config file {cfg}: it is not UTF-8 text"):
        settings.load_config()
    code, out, err = run(capsys, "doctor")  # doctor reports it among the settings
    assert code == 0 and "it is not UTF-8 text" in out and "Traceback" not in err


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "soon", "1e400"])
def test_lock_timeout_must_be_a_finite_number_of_seconds(capsys, monkeypatch, value):
    monkeypatch.setenv("LAMP_LOCK_TIMEOUT", value)
    code, out, err = run(capsys, "gc")
    assert code == 1 and f"LAMP_LOCK_TIMEOUT must be a number of seconds in 0..604800, got {value}" in err


@pytest.mark.parametrize(("key", "value"), [("LAMP_GUIDANCE", "nan"), ("LAMP_SHARED_NOISE", "inf"), ("LAMP_STEPS", "1e3")])
def test_non_finite_or_non_integer_settings_are_refused(monkeypatch, key, value):
    from lamp_cli import settings

    monkeypatch.setenv(key, value)
    with pytest.raises(InvalidInput, match=f"from {key} must be a"):
        settings.get(key.removeprefix("LAMP_").lower())


# --- 6. official checkpoints --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("down_block_types", 3, "down_block_types must be a list of 1-8 block names"),
        ("up_block_types", [{"a": 1}], "up_block_types must be a list of 1-8 block names"),
        ("block_out_channels", ["320"], "block_out_channels must be a list of 1-8 whole numbers"),
        ("layers_per_block", True, "layers_per_block must be a whole number"),
    ],
)
def test_official_config_fields_of_the_wrong_json_type_are_clean_errors(field, value, words):
    from lamp_cli.official import check_config

    config = {
        "_class_name": "UNet3DConditionModel", "block_out_channels": [32, 64], "layers_per_block": 1,
        "cross_attention_dim": 32, "down_block_types": ["CrossAttnDownBlock3D", "DownBlock3D"],
        "up_block_types": ["UpBlock3D", "CrossAttnUpBlock3D"],
    }
    check_config(config)
    with pytest.raises(InvalidInput, match=words):
        check_config({**config, field: value})


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize("torch_scanner", [True, False])
def test_a_code_running_pickle_is_refused_naming_the_global(tmp_path, monkeypatch, capfd, torch_scanner):
    from lamp_cli.official import load_state_dict

    if not torch_scanner:  # older torch: lamp reads the pickle's opcodes itself
        monkeypatch.delattr(torch.serialization, "get_unsafe_globals_in_checkpoint", raising=False)
    zipped = tmp_path / "a.bin"
    torch.save({"x": torch.zeros(1), "evil": _RunsCode()}, zipped)
    import pickle

    legacy = tmp_path / "b.bin"
    legacy.write_bytes(pickle.dumps({"evil": _RunsCode()}, protocol=4))
    for f in (zipped, legacy):
        with pytest.raises(InvalidInput, match=r"would import (posix|nt)\.system, which is not a tensor"):
            load_state_dict(f)
    assert "pwned" not in capfd.readouterr().out


# --- 7. leftovers -------------------------------------------------------------------------------


def test_gc_removes_stale_run_temporaries_and_empty_run_folders_but_not_live_ones(capsys, lamp_env):
    runs = lamp_env / "runs"
    old = time.time() - 3600
    stale = runs / "killed" / ".tmp-checkpoint.safetensors.999999999.abc"  # no such pid
    fresh = runs / "busy" / ".tmp-checkpoint.safetensors.999999999.def"  # just written
    live = runs / "alive" / f".tmp-checkpoint.safetensors.{os.getpid()}.ghi"  # its writer runs
    for p in (stale, fresh, live):
        p.parent.mkdir(parents=True)
        p.write_bytes(b"x" * 10)
    os.utime(stale, (old, old))
    os.utime(live, (old, old))
    empty = runs / "finished"
    empty.mkdir()
    for d in (stale.parent, empty, live.parent):
        os.utime(d, (old, old))
    doc = json.loads(run(capsys, "gc", "--json")[1])
    assert doc["removed_temp"] == [str(stale)]
    assert sorted(doc["removed_runs"]) == sorted([str(stale.parent), str(empty)])
    assert not stale.parent.exists() and not empty.exists()
    assert fresh.exists() and live.exists()


# --- 8. messages that do not mislead ------------------------------------------------------------


def test_a_one_frame_clip_does_not_suggest_frames_1(tmp_path):
    from lamp_cli.train import check_clips

    folder = tmp_path / "clips"
    folder.mkdir()
    write_square_clip(folder / "still.gif", 1)
    with pytest.raises(InvalidInput) as e:
        check_clips(folder, 4, 1)
    assert "--frames 1" not in (e.value.hint or "") and "at least 2 frames" in e.value.hint
    write_square_clip(folder / "still.gif", 3)
    with pytest.raises(InvalidInput) as e:
        check_clips(folder, 2, 3)  # only a smaller stride fits
    assert "--stride 1" in e.value.hint


def test_output_into_a_missing_folder_is_created_and_said(tmp_path, capsys, lamp_env):
    Registry().publish_adapter(make_adapter("guitar"))
    dest = tmp_path / "new" / "deeper" / "g.safetensors"
    code, out, err = run(capsys, "export", "guitar", "-o", dest)
    assert code == 0 and dest.exists()
    assert f"created folder {tmp_path / 'new'} (and {dest.parent})" in " ".join(err.split())
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, out, err = run(capsys, "export", "guitar", "-o", blocker / "g.safetensors")
    assert code == 1 and "Traceback" not in err and str(blocker) in err


# --- first contact ------------------------------------------------------------------------------


def test_plain_progress_prints_at_least_every_30_seconds_with_step_loss_rate_and_eta():
    from lamp_cli.progress import PLAIN_INTERVAL_S, PlainReporter

    now = [1000.0]
    lines: list[tuple[float, str]] = []
    rep = PlainReporter(lambda line: lines.append((now[0], line)), clock=lambda: now[0])
    rep.start("train", 40)
    for k in range(40):
        now[0] += 7.0  # 7 s per step: a 280 s run
        rep.advance(1, step=f"{k + 1}/40", loss=0.25)
    rep.finish()
    times = [t for t, _ in lines]
    assert lines[0][1] == "train: started (40 steps)" and "done 40/40" in lines[-1][1]
    assert all(b - a <= PLAIN_INTERVAL_S + 7.0 for a, b in zip(times, times[1:], strict=False))
    assert 8 <= len(lines) <= 12  # ~every 30 s over 280 s, not every step
    middle = lines[1][1]
    assert middle.startswith("train: 5/40") and "step 5/40" in middle and "loss 0.25" in middle
    assert "0.14 it/s" in middle and "ETA 4m05s" in middle


def test_rich_reporter_switches_to_plain_lines_off_a_terminal(capsys):
    from lamp_cli.cli.render import RichReporter

    rep = RichReporter()
    rep.start("sample", 3)
    rep.advance(1)
    rep.finish()
    err = capsys.readouterr().err
    assert "sample: started (3 steps)" in err and "sample: done 1/3" in err


def test_empty_list_says_how_to_get_a_first_motion(capsys):
    code, out, err = run(capsys, "list")
    assert code == 0 and out == ""
    assert "No motions yet" in err and "lamp demo --keep" in err and "lamp train CLIPS --name NAME" in err


# --- the last line of defence -------------------------------------------------------------------


def test_an_unexpected_exception_is_one_error_with_the_debug_command(capsys, monkeypatch):
    def broken(self, prefix=None):
        return 1 / 0

    monkeypatch.setattr(Registry, "list", broken)
    code, out, err = run(capsys, "list", "--json")
    assert code == 1 and out == "" and "Traceback" not in err
    assert err.startswith("Error: internal error: ZeroDivisionError: division by zero")
    assert "LAMP_DEBUG=1 lamp" in err
    # the same through Typer's test runner, which calls the app without lamp's main()
    from typer.testing import CliRunner

    from lamp_cli.cli.app import app

    result = CliRunner().invoke(app, ["list"])
    assert result.exit_code == 1 and "internal error: ZeroDivisionError" in result.output
    assert "Traceback" not in result.output and not isinstance(result.exception, ZeroDivisionError)
    monkeypatch.setenv("LAMP_DEBUG", "1")
    with pytest.raises(ZeroDivisionError):
        main(["list"])


def test_no_traceback_reaches_a_user_of_the_console_script(tmp_path):
    code = textwrap.dedent(
        """
        import sys
        from lamp_cli.registry import Registry
        def broken(self, name):
            raise KeyError("oops")
        Registry.show = broken
        from lamp_cli.cli.app import main
        sys.argv = ["lamp", "show", "guitar"]
        main(sys.argv[1:])
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "LAMP_HOME": str(tmp_path / "h")}
    env.pop("LAMP_DEBUG", None)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert p.stderr.startswith("Error: internal error: KeyError: 'oops'") and "LAMP_DEBUG=1 lamp show guitar" in p.stderr
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       env={**env, "LAMP_DEBUG": "1"})
    assert p.returncode == 1 and "Traceback" in p.stderr and "KeyError" in p.stderr


def test_every_lamp_error_is_a_lamp_error():
    """The OS-error translation yields LampErrors with exit code 1 for any errno."""
    from lamp_cli.errors import from_os_error

    for code in range(1, 134):
        e = from_os_error(OSError(code, os.strerror(code), "/x/y"))
        assert isinstance(e, LampError) and e.exit_code == 1 and "\n" not in e.message
