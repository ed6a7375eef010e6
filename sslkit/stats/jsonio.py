"""Strict JSON for everything the statistics and reports write: a number that is not finite
(NaN: no interval from one seed; inf) is written as ``null``, never as the bare ``NaN`` that
Python's ``json`` writes and other parsers (JavaScript, jq, strict readers) refuse."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path, PurePath


def jsonable(value):
    """``value`` with non-finite floats as None, tuples and sets as lists, paths and other
    objects as text, mapping keys as text."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    if isinstance(value, PurePath):
        return str(value)
    try:  # numpy scalars
        return jsonable(value.item())
    except (AttributeError, ValueError):
        return str(value)


def dumps(value, indent: int | None = 2) -> str:
    """``json.dumps`` of ``jsonable(value)`` that refuses any non-finite number left."""
    return json.dumps(jsonable(value), indent=indent, allow_nan=False)


def write_json(value, path: str | Path) -> Path:
    """Write ``dumps(value)`` and a newline to ``path`` (its folder created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dumps(value) + "\n")
    return path
