"""What ``fanbu feedback RECIPE.yaml`` runs: the champion, the swarm, the data, the strategies, the gate.

A recipe validates without building anything: each strategy's settings go through that strategy's
own config (``strategies.0.merge.method`` names a bad field), and merge-family strategies refuse a
derive stage list that would give experts of another architecture than the champion's.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from fanbu.config import Strict, validate
from fanbu.data.loaders import DomainSource
from fanbu.derive.stages import parse_stages
from fanbu.errors import ConfigError
from fanbu.execute import ExecutorConfig
from fanbu.feedback.base import get_strategy
from fanbu.feedback.gate import GateConfig

# Strategies that read the experts' weights tensor by tensor: experts must share the champion's shape.
SAME_ARCHITECTURE: tuple[str, ...] = ("merge", "moe", "graft")


class FeedbackData(Strict):
    """Which domains feed back, and how much of their public, validation and test data to use."""

    source: Literal["default", "files"] = Field(
        "default", description="default: the built-in 20 Newsgroups benchmark; files: the `files` list."
    )
    domains: list[str] | None = Field(
        None, description="The feedback domains (default: all); the champion's other heads are held out."
    )
    files: list[DomainSource] = Field(default_factory=list, description="Your own domains (source: files).")
    heldout_files: list[DomainSource] = Field(
        default_factory=list, description="Held-out tasks of your own (source: files), scored for forgetting."
    )
    seed: int = Field(0, description="Seeds splits and subsampling.")
    public_fraction: float = Field(0.1, gt=0, lt=1, description="Share of train that is public.")
    max_public: int | None = Field(250, ge=1, description="Cap on public examples per domain.")
    max_validation: int | None = Field(200, ge=1, description="Cap on validation examples per domain.")
    max_test: int | None = Field(None, ge=1, description="Cap on test examples per task (gate and report).")
    collected: str | None = Field(
        None,
        description="A dataset made by `fanbu collect` (id or name): its labelled rows join the domains' "
        "public data, its unlabeled texts the context's unlabeled text.",
    )

    @model_validator(mode="after")
    def _check(self) -> FeedbackData:
        if self.source == "files" and not self.files:
            raise ValueError("source is 'files' but no files are listed; add domains under data.files")
        if self.source == "default" and (self.files or self.heldout_files):
            raise ValueError("files / heldout_files are given but source is 'default'; set source: files")
        return self


class ExpertDerive(Strict):
    """How the experts are derived from the champion (the derive pipeline, the champion as teacher)."""

    stages: list[Any] = Field(
        default_factory=lambda: [{"finetune": {"mode": "full"}}],
        description="Derive stages, [{stage: {settings}}, ...]; merge/moe/graft need finetune only.",
    )
    max_train: int | None = Field(None, ge=1, description="Cap on private training examples per domain.")
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)

    @field_validator("stages")
    @classmethod
    def _stages_valid(cls, stages: list[Any]) -> list[Any]:
        try:
            parsed = parse_stages(stages)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        if not parsed:
            raise ValueError("no stages; derive the experts with at least [{finetune: {}}]")
        name, config = parsed[-1]
        if name == "finetune" and getattr(config, "mode", "full") == "lora" and not config.lora.merge:  # type: ignore[attr-defined]
            raise ValueError(
                "the last stage keeps a LoRA adapter (lora.merge: false); set merge: true so the expert loads as a model"
            )
        return stages

    def same_architecture_problem(self) -> str | None:
        """Why these stages would not give experts shaped like the champion, or None."""
        for name, config in parse_stages(self.stages):
            if name != "finetune":
                return f"stage {name!r} changes the architecture"
            if getattr(config, "mode", "full") == "lora" and not config.lora.merge:  # type: ignore[attr-defined]
                return "LoRA with merge: false keeps an adapter, not merged weights"
        return None


class ExpertsConfig(Strict):
    """Where the swarm comes from: derived now, or already in the registry."""

    source: Literal["derive", "registry"] = Field(
        "derive", description="derive: fine-tune the champion on each private slice; registry: `models`."
    )
    models: dict[str, str] = Field(
        default_factory=dict,
        description="Domain -> a registered model (an id like comp.finetune:v0, or a name: its newest version).",
    )
    derive: ExpertDerive = Field(default_factory=ExpertDerive)

    @model_validator(mode="after")
    def _check(self) -> ExpertsConfig:
        if self.source == "registry" and not self.models:
            raise ValueError("source is 'registry' but no models are listed; add domain: model under models")
        if self.source == "derive" and self.models:
            raise ValueError("models are listed but source is 'derive'; set source: registry to use them")
        return self


class FeedbackRecipe(Strict):
    """What ``fanbu feedback`` runs."""

    champion: str = Field("large", description="A registered model id (large:v0), or a name: its champion.")
    max_length: int | None = Field(None, ge=8, description="Tokens per text; default: the champion's.")
    data: FeedbackData = Field(default_factory=FeedbackData)
    experts: ExpertsConfig = Field(default_factory=ExpertsConfig)
    strategies: list[dict[str, Any]] = Field(
        default_factory=lambda: [{"merge": {"method": "ties"}}],
        description="[{strategy: {settings}}, ...] (see `fanbu.feedback.STRATEGIES`); each makes a candidate.",
    )
    gate: GateConfig = Field(default_factory=GateConfig)
    seed: int = Field(0, description="Seeds the strategies.")

    @field_validator("strategies")
    @classmethod
    def _strategies_valid(cls, strategies: list[dict[str, Any]]) -> list[dict[str, Any]]:
        try:
            parse_strategies(strategies)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return strategies

    @model_validator(mode="after")
    def _same_architecture(self) -> FeedbackRecipe:
        names = [name for name, _ in parse_strategies(self.strategies)]
        needing = sorted(set(names) & set(SAME_ARCHITECTURE))
        if needing and self.experts.source == "derive":
            problem = self.experts.derive.same_architecture_problem()
            if problem is not None:
                raise ValueError(
                    f"experts.derive.stages: {problem}, but {', '.join(needing)} need experts shaped like the "
                    "champion; derive with finetune only (full, or LoRA merged), or drop those strategies"
                )
        return self

    def parsed_strategies(self) -> list[tuple[str, BaseModel]]:
        """``(name, validated config)`` of each strategy, in order."""
        return parse_strategies(self.strategies)


def parse_strategies(raw: list[Any]) -> list[tuple[str, BaseModel]]:
    """Validate ``[{strategy: {settings}}, ...]`` against each strategy's config, with field paths."""
    if not raw:
        raise ConfigError("strategies: empty; list at least one, e.g. [{merge: {method: ties}}]")
    parsed = []
    for index, item in enumerate(raw):
        if isinstance(item, str):
            item = {item: {}}
        if not isinstance(item, dict) or len(item) != 1:
            raise ConfigError(
                f"strategies.{index}: write each strategy as {{name: {{settings}}}}, got {item!r}"
            )
        ((name, settings),) = item.items()
        try:
            info = get_strategy(name)
        except ConfigError as exc:
            raise ConfigError(f"strategies.{index}: {exc}") from None
        parsed.append((name, validate(info.config, settings or {}, source=f"strategies.{index}.{name}")))
    return parsed
