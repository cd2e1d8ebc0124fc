"""What every feedback strategy sees and returns, and the one catalog of strategies (:data:`STRATEGIES`).

A strategy turns the current champion large model and the swarm of domain experts into a **candidate**
large model. It may use the experts, the domains' public slices, unlabeled text and data collected
while serving; never a domain's private slice (the context does not carry it) and never a held-out
task's data (forgetting is measured there, by the gate).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from fanbu.errors import ConfigError
from fanbu.io import sha256_json
from fanbu.models.encoder import EncoderHandle
from fanbu.registration import Catalog, Entry

Labeled = tuple[list[str], list[int]]  # (texts, label indices)


class SwarmData(Protocol):
    """The data a feedback run hands its strategies (a bench setup, a recipe's slices)."""

    public: dict[str, Labeled]
    validation: dict[str, Labeled]
    unlabeled: list[str]
    collected: dict[str, list[str]]


@dataclass
class FeedbackContext:
    """The inputs of one feedback step.

    Attributes:
        large: The current champion, with one head per domain and per held-out task. Strategies
            must not modify it in place: copy it (``copy.deepcopy``) before training.
        experts: Domain name -> expert. Each expert has a head named after its domain whose label
            order matches the large model's head of that name. Experts may differ in architecture
            from ``large`` (pruned / distilled students) or share it (full fine-tunes, LoRA-merged).
        public: Domain name -> its labelled public slice (what large v0 was trained on).
        validation: Domain name -> a labelled validation slice for early stopping and selection.
        unlabeled: Extra unlabelled text of no particular domain; may be empty.
        collected: Domain name -> unlabelled texts that domain's small model met while serving (its
            traffic, never its private training slice); may be empty.
        work_dir: Scratch directory for checkpoints.
        seed: Seeds every random choice.
        teacher_cache: Where the experts' outputs on the transfer texts are kept (files keyed by the
            texts, checked against the expert's weights on load); ``None``: ``work_dir/teacher-cache``.
            Strategies run on one swarm can share a directory, and then label each text set once.
        memo: Evaluations of the context's own models (:meth:`validation_accuracy`, the unlabeled texts
            nearest each head). The champion and the experts never change (strategies copy them), so
            copies made with :func:`dataclasses.replace` share it and evaluate each model once.
    """

    large: EncoderHandle
    experts: dict[str, EncoderHandle]
    public: dict[str, Labeled]
    validation: dict[str, Labeled] = field(default_factory=dict)
    unlabeled: list[str] = field(default_factory=list)
    collected: dict[str, list[str]] = field(default_factory=dict)
    work_dir: Path = Path(".")
    seed: int = 0
    teacher_cache: Path | None = None
    memo: dict[tuple[Any, ...], Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def domains(self) -> list[str]:
        """The feedback domains (those with an expert), in a stable order."""
        return sorted(self.experts)

    @classmethod
    def for_run(
        cls,
        large: EncoderHandle,
        experts: dict[str, EncoderHandle],
        data: SwarmData,
        run_dir: Path,
        seed: int,
    ) -> FeedbackContext:
        """One context for a run of several strategies on one swarm: give each strategy a copy
        (``dataclasses.replace(ctx, work_dir=...)``) and they share the experts' outputs, kept under
        ``run_dir/teacher-cache``, and the validation scores of the champion and the experts."""
        return cls(
            large=large,
            experts=experts,
            public=data.public,
            validation=data.validation,
            unlabeled=data.unlabeled,
            collected=data.collected,
            work_dir=run_dir,
            seed=seed,
            teacher_cache=run_dir / "teacher-cache",
        )

    @property
    def teacher_cache_dir(self) -> Path:
        """The directory of the experts' cached outputs (``teacher_cache`` or ``work_dir/teacher-cache``)."""
        return self.teacher_cache if self.teacher_cache is not None else self.work_dir / "teacher-cache"

    def validation_accuracy(self, model: str, domain: str) -> float:
        """Accuracy on ``domain``'s validation slice of the champion (``model="champion"``) or of the expert
        named ``model``, evaluated once and kept in :attr:`memo`."""
        if domain not in self.validation:
            raise ConfigError(f"no validation slice for domain {domain!r}; give ctx.validation[{domain!r}]")
        if model != "champion" and model not in self.experts:
            raise ConfigError(f"no expert {model!r} in the swarm (experts: {self.domains})")
        handle = self.large if model == "champion" else self.experts[model]
        texts, labels = self.validation[domain]
        # the model object is part of the key: a context given another model under the same name
        # evaluates it afresh
        key = (model, id(handle.model), domain, sha256_json([list(texts), [int(y) for y in labels]]))
        if key not in self.memo:
            predictions = handle.predict(list(texts), domain, batch_size=64)
            self.memo[key] = float((predictions == np.asarray(labels)).mean())
        return float(self.memo[key])

    def transfer_texts(self, domain: str | None = None) -> list[str]:
        """Texts a strategy may label with the experts: public slices, collected and unlabeled text."""
        names = [domain] if domain is not None else sorted(set(self.public) | set(self.collected))
        texts = [t for name in names for t in self.public.get(name, ([], []))[0]]
        texts += [t for name in names for t in self.collected.get(name, [])]
        return texts + (list(self.unlabeled) if domain is None else [])


@dataclass
class StrategyOutput:
    """A strategy's candidate and what it measured on the way."""

    handle: EncoderHandle
    relation: str  # lineage relation to the champion, one of fanbu.registry.RELATIONS
    metrics: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)  # e.g. which experts were selected and why
    synthetic: list[Any] = field(default_factory=list)  # SyntheticSets it trained on (augment), registered with it


StrategyFn = Callable[[FeedbackContext, Any], StrategyOutput]


@dataclass(frozen=True)
class StrategyInfo(Entry):
    """One registered strategy: a :class:`~fanbu.registration.Entry` with the strategy function as ``run``."""

    @property
    def run(self) -> StrategyFn:
        """The strategy function ``(ctx, config) -> StrategyOutput``."""
        return self.impl  # type: ignore[no-any-return]


STRATEGIES: Catalog[StrategyInfo] = Catalog(
    "feedback strategy",
    field="strategies",
    capabilities={
        "same_architecture": "reads the experts' weights tensor by tensor: experts must have the champion's "
        "shape",
        "pruned_experts": "reads each expert's recorded sub-network (where its weights sit in the champion): "
        "experts must be pruned from the champion by a prune stage",
    },
    entry=StrategyInfo,
)

# ``@register_strategy(name, summary=..., reference=..., config=..., capabilities=...)`` registers one.
register_strategy = STRATEGIES.register


def get_strategy(name: str) -> StrategyInfo:
    """The registered strategy ``name``, or a ConfigError listing the known ones."""
    return STRATEGIES.get(name)


def check_experts(ctx: FeedbackContext, what: str) -> None:
    """Every expert must have its domain's head with the large model's label order."""
    if not ctx.experts:
        raise ConfigError(f"{what}: the swarm is empty; derive at least one expert first")
    for name, expert in ctx.experts.items():
        if name not in expert.labels:
            raise ConfigError(
                f"{what}: expert {name!r} has no head {name!r} (heads: {sorted(expert.labels)})"
            )
        if name not in ctx.large.labels:
            raise ConfigError(f"{what}: the large model has no head {name!r}; add it before feeding back")
        if list(expert.labels[name]) != list(ctx.large.labels[name]):
            raise ConfigError(
                f"{what}: expert {name!r} labels {expert.labels[name]} differ from the large model's "
                f"{ctx.large.labels[name]}"
            )
