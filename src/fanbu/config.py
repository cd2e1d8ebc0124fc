"""Recipes: YAML in, validated pydantic objects out, ``key=value`` overrides on the command line.

One function, :func:`load_recipe`, turns YAML into objects. Unknown keys and wrong types are rejected
with the dotted path of the bad field. Every run writes its resolved recipe beside its outputs
(:func:`write_resolved`), so an artefact directory alone tells how it was made.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from fanbu.errors import ConfigError
from fanbu.io import atomic_write_text

T = TypeVar("T", bound=BaseModel)

RESOLVED_RECIPE = "recipe.resolved.yaml"


class Strict(BaseModel):
    """Base for every recipe section: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


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
    """Read a YAML mapping from ``path`` with a clear error when it is missing or malformed."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"{file}: recipe file not found (check the path)")
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: the top level must be a mapping of settings, got {type(data).__name__}")
    return data


def format_validation_error(exc: ValidationError, source: str) -> str:
    """Render pydantic's errors as ``source: a.b.c: message (got value)`` lines."""
    lines = []
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"]) or "(top level)"
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = "unknown key (check its spelling, or remove it)"
        got = err.get("input")
        shown = "" if err["type"] in ("missing", "extra_forbidden") else f" (got {got!r})"
        lines.append(f"{source}: {path}: {message}{shown}")
    return "\n".join(lines)


def validate(schema: type[T], data: dict[str, Any], source: str = "recipe") -> T:
    """Validate ``data`` against ``schema``; raise :class:`ConfigError` naming each bad field."""
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None


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
