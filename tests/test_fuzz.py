"""Property tests (hypothesis) over everything lamp reads from a file or the environment.

The property, everywhere: a bad input ends in a `LampError` (a clean message, exit 1), never in
another exception type, and nothing is written to the registry. Examples are derandomised (the
same inputs on every run, so CI is deterministic) and few enough to run in about half a minute.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from lamp_cli import schema
from lamp_cli.adapter import check_adapter_bytes, encode_header, read_header_bytes
from lamp_cli.errors import LampError
from lamp_cli.registry import Registry
from tests.test_registry import files_under, make_adapter

FUZZ = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)

VALID = make_adapter("guitar").to_bytes()
VALID_HEADER = read_header_bytes(VALID)
DATA_START = 8 + int.from_bytes(VALID[:8], "little")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def as_field_text(value: Any) -> str:
    """How a hostile header field may look: JSON (even non-standard NaN), or any text."""
    return json.dumps(value) if not isinstance(value, str) else value


@contextmanager
def fresh_registry() -> Iterator[Registry]:
    root = Path(tempfile.mkdtemp(prefix="lamp-fuzz-"))
    try:
        yield Registry(root / "home")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def only_lamp_errors(fn, *args: Any, **kw: Any) -> Any:
    try:
        return fn(*args, **kw)
    except LampError as e:
        assert isinstance(e.message, str) and e.message.strip(), e
        return e


# --- adapter headers ----------------------------------------------------------------------------

header_field = st.sampled_from([f.key for f in schema.ADAPTER_HEADER] + ["lamp.extra", "other"])
DEEP = "[" * 3000 + "]" * 3000  # deeper than Python's recursion limit
field_value = st.one_of(
    st.sampled_from(["[64, 40]", "[0, 0]", "[63, 65]", "1" * 23, "16", "-3", DEEP, '{"a": ' * 2000, '{"spec": "x"}', ""]),
    json_values.map(as_field_text),
)


@FUZZ
@given(changes=st.dictionaries(header_field, field_value, min_size=1, max_size=4), drop=st.sets(header_field, max_size=2))
@example(changes={"lamp.size": DEEP}, drop=set())
@example(changes={"lamp.train": '{"a": ' * 2000}, drop=set())
@example(changes={"lamp.frames": "1" * 23}, drop=set())
def test_adapter_header_fields(changes: dict[str, str], drop: set[str]) -> None:
    md = {k: v for k, v in {**VALID_HEADER["__metadata__"], **changes}.items() if k not in drop}
    data = encode_header({**VALID_HEADER, "__metadata__": md}) + VALID[DATA_START:]
    with fresh_registry() as reg:
        result = only_lamp_errors(reg.publish_bytes, data, name="guitar")
        if isinstance(result, LampError):
            assert files_under(reg.root) == [] if reg.root.exists() else True
        else:  # accepted: every stored field is in its schema
            schema.check_fields(schema.MANIFEST, result.to_dict(), what="m", kind="manifest field")
            assert reg.show("guitar")["adapter"]["size"] == [result.width, result.height]


@FUZZ
@given(data=st.binary(max_size=300), prefix=st.booleans())
def test_adapter_file_random_bytes(data: bytes, prefix: bool) -> None:
    blob = (len(data).to_bytes(8, "little") + data) if prefix else data
    assert isinstance(only_lamp_errors(check_adapter_bytes, blob), (LampError, tuple))
    with fresh_registry() as reg:
        path = reg.root.parent / "x.safetensors"
        path.write_bytes(blob)
        assert isinstance(only_lamp_errors(reg.import_file, path, name="x"), LampError)
        assert not (reg.root / "manifests").exists() or files_under(reg.root) == []


@FUZZ
@given(header=json_values)
def test_adapter_header_json_of_any_shape(header: Any) -> None:
    raw = json.dumps(header).encode()
    blob = len(raw).to_bytes(8, "little") + raw
    assert isinstance(only_lamp_errors(check_adapter_bytes, blob), LampError)


# --- manifests ----------------------------------------------------------------------------------


manifest_field = st.sampled_from([f.key for f in schema.MANIFEST])


@FUZZ
@given(
    changes=st.dictionaries(manifest_field, json_values, max_size=4),
    raw=st.none() | st.sampled_from([DEEP.encode(), b'{"a": ' * 2000, b"\xff\xfe", b"NaN"]) | st.binary(max_size=200),
)
def test_manifest_documents(changes: dict[str, Any], raw: bytes | None) -> None:
    with fresh_registry() as reg:
        m = reg.publish_adapter(make_adapter("guitar"))
        path = reg.manifest_path("guitar")
        if raw is None:
            path.write_text(json.dumps({**m.to_dict(), **changes}))
        else:
            path.write_bytes(raw)
        before = files_under(reg.root)
        for call in (lambda: reg.manifest("guitar"), lambda: reg.show("guitar"), reg.list, reg.verify):
            only_lamp_errors(call)
        assert files_under(reg.root) == before


# --- official configs ---------------------------------------------------------------------------


official_field = st.sampled_from([f.key for f in schema.OFFICIAL_CONFIG])
GOOD_CONFIG = {
    "_class_name": "UNet3DConditionModel", "block_out_channels": [32, 64], "layers_per_block": 1,
    "cross_attention_dim": 32, "down_block_types": ["CrossAttnDownBlock3D", "DownBlock3D"],
    "up_block_types": ["UpBlock3D", "CrossAttnUpBlock3D"],
}


@FUZZ
@given(changes=st.dictionaries(official_field, json_values, max_size=4))
def test_official_config(changes: dict[str, Any]) -> None:
    from lamp_cli.official import check_config, locate

    only_lamp_errors(check_config, {**GOOD_CONFIG, **changes})
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "unet"
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({**GOOD_CONFIG, **changes}))
        (folder / "diffusion_pytorch_model.bin").write_bytes(b"")
        only_lamp_errors(locate, folder)


# --- names --------------------------------------------------------------------------------------


@FUZZ
@given(name=st.text(max_size=80))
def test_names(name: str) -> None:
    result = only_lamp_errors(schema.validate_name, name)
    if not isinstance(result, LampError):
        assert result == name and "/" not in name and ".." not in name[:2] and len(name) <= 64


# --- settings from file and environment ---------------------------------------------------------


@FUZZ
@given(
    key=st.sampled_from(["frames", "width", "steps", "guidance", "shared_noise", "lr", "fps", "base"]),
    env=st.text(max_size=12),
    toml=st.binary(max_size=60) | st.text(max_size=60).map(str.encode),
)
def test_settings_values(key: str, env: str, toml: bytes) -> None:
    from lamp_cli import settings as settings_mod

    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "config.toml"
        cfg.write_bytes(toml)
        old = {k: os.environ.get(k) for k in ("LAMP_CONFIG", f"LAMP_{key.upper()}", "LAMP_LOCK_TIMEOUT")}
        try:
            os.environ["LAMP_CONFIG"] = str(cfg)
            only_lamp_errors(settings_mod.get, key)  # from the file
            if "\x00" not in env:
                os.environ[f"LAMP_{key.upper()}"] = env
                os.environ["LAMP_LOCK_TIMEOUT"] = env
                value = only_lamp_errors(settings_mod.get, key)  # from the environment
                if isinstance(value, float):
                    assert value == value and abs(value) != float("inf")
                only_lamp_errors(settings_mod.lock_timeout)
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


# --- images and videos --------------------------------------------------------------------------


PNG_SIG = b"\x89PNG\r\n\x1a\n"
GIF_SIG = b"GIF89a"


@FUZZ
@given(
    body=st.binary(max_size=200),
    kind=st.sampled_from([(".png", PNG_SIG), (".png", b""), (".gif", GIF_SIG), (".jpg", b"\xff\xd8\xff"), (".gif", b"")]),
)
def test_image_and_gif_probing_of_random_bytes(body: bytes, kind: tuple[str, bytes]) -> None:
    from lamp_cli.video import load_image, probe_image, probe_video, read_video

    suffix, sig = kind
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"x{suffix}"
        path.write_bytes(sig + body)
        only_lamp_errors(probe_image, path)
        only_lamp_errors(load_image, path)
        if suffix == ".gif":
            only_lamp_errors(probe_video, path)
            only_lamp_errors(read_video, path, size=(16, 16))


@settings(FUZZ, max_examples=8)
@given(body=st.binary(max_size=400), suffix=st.sampled_from([".mp4", ".webm"]))
def test_video_probing_of_random_bytes(body: bytes, suffix: str) -> None:
    """ffmpeg is a subprocess per call: fewer examples."""
    from lamp_cli.video import probe_video, read_video

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"x{suffix}"
        path.write_bytes(body)
        assert isinstance(only_lamp_errors(probe_video, path), LampError)
        assert isinstance(only_lamp_errors(read_video, path), LampError)


@pytest.mark.parametrize("cmd", [["import"], ["show"], ["list"], ["verify"]])
def test_cli_exit_codes_on_a_hostile_registry(cmd, capsys, lamp_env, tmp_path) -> None:
    """A registry full of junk gives exit 0 or 1 with Error lines, never a traceback."""
    from lamp_cli.cli.app import main

    reg = Registry()
    reg.publish_adapter(make_adapter("guitar"))
    reg.manifest_path("guitar").write_text('{"name": "guitar", "frames": NaN}')
    (lamp_env / "manifests" / "deep.json").write_text("[" * 50_000)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\xff" * 64)
    args = {"import": ["import", str(junk)], "show": ["show", "guitar"], "list": ["list"], "verify": ["verify"]}[cmd[0]]
    with pytest.raises(SystemExit) as e:
        main(args)
    err = capsys.readouterr().err
    assert e.value.code in (0, 1) and "Traceback" not in err and "internal error" not in err
