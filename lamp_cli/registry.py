"""The motion registry: named manifests pointing at immutable, content-addressed adapter blobs.

Layout under the root (`LAMP_HOME`, docs/registry.md):

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
- Everything stored passes the same checks as `import` (`lamp_cli.adapter`: the adapter format
  lives there; this module is storage only), so whatever `export` writes can be imported again.
- Every manifest read is checked against `schema.MANIFEST` (types and ranges of every field).

This module does not import torch at import time: `lamp list` must stay fast.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import schema
from .adapter import (
    HeaderSummary,
    MotionAdapter,
    check_adapter_bytes,
    check_adapter_file,
    check_adapter_metadata,
    check_adapter_tensors,
    encode_header,
    read_header,
    summarize_header,
)
from .errors import InvalidInput, LampError, MotionNotFound, NameTaken, NotFound, RegistryError
from .fsutil import (
    TMP_PREFIX,
    atomic_write_bytes,
    atomic_write_text,
    atomic_writer,
    make_output_folder,
    writer_alive,
)
from .jsonio import dumps_strict, loads_strict
from .settings import DEFAULT_LOCK_TIMEOUT, lamp_home  # noqa: F401 (re-exported)
from .settings import lock_timeout as lock_timeout_setting
from .tensorfile import file_sha256

log = logging.getLogger("lamp")

SCHEMA_VERSION = 1
STALE_TMP_SECONDS = 60.0  # gc leaves younger temp files alone: a writer may still be using them
STALE_TMP_DAY_SECONDS = 24 * 3600.0  # ... and older ones whose writer process still runs, up to a day
_CHUNK = 1 << 20

NAME_RULE = schema.NAME_RULE
_NAME_RE = schema.NAME_RE
validate_name = schema.validate_name


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


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
    removed_runs: list[str] = field(default_factory=list)  # empty runs/<name>/ folders
    removed_bases: list[str] = field(default_factory=list)  # converted single-file bases whose file is gone
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


MAX_MANIFEST_BYTES = 1 << 20


def _in_schema(key: str, value: Any) -> bool:
    """Whether `value` is a valid manifest `key` (a training record's steps/prompt are optional)."""
    try:
        schema.check_fields(tuple(f for f in schema.MANIFEST if f.key == key), {key: value}, what="", kind="")
    except InvalidInput:
        return False
    return value is not None


def _manifest_text(m: Manifest) -> str:
    """A manifest document as stored: checked against the schema, strict JSON."""
    d = m.to_dict()
    schema.check_fields(schema.MANIFEST, d, what=f"the manifest of '{m.name}'", kind="manifest field")
    return dumps_strict(d, what=f"the manifest of '{m.name}'", indent=2, sort_keys=True) + "\n"


def _stale_temp(tmp: Path, mtime: float, now: float) -> bool:
    """A temp file gc may remove: untouched for a minute and its writer gone, or untouched for a day
    (a writer rewrites its temp file continuously, and a pid may be reused by another process)."""
    age = now - mtime
    return age > STALE_TMP_DAY_SECONDS or (age > STALE_TMP_SECONDS and not writer_alive(tmp))


class Registry:
    """The local motion registry rooted at `root` (default: `settings.lamp_home()`)."""

    def __init__(self, root: str | Path | None = None, *, lock_timeout: float | None = None):
        if root is None:
            root = lamp_home()
        self.root = Path(root)
        if lock_timeout is None:
            lock_timeout = lock_timeout_setting()
        self.lock_timeout = lock_timeout
        self._filelock: Any = None

    # --- paths -----------------------------------------------------------------------------
    def check_root(self) -> None:
        """RegistryError when the root (or a folder above it) is a file: `lamp list` must not
        show an empty registry for a LAMP_HOME that cannot hold one."""
        p = self.root
        while not p.exists() and p.parent != p:
            p = p.parent
        if p.exists() and not p.is_dir():
            where = "" if p == self.root else f" ({p} is a file)"
            raise RegistryError(
                f"LAMP_HOME {self.root} is not a folder{where}",
                hint="set LAMP_HOME to a folder (or move the file away)",
            )

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
            self.check_root()
            self.root.mkdir(parents=True, exist_ok=True)
            # open the lock file ourselves first: a read-only or foreign LAMP_HOME fails here with
            # the OSError naming it, not somewhere inside the lock library
            os.close(os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o666))
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
            raw = path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            self.check_root()
            raise MotionNotFound(name) from None
        except IsADirectoryError:
            raise RegistryError(f"the manifest of '{name}' is a folder ({path})", hint="run `lamp verify`") from None
        try:
            if len(raw) > MAX_MANIFEST_BYTES:
                raise InvalidInput(f"it is {len(raw)} bytes, more than any manifest ({MAX_MANIFEST_BYTES})")
            d = loads_strict(raw, what="it")
        except LampError as e:
            raise RegistryError(
                f"the manifest of '{name}' is unreadable ({path}: {e.message})", hint="run `lamp verify`"
            ) from None
        try:
            if not isinstance(d, dict):
                raise InvalidInput("it is not a JSON object")
            schema.check_fields(schema.MANIFEST, d, what="it", kind="manifest field")
            if d["name"] != name:
                raise InvalidInput(f"it names '{d['name']}'")
            return Manifest.from_dict(d, self.blob_path(d["digest"]))
        except LampError as e:
            raise RegistryError(
                f"the manifest of '{name}' is malformed ({path}: {e.message})", hint="run `lamp verify`"
            ) from None

    def manifest(self, name: str) -> Manifest:
        """The manifest of `name` as stored, without checking its blob (cheap)."""
        return self._read_manifest(name)

    def exists(self, name: str) -> bool:
        if self.manifest_path(name).exists():
            return True
        self.check_root()  # "no such motion" must not hide a LAMP_HOME that is a file
        return False

    def names(self) -> list[str]:
        self.check_root()
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
                ok = file_sha256(m.blob_path) == m.hexdigest
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
        fields = check_adapter_metadata(md, what=f"adapter '{name}'")
        train = fields["lamp.train"]
        width, height = fields["lamp.size"]
        blob = self.blob_path(digest_hex)
        m = Manifest(
            name=name,
            digest=f"sha256:{digest_hex}",
            size=size,
            created=_now(),
            base=fields["lamp.base"],
            frames=fields["lamp.frames"],
            width=int(width),
            height=int(height),
            steps=train.get("steps") if _in_schema("steps", train.get("steps")) else None,
            prompt=train.get("prompt") if _in_schema("prompt", train.get("prompt")) else None,
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
                if new_blob or file_sha256(blob) != digest_hex:
                    write_blob(blob)
                atomic_write_text(
                    self.manifest_path(name), _manifest_text(m)
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
        header, fields, summary = check_adapter_bytes(data, what="adapter")
        name = validate_name(name or fields["lamp.name"])
        if fields["lamp.name"] != name:
            raise InvalidInput(f"adapter is named '{fields['lamp.name']}' in its header, not '{name}'")
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
                self.manifest_path(dst), _manifest_text(new)
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
        make_output_folder(dest.parent)
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

    @property
    def runs_root(self) -> Path:
        """`runs/`: unfinished trainings' checkpoints (`runs/<name>/checkpoint.safetensors`)."""
        return self.root / "runs"

    def _temp_folders(self) -> list[Path]:
        """Every folder lamp writes temp files into: the registry's, and each run's and edit cache's."""
        out = [self.root, self.manifests_dir, self.blobs_dir]
        for parent in (self.runs_root, self.edits_root):
            if parent.is_dir():
                out += sorted(p for p in parent.iterdir() if p.is_dir() and not p.name.startswith(TMP_PREFIX))
        return [f for f in out if f.is_dir()]

    def _run_mtimes(self) -> dict[Path, float]:
        out = {}
        if self.runs_root.is_dir():
            for p in self.runs_root.iterdir():
                with contextlib.suppress(OSError):
                    if p.is_dir() and not p.is_symlink():
                        out[p] = p.stat().st_mtime
        return out

    def _gc_runs(self, report: GcReport, mtimes: dict[Path, float], now: float, dry_run: bool) -> None:
        """Remove `runs/<name>/` folders holding nothing (once their stale temp files are gone)
        and untouched for a minute before this gc began: a finished or killed run left them."""
        pending = set(report.removed_temp)
        for p, mtime in sorted(mtimes.items()):
            try:
                left = [c for c in p.iterdir() if str(c) not in pending]
            except OSError:
                continue
            if left or now - mtime <= STALE_TMP_SECONDS:
                continue
            report.removed_runs.append(str(p))
            if not dry_run:
                with contextlib.suppress(OSError):
                    p.rmdir()

    def gc(self, *, dry_run: bool = False) -> GcReport:
        """Remove stale temp files (see `_stale_temp`) in the registry, its runs and edit caches,
        blobs no manifest references, `edits/<x>/` folders (lamp edit's caches) whose motion `x`
        no longer exists, and empty `runs/<x>/` folders."""
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
            run_mtimes = self._run_mtimes()
            for folder in self._temp_folders():
                for p in folder.glob(f"{TMP_PREFIX}*"):
                    try:
                        st = p.stat()
                    except FileNotFoundError:
                        continue
                    if p.is_file() and _stale_temp(p, st.st_mtime, now):
                        report.removed_temp.append(str(p))
                        report.freed_bytes += st.st_size
                        if not dry_run:
                            p.unlink(missing_ok=True)
            self._gc_runs(report, run_mtimes, now, dry_run)
            if self.blobs_dir.is_dir():
                refs = self._referenced_blobs()
                for p in sorted(self.blobs_dir.glob("sha256-*.safetensors")):
                    if p not in refs:
                        report.removed_blobs.append(str(p))
                        report.freed_bytes += p.stat().st_size
                        if not dry_run:
                            p.unlink(missing_ok=True)
        return report
