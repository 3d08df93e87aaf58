"""The one typed schema of what lamp reads from files: adapter header fields and manifest fields.

Every field has a type, a range and a sentence stating its expected form; `check_fields` checks a
mapping against a table and raises `InvalidInput` saying, for the first bad field, what it must
be and what it was (`header field lamp.size must be [width, height] with multiples of 8 in
8..4096, got [64]`). Adapter headers are checked on import and whenever one is read
(`lamp_cli.adapter`); manifests whenever one is read (`lamp_cli.registry`). docs/registry.md
shows both tables; a test keeps it in step with this module.

No torch here: `lamp list` reads manifests.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import InvalidInput
from .jsonio import MAX_JSON_DEPTH, loads_strict

# --- names ---------------------------------------------------------------------------------

NAME_RULE = "1-64 characters: lowercase letters, digits, '.', '_' or '-', starting with a letter or digit"
NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


def validate_name(name: str) -> str:
    """Return `name` if it is a valid motion name, else raise InvalidInput saying the rule.

    Names are file names inside the registry, never paths: `../x`, `a/b`, `Guitar` are refused.
    """
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        shown = repr(name[:80]) if isinstance(name, str) else type(name).__name__
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


# --- ranges --------------------------------------------------------------------------------

MIN_FRAMES, MAX_FRAMES = 2, 1024  # a motion needs a first frame and at least one more
MIN_SIDE, MAX_SIDE = 8, 4096  # pixels; the VAE works on 8×8 blocks
MAX_TENSORS = 100_000
MAX_PARAMETERS = 1 << 40
MAX_BYTES = 1 << 44
MAX_STEPS = 10**9
MAX_TEXT = 4096  # a prompt, a source, a base spec
MAX_SHORT = 256  # a name in a header, a version, a date, a dtype


class _Bad(Exception):
    """Raised by a parser: the value does not have the field's form."""


@dataclass(frozen=True)
class Field:
    key: str
    expected: str  # the form, completing "must be ..."
    parse: Callable[[Any], Any]  # the value -> its checked (parsed) form; _Bad if wrong
    required: bool = True


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _text(limit: int, *, empty: bool = False, nullable: bool = False) -> Callable[[Any], Any]:
    def parse(v: Any) -> Any:
        if v is None and nullable:
            return None
        if not isinstance(v, str) or len(v) > limit or (not empty and not v) or "\x00" in v:
            raise _Bad
        return v

    return parse


def _int(lo: int, hi: int, *, nullable: bool = False) -> Callable[[Any], Any]:
    def parse(v: Any) -> Any:
        if v is None and nullable:
            return None
        if not _is_int(v) or not lo <= v <= hi:
            raise _Bad
        return v

    return parse


def _int_text(lo: int, hi: int) -> Callable[[Any], int]:
    """A header number: decimal digits (a string) whose value lies in lo..hi."""

    def parse(v: Any) -> int:
        if not isinstance(v, str) or not re.fullmatch(r"[0-9]{1,10}", v) or not lo <= int(v) <= hi:
            raise _Bad
        return int(v)

    return parse


def _side(v: Any) -> int:
    if not _is_int(v) or not MIN_SIDE <= v <= MAX_SIDE or v % 8:
        raise _Bad
    return v


def _size(v: Any) -> list[int]:
    if not isinstance(v, list) or len(v) != 2:
        raise _Bad
    return [_side(v[0]), _side(v[1])]


def _base(v: Any) -> dict[str, Any]:
    if not isinstance(v, dict) or not isinstance(v.get("spec"), str) or not 0 < len(v["spec"]) <= MAX_TEXT:
        raise _Bad
    fp = v.get("fingerprint")
    if fp is not None and (not isinstance(fp, str) or len(fp) > MAX_SHORT):
        raise _Bad
    return v


def _object(v: Any) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise _Bad
    return v


