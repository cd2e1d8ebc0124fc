"""Recipes: YAML in, validated pydantic objects out, ``key=value`` overrides on the command line.

One function, :func:`load_recipe`, turns YAML into objects. Unknown keys and wrong types are rejected
with the dotted path of the bad field. Every run writes its resolved recipe beside its outputs
(:func:`write_resolved`), so an artefact directory alone tells how it was made.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from fanbu.errors import ConfigError
from fanbu.io import atomic_write_text

T = TypeVar("T", bound=BaseModel)

RESOLVED_RECIPE = "recipe.resolved.yaml"


class Strict(BaseModel):
    """Base for every recipe section: unknown keys are errors, values are validated on assignment, and a
    float is finite (``.nan`` / ``.inf`` in YAML are errors, not settings)."""

    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, protected_namespaces=(), allow_inf_nan=False
    )

    @model_validator(mode="before")
    @classmethod
    def _section_defaults(cls, data: Any) -> Any:
        """A section given in part keeps the rest of *its own* default.

        Where a field's default is a section with settings of its own (``Field(default_factory=...)``
        returning, say, a ``TrainConfig(lr=1e-3, ...)``), a recipe or an override that sets a few of its
        keys (``distill.train.epochs=30``) gets that default's other settings, the ones the resolved
        recipe shows, and not the section class's bare defaults.
        """
        if not isinstance(data, dict):
            return data
        out = None
        for name, field in cls.model_fields.items():
            key = field.alias or name
            given = data.get(key)
            if not isinstance(given, dict) or (field.default_factory is None and not isinstance(field.default, BaseModel)):
                continue
            if field.default_factory is not None and field.default_factory_takes_validated_data:
                continue  # a default built from the other fields: nothing fixed to fall back on
            default = field.get_default(call_default_factory=True)
            if not isinstance(default, BaseModel) or field.annotation is not type(default):
                continue
            kept = {k: getattr(default, k) for k in default.model_fields_set if k not in given}
            if kept:
                out = dict(data) if out is None else out
                out[key] = {**kept, **given}
        return data if out is None else out


def parse_override(item: str) -> tuple[list[str], Any]:
    """Split ``a.b.c=value`` into its key path and a YAML-parsed value.

    Raises:
        ConfigError: the item has no ``=`` or an empty key.
    """
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r}: expected key=value, e.g. train.epochs=3")
    parts = [p for p in key.strip().split(".")]
    if any(not p for p in parts):
        raise ConfigError(f"override {item!r}: empty component in key {key!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {item!r}: value is not valid YAML ({exc})") from exc
    return parts, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with each ``key.path=value`` override set (nested dicts created)."""
    result = _deep_copy(data)
    for item in overrides:
        parts, value = parse_override(item)
        node = result
        for index, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                path = ".".join(parts[: index + 1])
                raise ConfigError(f"override {item!r}: {path} is a {type(child).__name__}, not a section")
            node = child
        node[parts[-1]] = value
    return result


def _deep_copy(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _deep_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deep_copy(v) for v in data]
    return data


