"""Any ``nn.Module`` as a fanbu model (kind ``module``), through a factory and an optional collate function.

The adapter is a *factory* (an import path ``package.module:callable`` that builds the module from a
JSON-able config) and an optional *collate* function from texts to the module's keyword inputs. Saving
writes the state dict as ``model.safetensors`` and ``module.json`` with the factory and its config;
loading imports the factory, builds the module and loads the state strictly.

A ``module.json`` is data, and data may come from anyone: its factory is called with its config, so a
factory must be *trusted*: an ``nn.Module`` subclass (building one runs only its constructor), a
function marked with :func:`module_factory`, or an import path listed in ``FANBU_TRUSTED_FACTORIES``
(comma-separated). Anything else (``subprocess:run``, ``os:system``, ``builtins:eval``) is refused
before it is called, at save and at load alike.
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_model, save_model
from torch import Tensor, nn

from fanbu.errors import ModelError
from fanbu.io import atomic_write_json
from fanbu.models.artefact import (
    Provenance,
    dtype_mismatches,
    expect_kind,
    model_directory,
    read_json,
    write_provenance,
)

MODULE_FILE = "module.json"
WEIGHTS_FILE = "model.safetensors"

Collate = Callable[[Sequence[str]], dict[str, Tensor]]
TRUSTED_ENV = "FANBU_TRUSTED_FACTORIES"
_MARK = "__fanbu_module_factory__"

F = Any


def module_factory(fn: F) -> F:
    """Mark ``fn`` as a function that builds an ``nn.Module`` from a JSON config (safe to load by name)."""
    setattr(fn, _MARK, True)
    return fn


def _trusted(factory: str, target: Any) -> bool:
    if isinstance(target, type) and issubclass(target, nn.Module):
        return True
    if getattr(target, _MARK, False) is True:
        return True
    listed = {name.strip() for name in os.environ.get(TRUSTED_ENV, "").split(",") if name.strip()}
    return factory in listed


def import_factory(factory: str) -> Callable[..., nn.Module]:
    """Import ``package.module:callable`` and check that it is a trusted factory (see the module docstring)."""
    module_name, sep, attr = factory.partition(":")
    if not sep or not module_name or not attr:
        raise ModelError(f"factory {factory!r} must look like 'package.module:callable'")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelError(f"factory {factory!r}: cannot import {module_name!r} ({exc}); install it") from None
    for part in attr.split("."):
        if not hasattr(target, part):
            raise ModelError(f"factory {factory!r}: {module_name!r} has no {attr!r}; check the name")
        target = getattr(target, part)
    if not callable(target):
        raise ModelError(f"factory {factory!r} is not callable; point it at a class or function")
    if not _trusted(factory, target):
        raise ModelError(
            f"factory {factory!r} is neither an nn.Module class nor a trusted factory function, so it is not "
            f"called: decorate the function with @fanbu.models.module_factory, or list {factory!r} in "
            f"{TRUSTED_ENV} if you trust it"
        )
    return target


class ModuleHandle:
    """Any ``nn.Module`` with the factory and config that rebuild it, and an optional collate function."""

    kind = "module"

    def __init__(
        self,
        module: nn.Module,
        config: dict[str, Any],
        factory: str,
        collate: Collate | None = None,
        provenance: Provenance | None = None,
    ) -> None:
        try:
            json.dumps(config)
        except (TypeError, ValueError) as exc:
            raise ModelError(
                f"module config must be JSON-able (numbers, strings, lists, dicts): {exc}"
            ) from None
        import_factory(factory)
        self.module = module
        self.config = dict(config)
        self.factory = factory
        self.collate = collate
        self.provenance = provenance

    @property
    def model(self) -> nn.Module:
        """The wrapped module (named like the other handles' ``model``)."""
        return self.module

    def tokenize(self, texts: Sequence[str]) -> dict[str, Tensor]:
        """The module's keyword inputs for ``texts``, through the collate function."""
        if self.collate is None:
            raise ModelError(
                "this ModuleHandle has no collate function; pass collate= when building or loading it"
            )
        return self.collate(texts)

    def save(self, path: str | Path, provenance: Provenance, overwrite: bool = False) -> Path:
        """Save atomically: ``model.safetensors`` (state dict), ``module.json``, provenance and card."""
        with model_directory(path, overwrite) as tmp:
            save_model(self.module, str(tmp / WEIGHTS_FILE))
            atomic_write_json(tmp / MODULE_FILE, {"factory": self.factory, "config": self.config})
            write_provenance(tmp, provenance, self.kind)
        self.provenance = provenance
        return Path(path)

    @classmethod
    def load(cls, path: str | Path, collate: Collate | None = None) -> ModuleHandle:
        """Import the factory, build the module from its config and load the weights strictly."""
        directory = Path(path)
        provenance = expect_kind(directory, cls.kind)
        spec_path = directory / MODULE_FILE
        if not spec_path.is_file():
            raise ModelError(f"{spec_path}: missing, invalid or without factory/config; re-save")
        spec = read_json(spec_path, "re-save")
        if not (
            isinstance(spec, dict)
            and isinstance(spec.get("factory"), str)
            and isinstance(spec.get("config"), dict)
        ):
            raise ModelError(
                f"{spec_path}: missing, invalid or without factory/config (factory is a 'package.module:callable' "
                "string, config a mapping); re-save"
            )
        factory, config = spec["factory"], spec["config"]
        build = import_factory(factory)
        try:
            module = build(**config)
        except (TypeError, ValueError, RuntimeError) as exc:  # the factory refuses the config
            raise ModelError(
                f"factory {factory!r} cannot build a module from the config in {spec_path} "
                f"({type(exc).__name__}: {exc}); check the config, or re-save"
            ) from None
        if not isinstance(module, nn.Module):
            raise ModelError(f"factory {factory!r} returned a {type(module).__name__}, not an nn.Module")
        try:
            retyped = dtype_mismatches(directory / WEIGHTS_FILE, module.state_dict())
            if retyped:
                raise RuntimeError("; ".join(retyped))
            load_model(module, str(directory / WEIGHTS_FILE), strict=True)
        except (RuntimeError, SafetensorError, OSError, ValueError) as exc:
            raise ModelError(
                f"{directory / WEIGHTS_FILE}: does not fit what {factory!r} builds from {MODULE_FILE} "
                f"({exc}); check the factory and config, or re-save"
            ) from None
        return cls(module, config, factory, collate, provenance)
