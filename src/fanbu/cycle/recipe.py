"""What ``fanbu cycle RECIPE.yaml`` runs: a feedback recipe, the small models to derive, generations.

A cycle recipe is a feedback recipe's shared parts (:class:`~fanbu.feedback.recipe.FeedbackCore`:
champion, data, strategies, gate, seed) plus a ``derive`` part: the small deployable models derived
from every new champion. Each generation's feedback step is an ordinary
:class:`~fanbu.feedback.recipe.FeedbackRecipe` built by :meth:`CycleRecipe.feedback_recipe`, so a cycle
recipe validates exactly as the feedback recipes it produces (strategy fields, experts whose
architecture merge / moe / graft need).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from fanbu.config import Strict, apply_overrides, read_yaml, validate
from fanbu.cycle.deploy import CycleDeployment
from fanbu.cycle.lm_recipe import LMCycleRecipe
from fanbu.derive.pipeline import DeriveRecipe
from fanbu.derive.presets import FAST_SMALL_STAGES, copy_stages
from fanbu.errors import ConfigError
from fanbu.execute import ExecutorConfig
from fanbu.feedback.recipe import ExpertDerive, FeedbackCore, FeedbackRecipe, StrategyList, check_stages
from fanbu.models.tokenize import Truncation


class CycleDerive(Strict):
    """The small models derived from each generation's champion (its ``derive`` pipeline, champion as teacher)."""

    enabled: bool = Field(True, description="Derive the small models at the start of every generation.")
    stages: list[Any] = Field(
        default_factory=lambda: copy_stages(FAST_SMALL_STAGES),
        description="Derive stages, [{stage: {settings}}, ...].",
    )
    truncation: Truncation = Field(
        "head", description="Which tokens of a long text to keep: head or head_tail."
    )
    max_train: int | None = Field(None, ge=1, description="Cap on private training examples per domain.")
    transfer: Literal["none", "public"] = Field(
        "none",
        description="Extra distillation text: none, or every domain's public slice (soft labels only).",
    )
    max_transfer: int | None = Field(None, ge=1, description="Cap on transfer texts per domain.")
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)

    @field_validator("stages")
    @classmethod
    def _stages_valid(cls, stages: list[Any]) -> list[Any]:
        check_stages(stages, "list at least one, or set derive.enabled: false")
        return stages


class CycleExperts(Strict):
    """Where each generation's swarm comes from."""

    source: Literal["finetune", "small"] = Field(
        "small",
        description="small: the small models this generation derived (adapted to their traffic when "
        "`deployment` is on; teachers of another architecture); finetune: full-size experts, the champion "
        "fine-tuned on each private slice (`derive` below), for comparison.",
    )
    derive: ExpertDerive = Field(default_factory=ExpertDerive)