def read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a YAML mapping from ``path`` with a clear error when it is missing or malformed.

    The file is UTF-8 (UTF-16 with a byte-order mark also reads); its top level must be a mapping.
    """
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"{file}: recipe file not found (check the path)")
    try:
        data = yaml.safe_load(file.read_bytes())  # bytes: PyYAML reads the byte-order mark, checks UTF-8
    except OSError as exc:
        raise ConfigError(f"{file}: cannot be read ({exc.strerror or exc}); check its permissions") from None
    except yaml.reader.ReaderError as exc:
        raise ConfigError(
            f"{file}: not UTF-8 text, or it holds a control character ({exc.reason} at byte {exc.position}); "
            "re-save it as UTF-8 and remove the character"
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: not valid YAML: {exc}") from exc
    except RecursionError:
        raise ConfigError(f"{file}: YAML nested too deeply to read; a recipe is a few levels deep") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: the top level must be a mapping of settings, got {type(data).__name__}")
    return data


# One line of a nested recipe error: a dotted field path, a colon, the message ("stages.0.prune.layers: ...").
# The path ends at the first ": " (a key may hold spaces, as in `{" ": 1}`).
_NESTED_LINE = re.compile(r"(?P<path>[^\n]+?): (?P<message>.+)", re.DOTALL)


def _dotted(parts: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(p) for p in parts)


def _nested_issues(err: Any, loc: tuple[str, ...]) -> list[tuple[str, str]] | None:
    """A validator's error that is itself a recipe error with field paths (a stage or strategy list,
    validated by :meth:`fanbu.registration.Catalog.parse`), as ``(full dotted path, message)`` pairs.

    A field validator's error sits at the field (``strategies``) and its lines start with the field
    (``strategies.0.merge.density: ...``); a model validator's sits at the model and its lines start with
    one of the model's keys. ``None`` when the error is not of that shape.
    """
    if err["type"] != "value_error":
        return None
    text = err["msg"].removeprefix("Value error, ")
    issues = []
    for line in text.split("\n"):
        match = _NESTED_LINE.fullmatch(line)
        if match is None:
            return None
        path, message = match["path"], match["message"]
        head = path.split(".")[0]
        if loc and head == loc[-1]:
            full = _dotted([*loc[:-1], path])
        elif isinstance(err.get("input"), dict) and head in err["input"]:
            full = _dotted([*loc, path])
        else:
            return None
        issues.append((full, message))
    return issues


def _in_data(loc: tuple[Any, ...], data: Any, missing: bool) -> tuple[Any, ...]:
    """``loc`` without pydantic's union-member tags (``layers.int``, ``layers.list[int]``): only the keys
    and indices found in ``data`` are kept, and a last key the data lacks when ``missing``."""
    kept: list[Any] = []
    node = data
    for index, part in enumerate(loc):
        present = (isinstance(node, dict) and part in node) or (
            isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        )
        if present:
            node = node[part]
        elif not (missing and index == len(loc) - 1):
            continue  # a tag pydantic adds for a member of a union: not a key of the recipe
        kept.append(part)
    return tuple(kept)


def format_validation_error(exc: ValidationError, source: str, at: str = "", data: Any = None) -> str:
    """Render pydantic's errors as ``source: a.b.c: message (got value)`` lines.

    ``at`` is the dotted path of the validated mapping inside a larger recipe (``stages.0.prune``); it
    starts every path. Without ``source`` a line is ``a.b.c: message``. An error raised by a validator
    that validated a nested list (stages, strategies) gets the full path of the bad field, e.g.
    ``feedback.strategies.0.merge.density``. With the validated ``data``, paths name only its keys (no
    union-member tags such as ``layers.int``).
    """
    lines = []
    prefix = f"{source}: " if source else ""
    for err in exc.errors():
        raw = tuple(err["loc"]) if data is None else _in_data(tuple(err["loc"]), data, err["type"] == "missing")
        loc = tuple(str(p) for p in raw)
        if at:
            loc = (at, *loc)
        nested = _nested_issues(err, loc)
        if nested is not None:
            lines += [f"{prefix}{path}: {_clip(message)}" for path, message in nested]
            continue
        path = _dotted(loc) or "(top level)"
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = "unknown key (check its spelling, or remove it)"
        got = err.get("input")
        shown = "" if err["type"] in ("missing", "extra_forbidden") else f" (got {short_repr(got)})"
        lines.append(f"{prefix}{path}: {_clip(message)}{shown}")
    return "\n".join(lines)


def _clip(message: str, limit: int = 1000) -> str:
    """``message``, its middle cut when longer than ``limit`` (a validator that quotes a huge bad value)."""
    if len(message) <= limit:
        return message
    return f"{message[: limit - 300]} ...({len(message)} characters)... {message[-200:]}"


def short_repr(value: Any, limit: int = 200) -> str:
    """``repr(value)``, cut to ``limit`` characters (a long string or a whole section is not repeated)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 20]}... ({len(text)} characters)"


def validate(schema: type[T], data: dict[str, Any], source: str = "recipe", at: str = "") -> T:
    """Validate ``data`` against ``schema``; raise :class:`ConfigError` naming each bad field.

    ``at`` is the dotted path of ``data`` inside a larger recipe, the start of every path in the message.
    """
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source, at, data)) from None


def load_recipe(
    schema: type[T],
    path: str | os.PathLike[str] | None = None,
    overrides: list[str] | None = None,
    base: dict[str, Any] | None = None,
) -> T:
    """Build a validated recipe from a YAML file (or ``base``), then ``key=value`` overrides.

    Args:
        schema: The pydantic model the recipe must satisfy.
        path: A YAML file; when ``None`` the recipe starts from ``base`` (or the schema's defaults).
        overrides: ``a.b=value`` items applied after the file, values parsed as YAML.
        base: A mapping to start from when no file is given.
    """
    data = read_yaml(path) if path is not None else _deep_copy(base or {})
    data = apply_overrides(data, overrides or [])
    return validate(schema, data, source=str(path) if path is not None else "recipe")


def dump_recipe(recipe: BaseModel) -> str:
    """The recipe as YAML with every default filled in."""
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def write_resolved(recipe: BaseModel, out_dir: str | os.PathLike[str]) -> Path:
    """Write the resolved recipe beside a run's outputs, atomically."""
    return atomic_write_text(Path(out_dir) / RESOLVED_RECIPE, dump_recipe(recipe))
