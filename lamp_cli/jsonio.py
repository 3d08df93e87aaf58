"""Strict JSON in and out: no NaN/Infinity, bounded nesting, one error type.

Python's `json` accepts and writes `NaN`/`Infinity`, which are not JSON, and ends in
`RecursionError` on a document nested a few thousand levels deep. Everything lamp writes as JSON
(sidecars, manifests, `--json` output, reports) goes through `dumps_strict`, and every document
lamp reads from a user's file through `loads_strict`.
"""

from __future__ import annotations

import json
import math
from typing import Any

from .errors import InvalidInput

MAX_JSON_DEPTH = 64


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _depth_ok(value: Any, limit: int) -> bool:
    """Whether `value` nests at most `limit` containers deep (iterative: no recursion)."""
    stack = [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, (dict, list)):
            if d > limit:
                return False
            stack.extend((c, d + 1) for c in (v.values() if isinstance(v, dict) else v))
    return True


def loads_strict(text: str | bytes, *, what: str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Parse JSON refusing NaN/Infinity and nesting deeper than `max_depth`; InvalidInput naming
    `what` and the problem otherwise."""
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise InvalidInput(f"{what} is nested deeper than {max_depth} levels (not a lamp document)") from None
    except (ValueError, UnicodeDecodeError, TypeError) as e:  # JSONDecodeError is a ValueError
        raise InvalidInput(f"{what} is not valid JSON ({e})") from None
    if not _depth_ok(value, max_depth):
        raise InvalidInput(f"{what} is nested deeper than {max_depth} levels (not a lamp document)")
    return value


def _first_non_finite(value: Any, path: str = "") -> str | None:
    stack = [(value, path)]
    while stack:
        v, p = stack.pop()
        if isinstance(v, float) and not math.isfinite(v):
            return f"{p or 'the value'} = {v}"
        if isinstance(v, dict):
            stack.extend((c, f"{p}.{k}" if p else str(k)) for k, c in v.items())
        elif isinstance(v, (list, tuple)):
            stack.extend((c, f"{p}[{i}]") for i, c in enumerate(v))
    return None


def nulls_for_unmeasured(value: Any) -> Any:
    """`value` with every NaN or infinite float (a measurement that found nothing to measure, e.g.
    no object in any frame) replaced by null, for documents where that is a result, not a fault."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: nulls_for_unmeasured(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [nulls_for_unmeasured(v) for v in value]
    return value


def dumps_strict(value: Any, *, what: str = "output", **kw: Any) -> str:
    """`json.dumps` that refuses NaN/Infinity (InvalidInput naming where), never writing them."""
    try:
        return json.dumps(value, allow_nan=False, **kw)
    except ValueError as e:
        where = _first_non_finite(json.loads(json.dumps(value, default=kw.get("default"))))
        raise InvalidInput(
            f"refused to write {what}: {where or e} is not a finite number",
            hint="a value became NaN or infinite (a diverged run or a bad input); lamp writes strict JSON only",
        ) from None
