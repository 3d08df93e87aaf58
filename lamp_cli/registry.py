"""The motion registry: named manifests pointing at immutable, content-addressed adapter blobs.

Layout under the root (`LAMP_HOME`, DESIGN §5):

    manifests/<name>.json                  one small JSON document per name
    blobs/sha256-<hex>.safetensors         the adapter file; <hex> is the sha256 of its bytes
    edits/<name>/                          `lamp edit`'s cache of a tuned motion (lamp_cli/edit.py);
                                           removed with the name, and by gc once the name is gone
    .lock                                  the one lock every mutation holds

Guarantees:
- Every file is written to a process-unique temp file in its folder, fsynced and renamed
  (`lamp_cli.fsutil`), blob first, manifest last: a crash leaves the registry as it was, plus at
  most a temp file or an unreferenced blob that `gc` removes.
- Mutations (publish, import, copy, remove, gc) hold one `filelock` lock with a timeout; reads are
  lock-free (a manifest is replaced atomically, and a blob never changes once written).
- `get` and `load_adapter` rehash the blob; a damaged one is refused, `verify` lists them all.
- Everything stored passes the same header checks as `import` (`check_adapter_tensors`), so
  whatever `export` writes can be imported again.

This module does not import torch at import time: `lamp list` must stay fast.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import io
import json
import logging
import math
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from .adapter import DELTA_SUFFIX, FORMAT_VERSION, REQUIRED_METADATA, read_header, read_header_bytes
from .compress import check_factor_values, factor_plan
from .errors import InvalidInput, LampError, MotionNotFound, NameTaken, NotFound, RegistryError
from .fsutil import TMP_PREFIX, atomic_write_bytes, atomic_write_text, atomic_writer

log = logging.getLogger("lamp")

SCHEMA_VERSION = 1
DEFAULT_LOCK_TIMEOUT = 60.0  # seconds; `LAMP_LOCK_TIMEOUT` overrides
STALE_TMP_SECONDS = 60.0  # gc leaves younger temp files alone: a writer may still be using them
_CHUNK = 1 << 20

NAME_RULE = "1-64 characters: lowercase letters, digits, '.', '_' or '-', starting with a letter or digit"
_NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


def validate_name(name: str) -> str:
    """Return `name` if it is a valid motion name, else raise InvalidInput saying the rule.

    Names are file names inside the registry, never paths: `../x`, `a/b`, `Guitar` are refused.
    """
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        shown = repr(name) if isinstance(name, str) else type(name).__name__
        why = ""
        if isinstance(name, str):
            if not name:
                why = " (it is empty)"
            elif len(name) > 64:
                why = f" (it has {len(name)} characters)"
            elif "/" in name or "\\" in name:
                why = " (names are not paths)"
            elif name != name.lower():
                why = " (uppercase letters)"
        raise InvalidInput(
            f"invalid motion name {shown}{why}: a name is {NAME_RULE}", hint="e.g. guitar, rain-v2, walk_0.3"
        )
    return name


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# --- adapter header checks (no torch) --------------------------------------------------------

# safetensors dtype code -> (torch dtype name used by adapter.weights_sha256, bytes per element)
_DTYPES = {"F16": ("torch.float16", 2), "BF16": ("torch.bfloat16", 2), "F32": ("torch.float32", 4)}
_DTYPE_NAMES = {"F16": "float16", "BF16": "bfloat16", "F32": "float32"}
# Channel counts where an SD-1.x UNet has motion layers: conv_out (4) and the three block widths.
_SD1_CONV_CHANNELS = {4, 320, 640, 1280}
_SD1_ATTN_CHANNELS = {320, 640, 1280}
_KEY_RE = re.compile(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)+")
MAX_TENSORS = 100_000


@dataclass
class HeaderSummary:
    """What an adapter header says about its tensors (computed without loading them)."""

    tensors: int
    parameters: int
    nbytes: int
    dtype: str  # "float16", or "mixed(float16,float32)"
    groups: dict[str, int]  # conv1d / conv_gate / attn_temp / norm_temp / delta -> tensor count


def _shape_of(key: str, info: dict[str, Any], what: str) -> list[int]:
    shape = info.get("shape")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise InvalidInput(f"{what}: tensor '{key}' has a malformed shape {shape!r}")
    return shape


def _check_role(key: str, shape: list[int], what: str) -> tuple[str, int | None]:
    """Which motion-layer tensor `key` is, and its channel count; InvalidInput if implausible."""

    def bad(expected: str) -> InvalidInput:
        return InvalidInput(f"{what}: tensor '{key}' has shape {shape}, expected {expected}")

    if key.endswith(DELTA_SUFFIX):
        if not 1 <= len(shape) <= 4:
            raise bad("a weight delta of rank 1 to 4")
        return "delta", None
    parts = key.split(".")
    param = parts[-1]
    if param not in ("weight", "bias"):
        raise InvalidInput(f"{what}: unexpected tensor '{key}' (not a weight or bias)")
    if parts[-2] == "conv1d":
        # Conv1d(C, C, 3): dense channel mixing over frames (DESIGN §3)
        if param == "weight" and not (len(shape) == 3 and shape[0] == shape[1] and shape[2] == 3):
            raise bad("C×C×3 (a kernel-3 conv over frames)")
        if param == "bias" and len(shape) != 1:
            raise bad("C")
        return "conv1d", shape[0]
    if parts[-2] == "conv_gate":
        # Conv2d(C, 1, 3×3): one gate value per pixel and frame
        if param == "weight" and not (len(shape) == 4 and shape[0] == 1 and shape[2:] == [3, 3]):
            raise bad("1×C×3×3 (a 3×3 conv to one channel)")
        if param == "bias" and shape != [1]:
            raise bad("[1]")
        return "conv_gate", shape[1] if param == "weight" else None
    if "attn_temp" in parts[:-1]:
        if param == "weight" and len(shape) != 2:
            raise bad("a 2-D projection weight")
        if param == "bias" and len(shape) != 1:
            raise bad("a 1-D bias")
        return "attn_temp", shape[-1]
    if parts[-2] == "norm_temp":
        if len(shape) != 1:
            raise bad("C (a LayerNorm parameter)")
        return "norm_temp", shape[0]
    raise InvalidInput(
        f"{what}: unexpected tensor '{key}'",
        hint="a motion adapter holds only conv1d, conv_gate, attn_temp, norm_temp tensors and `.delta` weights",
    )


def check_adapter_tensors(header: dict[str, Any], *, what: str = "file") -> HeaderSummary:
    """Check, from a parsed safetensors header alone, that its tensors are plausible for a lamp
    motion adapter of its declared architecture; raise InvalidInput naming the first problem.
    """
    md = header.get("__metadata__") or {}
    arch = md.get("lamp.architecture", "")
    entries = [(k, v) for k, v in header.items() if k != "__metadata__"]
    if not entries:
        raise InvalidInput(f"{what} holds no tensors")
    if len(entries) > MAX_TENSORS:
        raise InvalidInput(f"{what} holds {len(entries)} tensors, more than any adapter ({MAX_TENSORS})")
    plan = factor_plan(header, what=what)  # low-rank factors -> the dense key and shape they stand for
    spans: list[tuple[int, int, str]] = []
    groups: dict[str, int] = {}
    dtypes: set[str] = set()
    params = nbytes = 0
    channels: dict[str, int] = {}  # parent module -> C, so conv1d and conv_gate of one site agree
    for key, info in entries:
        if len(key) > 512 or not _KEY_RE.fullmatch(key):
            raise InvalidInput(f"{what}: tensor name {key[:80]!r} is not a module path")
        dtype = info.get("dtype")
        if dtype not in _DTYPES:
            raise InvalidInput(f"{what}: tensor '{key}' has dtype {dtype!r}; adapters use F16, BF16 or F32")
        shape = _shape_of(key, info, what)
        offsets = info.get("data_offsets")
        if not (
            isinstance(offsets, list)
            and len(offsets) == 2
            and all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
            and 0 <= offsets[0] <= offsets[1]
        ):
            raise InvalidInput(f"{what}: tensor '{key}' has malformed data_offsets {offsets!r}")
        numel = math.prod(shape)
        size = numel * _DTYPES[dtype][1]
        if offsets[1] - offsets[0] != size:
            raise InvalidInput(
                f"{what}: tensor '{key}' claims {offsets[1] - offsets[0]} bytes, its shape needs {size}"
            )
        target, target_shape = plan.get(key, (key, shape))  # a factor's dense tensor
        role, c = _check_role(target, target_shape, what)
        if role in ("conv1d", "conv_gate") and c is not None:
            parent = target.rsplit(".", 2)[0]
            if channels.setdefault(parent, c) != c:
                raise InvalidInput(
                    f"{what}: conv1d and conv_gate of '{parent}' disagree on channels ({channels[parent]} vs {c})"
                )
        if arch == "sd1-unet" and c is not None:
            allowed = _SD1_CONV_CHANNELS if role in ("conv1d", "conv_gate") else _SD1_ATTN_CHANNELS
            if c not in allowed:
                raise InvalidInput(
                    f"{what}: tensor '{key}' has {c} channels, which an sd1-unet motion layer never has",
                    hint="the file's lamp.architecture does not match its tensors",
                )
        groups[role] = groups.get(role, 0) + 1
        dtypes.add(dtype)
        params += numel
        nbytes += size
        spans.append((offsets[0], offsets[1], key))
    # safetensors packs tensors back to back with no gaps or overlaps
    spans.sort()
    pos = 0
    for start, stop, key in spans:
        if start != pos:
            raise InvalidInput(
                f"{what}: tensor '{key}' starts at byte {start} of the data, expected {pos} (gap or overlap)"
            )
        pos = stop
    names = sorted(_DTYPE_NAMES[d] for d in dtypes)
    dtype_desc = names[0] if len(names) == 1 else f"mixed({','.join(names)})"
    return HeaderSummary(
        tensors=len(entries), parameters=params, nbytes=nbytes, dtype=dtype_desc, groups=groups
    )


_IMPORT_HINT = "`lamp import` takes a motion adapter written by `lamp export` or `lamp train` (.safetensors)"


def check_adapter_metadata(md: dict[str, str], *, what: str = "file") -> None:
    """The `lamp.*` header fields are present and well-formed; InvalidInput naming what is not."""
    missing = [k for k in REQUIRED_METADATA if k not in md]
    if missing:
        if not any(k.startswith("lamp.") for k in md):
            raise InvalidInput(
                f"{what} is a safetensors file but not a lamp motion adapter (no lamp.* header fields)",
                hint="an official LAMP checkpoint is imported with `lamp import --official PATH --name NAME`",
            )
        raise InvalidInput(f"{what} lacks the adapter header field(s): {', '.join(missing)}")
    if md["lamp.format_version"] != FORMAT_VERSION:
        raise InvalidInput(
            f"{what} has adapter format version {md['lamp.format_version']!r}; this lamp reads version {FORMAT_VERSION}",
            hint="upgrade lamp (`pip install -U lamp-cli`)",
        )

    def parse(key: str, kind: type) -> Any:
        try:
            value = json.loads(md[key])
        except json.JSONDecodeError as e:
            raise InvalidInput(f"{what}: header field {key} is not valid JSON ({e})") from e
        if not isinstance(value, kind):
            raise InvalidInput(f"{what}: header field {key} must be a JSON {kind.__name__}")
        return value

    base = parse("lamp.base", dict)
    if not isinstance(base.get("spec"), str):
        raise InvalidInput(f"{what}: header field lamp.base lacks the base model's 'spec'")
    size = parse("lamp.size", list)
    if len(size) != 2 or not all(isinstance(v, int) and v > 0 for v in size):
        raise InvalidInput(f"{what}: header field lamp.size must be [width, height], got {md['lamp.size']}")
    parse("lamp.train", dict)
    if not md["lamp.frames"].isdigit() or int(md["lamp.frames"]) < 1:
        raise InvalidInput(
            f"{what}: header field lamp.frames must be a positive integer, got {md['lamp.frames']!r}"
        )
    if not md["lamp.architecture"]:
        raise InvalidInput(f"{what}: header field lamp.architecture is empty")
    if not re.fullmatch(r"[0-9a-f]{64}", md["lamp.weights_sha256"]):
        raise InvalidInput(f"{what}: header field lamp.weights_sha256 is not a sha256 hex digest")


def header_weights_sha256(header: dict[str, Any], f: BinaryIO, data_start: int) -> str:
    """`adapter.weights_sha256` computed from the file, without torch (names, dtypes, shapes, bytes)."""
    h = hashlib.sha256()
    for key in sorted(k for k in header if k != "__metadata__"):
        info = header[key]
        h.update(key.encode())
        h.update(_DTYPES[info["dtype"]][0].encode())
        h.update(json.dumps(list(info["shape"])).encode())
        start, stop = info["data_offsets"]
        f.seek(data_start + start)
        left = stop - start
        while left:
            chunk = f.read(min(left, _CHUNK))
            if not chunk:
                raise InvalidInput(f"{getattr(f, 'name', 'file')} is truncated inside tensor '{key}'")
            h.update(chunk)
            left -= len(chunk)
    return h.hexdigest()


def check_adapter_file(path: Path) -> tuple[dict[str, Any], HeaderSummary, int]:
    """Every check `import` makes on a file, reading only its header and tensor bytes.

    Returns (header, summary, offset of the tensor data); InvalidInput names the first problem.
    """
    what = str(path)
    try:
        header = read_header(path)
        md = header["__metadata__"]
        check_adapter_metadata(md, what=what)
        summary = check_adapter_tensors(header, what=what)
        total = path.stat().st_size
        with path.open("rb") as f:
            data_start = 8 + int.from_bytes(f.read(8), "little")
            if data_start + summary.nbytes != total:
                raise InvalidInput(
                    f"{what} has {total - data_start - summary.nbytes} unexpected trailing bytes after its tensors"
                )
            if header_weights_sha256(header, f, data_start) != md["lamp.weights_sha256"]:
                raise InvalidInput(
                    f"{what}: the tensor data does not match its lamp.weights_sha256 (the file is damaged or was edited)"
                )
            check_factor_values(header, f, data_start, what=what)
    except InvalidInput as e:
        raise InvalidInput(e.message, hint=e.hint or _IMPORT_HINT) from e
    return header, summary, data_start


def encode_header(header: dict[str, Any]) -> bytes:
    """The 8-byte length + JSON header of a safetensors file, space-padded to 8-byte alignment."""
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    return len(raw).to_bytes(8, "little") + raw


def summarize_header(header: dict[str, Any]) -> dict[str, Any]:
    """A JSON-able summary of an adapter header for `lamp show`: tensors, params, dtype, config."""
    md = header.get("__metadata__") or {}
    s = check_adapter_tensors(header)

    def js(key: str, default: Any) -> Any:
        try:
            return json.loads(md[key])
        except (KeyError, json.JSONDecodeError):
            return default

    return {
        "tensors": s.tensors,
        "parameters": s.parameters,
        "nbytes": s.nbytes,
        "dtype": s.dtype,
        "groups": s.groups,
        "name": md.get("lamp.name", ""),
        "architecture": md.get("lamp.architecture", ""),
        "base": js("lamp.base", {}),
        "frames": int(md.get("lamp.frames", "0") or 0),
        "size": js("lamp.size", []),
        "train": js("lamp.train", {}),
        "created": md.get("lamp.created", ""),
        "lamp_version": md.get("lamp.version", ""),
        "format_version": md.get("lamp.format_version", ""),
        "weights_sha256": md.get("lamp.weights_sha256", ""),
        "extra": {k: v for k, v in md.items() if k.startswith("lamp.") and k not in REQUIRED_METADATA},
    }


# --- manifests ---------------------------------------------------------------------------------


@dataclass
class Manifest:
    """One name in the registry. `digest` is `sha256:<hex>` of the blob's bytes."""

    name: str
    digest: str
    size: int
    created: str
    base: dict[str, Any]  # {"spec": ..., "fingerprint": ...}
    frames: int
    width: int
    height: int
    steps: int | None
    prompt: str | None
    source: str | None
    blob_path: Path
    architecture: str = ""
    weights_sha256: str = ""
    tensors: int = 0
    parameters: int = 0
    dtype: str = ""
    schema_version: int = SCHEMA_VERSION
    extra: dict[str, Any] = field(default_factory=dict)  # unknown keys of newer schema versions

    @property
    def hexdigest(self) -> str:
        return self.digest.split(":", 1)[-1]

    @property
    def id(self) -> str:
        """The short id shown by `lamp list`: the digest's first 12 hex digits."""
        return self.hexdigest[:12]

    def to_dict(self) -> dict[str, Any]:
        """The manifest document as stored (no blob_path: it follows from the digest)."""
        d = asdict(self)
        d.pop("blob_path")
        extra = d.pop("extra")
        return {**extra, **d}

    def to_json(self) -> dict[str, Any]:
        """The stable `--json` view: the stored fields plus id and blob path."""
        return {**self.to_dict(), "id": self.id, "blob_path": str(self.blob_path)}

    @classmethod
    def from_dict(cls, d: dict[str, Any], blob_path: Path) -> Manifest:
        known = {f for f in cls.__dataclass_fields__ if f not in ("blob_path", "extra")}
        return cls(
            **{k: d[k] for k in known if k in d},
            blob_path=blob_path,
            extra={k: v for k, v in d.items() if k not in known},
        )


