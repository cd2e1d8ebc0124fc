"""The recipes ``fanbu bench rl`` runs: one :class:`~fanbu.rl.recipe.RLRecipe` per family.

Every setting is a recipe field (``fanbu bench rl --set ppo.total_steps=20000`` overrides it for every
family), so what the bench runs, a user can run with ``fanbu rl`` and the same recipe.
"""

from __future__ import annotations

from fanbu.config import load_recipe
from fanbu.rl.recipe import RLRecipe

FAMILIES = ("cartpole", "acrobot")
QUICK_SECONDS = 1800  # the budget for --quick on 2 cores

#: Per family, quick and full: the settings that differ from RLRecipe's defaults.
_SETTINGS: dict[str, dict[bool, dict]] = {
    "cartpole": {
        True: {"ppo": {"total_steps": 30_000}, "distill": {"rounds": 3, "steps_per_variant": 1000},
               "reptile": {"iterations": 8, "inner_steps": 2048, "meta_batch": 2},
               "adaptation": {"max_steps": 30_000, "eval_every": 1024, "eval_episodes": 5}},
        False: {"ppo": {"total_steps": 80_000}, "distill": {"rounds": 5, "steps_per_variant": 2000},
                "reptile": {"iterations": 30, "inner_steps": 4096, "meta_batch": 2},
                "adaptation": {"max_steps": 80_000, "eval_every": 2048, "eval_episodes": 10}},
    },
    "acrobot": {
        True: {"ppo": {"total_steps": 60_000, "ent_coef": 0.01}, "distill": {"rounds": 4, "steps_per_variant": 1500},
               "reptile": {"iterations": 8, "inner_steps": 2048, "meta_batch": 2},
               "adaptation": {"max_steps": 30_000, "eval_every": 1024, "eval_episodes": 5}},
        False: {"ppo": {"total_steps": 80_000, "ent_coef": 0.01}, "distill": {"rounds": 5, "steps_per_variant": 2000},
                "reptile": {"iterations": 30, "inner_steps": 4096, "meta_batch": 2},
                "adaptation": {"max_steps": 80_000, "eval_every": 2048, "eval_episodes": 10}},
    },
}


def bench_recipe(family: str, quick: bool, overrides: list[str] | None = None) -> RLRecipe:
    """The bench's recipe for ``family`` (quick or full), with ``key=value`` overrides applied."""
    base = {"family": family, **_SETTINGS.get(family, {}).get(quick, {})}
    return load_recipe(RLRecipe, None, overrides or [], base=base)
