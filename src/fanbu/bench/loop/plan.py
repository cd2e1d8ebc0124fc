"""What ``fanbu bench loop`` runs: a cycle recipe, the mechanisms it compares, and how large v0 is trained.

Every setting the bench runs with is a recipe field a user can set: the derive stages, the deployment,
the data caps and the gate are a :class:`~fanbu.cycle.recipe.CycleRecipe`, and each mechanism is one
``{strategy: {settings}}`` entry of its ``strategies`` list. The bench adds only which context a
mechanism's strategy sees: with or without the generation's collected dataset.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from fanbu.config import validate
from fanbu.cycle.recipe import CycleRecipe
from fanbu.derive.presets import DEMO_SMALL_STAGES, copy_stages
from fanbu.train.config import TrainConfig

LARGE = "package:all-MiniLM-L6-v2"
#: The combined default, as the cycle's recipe names it: the (adapted) small models teach by domain.
DEFAULT = "combined"
# Every model the bench trains runs without dropout: on CPU drawing the masks takes a fifth of a step.
DROPOUT = 0.0


@dataclass(frozen=True)
class Mechanism:
    """One way the swarm feeds back: a feedback strategy entry and whether it sees the collected data.

    ``collected``: the strategy's context carries the generation's collected dataset (its labelled rows
    join the public data, its unlabeled texts the served texts); otherwise only the public slices.
    """

    name: str
    strategy: dict[str, Any]
    collected: bool
    summary: str

    @property
    def strategy_name(self) -> str:
        """The registered feedback strategy this mechanism runs."""
        return next(iter(self.strategy))


#: The transplant row's lambdas, tried on the validation splits (a share of the students' change, none
#: extrapolated): task arithmetic picks its scaling on held-out data, never at 1 by default.
TRANSPLANT_SCALINGS = (0.25, 0.5, 0.75, 1.0)


def mechanisms(train: dict[str, Any]) -> tuple[Mechanism, ...]:
    """The mechanisms, the combined default first (a tie at the gate goes to the earlier one).

    ``train``: the loop settings of every mechanism that trains the large model (one budget for all).
    """
    distil: dict[str, Any] = {
        "teachers": {"choice": "by_domain"},
        "continual": {"lwf_weight": 1.0},
        "train": dict(train),
    }

    def swarm(**extra: Any) -> dict[str, Any]:
        return {"swarm_distill": {**copy.deepcopy(distil), **extra}}

    return (
        Mechanism(
            DEFAULT,
            swarm(),
            True,
            "the cycle's default: the adapted small models teach by domain, the collected dataset joins the data",
        ),
        Mechanism(
            "data",
            # alpha 0 switches the teachers' term off: the candidate learns the public and the collected
            # labels only, in the same loop, safeguards and budget as the distill rows
            swarm(
                alpha=0.0, selection_tolerance=None, teachers={"choice": "by_domain", "use_collected": False}
            ),
            True,
            "collected data only: hard labels of the public slices and the collected dataset, teachers off",
        ),
        Mechanism("distill", swarm(), False, "the adapted small models teach by domain; no collected data"),
        Mechanism(
            "layer_lr",
            swarm(layer_lr="swarm"),
            True,
            "the combined default with layer-wise learning rates from the students' pruning importances",
        ),
        Mechanism(
            "transplant",
            {"transplant": {"method": "task_arithmetic", "scalings": list(TRANSPLANT_SCALINGS)}},
            False,
            "each student's weight change since its cut, placed back where it was cut from, lambda chosen on "
            "validation (no training)",
        ),
        Mechanism(
            "structure",
            {"swarm_structure": {"axes": ["vocab"]}},
            False,
            "the champion cut to the union of the vocabulary the students kept (no training)",
        ),
    )


@dataclass
class LoopPlan:
    """Everything one draw of the bench runs.

    Attributes:
        recipe: The cycle recipe: data, derive, deployment, the full-size experts (``experts.derive``),
            gate, seed. Its ``strategies`` hold the combined default.
        mechanisms: The mechanisms each generation's feedback step compares.
        generations: Generations per draw (at least 2).
        large_train: How large v0 is trained on the public slices.
        large_public: Cap on public examples per task for large v0 (every task: domains and held-out).
        model: The source of large v0.
        full_size: Run the full-size swarm (``experts.source: finetune``) in the first generation.
    """

    recipe: CycleRecipe
    mechanisms: tuple[Mechanism, ...]
    generations: int
    large_train: TrainConfig
    large_public: int | None
    model: str = LARGE
    full_size: bool = True

    def dump(self) -> dict[str, Any]:
        """The plan as JSON: what a kept draw is keyed by, and what the report records."""
        return {
            "recipe": self.recipe.model_dump(mode="json"),
            "mechanisms": [
                {"name": m.name, "strategy": m.strategy, "collected": m.collected, "summary": m.summary}
                for m in self.mechanisms
            ],
            "generations": self.generations,
            "large_train": self.large_train.model_dump(mode="json"),
            "large_public": self.large_public,
            "model": self.model,
            "full_size": self.full_size,
        }


def _train(epochs: int, lr: float, warmup: float, **extra: Any) -> dict[str, Any]:
    return {"epochs": epochs, "batch_size": 16, "lr": lr, "warmup_ratio": warmup, "dropout": DROPOUT, **extra}


def plan_for(quick: bool, seed: int, generations: int | None = None) -> LoopPlan:
    """The bench's plan on the default benchmark (5 feedback domains, BBC News and Reuters held out).

    Small models are derived as ``fanbu demo`` derives them (its stages,
    :data:`~fanbu.derive.presets.DEMO_SMALL_STAGES`, and 600 transfer texts), from 300 private examples
    (quick) or 500. Quick: 64 tokens (the demo's), 100 public and 50 validation texts per domain in the
    feedback step, 200 gate and 200 test texts per task, 150 served texts per domain per generation, one
    epoch for every mechanism that trains the large model, 2 generations. Full: 128 tokens, larger caps,
    every test text, 2 epochs, 3 generations. The private slices must hold the training cap plus a fresh traffic block per generation
    (the smallest, religion, has 1178 texts).
    """
    train = _train(1 if quick else 2, 5e-5, 0.1)
    caps = (
        {"max_public": 100, "max_validation": 50, "max_gate": 200, "max_test": 200}
        if quick
        else {"max_public": 250, "max_validation": 200, "max_gate": None, "max_test": None}
    )
    raw = {
        "champion": "large",
        "max_length": 64 if quick else 128,
        "seed": seed,
        "data": {"source": "default", "seed": seed, **caps},
        "derive": {
            "max_train": 300 if quick else 500,
            "transfer": "public",
            "max_transfer": 600,
            "stages": copy_stages(DEMO_SMALL_STAGES),  # as `fanbu demo` derives its small models
        },
        "deployment": {
            "traffic_size": 150 if quick else 200,
            "corrections": 0.1,
            "escalate_below": 0.5,
            "replay": 1.0,
            "train": _train(2, 1e-4, 0.0, group_by_length=True, progress=False),
        },
        "feed_collected": True,
        "experts": {
            "source": "small",
            "derive": {
                "max_train": 300 if quick else 500,
                "stages": [{"finetune": {"mode": "full", "train": _train(2, 1e-4, 0.06)}}],
            },
        },
        "gate": {"tolerance": 0.01, "require_mean_not_worse": True},
        "on_no_promotion": "continue",
    }
    found = mechanisms(train)
    raw["strategies"] = [found[0].strategy]
    return LoopPlan(
        recipe=validate(CycleRecipe, raw, source="bench loop"),
        mechanisms=found,
        generations=generations or (2 if quick else 3),
        large_train=TrainConfig(**_train(2 if quick else 3, 1.5e-4, 0.06)),
        large_public=250,
    )
