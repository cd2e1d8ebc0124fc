"""Recipe kinds: the one place that maps a recipe's kind to its schema.

A recipe file is named after its kind (``demo.yaml`` or ``demo-small.yaml`` is a ``demo`` recipe), or
the kind is given explicitly. ``fanbu validate`` and CI check shipped recipes without building anything.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from fanbu.config import load_recipe
from fanbu.cycle.lm_recipe import LMCycleRecipe
from fanbu.cycle.recipe import CycleRecipe
from fanbu.demo.recipe import DemoRecipe
from fanbu.derive.adapt import AdaptConfig
from fanbu.derive.lm import LMDeriveRecipe
from fanbu.derive.pipeline import DeriveRecipe
from fanbu.errors import ConfigError
from fanbu.federated.recipe import FederatedRecipe
from fanbu.feedback.recipe import FeedbackRecipe
from fanbu.hierarchy.run import HierarchyRunRecipe
from fanbu.rl.recipe import RLRecipe

SCHEMAS: dict[str, type[BaseModel]] = {
    "adapt": AdaptConfig, "cycle": CycleRecipe, "demo": DemoRecipe, "derive": DeriveRecipe,
    "feedback": FeedbackRecipe, "federated": FederatedRecipe, "hierarchy": HierarchyRunRecipe, "rl": RLRecipe,
    "lm-derive": LMDeriveRecipe, "lm-cycle": LMCycleRecipe, "lm-demo": LMCycleRecipe,
}


def kind_of(path: str | Path) -> str:
    """The recipe kind a file name implies (``demo-quick.yaml`` -> ``demo``; ``lm-feedback.yaml`` ->
    ``feedback``: the ``lm-`` prefix names the causal-LM recipes of a kind)."""
    parts = Path(path).stem.split("-")
    if parts[0] == "lm" and len(parts) > 1:  # an LM schema of its own where the kind has one
        stem = f"lm-{parts[1]}" if f"lm-{parts[1]}" in SCHEMAS else parts[1]
    else:
        stem = parts[0]
    if stem not in SCHEMAS:
        raise ConfigError(
            f"{path}: cannot tell the recipe kind from the file name; name it <kind>.yaml or "
            f"<kind>-<anything>.yaml, or pass --kind (kinds: {', '.join(SCHEMAS)})"
        )
    return stem


def validate_file(path: str | Path, kind: str | None = None, overrides: list[str] | None = None) -> BaseModel:
    """Validate a recipe file against its kind's schema and return the resolved recipe."""
    kind = kind or kind_of(path)
    if kind not in SCHEMAS:
        raise ConfigError(f"unknown recipe kind {kind!r}; kinds: {', '.join(SCHEMAS)}")
    return load_recipe(SCHEMAS[kind], path, overrides)
