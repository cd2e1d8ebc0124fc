"""What ``fanbu feedback RECIPE.yaml`` runs: the champion, the swarm, the data, the strategies, the gate.

A recipe validates without building anything: each strategy's settings go through that strategy's
own config (``strategies.0.merge.method`` names a bad field), and merge-family strategies refuse a
derive stage list that would give experts of another architecture than the champion's.
:class:`FeedbackCore` holds the parts a cycle recipe shares (``fanbu.cycle.recipe``), and
:data:`StrategyList` the strategy field the demo's feedback step shares too.
"""

from __future__ import annotations

import copy
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, Field, field_validator, model_validator

from fanbu.config import Strict
from fanbu.data.slices import SliceSpec
from fanbu.derive.data import DeriveData
from fanbu.derive.stages import parse_stages
from fanbu.errors import ConfigError
from fanbu.execute import ExecutorConfig
from fanbu.feedback.gate.promotion import GateConfig
from fanbu.feedback.lm import LM_METHODS
from fanbu.feedback.lm.recipe import LMFeedbackSettings
from fanbu.feedback.shared.context import STRATEGIES


def _named(item: Any) -> Any:
    """The strategy name of one recipe list item (``name`` or ``{name: settings}``), else the item."""
    if isinstance(item, dict) and len(item) == 1:
        return next(iter(item))
    return item


def parse_strategies(raw: list[Any]) -> list[tuple[str, BaseModel]]:
    """Validate ``[{strategy: {settings}}, ...]`` against each strategy's config, with field paths.

    The classifiers' strategies come from :data:`STRATEGIES`, the causal-LM methods from
    :data:`~fanbu.feedback.lm.LM_METHODS`; one list holds one kind.
    """
    if not raw:
        raise ConfigError("strategies: empty; list at least one, e.g. [{merge: {method: ties}}]")
    names = [_named(item) for item in raw]
    lm = [n for n in names if isinstance(n, str) and n in LM_METHODS]
    others = [n for n in names if isinstance(n, str) and n in STRATEGIES]
    if lm and others:  # a malformed entry is neither: the registry's parse names its path
        raise ConfigError(
            f"strategies: {lm} feed back causal LMs but {others} feed back classifiers; a recipe has one "
            "task, so list only one kind"
        )
    return (LM_METHODS if lm else STRATEGIES).parse(raw)


