"""``fanbu demo --lm``: the loop on language models, small enough for two CPU cores in minutes.

One generation of the LM cycle (:func:`fanbu.cycle.lm_run.run_lm_cycle`) with small budgets:
the packaged SmolLM2-135M-Instruct is registered as the champion ``large-lm:v0``, a small LM is derived
from it for one BBC News category (pruned to 12 of its 30 layers, healed by a short distillation),
served by a real ``fanbu serve`` to a few simulated users who rate and correct its completions, and fed
back into the champion by one strategy (``lm_distill``: the small LM teaches on the category's public
text) behind the LM gate. :data:`LM_DEMO` is the recipe (written out in ``recipes/lm-demo.yaml``).
"""

from __future__ import annotations

import os
from typing import Any

from rich.console import Console
from rich.table import Table

from fanbu.config import load_recipe
from fanbu.cycle.lm_recipe import LMCycleRecipe
from fanbu.cycle.lm_run import run_lm_cycle
from fanbu.registry import Registry

_DISTILL_TRAIN = {
    "epochs": 1,
    "max_steps": 12,
    "batch_size": 4,
    "lr": 3.0e-4,
    "warmup_ratio": 0.1,
    "metric": "score",
    "mode": "max",
    "progress": False,
}
_FEEDBACK_TRAIN = {
    "epochs": 1000,
    "max_steps": 8,
    "batch_size": 4,
    "lr": 1.0e-4,
    "warmup_ratio": 0.1,
    "progress": False,
}

#: The demo's recipe: one generation, one category, small budgets (recipes/lm-demo.yaml writes it out).
LM_DEMO: dict[str, Any] = {
    "task": "causal_lm",
    "champion": "package:SmolLM2-135M-Instruct",
    "max_length": 128,
    "generations": 1,
    "lm": {
        "champion_name": "large-lm",
        "data": {
            "source": "bbc-news-lm",
            "domains": ["bbc-tech"],
            "max_docs": 60,
            "max_test": 10,
            "heldout": "20newsgroups",
            "max_heldout": 10,
            "general": "reuters-r8",
            "max_general": 20,
        },
        "gate": {"tolerance": 0.02, "prompt_tolerance": 0.05},
    },
    "derive": {
        "max_train": 8,
        "max_validation": 4,
        "max_test": 10,
        "stages": [
            {"prune": {"layers": 12, "ffn": 896, "importance": "minitron", "calibration": 8}},
            {"distill": {"alpha": 0.9, "top_k": 32, "window": 128, "train": _DISTILL_TRAIN}},
        ],
    },
    "deployment": {
        "traffic_size": 6,
        "prompt_words": 24,
        "continuation_words": 12,
        "max_tokens": 16,
        "ratings": 0.3,
        "corrections": 0.5,
    },
    "experts": "small",
    "strategies": [{"lm_distill": {"routing": "domain", "replay": 0.5, "train": _FEEDBACK_TRAIN}}],
}


def load_lm_demo(
    path: str | os.PathLike[str] | None = None, overrides: list[str] | None = None
) -> LMCycleRecipe:
    """The LM demo's recipe: ``path`` (an LM cycle recipe) or :data:`LM_DEMO`, then ``key=value`` overrides."""
    return load_recipe(LMCycleRecipe, path, overrides or [], base=None if path is not None else LM_DEMO)


def run_lm_demo(recipe: LMCycleRecipe, registry: Registry, console: Console) -> dict[str, Any]:
    """Run the LM demo's generation(s) and print what each step did in one table; the last summary."""
    summaries = run_lm_cycle(recipe, registry, None, console)
    last = summaries[-1]
    table = Table("step", "result", title="fanbu demo --lm")
    table.add_row("champion", last["champion_in"])
    for domain, model in sorted(last["small"].items()):
        record = registry.get_model(model)
        table.add_row(f"derived ({domain})", f"{model}, {record.metadata.get('params', 0):,} parameters")
    deployment = last.get("deployment")
    if deployment:
        for domain, seen in sorted(deployment["traffic"]["domains"].items()):
            rating = seen["mean_rating"]
            table.add_row(
                f"served ({domain})",
                f"{seen['answered']} completions, mean rating {rating:.2f}/5, {seen['rated']} rated, "
                f"{seen['corrected']} corrected",
            )
        counts = deployment["collected"]["counts"]
        table.add_row("collected", f"{deployment['collected']['dataset']}: {counts['kept']} pairs")
    for row in last["strategies"]:
        pgr = "-" if row["pgr_mean"] is None else f"{row['pgr_mean']:.3f}"
        table.add_row(
            f"fed back ({row['name']})",
            f"{row['model']}: PGR {pgr}, held-out ppl {row['forgetting']:+.1f}%, gate: {row['gate']['reason']}",
        )
    table.add_row("champion now", last["champion_out"])
    console.print(table)
    return last
