"""Weight merging of experts that share the large model's architecture: average, task arithmetic, TIES, DARE.

Task vectors are ``expert - champion`` per encoder tensor; PEFT's ``peft.utils.merge_utils`` combines
the stacked vectors, and the candidate is ``champion + scaling * merged``. fanbu adds what PEFT lacks:
experts worse than the champion on validation are left out (:mod:`fanbu.feedback.shared.weights`), each
domain's head comes from its expert (heads are not merged), held-out heads stay the champion's.

With ``levels`` (a domain tree, seed technique 20) the merge follows how the domains relate: each group's
leaf experts are merged into a group vector first, deepest groups next, and the top groups' vectors into
the champion last, each step by ``method`` (:func:`merge_states_by_level`). A group then counts once at
its level however many domains it holds, and siblings settle their conflicts (TIES's sign election)
among themselves before they meet another group's.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from peft.utils import merge_utils
from pydantic import Field, model_validator
from torch import Tensor

from fanbu.config import Strict
from fanbu.errors import ConfigError
from fanbu.feedback.shared.context import FeedbackContext, StrategyOutput, register_strategy
from fanbu.feedback.shared.weights import (
    SelectionConfig,
    plain_state,
    same_architecture_swarm,
    take_heads,
    validation_metrics,
)
from fanbu.hierarchy.tree import ROOT, DomainTree, TreeConfig
from fanbu.models.encoder import EncoderHandle

Method = Literal["average", "task_arithmetic", "ties", "dare_linear", "dare_ties"]
SPARSE: tuple[str, ...] = ("ties", "dare_linear", "dare_ties")
SUMMING: tuple[str, ...] = ("average", "task_arithmetic", "dare_linear")
DEFAULT_DENSITY = 0.5


class MergeConfig(Strict):
    """How the selected experts' task vectors are combined."""

    method: Method = Field(
        "ties",
        description="average: uniform (or weighted) mean of the experts' weights (the baseline); "
        "task_arithmetic: champion + scaling * sum of weighted task vectors; ties: trim to density, "
        "elect signs, average the agreeing entries; dare_linear / dare_ties: random drop to density "
        "with rescaling, then a sum / TIES's sign election.",
    )
    weights: dict[str, float] | None = Field(
        None, description="Domain -> weight of its task vector; default 1.0 for every expert."
    )
    normalize: bool = Field(
        True,
        description="Divide the weights by their sum for the summing methods (average, task_arithmetic, "
        "dare_linear); TIES and DARE-TIES already average the agreeing entries, so they use the weights as given.",
    )
    scaling: float = Field(1.0, gt=0, description="lambda: the merged task vector is scaled by this.")
    scalings: list[float] | None = Field(
        None,
        min_length=1,
        description="Lambdas to try in place of `scaling`: the candidate is built with each and the one whose "
        "mean validation accuracy over the selected domains is highest is kept (ties: the smallest lambda, "
        "the mildest change), as task arithmetic chooses its scaling on held-out data; every lambda's score "
        "goes to details.scalings. No training step is taken.",
    )
    density: float | None = Field(
        None, gt=0, le=1, description="Share of each task vector kept by ties / dare_*; default 0.5."
    )
    majority_sign: Literal["total", "frequency"] = Field(
        "total", description="TIES sign election: by summed magnitude (total) or by count (frequency)."
    )
    selection: SelectionConfig = Field(
        default_factory=SelectionConfig, description="Which experts take part."
    )
    levels: TreeConfig | None = Field(
        None,
        description="Merge by level: groups (group -> parent group, null for a top group) and leaves (domain -> "
        "its group, null: straight on the trunk). Each group's experts are merged first, then the groups into "
        "the champion, every step by `method`. With data.source: files and no leaves, each domain source's "
        "`group` fills them. null: one flat merge of every expert.",
    )

    @model_validator(mode="after")
    def _check(self) -> MergeConfig:
        if self.density is not None and self.method not in SPARSE:
            raise ValueError(f"density applies to {', '.join(SPARSE)}, not {self.method!r}; remove it")
        if self.method == "average" and (self.scaling != 1.0 or self.scalings is not None):
            raise ValueError("average takes no scaling (it is a mean); use method: task_arithmetic to scale")
        if self.scalings is not None and any(x <= 0 for x in self.scalings):
            raise ValueError(f"scalings must be positive, got {self.scalings}")
        if self.scalings is not None and self.scaling != 1.0:
            raise ValueError(f"give scaling ({self.scaling}) or scalings ({self.scalings}), not both")
        if self.method == "average" and not self.normalize:
            raise ValueError(
                "average always normalises its weights; use task_arithmetic with normalize: false"
            )
        if self.weights is not None and any(w < 0 for w in self.weights.values()):
            raise ValueError(f"weights must be non-negative, got {self.weights}")
        return self

    @property
    def kept(self) -> float:
        """The density actually used by the sparse methods."""
        return DEFAULT_DENSITY if self.density is None else self.density


