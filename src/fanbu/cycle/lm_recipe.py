"""What ``fanbu cycle RECIPE.yaml`` runs with ``task: causal_lm``: the LM feedback recipe's parts, generations.

An LM cycle recipe is an LM feedback recipe (champion, ``lm`` section, LM strategies, seed) plus the small
LMs to derive from every champion (``derive``: the LM derive stages), how they are served to simulated
traffic (``deployment``) and whether what that traffic collected feeds back (``feed_collected``). Each
generation's feedback step is an ordinary ``task: causal_lm`` :class:`~fanbu.feedback.recipe.FeedbackRecipe`
built by :meth:`LMCycleRecipe.feedback_recipe`, and its derive step an ordinary
:class:`~fanbu.derive.lm.recipe.LMDeriveRecipe` built by :meth:`LMCycleRecipe.derive_recipe`, so the
recipe validates exactly as the recipes it produces.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from fanbu.config import Strict, validate
from fanbu.cycle.lm_deploy import LMCycleDeployment
from fanbu.data.loaders import DomainSource
from fanbu.derive.lm.data import LMDeriveData
from fanbu.derive.lm.recipe import LM_TEACHER, LMDeriveRecipe
from fanbu.derive.lm.stages import parse_lm_stages
from fanbu.derive.presets import LM_DERIVE_STAGES, copy_stages
from fanbu.errors import ConfigError
from fanbu.execute import ExecutorConfig
from fanbu.feedback.lm.recipe import LMFeedbackSettings
from fanbu.feedback.recipe import FeedbackRecipe, StrategyList


class LMCycleDerive(Strict):
    """The small LMs derived from each generation's champion (LM derive stages, the champion as teacher)."""

    enabled: bool = Field(True, description="Derive a small LM per domain at the start of every generation.")
    stages: list[Any] = Field(
        default_factory=lambda: copy_stages(LM_DERIVE_STAGES),
        description="LM derive stages, [{stage: {settings}}, ...] (see recipes/lm-derive.yaml).",
    )
    max_train: int = Field(
        24,
        ge=1,
        description="Private texts per domain the small LM trains on (seeded); the rest of the private slice "
        "is the traffic no model trained on (with lm.data's default 100 articles a category: ~25 texts).",
    )
    max_validation: int | None = Field(
        40, ge=1, description="Cap on validation texts (early stopping, choices)."
    )
    max_test: int | None = Field(60, ge=1, description="Cap on test texts (scored once, for the report).")
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)

    @field_validator("stages")
    @classmethod
    def _stages_valid(cls, stages: list[Any]) -> list[Any]:
        try:
            parsed = parse_lm_stages(stages)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        if not parsed:
            raise ValueError("no stages; list at least one, or set derive.enabled: false")
        return stages


