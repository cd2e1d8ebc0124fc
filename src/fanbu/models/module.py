"""Any ``nn.Module`` as a fanbu model (kind ``module``), through a factory and an optional collate function.

The adapter is a *factory* (an import path ``package.module:callable`` that builds the module from a
JSON-able config) and an optional *collate* function from texts to the module's keyword inputs. Saving
writes the state dict as ``model.safetensors`` and ``module.json`` with the factory and its config;
loading imports the factory, builds the module and loads the state strictly.
"""

from __future__ import annotations

import importlib
import json
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


def import_factory(factory: str) -> Callable[..., nn.Module]:
    """Import ``package.module:callable``."""
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