def check_strategies(strategies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``strategies`` unchanged if :func:`parse_strategies` accepts it; else a ValueError for pydantic."""
    try:
        parse_strategies(strategies)
    except ConfigError as exc:
        raise ValueError(str(exc)) from None
    return strategies


# A recipe's ``[{strategy: {settings}}, ...]`` field: each entry validated by its strategy's own config.
StrategyList = Annotated[list[dict[str, Any]], AfterValidator(check_strategies)]


def check_stages(stages: list[Any], empty: str) -> list[tuple[str, BaseModel]]:
    """Parse a derive stage list for a field validator; ``empty`` says what to do when it has no stage."""
    try:
        parsed = parse_stages(stages)
    except ConfigError as exc:
        raise ValueError(str(exc)) from None
    if not parsed:
        raise ValueError(f"no stages; {empty}")
    return parsed


class FeedbackData(SliceSpec):
    """Which domains feed back (default: all; the champion's other heads are held out), and how much of
    their public, validation, gate and test data to use: a :class:`SliceSpec` plus the public and gate
    caps and a collected dataset."""

    max_public: int | None = Field(250, ge=1, description="Cap on public examples per domain.")
    max_gate: int | None = Field(
        None, ge=1, description="Cap on gate examples per task (the split promotion decides on; default: all)."
    )
    collected: str | None = Field(
        None,
        description="A dataset made by `fanbu collect` (id or name): its labelled rows join the domains' "
        "public data, its unlabeled texts the context's unlabeled text.",
    )

    def derive_data(
        self,
        domains: list[str] | None,
        max_train: int | None,
        transfer: Literal["none", "public"] = "none",
        max_transfer: int | None = None,
    ) -> DeriveData:
        """The derive pipeline's data for ``domains``: the same source, seed, splits and caps as here."""
        return DeriveData.of(self, domains, max_train, transfer, max_transfer)


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
        parsed = check_stages(stages, "derive the experts with at least [{finetune: {}}]")
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
    check_lineage: bool = Field(
        True,
        description="With source: registry, refuse a model that does not descend from the champion or an "
        "earlier version of its name (a small model of another large model's line); false: accept any.",
    )

    @model_validator(mode="after")
    def _check(self) -> ExpertsConfig:
        if self.source == "registry" and not self.models:
            raise ValueError("source is 'registry' but no models are listed; add domain: model under models")
        if self.source == "derive" and self.models:
            raise ValueError("models are listed but source is 'derive'; set source: registry to use them")
        return self


class FeedbackCore(Strict):
    """What a feedback step and a cycle of them share: champion, data, strategies, gate, seed."""

    champion: str = Field("large", description="A registered model id (large:v0), or a name: its champion.")
    max_length: int | None = Field(None, ge=8, description="Tokens per text; default: the champion's.")
    data: FeedbackData = Field(default_factory=FeedbackData)
    strategies: StrategyList = Field(
        default_factory=lambda: [{"merge": {"method": "ties"}}],
        description="[{strategy: {settings}}, ...] (see `fanbu.feedback.STRATEGIES`); each makes a candidate.",
    )
    gate: GateConfig = Field(default_factory=GateConfig)
    seed: int = Field(0, description="Seeds the strategies.")

    @model_validator(mode="after")
    def _levels_from_sources(self) -> FeedbackCore:
        """A merge by level given groups but no leaves takes each domain's group from its source (files)."""
        if self.data.source != "files":
            return self
        groups = {source.name: source.group for source in self.data.files}
        chosen = self.data.domains or list(groups)
        strategies = copy.deepcopy(self.strategies)  # the caller's recipe dicts stay as given
        filled = False
        for item in strategies:
            settings = item.get("merge") if isinstance(item, dict) and len(item) == 1 else None
            levels = settings.get("levels") if isinstance(settings, dict) else None
            if isinstance(levels, dict) and not levels.get("leaves"):
                levels["leaves"] = {name: groups.get(name) for name in chosen}
                filled = True
        if filled:  # the filled tree is checked like one written out (a source's group must be defined)
            self.strategies = check_strategies(strategies)
        return self

    def parsed_strategies(self) -> list[tuple[str, BaseModel]]:
        """``(name, validated config)`` of each strategy, in order."""
        return parse_strategies(self.strategies)

    def same_architecture_strategies(self) -> list[str]:
        """The strategies named here that need experts shaped like the champion, sorted."""
        needing = {entry.name for entry in STRATEGIES.with_capability("same_architecture")}
        return sorted({name for name, _ in self.parsed_strategies()} & needing)


class FeedbackRecipe(FeedbackCore):
    """What ``fanbu feedback`` runs: classifiers (the default), or causal LMs with ``task: causal_lm``."""

    task: Literal["classification", "causal_lm"] = Field(
        "classification",
        description="classification: encoder classifiers (data, experts, gate); causal_lm: language models "
        "(the lm section and the lm_* strategies).",
    )
    experts: ExpertsConfig = Field(default_factory=ExpertsConfig)
    lm: LMFeedbackSettings | None = Field(
        None, description="With task: causal_lm, its domains, experts and gate (default settings when omitted)."
    )

    @model_validator(mode="after")
    def _task_fits(self) -> FeedbackRecipe:
        lm_methods = set(LM_METHODS)
        names = [name for name, _ in self.parsed_strategies()]
        if self.task == "classification":
            wrong = sorted(set(names) & lm_methods)
            if wrong:
                raise ValueError(
                    f"strategies {wrong} feed back causal LMs, but the task is classification; set task: "
                    "causal_lm (with an lm section and LM domains), or use merge, swarm_distill, sequential, ..."
                )
            if self.lm is not None:
                raise ValueError("an lm section is given but task is classification; set task: causal_lm")
            return self
        wrong = sorted(set(names) - lm_methods)
        if wrong:
            raise ValueError(
                f"strategies {wrong} feed back classifiers (classification domains), but task is causal_lm; "
                f"use {', '.join(sorted(lm_methods))}"
            )
        # a section left at its default is not misplaced: a resolved recipe (every field written) re-validates
        misplaced = sorted(
            name
            for name in {"data", "experts", "gate"} & self.model_fields_set
            if getattr(self, name) != type(self).model_fields[name].get_default(call_default_factory=True)
        )
        if misplaced:
            raise ValueError(
                f"{misplaced} configure classification feedback; with task: causal_lm put them under lm "
                "(lm.data, lm.experts, lm.gate)"
            )
        if self.lm is None:
            self.lm = LMFeedbackSettings()
        return self

    @model_validator(mode="after")
    def _same_architecture(self) -> FeedbackRecipe:
        needing = self.same_architecture_strategies()
        if needing and self.experts.source == "derive":
            problem = self.experts.derive.same_architecture_problem()
            if problem is not None:
                raise ValueError(
                    f"experts.derive.stages: {problem}, but {', '.join(needing)} need experts shaped like the "
                    "champion; derive with finetune only (full, or LoRA merged), or drop those strategies"
                )
        return self