class LMCycleRecipe(Strict):
    """What ``fanbu cycle`` runs for causal LMs: derive -> serve -> collect -> feed back -> gate, repeated.

    ``champion`` is the first generation's champion; generation g seeds its strategies with ``seed + g``.
    """

    task: Literal["causal_lm"] = Field(
        "causal_lm", description="This cycle derives and feeds back causal LMs."
    )
    champion: str = Field(
        LM_TEACHER,
        description="A registered causal LM (id, or a name: its champion), or a source (package:NAME), "
        "registered once as lm.champion_name:v0.",
    )
    max_length: int = Field(128, ge=16, description="Tokens per training window and scored text.")
    lm: LMFeedbackSettings = Field(
        default_factory=LMFeedbackSettings,
        description="The LM feedback step's domains, LoRA experts and gate.",
    )
    derive: LMCycleDerive = Field(default_factory=LMCycleDerive)
    deployment: LMCycleDeployment = Field(
        default_factory=LMCycleDeployment,
        description="Serve the small LMs to simulated traffic and collect what it rated and corrected (needs "
        "derive: with derive.enabled false there is nothing to serve and this step is skipped).",
    )
    feed_collected: bool = Field(
        True,
        description="The generation's collected prompt/completion pairs join the feedback step's "
        "corrections (what lm_corrections trains on).",
    )
    experts: Literal["small", "lora"] = Field(
        "small",
        description="small: the small LMs this generation derived teach (lm_distill, lm_corrections, "
        "lm_sequential); lora: a LoRA expert on the champion per domain (lm.experts), which lm_merge needs.",
    )
    strategies: StrategyList = Field(
        default_factory=lambda: [
            {"lm_distill": {"routing": "domain", "replay": 0.5}},
            {"lm_corrections": {}},
        ],
        description="[{lm_method: {settings}}, ...]; each makes a candidate, gated by the LM gate.",
    )
    seed: int = Field(0, description="Seeds the strategies, the traffic and its feedback.")
    generations: int = Field(1, ge=1, description="Generations to run in all (finished ones are not redone).")
    on_no_promotion: Literal["stop", "continue"] = Field(
        "stop",
        description="When no candidate passes the gate: stop, or run the next generation from the same "
        "champion (its small LMs reused, fresh traffic, the strategies reseeded).",
    )

    @model_validator(mode="after")
    def _check(self) -> LMCycleRecipe:
        if self.experts == "small" and not self.derive.enabled:
            raise ValueError(
                "experts is 'small' but derive.enabled is false; enable derive or use experts: lora"
            )
        if self.lm.experts.source != "derive":
            raise ValueError(
                "lm.experts.source: registry names fixed experts, but a cycle makes its own each generation; "
                "set experts: small (the derived LMs) or experts: lora (LoRA experts per lm.experts.finetune)"
            )
        if self.lm.data.collected is not None:
            raise ValueError("lm.data.collected: the cycle collects its own dataset each generation; drop it")
        try:
            names = [name for name, _ in self.feedback_recipe(self.champion, 0).parsed_strategies()]
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        if self.experts == "small" and "lm_merge" in names:
            raise ValueError(
                "strategies: lm_merge merges LoRA experts on the champion, but experts is 'small' (derived LMs "
                "of another shape); set experts: lora or drop lm_merge"
            )
        collects = self.deployment.enabled and self.derive.enabled and self.feed_collected
        if "lm_corrections" in names and not collects and self.lm.data.corrections is None:
            raise ValueError(
                "strategies: lm_corrections trains on corrections, but none reach it; set feed_collected: true "
                "with deployment and derive enabled, or give lm.data.corrections"
            )
        return self

    def feedback_recipe(
        self,
        champion: str,
        generation: int,
        small: dict[str, str] | None = None,
        collected: str | None = None,
    ) -> FeedbackRecipe:
        """The ``task: causal_lm`` feedback step of ``generation`` from ``champion``: ``small`` (domain -> id)
        are its experts when ``experts`` is small, ``collected`` (a dataset id) joins the corrections."""
        lm = self.lm.model_dump(mode="json")
        if self.experts == "small" and small:
            lm["experts"] = {"source": "registry", "models": dict(small)}
        if collected is not None and self.feed_collected:
            lm["data"] = {**lm["data"], "collected": collected}
        body = {
            "task": "causal_lm",
            "champion": champion,
            "max_length": self.max_length,
            "strategies": self.strategies,
            "lm": lm,
            "seed": self.seed + generation,
        }
        return validate(FeedbackRecipe, body, source="cycle")

    def derive_recipe(self, teacher: str, files: list[DomainSource]) -> LMDeriveRecipe:
        """The derive step: a small LM of every domain in ``files`` (the cycle's slices) from ``teacher``."""
        settings = self.derive
        data = LMDeriveData(
            source="files",
            files=files,
            seed=self.lm.data.seed,
            max_train=settings.max_train,
            max_validation=settings.max_validation,
            max_test=settings.max_test,
        )
        return LMDeriveRecipe(
            teacher=teacher,
            max_length=self.max_length,
            data=data,
            stages=settings.stages,
            executor=settings.executor,
        )

    def key(self) -> dict[str, Any]:
        """What identifies the cycle across reruns: the recipe without ``generations`` and ``on_no_promotion``."""
        return self.model_dump(mode="json", exclude={"generations", "on_no_promotion"})