class CycleRecipe(FeedbackCore):
    """What ``fanbu cycle`` runs: generation after generation of derive -> feed back -> gate.

    ``champion`` is the first generation's champion; generation g seeds its strategies with ``seed + g``.
    """

    derive: CycleDerive = Field(default_factory=CycleDerive)
    deployment: CycleDeployment = Field(
        default_factory=CycleDeployment,
        description="Steps 2-4: serve the small models to traffic, collect, adapt them (they need the derive "
        "step: with derive.enabled false there is nothing to serve and these steps are skipped).",
    )
    feed_collected: bool = Field(
        True,
        description="Mechanism 1, data collection: the generation's collected dataset joins the feedback "
        "step's data (its labelled rows the public data, its unlabeled texts the transfer texts).",
    )
    experts: CycleExperts = Field(default_factory=CycleExperts)
    strategies: StrategyList = Field(
        default_factory=lambda: [
            {"swarm_distill": {"teachers": {"choice": "by_domain"}, "continual": {"lwf_weight": 1.0}}}
        ],
        description="[{strategy: {settings}}, ...]; each makes a candidate. The default distils the small "
        "models (any shape) into the champion; merge / moe / graft need experts.source: finetune.",
    )
    generations: int = Field(1, ge=1, description="Generations to run in all (finished ones are not redone).")
    on_no_promotion: Literal["stop", "continue"] = Field(
        "stop",
        description="When no candidate passes the gate: stop the cycle, or run the next generation from the "
        "same champion (its swarm reused, the strategies reseeded).",
    )
    gate_reuse_limit: int = Field(
        3,
        ge=0,
        description="How many earlier generations of the cycle may have decided on the same gate splits "
        "before a generation warns: every reuse lets the promotions fit those texts, so the gate's scores "
        "grow optimistic. Past it, add gate data (more validation examples, a larger data.gate_fraction) or "
        "accept the optimism (the test splits, scored for the report only, stay unbiased).",
    )

    @model_validator(mode="after")
    def _check(self) -> CycleRecipe:
        if self.experts.source == "small":
            if not self.derive.enabled:
                raise ValueError("experts.source is 'small' but derive.enabled is false; enable derive")
            needing = self.same_architecture_strategies()
            if needing:
                raise ValueError(
                    f"experts.source 'small' gives experts of another architecture, but {', '.join(needing)} "
                    "need experts shaped like the champion; use experts.source: finetune or drop them"
                )
        try:
            self.feedback_recipe(self.champion, 0)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return self

    def feedback_recipe(
        self,
        champion: str,
        generation: int,
        experts: dict[str, str] | None = None,
        collected: str | None = None,
    ) -> FeedbackRecipe:
        """The feedback step of ``generation`` from ``champion``; ``experts`` (domain -> id) reuses a swarm,
        ``collected`` (a dataset id) joins its data when ``feed_collected``."""
        if experts:
            swarm: dict[str, Any] = {"source": "registry", "models": dict(experts)}
        else:
            swarm = {"source": "derive", "derive": self.experts.derive.model_dump(mode="json")}
        shared = self.model_dump(mode="json", include=set(FeedbackCore.model_fields))
        if collected is not None and self.feed_collected:
            shared["data"] = {**shared["data"], "collected": collected}
        return validate(
            FeedbackRecipe,
            {**shared, "champion": champion, "experts": swarm, "seed": self.seed + generation},
            source="cycle",
        )

    def derive_recipe(self, teacher: str, max_length: int) -> DeriveRecipe:
        """The derive step: small models of every feedback domain from ``teacher``."""
        settings = self.derive
        return DeriveRecipe(
            teacher=teacher,
            max_length=max_length,
            truncation=settings.truncation,
            data=self.data.derive_data(
                self.data.domains, settings.max_train, settings.transfer, settings.max_transfer
            ),
            stages=settings.stages,
            executor=settings.executor,
        )

    def key(self) -> dict[str, Any]:
        """What identifies the cycle across reruns: the recipe without ``generations``, ``on_no_promotion``
        and ``gate_reuse_limit``.

        None of them changes what a generation does, so a stopped cycle can be continued with more
        generations, with ``on_no_promotion: continue`` or with another warning limit.
        """
        return self.model_dump(mode="json", exclude={"generations", "on_no_promotion", "gate_reuse_limit"})


def load_cycle_recipe(path: str | Path, overrides: list[str] | None = None) -> CycleRecipe | LMCycleRecipe:
    """A cycle recipe of either task, chosen by its ``task`` key (classification when there is none)."""
    data = apply_overrides(read_yaml(path), overrides or [])
    if data.get("task") == "causal_lm":
        return validate(LMCycleRecipe, data, source=str(path))
    if data.get("task") not in (None, "classification"):
        raise ConfigError(
            f"{path}: task {data['task']!r}: give causal_lm, or no task for a classification cycle"
        )
    return validate(CycleRecipe, {k: v for k, v in data.items() if k != "task"}, source=str(path))