def _json(inner: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A header field holding JSON text (strict: no NaN/Infinity, depth bounded) parsed by `inner`."""

    def parse(v: Any) -> Any:
        if not isinstance(v, str):
            raise _Bad
        try:
            value = loads_strict(v, what="")
        except InvalidInput:
            raise _Bad from None
        return inner(value)

    return parse


def _hexdigest(v: Any) -> str:
    if not isinstance(v, str) or not re.fullmatch(r"[0-9a-f]{64}", v):
        raise _Bad
    return v


def _hexdigest_or_empty(v: Any) -> str:
    return "" if v == "" else _hexdigest(v)


def _digest(v: Any) -> str:
    if not isinstance(v, str) or not re.fullmatch(r"sha256:[0-9a-f]{64}", v):
        raise _Bad
    return v


def _name(v: Any) -> str:
    if not isinstance(v, str) or not NAME_RE.fullmatch(v):
        raise _Bad
    return v


def _architecture(v: Any) -> str:
    if not isinstance(v, str) or not re.fullmatch(r"[a-z0-9][a-z0-9._-]{0,63}", v):
        raise _Bad
    return v


def _format_version(v: Any) -> str:
    if v != "1":
        raise _Bad
    return v


def _pt(v: Any) -> str:
    if v != "pt":
        raise _Bad
    return v


_SIZE_FORM = f"[width, height] with multiples of 8 in {MIN_SIDE}..{MAX_SIDE}"
_BASE_FORM = 'a JSON object {"spec": "<base model>", "fingerprint": "<hex>"}'
_ARCH_FORM = "sd1-unet or unet2d-<hash> (lowercase letters, digits, '.', '_', '-'; 1-64 characters)"

# The `__metadata__` of an adapter file: every value is a string (safetensors' rule), JSON where
# structured. Unknown `lamp.*` keys are kept (newer lamps may add some) if they are short strings.
ADAPTER_HEADER: tuple[Field, ...] = (
    Field("format", "pt", _pt, required=False),
    Field("lamp.format_version", "1 (the only adapter format this lamp reads)", _format_version),
    Field("lamp.name", f"a string of 1-{MAX_SHORT} characters", _text(MAX_SHORT)),
    Field("lamp.base", _BASE_FORM, _json(_base)),
    Field("lamp.architecture", _ARCH_FORM, _architecture),
    Field("lamp.frames", f"a whole number in {MIN_FRAMES}..{MAX_FRAMES} (decimal digits)", _int_text(MIN_FRAMES, MAX_FRAMES)),
    Field("lamp.size", _SIZE_FORM, _json(_size)),
    Field("lamp.train", f"a JSON object (nested at most {MAX_JSON_DEPTH} deep, no NaN/Infinity)", _json(_object)),
    Field("lamp.created", f"a string of 1-{MAX_SHORT} characters (UTC, ISO 8601)", _text(MAX_SHORT)),
    Field("lamp.version", f"a string of 1-{MAX_SHORT} characters", _text(MAX_SHORT)),
    Field("lamp.weights_sha256", "64 lowercase hex digits (a sha256)", _hexdigest),
)
REQUIRED_METADATA = tuple(f.key for f in ADAPTER_HEADER if f.required)
MAX_EXTRA_HEADER_TEXT = 1 << 20  # other lamp.* fields (lamp.official, lamp.eval_step, ...)

# A manifest document (`manifests/<name>.json`). Unknown keys are kept (newer schema versions).
MANIFEST: tuple[Field, ...] = (
    Field("schema_version", "a whole number >= 1", _int(1, 10**6)),
    Field("name", f"a motion name ({NAME_RULE})", _name),
    Field("digest", "sha256:<64 lowercase hex digits>", _digest),
    Field("size", f"a whole number of bytes in 0..{MAX_BYTES}", _int(0, MAX_BYTES)),
    Field("created", f"a string of 1-{MAX_SHORT} characters (UTC, ISO 8601)", _text(MAX_SHORT)),
    Field("base", _BASE_FORM, _base),
    Field("frames", f"a whole number in {MIN_FRAMES}..{MAX_FRAMES}", _int(MIN_FRAMES, MAX_FRAMES)),
    Field("width", f"a multiple of 8 in {MIN_SIDE}..{MAX_SIDE}", _side),
    Field("height", f"a multiple of 8 in {MIN_SIDE}..{MAX_SIDE}", _side),
    Field("steps", f"null or a whole number in 0..{MAX_STEPS}", _int(0, MAX_STEPS, nullable=True)),
    Field("prompt", f"null or a string of at most {MAX_TEXT} characters", _text(MAX_TEXT, empty=True, nullable=True)),
    Field("source", f"null or a string of at most {MAX_TEXT} characters", _text(MAX_TEXT, empty=True, nullable=True)),
    Field("architecture", _ARCH_FORM, _architecture),
    Field("weights_sha256", "64 lowercase hex digits, or empty", _hexdigest_or_empty, required=False),
    Field("tensors", f"a whole number in 0..{MAX_TENSORS}", _int(0, MAX_TENSORS), required=False),
    Field("parameters", f"a whole number in 0..{MAX_PARAMETERS}", _int(0, MAX_PARAMETERS), required=False),
    Field("dtype", f"a string of at most {MAX_SHORT} characters", _text(MAX_SHORT, empty=True), required=False),
)


def _list_of(item: Callable[[Any], Any], lo: int, hi: int) -> Callable[[Any], list[Any]]:
    def parse(v: Any) -> list[Any]:
        if not isinstance(v, list) or not lo <= len(v) <= hi:
            raise _Bad
        return [item(x) for x in v]

    return parse


def _one_or_list(item: Callable[[Any], Any]) -> Callable[[Any], Any]:
    many = _list_of(item, 1, 16)
    return lambda v: many(v) if isinstance(v, list) else item(v)


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise _Bad
    return v


def _opt(inner: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda v: None if v is None else inner(v)


_BLOCK_NAME = _text(MAX_SHORT)
_CHANNELS = _int(1, 16384)

# The `config.json` of an official LAMP checkpoint (the reference's UNet3DConditionModel):
# the fields lamp reads, with their JSON types. Other keys are ignored.
OFFICIAL_CONFIG: tuple[Field, ...] = (
    Field("_class_name", "a string (UNet3DConditionModel)", _text(MAX_SHORT)),
    Field("block_out_channels", "a list of 1-8 whole numbers in 1..16384", _list_of(_CHANNELS, 1, 8)),
    Field("layers_per_block", "a whole number in 1..64, or a list of them", _one_or_list(_int(1, 64))),
    Field("cross_attention_dim", "a whole number in 1..16384, or a list of them", _one_or_list(_CHANNELS)),
    Field("down_block_types", "a list of 1-8 block names (strings)", _list_of(_BLOCK_NAME, 1, 8)),
    Field("up_block_types", "a list of 1-8 block names (strings)", _list_of(_BLOCK_NAME, 1, 8)),
    Field("mid_block_type", "null or a block name (string)", _opt(_BLOCK_NAME), required=False),
    Field("in_channels", "a whole number in 1..64", _int(1, 64), required=False),
    Field("out_channels", "a whole number in 1..64", _int(1, 64), required=False),
    Field("attention_head_dim", "a whole number in 1..4096, or a list of them", _one_or_list(_int(1, 4096)), required=False),
    Field("norm_num_groups", "a whole number in 1..1024", _int(1, 1024), required=False),
    Field("use_linear_projection", "true or false", _bool, required=False),
)


def shown(value: Any, limit: int = 60) -> str:
    """A value as a user should see it in a message: short, one line."""
    text = value if isinstance(value, str) else repr(value)
    text = text.replace("\n", "\\n")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_fields(
    fields: tuple[Field, ...], values: dict[str, Any], *, what: str, kind: str
) -> dict[str, Any]:
    """Check `values` against `fields`; the parsed value of every field present.

    `kind` names the container in messages ("header field", "manifest field"). The first
    missing required field or malformed value raises InvalidInput stating the expected form.
    """
    missing = [f.key for f in fields if f.required and f.key not in values]
    if missing:
        raise InvalidInput(f"{what} lacks the {kind}(s): {', '.join(missing)}")
    out: dict[str, Any] = {}
    for f in fields:
        if f.key not in values:
            continue
        try:
            out[f.key] = f.parse(values[f.key])
        except (_Bad, TypeError, ValueError, OverflowError):
            raise InvalidInput(
                f"{what}: {kind} {f.key} must be {f.expected}, got {shown(values[f.key])}"
            ) from None
    return out


def check_header_extras(md: dict[str, Any], *, what: str) -> None:
    """Header keys outside the table (lamp.official, lamp.eval_step, ...): strings of bounded length."""
    known = {f.key for f in ADAPTER_HEADER}
    for key, value in md.items():
        if key in known:
            continue
        if len(key) > MAX_SHORT:
            raise InvalidInput(f"{what}: header field name {shown(key)} is longer than {MAX_SHORT} characters")
        if not isinstance(value, str) or len(value) > MAX_EXTRA_HEADER_TEXT:
            raise InvalidInput(
                f"{what}: header field {key} must be a string of at most {MAX_EXTRA_HEADER_TEXT} characters"
            )
