"""Validation of what callers hand the registry, with errors that say what to pass instead."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import PurePath
from typing import Any

from fanbu.errors import RegistryError
from fanbu.io import check_path_name

# Path-safe names: segments of letters, digits, "_", "-", "." (not leading), joined by "/". A segment
# cannot start with ".", so "." and ".." (and hidden names) never match; nor do "/x", "x/", "a//b",
# a backslash, "~", NUL or any other character outside the class.
MAX_TEXT = 200  # names, kinds, domains, splits: the columns hold 255 on every backend
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_][A-Za-z0-9_.-]*)*")


def check_choice(value: str | None, allowed: Sequence[str], what: str) -> str:
    """Return ``value`` if it is one of ``allowed``; else raise naming the allowed ones."""
    if value is None or value not in allowed:
        raise RegistryError(f"unknown {what} {value!r}: use one of {', '.join(allowed)}")
    return value


def check_model_name(name: str) -> str:
    """A model name must be usable as a directory path and must not contain ``:``."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or len(name) > MAX_TEXT:
        raise RegistryError(
            f"invalid model name {name!r}: use letters, digits, '_', '-', '.' "
            f"(optionally 'org/name'), at most {MAX_TEXT} characters, e.g. 'minilm-comp'"
        )
    return name


def check_dataset_name(name: Any) -> str:
    """A dataset name: non-blank text that is also safe as a directory path (``fanbu collect`` writes
    ``<datasets>/<name>/...``), so no ``..`` segment, absolute path, backslash, control character or
    leading ``~``; ``domain/split`` style names are fine."""
    check_text(name, "dataset name")
    return check_path_name(name, "dataset name", nested=True, error=RegistryError)


def check_text(value: Any, what: str) -> str:
    """A required, non-blank string field of at most ``MAX_TEXT`` characters."""
    if not isinstance(value, str) or not value.strip():
        raise RegistryError(f"{what} must be a non-empty string, got {value!r}")
    if len(value) > MAX_TEXT:
        raise RegistryError(f"{what} is {len(value)} characters long; keep it to {MAX_TEXT}")
    return value


def check_optional_text(value: Any, what: str) -> str | None:
    """An optional string field: ``None``, or as :func:`check_text` requires."""
    return None if value is None else check_text(value, what)


def check_unique(items: Sequence[str], what: str) -> tuple[str, ...]:
    """Items as a tuple, refusing repeats (a model listed twice as a parent is a caller bug)."""
    if isinstance(items, str):
        raise RegistryError(f"{what} must be a list of ids, not the string {items!r}; wrap it: [{items!r}]")
    seen: list[str] = []
    for item in items:
        if item in seen:
            raise RegistryError(f"{what}: {item!r} is listed twice; list each id once")
        seen.append(item)
    return tuple(seen)


def check_metric(name: Any, value: Any) -> float:
    """A metric value as a finite float."""
    if not isinstance(name, str) or not name or len(name) > MAX_TEXT:
        raise RegistryError(
            f"metric names must be non-empty strings of at most {MAX_TEXT} characters, got {name!r}"
        )
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise RegistryError(f"metric {name!r}: value {value!r} is not a number") from None
    if not math.isfinite(number):
        raise RegistryError(f"metric {name!r} is {number}: record only finite values (leave it out)")
    return number


def jsonify(value: Mapping[str, Any] | None, what: str) -> dict[str, Any]:
    """A JSON-ready copy of ``value``: scalars from numpy/torch unwrapped, paths as strings,
    non-finite floats as the strings ``"nan"``, ``"inf"``, ``"-inf"`` (valid on every backend).

    Raises:
        RegistryError: ``value`` is not a mapping, or holds something JSON cannot represent.
    """
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        hint = " (call .model_dump(mode='json') first)" if hasattr(value, "model_dump") else ""
        raise RegistryError(f"{what} must be a dict, got {type(value).__name__}{hint}")
    try:
        text = json.dumps(_finite(value), default=_unwrap, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise RegistryError(f"{what} cannot be stored as JSON: {exc} (keep only plain values)") from None
    return json.loads(text)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _unwrap(value: Any) -> Any:
    if isinstance(value, PurePath):
        return str(value)
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "ndim", None) == 0:
        return _finite(item())
    raise TypeError(f"{type(value).__name__} {value!r} is not JSON-serialisable")