def merge_states(
    champion: Mapping[str, Tensor],
    experts: Sequence[Mapping[str, Tensor]],
    weights: Sequence[float],
    config: MergeConfig,
    seed: int = 0,
) -> dict[str, Tensor]:
    """``champion + scaling * merge(expert - champion)`` for every tensor, with PEFT's merge functions."""
    if not experts:
        raise ConfigError("merge: no expert weights to merge; select at least one expert")
    w = merge_weights(weights, config, "the weights")  # (experts,)
    merged: dict[str, Tensor] = {}
    with seeded_merge(seed):
        for key, base in champion.items():
            vectors = [(expert[key].float() - base.float()) for expert in experts]  # each like base
            delta = combine_vectors(vectors, w, config)  # like base
            merged[key] = (base.float() + config.scaling * delta).to(base.dtype)
    return merged


def choose_scaling(
    ctx: FeedbackContext,
    candidate: EncoderHandle,
    domains: Sequence[str],
    config: MergeConfig,
    build: Callable[[MergeConfig], dict[str, Tensor]],
    load: Callable[[EncoderHandle, dict[str, Tensor]], None],
    where: str,
) -> dict[str, object]:
    """Load into ``candidate`` the merge (``build`` at each lambda of ``config.scalings``) best on validation.

    The score is the mean validation accuracy over ``domains`` that have a validation split (the
    champion's other heads have none here; the gate guards them). Lambdas are tried smallest first and a
    later one is kept only when strictly better, so a tie keeps the mildest change.
    """
    scored = [d for d in domains if d in ctx.validation and len(ctx.validation[d][0])]
    if not scored:
        raise ConfigError(
            f"{where}.scalings: no validation split of a selected domain to choose lambda on; give the "
            "domains validation data, or set scaling instead of scalings"
        )
    scores: dict[float, float] = {}
    best: tuple[float, dict[str, Tensor]] | None = None
    for scaling in sorted(set(config.scalings or [1.0])):
        merged = build(config.model_copy(update={"scaling": scaling, "scalings": None}))
        load(candidate, merged)
        accuracies = []
        for domain in scored:
            texts, labels = ctx.validation[domain]
            predictions = candidate.predict(list(texts), domain, batch_size=64)
            accuracies.append(float((predictions == np.asarray(labels)).mean()))
        scores[scaling] = sum(accuracies) / len(accuracies)
        if best is None or scores[scaling] > scores[best[0]]:
            best = (scaling, merged)
    assert best is not None  # at least one lambda
    load(candidate, best[1])
    return {"chosen": best[0], "val_acc_mean": {str(k): v for k, v in scores.items()}, "on": scored}


@dataclass(frozen=True)
class LevelStep:
    """One merge by level: the vectors of ``children`` into ``into`` (:data:`ROOT`: the champion)."""

    into: str
    children: tuple[str, ...]
    weights: tuple[float, ...]


def level_steps(tree: DomainTree, weights: Mapping[str, float]) -> list[LevelStep]:
    """The merges of :func:`merge_states_by_level` in order: every group with a merged child, deepest first,
    then the trunk. A domain's weight is ``weights[domain]``; a group's, the mean of its children's."""
    weight = dict(weights)
    steps = []
    for node in [*tree.bottom_up(), ROOT]:
        children = tuple(c for c in tree.children(node) if c in weight)
        if not children:
            continue
        steps.append(LevelStep(node, children, tuple(weight[c] for c in children)))
        weight[node] = sum(weight[c] for c in children) / len(children)
    return steps


def merge_states_by_level(
    champion: Mapping[str, Tensor],
    experts: Mapping[str, Mapping[str, Tensor]],
    weights: Mapping[str, float],
    tree: DomainTree,
    config: MergeConfig,
    seed: int = 0,
) -> tuple[dict[str, Tensor], list[LevelStep]]:
    """``champion + scaling * delta``, where ``delta`` merges the experts' task vectors up ``tree``: each
    group's children by ``config.method`` (normalised weights for the summing methods), then the top nodes.

    The sparse methods trim a domain's own vector to ``config.kept`` where it first meets its siblings; a
    group's merged vector is sparse already and is not trimmed again (density 1 above that).
    """
    if not experts:
        raise ConfigError("merge: no expert weights to merge; select at least one expert")
    outside = sorted(set(experts) - set(tree.leaves))
    if outside:
        raise ConfigError(
            f"merge.levels.leaves: no place in the tree for {outside}; give each its group (null puts a domain "
            "straight on the trunk)"
        )
    steps = level_steps(tree, {d: weights[d] for d in experts})
    step_weights = [merge_weights(s.weights, config, f"the weights of {list(s.children)}") for s in steps]
    # a domain's own vector is trimmed where it first meets its siblings; a merged group vector is not again
    densities = [None if any(c in experts for c in s.children) else 1.0 for s in steps]
    merged: dict[str, Tensor] = {}
    with seeded_merge(seed):
        for key, base in champion.items():
            vectors = {d: expert[key].float() - base.float() for d, expert in experts.items()}
            for step, w, density in zip(steps, step_weights, densities, strict=True):
                vectors[step.into] = combine_vectors([vectors[c] for c in step.children], w, config, density)
            merged[key] = (base.float() + config.scaling * vectors[ROOT]).to(base.dtype)
    return merged, steps