@dataclass
class Problem:
    """One thing `verify` found wrong."""

    name: str  # the motion (or file) concerned
    problem: str
    path: str

    def to_json(self) -> dict[str, str]:
        return asdict(self)


@dataclass
class GcReport:
    removed_temp: list[str] = field(default_factory=list)
    removed_blobs: list[str] = field(default_factory=list)
    removed_edits: list[str] = field(default_factory=list)  # edits/<name>/ folders of gone motions
    freed_bytes: int = 0
    dry_run: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RemoveResult:
    name: str
    digest: str | None  # None when the manifest was unreadable
    removed_blob: bool
    freed_bytes: int
    removed_edits: bool = False  # whether `edits/<name>/` (lamp edit's cache) was deleted

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _tree_size(folder: Path) -> int:
    """Bytes of the files under `folder` (0 for what vanishes while we look)."""
    total = 0
    for p in folder.rglob("*"):
        with contextlib.suppress(OSError):
            if p.is_file() and not p.is_symlink():
                total += p.stat().st_size
    return total


def _hash_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


class Registry:
    """The local motion registry rooted at `root` (default: `settings.lamp_home()`)."""

    def __init__(self, root: str | Path | None = None, *, lock_timeout: float | None = None):
        if root is None:
            from .settings import lamp_home

            root = lamp_home()
        self.root = Path(root)
        if lock_timeout is None:
            env = os.environ.get("LAMP_LOCK_TIMEOUT", "")
            try:
                lock_timeout = float(env) if env else DEFAULT_LOCK_TIMEOUT
            except ValueError as e:
                raise InvalidInput(f"LAMP_LOCK_TIMEOUT must be a number of seconds, got {env!r}") from e
        self.lock_timeout = lock_timeout
        self._filelock: Any = None

    # --- paths -----------------------------------------------------------------------------
    @property
    def manifests_dir(self) -> Path:
        return self.root / "manifests"

    @property
    def blobs_dir(self) -> Path:
        return self.root / "blobs"

    @property
    def edits_root(self) -> Path:
        """`edits/`: `lamp edit`'s per-motion caches (tuning record, inverted latents)."""
        return self.root / "edits"

    @property
    def lock_path(self) -> Path:
        return self.root / ".lock"

    def manifest_path(self, name: str) -> Path:
        return self.manifests_dir / f"{validate_name(name)}.json"

    def blob_path(self, digest: str) -> Path:
        hexd = digest.split(":", 1)[-1]
        if not re.fullmatch(r"[0-9a-f]{64}", hexd):
            raise RegistryError(f"malformed digest {digest!r}")
        return self.blobs_dir / f"sha256-{hexd}.safetensors"

    # --- lock ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the registry's one lock (re-entrant within this Registry object)."""
        from filelock import FileLock, Timeout

        if self._filelock is None:
            self.root.mkdir(parents=True, exist_ok=True)
            self._filelock = FileLock(str(self.lock_path))
        lk = self._filelock
        try:
            lk.acquire(timeout=0)
        except Timeout:
            log.warning("waiting for another lamp process (lock %s)", self.lock_path)
            try:
                lk.acquire(timeout=self.lock_timeout)
            except Timeout:
                raise RegistryError(
                    f"another lamp process held the registry lock for more than {self.lock_timeout:g} s ({self.lock_path})",
                    hint="wait for the other lamp command to finish and retry; raise LAMP_LOCK_TIMEOUT to wait longer",
                ) from None
        try:
            yield
        finally:
            lk.release()

    # --- reads (lock-free) -------------------------------------------------------------------
    def _read_manifest(self, name: str) -> Manifest:
        path = self.manifest_path(name)
        try:
            d = json.loads(path.read_text("utf-8"))
        except FileNotFoundError:
            raise MotionNotFound(name) from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise RegistryError(
                f"the manifest of '{name}' is unreadable ({path}: {e})", hint="run `lamp verify`"
            ) from e
        try:
            if d.get("name") != name:
                raise ValueError(f"it names '{d.get('name')}'")
            return Manifest.from_dict(d, self.blob_path(d["digest"]))
        except (KeyError, TypeError, ValueError, LampError) as e:
            raise RegistryError(
                f"the manifest of '{name}' is malformed ({path}: {e})", hint="run `lamp verify`"
            ) from e

    def manifest(self, name: str) -> Manifest:
        """The manifest of `name` as stored, without checking its blob (cheap)."""
        return self._read_manifest(name)

    def exists(self, name: str) -> bool:
        return self.manifest_path(name).exists()

    def names(self) -> list[str]:
        if not self.manifests_dir.is_dir():
            return []
        out = []
        for p in self.manifests_dir.glob("*.json"):
            if p.name.startswith(TMP_PREFIX) or not _NAME_RE.fullmatch(p.stem):
                continue
            out.append(p.stem)
        return sorted(out)

    def list(self, prefix: str | None = None) -> list[Manifest]:
        """Every readable manifest, sorted by name (unreadable ones are skipped with a warning)."""
        out = []
        for name in self.names():
            if prefix and not name.startswith(prefix):
                continue
            try:
                out.append(self._read_manifest(name))
            except MotionNotFound:
                continue  # removed since names() looked
            except LampError as e:
                log.warning("%s", e.message)
        return out

    def _checked_blob(self, m: Manifest, *, read: bool) -> bytes | None:
        """Rehash the blob of `m`; return its bytes when `read`. RegistryError if damaged."""
        damaged = RegistryError(
            f"motion '{m.name}' is damaged: its blob {m.blob_path} does not match digest {m.digest}",
            hint="`lamp verify` lists damaged motions; `lamp rm` it and re-import or re-train it",
        )
        try:
            if read:
                data = m.blob_path.read_bytes()
                ok = hashlib.sha256(data).hexdigest() == m.hexdigest
            else:
                data = None
                ok = _hash_file(m.blob_path) == m.hexdigest
        except FileNotFoundError:
            raise RegistryError(
                f"motion '{m.name}' is damaged: its blob {m.blob_path} is missing",
                hint="`lamp verify` lists damaged motions; `lamp rm` it and re-import or re-train it",
            ) from None
        if not ok:
            raise damaged
        return data

    def _get(self, name: str, *, read: bool) -> tuple[Manifest, bytes | None]:
        # A concurrent `publish --force` may replace the manifest and drop the old blob between
        # our two reads; re-reading the manifest once sorts that out.
        for attempt in (0, 1):
            m = self._read_manifest(name)
            try:
                return m, self._checked_blob(m, read=read)
            except RegistryError:
                if attempt == 0 and self._read_manifest(name).digest != m.digest:
                    continue
                raise
        raise AssertionError("unreachable")

    def get(self, name: str) -> Manifest:
        """The manifest of `name`, after checking its blob's hash (MotionNotFound, RegistryError)."""
        return self._get(name, read=False)[0]

    def read_bytes(self, name: str) -> bytes:
        """The hash-checked bytes of the adapter file of `name`."""
        data = self._get(name, read=True)[1]
        assert data is not None
        return data

    def load_adapter(self, name: str) -> Any:
        """The `MotionAdapter` of `name` (imports torch)."""
        from .adapter import MotionAdapter

        return MotionAdapter.from_bytes(self.read_bytes(name))

    def header(self, name: str) -> dict[str, Any]:
        """The parsed safetensors header of `name`'s blob (not hash-checked; cheap)."""
        m = self._read_manifest(name)
        return read_header(m.blob_path)

    def show(self, name: str) -> dict[str, Any]:
        """The manifest plus a summary of its adapter header (hash-checked)."""
        m = self.get(name)
        return {"manifest": m.to_json(), "adapter": summarize_header(read_header(m.blob_path))}

    # --- writes ------------------------------------------------------------------------------
    def _store(
        self,
        name: str,
        digest_hex: str,
        header: dict[str, Any],
        summary: HeaderSummary,
        *,
        write_blob: Callable[[Path], None],
        force: bool,
        source: str | None,
        size: int,
    ) -> Manifest:
        """Under the lock: write the blob (via `write_blob(path)`) if new, then the manifest."""
        md = header["__metadata__"]
        train = json.loads(md.get("lamp.train", "{}") or "{}")
        width, height = json.loads(md["lamp.size"])
        blob = self.blob_path(digest_hex)
        m = Manifest(
            name=name,
            digest=f"sha256:{digest_hex}",
            size=size,
            created=_now(),
            base=json.loads(md["lamp.base"]),
            frames=int(md["lamp.frames"]),
            width=int(width),
            height=int(height),
            steps=train.get("steps") if isinstance(train.get("steps"), int) else None,
            prompt=train.get("prompt") if isinstance(train.get("prompt"), str) else None,
            source=source,
            blob_path=blob,
            architecture=md["lamp.architecture"],
            weights_sha256=md["lamp.weights_sha256"],
            tensors=summary.tensors,
            parameters=summary.parameters,
            dtype=summary.dtype,
        )
        with self.lock():
            old = None
            if self.exists(name):
                if not force:
                    raise NameTaken(name)
                with contextlib.suppress(LampError):
                    old = self._read_manifest(name)
            new_blob = not blob.exists()
            try:
                # a blob already there is reused, unless it is damaged: then these bytes repair it
                if new_blob or _hash_file(blob) != digest_hex:
                    write_blob(blob)
                atomic_write_text(
                    self.manifest_path(name), json.dumps(m.to_dict(), indent=2, sort_keys=True) + "\n"
                )
            except BaseException:
                # leave the registry as it was: no manifest, no blob of ours
                if new_blob:
                    with contextlib.suppress(OSError):
                        blob.unlink()
                raise
            if old is not None and old.digest != m.digest:
                self._drop_blob_if_unused(old.blob_path)
        return m

    def _referenced_blobs(self) -> set[Path]:
        refs = set()
        for n in self.names():
            try:
                refs.add(self._read_manifest(n).blob_path)
            except LampError:
                # an unreadable manifest might still point at a blob: keep every blob then
                raise RegistryError(
                    f"the manifest of '{n}' is unreadable, so lamp cannot tell which blobs are in use",
                    hint="run `lamp verify`, then `lamp rm` the damaged name",
                ) from None
        return refs

    def _drop_blob_if_unused(self, blob: Path) -> int:
        try:
            in_use = blob in self._referenced_blobs()
        except RegistryError as e:
            log.warning("kept %s: %s", blob.name, e.message)
            return 0
        if in_use or not blob.exists():
            return 0
        size = blob.stat().st_size
        blob.unlink()
        return size

    def publish_bytes(
        self, data: bytes, *, name: str | None = None, force: bool = False, source: str | None = None
    ) -> Manifest:
        """Store one adapter file given as bytes (checked like an import); returns its manifest.

        `name` defaults to the header's lamp.name and must equal it when both are given: a blob
        carries its own name (use `import_file` to store under another name).
        """
        header = read_header_bytes(data, what="adapter")
        md = header["__metadata__"]
        check_adapter_metadata(md, what="adapter")
        summary = check_adapter_tensors(header, what="adapter")
        name = validate_name(name or md["lamp.name"])
        if md["lamp.name"] != name:
            raise InvalidInput(f"adapter is named '{md['lamp.name']}' in its header, not '{name}'")
        with io.BytesIO(data) as f:
            if (
                header_weights_sha256(header, f, 8 + int.from_bytes(data[:8], "little"))
                != md["lamp.weights_sha256"]
            ):
                raise InvalidInput("adapter: the tensor data does not match its lamp.weights_sha256")
        if not force and self.exists(name):  # fail before hashing; checked again under the lock
            raise NameTaken(name)
        digest = hashlib.sha256(data).hexdigest()
        return self._store(
            name,
            digest,
            header,
            summary,
            write_blob=lambda p: atomic_write_bytes(p, data),
            force=force,
            source=source,
            size=len(data),
        )

    def publish_adapter(
        self, adapter: Any, *, name: str | None = None, force: bool = False, source: str | None = None
    ) -> Manifest:
        """Serialise a `MotionAdapter` and store it (its lamp.name, or `name`, names it)."""
        from .adapter import MotionAdapter

        name = validate_name(name or adapter.name)
        if not force and self.exists(name):
            raise NameTaken(name)
        if adapter.name != name:
            adapter = MotionAdapter(adapter.tensors, {**adapter.metadata, "lamp.name": name})
        return self.publish_bytes(adapter.to_bytes(), name=name, force=force, source=source)

    def publish(
        self,
        tensors: dict[str, Any],
        metadata: dict[str, str],
        *,
        name: str | None = None,
        force: bool = False,
        source: str | None = None,
    ) -> Manifest:
        """Build a `MotionAdapter` from tensors + `lamp.*` metadata and store it under its name."""
        from .adapter import MotionAdapter

        name = name or metadata.get("lamp.name")
        if not name:
            raise InvalidInput("a motion needs a name (metadata lamp.name or name=)")
        return self.publish_adapter(
            MotionAdapter(tensors, dict(metadata)), name=name, force=force, source=source
        )

    def import_file(
        self, file: str | Path, name: str | None = None, force: bool = False, *, source: str | None = None
    ) -> Manifest:
        """Validate an adapter file, then store it (under `name`, default its header's lamp.name).

        Nothing is stored unless every check passes: safetensors framing and header size,
        `lamp.*` fields, tensor names/shapes/dtypes, and lamp.weights_sha256 against the bytes.
        A different name rewrites the header's lamp.name (so the stored blob differs).
        """
        path = Path(file)
        if not path.exists():
            raise NotFound(f"no such file: {path}")
        if not path.is_file():
            raise InvalidInput(f"{path} is not a file")
        if name is not None:
            validate_name(name)
        what = str(path)
        header, summary, data_start = check_adapter_file(path)
        md = header["__metadata__"]
        if name is None:
            try:
                name = validate_name(md["lamp.name"])
            except InvalidInput as e:
                raise InvalidInput(
                    f"{what} is named {md['lamp.name']!r} in its header, which is not a valid name",
                    hint="pass --name NAME",
                ) from e
        if not force and self.exists(name):
            raise NameTaken(name)

        with path.open("rb") as f:
            if md["lamp.name"] == name:
                prefix = None  # stored byte for byte
            else:
                header = {**header, "__metadata__": {**md, "lamp.name": name}}
                prefix = encode_header(header)

            def stream(out: Any | None) -> tuple[str, int]:
                """Hash (and copy to `out`) the bytes the blob will hold."""
                h = hashlib.sha256()
                size = 0
                f.seek(0 if prefix is None else data_start)
                if prefix is not None:
                    h.update(prefix)
                    size += len(prefix)
                    if out is not None:
                        out.write(prefix)
                for chunk in iter(lambda: f.read(_CHUNK), b""):
                    h.update(chunk)
                    size += len(chunk)
                    if out is not None:
                        out.write(chunk)
                return h.hexdigest(), size

            digest, size = stream(None)

            def write_blob(blob: Path) -> None:
                with atomic_writer(blob) as out:
                    if stream(out)[0] != digest:
                        raise RegistryError(
                            f"{what} changed while it was being imported",
                            hint="retry when nothing writes to it",
                        )

            return self._store(
                name,
                digest,
                header,
                summary,
                write_blob=write_blob,
                force=force,
                source=source or f"import:{path.resolve()}",
                size=size,
            )

    def copy(self, src: str, dst: str, *, force: bool = False) -> Manifest:
        """Give `src`'s adapter a second name; both share one blob."""
        validate_name(dst)
        with self.lock():
            m = self.get(src)
            if self.exists(dst):
                if not force:
                    raise NameTaken(dst)
                if dst == src:
                    return m
            old = None
            with contextlib.suppress(LampError):
                old = self._read_manifest(dst) if self.exists(dst) else None
            new = Manifest.from_dict(
                {**m.to_dict(), "name": dst, "created": _now(), "source": f"cp:{src}"}, m.blob_path
            )
            atomic_write_text(
                self.manifest_path(dst), json.dumps(new.to_dict(), indent=2, sort_keys=True) + "\n"
            )
            if old is not None and old.digest != new.digest:
                self._drop_blob_if_unused(old.blob_path)
        return new

    def remove(self, name: str) -> RemoveResult:
        """Delete `name`'s manifest, and its blob if no other name uses it."""
        with self.lock():
            path = self.manifest_path(name)
            if not path.exists():
                raise MotionNotFound(name)
            try:
                m = self._read_manifest(name)
            except RegistryError:
                # a damaged manifest can still be removed; its blob (if any) is left for gc
                path.unlink()
                edits_freed = self._remove_edits(name)
                return RemoveResult(name, None, False, edits_freed or 0, removed_edits=edits_freed is not None)
            path.unlink()
            freed = self._drop_blob_if_unused(m.blob_path)
            edits_freed = self._remove_edits(name)
        return RemoveResult(
            name, m.digest, freed > 0, freed + (edits_freed or 0), removed_edits=edits_freed is not None
        )

    def _remove_edits(self, name: str) -> int | None:
        """Delete `edits/<name>/`; the bytes freed, or None if there was none.

        The folder is first renamed aside to a `.tmp-` name, so an interrupted delete never leaves
        a half-emptied cache under the motion's name (gc removes what is left of the `.tmp-` one).
        """
        folder = self.edits_root / name
        if not folder.is_dir():
            return None
        aside = self.edits_root / f"{TMP_PREFIX}{name}.{os.getpid()}.{time.monotonic_ns()}"
        try:
            folder.rename(aside)
        except OSError as e:  # the name is gone already; a cache without a motion is gc's to remove
            log.warning("could not remove %s (%s); `lamp gc` will", folder, e)
            return None
        freed = _tree_size(aside)
        shutil.rmtree(aside, ignore_errors=True)
        return freed

    def export(self, name: str, file: str | Path) -> Path:
        """Write `name`'s adapter file (byte-identical to its blob) to `file`, atomically.

        A folder as `file` receives `<name>.safetensors`.
        """
        m, _ = self._get(name, read=False)
        dest = Path(file)
        if dest.is_dir():
            dest = dest / f"{name}.safetensors"
        h = hashlib.sha256()
        with m.blob_path.open("rb") as src, atomic_writer(dest) as out:
            for chunk in iter(lambda: src.read(_CHUNK), b""):
                h.update(chunk)
                out.write(chunk)
            if h.hexdigest() != m.hexdigest:
                raise RegistryError(
                    f"motion '{name}' changed or was damaged during export", hint="run `lamp verify`"
                )
        return dest

    # --- maintenance -----------------------------------------------------------------------
    def verify(self, name: str | None = None) -> list[Problem]:
        """Rehash every blob (or `name`'s) against its manifest; the list of what is wrong."""
        names = [validate_name(name)] if name is not None else self.names()
        if name is not None and not self.exists(name):
            raise MotionNotFound(name)
        problems: list[Problem] = []
        for n in names:
            path = self.manifest_path(n)
            try:
                m, _ = self._get(n, read=False)
                check_adapter_tensors(read_header(m.blob_path), what=str(m.blob_path))
            except MotionNotFound:
                continue  # removed while we were looking
            except LampError as e:
                problems.append(Problem(n, e.message, str(path)))
        return problems

    def gc(self, *, dry_run: bool = False) -> GcReport:
        """Remove stale temp files (older than a minute), blobs no manifest references, and
        `edits/<x>/` folders (lamp edit's caches) whose motion `x` no longer exists."""
        report = GcReport(dry_run=dry_run)
        now = time.time()
        with self.lock():
            if self.edits_root.is_dir():
                names = set(self.names())
                for p in sorted(self.edits_root.iterdir()):
                    if not p.is_dir():
                        continue
                    # `.tmp-` folders are left over from an interrupted `remove`
                    if p.name in names or not (p.name.startswith(TMP_PREFIX) or _NAME_RE.fullmatch(p.name)):
                        continue
                    report.removed_edits.append(str(p))
                    report.freed_bytes += _tree_size(p)
                    if not dry_run:
                        shutil.rmtree(p, ignore_errors=True)
            for folder in (self.root, self.manifests_dir, self.blobs_dir):
                if not folder.is_dir():
                    continue
                for p in folder.glob(f"{TMP_PREFIX}*"):
                    try:
                        st = p.stat()
                    except FileNotFoundError:
                        continue
                    if p.is_file() and now - st.st_mtime > STALE_TMP_SECONDS:
                        report.removed_temp.append(str(p))
                        report.freed_bytes += st.st_size
                        if not dry_run:
                            p.unlink(missing_ok=True)
            if self.blobs_dir.is_dir():
                refs = self._referenced_blobs()
                for p in sorted(self.blobs_dir.glob("sha256-*.safetensors")):
                    if p not in refs:
                        report.removed_blobs.append(str(p))
                        report.freed_bytes += p.stat().st_size
                        if not dry_run:
                            p.unlink(missing_ok=True)
        return report
