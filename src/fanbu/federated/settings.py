"""The Flower run config of a fanbu federated run: one flat mapping both apps read.

Keys (all strings, so ``flwr run --run-config`` and ``[tool.flwr.app.config]`` can set them):

* ``recipe``: the resolved :class:`~fanbu.federated.recipe.FederatedRecipe`, inline JSON or the path of
  a YAML / JSON file;
* ``work-dir``: where the server writes its outputs and clients their final models;
* ``large-model``: the champion's directory (server; FedAvg / FedProx clients build the same model);
* ``client-models``: FedMKT, JSON ``{domain: directory}`` of each domain's starting small model.

A SuperNode may override ``work-dir`` and ``client-model`` (its own model directory) in its node
config, since across machines its paths are its own.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fanbu.config import load_recipe, read_yaml, validate
from fanbu.errors import ConfigError
from fanbu.federated.recipe import FederatedRecipe
from fanbu.io import safe_child


@dataclass(frozen=True)
class RunSettings:
    """The parsed run config."""

    recipe: FederatedRecipe
    work_dir: Path
    large_model: Path
    client_models: dict[str, Path] = field(default_factory=dict)

    def to_run_config(self) -> dict[str, str]:
        """The flat run config Flower carries (inline recipe JSON)."""
        return {
            "recipe": self.recipe.model_dump_json(),
            "work-dir": str(self.work_dir),
            "large-model": str(self.large_model),
            "client-models": json.dumps({k: str(v) for k, v in sorted(self.client_models.items())}),
        }

    def client_model(self, domain: str, node_config: Mapping[str, Any]) -> Path:
        """The starting small model of a FedMKT client of ``domain`` (its node config may name its own)."""
        if "client-model" in node_config:
            return Path(str(node_config["client-model"]))
        if domain not in self.client_models:
            raise ConfigError(
                f"no starting model for a {domain} client: set client-models in the run config or "
                "client-model in the SuperNode's node config"
            )
        return self.client_models[domain]

    def client_dir(self, client_id: str, node_config: Mapping[str, Any]) -> Path:
        """Where a client writes its final model (node config ``work-dir`` first)."""
        root = Path(str(node_config["work-dir"])) if "work-dir" in node_config else self.work_dir
        return safe_child(root / "clients", client_id, what="client id")


def _recipe(value: str) -> FederatedRecipe:
    text = value.strip()
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"run config 'recipe': not valid JSON ({exc})") from None
        return validate(FederatedRecipe, data, source="run config 'recipe'")
    path = Path(text)
    if path.suffix == ".json":
        return validate(FederatedRecipe, json.loads(path.read_text(encoding="utf-8")), source=str(path))
    read_yaml(path)  # a clear error when it is missing or malformed
    return load_recipe(FederatedRecipe, path)


def parse_run_config(run_config: Mapping[str, Any], defaults: Mapping[str, Any] | None = None) -> RunSettings:
    """Parse a Flower run config (``defaults`` first, then the run's own values).

    Raises:
        ConfigError: a key is missing or malformed, naming it and where to set it.
    """
    merged = {**(defaults or {}), **dict(run_config)}
    missing = [k for k in ("recipe", "work-dir", "large-model") if not str(merged.get(k, "")).strip()]
    if missing:
        raise ConfigError(
            f"run config lacks {missing}: set them under [tool.flwr.app.config] of the Flower app (see "
            "fanbu.federated.deploy.write_app) or with flwr run --run-config"
        )
    raw = str(merged.get("client-models") or "{}")
    try:
        models = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"run config 'client-models': not valid JSON ({exc})") from None
    if not isinstance(models, dict):
        raise ConfigError("run config 'client-models' must be a JSON object {domain: directory}")
    return RunSettings(
        _recipe(str(merged["recipe"])),
        Path(str(merged["work-dir"])),
        Path(str(merged["large-model"])),
        {str(k): Path(str(v)) for k, v in models.items()},
    )