def merge_weights(weights: Sequence[float], config: MergeConfig, what: str) -> Tensor:
    """``weights`` as a tensor, divided by their sum for the summing methods (``config.normalize``)."""
    w = torch.tensor(list(weights), dtype=torch.float32)
    if config.method in SUMMING and config.normalize:
        if float(w.sum()) <= 0:
            raise ConfigError(f"merge: {what} {list(weights)} sum to zero; give a positive weight")
        w = w / w.sum()
    return w


@contextmanager
def seeded_merge(seed: int) -> Iterator[None]:
    """Seed DARE's random drop with ``seed`` (the global generators are restored after) and silence
    PEFT's warning that a density of 1 prunes nothing."""
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        torch.manual_seed(seed)
        warnings.filterwarnings("ignore", message="The density .* no pruning will be performed")
        yield


def combine_vectors(
    vectors: list[Tensor], weights: Tensor, config: MergeConfig, density: float | None = None
) -> Tensor:
    """PEFT's merge of same-shaped task vectors by ``config.method``; ``density`` overrides
    ``config.kept`` (1.0: the vectors are sparsified already)."""
    method, kept = config.method, config.kept if density is None else density
    if method in ("average", "task_arithmetic"):
        return merge_utils.task_arithmetic(vectors, weights)
    if method == "ties":
        return merge_utils.ties(vectors, weights, kept, config.majority_sign)
    if method == "dare_linear":
        return merge_utils.dare_linear(vectors, weights, kept)
    return merge_utils.dare_ties(vectors, weights, kept, config.majority_sign)


@register_strategy(
    "merge",
    summary="Merge same-architecture experts into the large model: average, task arithmetic, TIES, DARE "
    "(PEFT), with selection",
    reference="https://arxiv.org/abs/2306.01708 (TIES); https://arxiv.org/abs/2311.03099 (DARE); "
    "https://arxiv.org/abs/2212.04089 (task arithmetic)",
    config=MergeConfig,
    capabilities={"same_architecture"},
)
def merge_strategy(ctx: FeedbackContext, config: MergeConfig) -> StrategyOutput:
    """Merge the selected experts' encoders into a copy of the champion; heads come from the experts."""
    if config.weights is not None:
        unknown = sorted(set(config.weights) - set(ctx.domains))
        if unknown:
            raise ConfigError(f"merge.weights: no expert for {unknown}; experts: {ctx.domains}")
    tree = level_tree(ctx, config.levels) if config.levels is not None else None
    selected, details = same_architecture_swarm(ctx, config.selection, "merge")
    weights = [1.0 if config.weights is None else config.weights.get(d, 1.0) for d in selected]
    champion = plain_state(ctx.large)
    experts = {d: plain_state(ctx.experts[d]) for d in selected}

    def build(settings: MergeConfig) -> dict[str, Tensor]:
        if tree is None:
            return merge_states(champion, list(experts.values()), weights, settings, ctx.seed)
        merged, steps = merge_states_by_level(
            champion, experts, dict(zip(selected, weights, strict=True)), tree, settings, ctx.seed
        )
        details["levels"] = [
            {"into": s.into, "children": list(s.children), "weights": list(s.weights)} for s in steps
        ]
        return merged

    def load(candidate: EncoderHandle, merged: dict[str, Tensor]) -> None:
        missing, unexpected = candidate.model.encoder.load_state_dict(merged, strict=False)
        if unexpected or any(k in merged for k in missing):
            raise ConfigError(f"merge: merged weights do not fit the large model (unexpected {unexpected[:3]})")

    candidate = copy.deepcopy(ctx.large)
    take_heads(candidate, ctx.experts, selected)
    if config.scalings is None:
        load(candidate, build(config))
    else:
        details["scalings"] = choose_scaling(ctx, candidate, selected, config, build, load, "merge")
    details.update({"method": config.method, "weights": dict(zip(selected, weights, strict=True))})
    if config.method in SPARSE:
        details["density"] = config.kept
    return StrategyOutput(candidate, "merge", validation_metrics(ctx, candidate), details)


def level_tree(ctx: FeedbackContext, levels: TreeConfig) -> DomainTree:
    """The tree of ``merge.levels``, checked against the swarm: every expert has a place, every leaf an expert."""
    if not levels.leaves:
        raise ConfigError(
            "merge.levels: no leaves; give levels.leaves (domain: group), or read your domains from files "
            "(data.source: files) with each source's group set"
        )
    unknown = sorted(set(levels.leaves) - set(ctx.domains))
    if unknown:
        raise ConfigError(
            f"merge.levels.leaves: {unknown} are not domains of the swarm (experts: {ctx.domains})"
        )
    missing = sorted(set(ctx.domains) - set(levels.leaves))
    if missing:
        raise ConfigError(
            f"merge.levels.leaves: no group for {missing}; give each its group (null puts a domain straight on "
            "the trunk)"
        )
    return DomainTree.from_config(levels)
