"""``fanbu cycle`` for either task: the classification cycle or, for ``task: causal_lm``, the LM cycle."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from fanbu.cycle.lm_recipe import LMCycleRecipe
from fanbu.cycle.lm_run import run_lm_cycle
from fanbu.cycle.recipe import CycleRecipe
from fanbu.cycle.run import run_cycle
from fanbu.registry import Registry


def run_any_cycle(
    recipe: CycleRecipe | LMCycleRecipe,
    registry: Registry,
    generations: int | None = None,
    console: Console | None = None,
) -> list[dict[str, Any]]:
    """:func:`run_cycle` for classification recipes, :func:`run_lm_cycle` for ``task: causal_lm`` ones."""
    if isinstance(recipe, LMCycleRecipe):
        return run_lm_cycle(recipe, registry, generations, console)
    return run_cycle(recipe, registry, generations, console)
