"""``invariance``: swarm distillation that transfers the rules the swarm agrees on, not its shortcuts.

The consensus report (:mod:`fanbu.attribution.consensus`) reads every domain's transfer texts with each
model that carries its head; the words one model alone relies on are the candidate shortcuts, and the
``flag_top`` highest-ranked of each domain are flagged. The candidate then learns the swarm's soft
labels as in ``swarm_distill``, and

* ``rrr_weight``: an input-gradient penalty keeps its output from moving with the flagged words'
  embeddings (right for the right reasons);
* ``vrex_weight``: the variance of the distillation risk across the domains (the environments) is
  penalised (V-REx);
* ``counterfactual``: each transfer text holding a flagged word gets a copy with the word swapped for
  a random vocabulary word or removed, carrying the original's soft label.

The domains are the environments: a swarm of one domain has nothing to compare, and is refused.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Any, Literal

from pydantic import Field, model_validator
from torch.nn.attention import SDPBackend, sdpa_kernel

from fanbu.attribution.consensus import ConsensusConfig, consensus_report, shortcut_words
from fanbu.attribution.counterfactual import plain_vocabulary
from fanbu.errors import ConfigError, ModelError
from fanbu.feedback.shared.context import FeedbackContext, StrategyOutput, check_experts, register_strategy
from fanbu.feedback.shared.fit import fit_candidate, validation_metrics
from fanbu.feedback.shared.selection import select_experts
from fanbu.feedback.shared.soft_losses import FeatureMatching, SoftLabelLoss
from fanbu.feedback.shared.soft_targets import build_targets
from fanbu.feedback.shared.swarm_structure import swarm_layer_multipliers
from fanbu.feedback.strategies.invariance_terms import (
    InputGradientPenalty,
    RiskVariance,
    counterfactual_targets,
    word_patterns,
)
from fanbu.feedback.strategies.swarm import SwarmConfig
from fanbu.train.distill.losses import MaskedTaskLoss
from fanbu.train.terms import LossTerm


class InvarianceConfig(SwarmConfig):
    """Settings of ``invariance``: ``swarm_distill``'s, plus how shortcuts are found and discouraged."""

    consensus: ConsensusConfig = Field(
        default_factory=ConsensusConfig, description="How the consensus report reads the swarm."
    )
    flag_top: int = Field(
        3, ge=1, description="Shortcut words flagged per domain (the report's highest-ranked)."
    )
    shortcuts: dict[str, list[str]] | None = Field(
        None,
        description="Domain -> words to flag, given by hand or from an earlier consensus report; null: run "
        "the consensus report on the swarm.",
    )
    rrr_weight: float = Field(
        1.0, ge=0, description="Weight of the input-gradient penalty on flagged words' embeddings (0: off)."
    )
    vrex_weight: float = Field(
        0.0, ge=0, description="Weight of the variance of the domains' distillation risks (V-REx; 0: off)."
    )
    counterfactual: Literal["off", "swap", "remove"] = Field(
        "swap",
        description="Copies of transfer texts with flagged words swapped for a random vocabulary word or "
        "removed, the teachers' labels kept; off: none.",
    )

    @model_validator(mode="after")
    def _something_to_do(self) -> InvarianceConfig:
        if self.rrr_weight == 0 and self.vrex_weight == 0 and self.counterfactual == "off":
            raise ValueError(
                "invariance with rrr_weight: 0, vrex_weight: 0 and counterfactual: off is swarm_distill; "
                "turn one on or use swarm_distill"
            )
        return self


def flagged_words(
    ctx: FeedbackContext, config: InvarianceConfig, experts: dict
) -> tuple[dict[str, list[str]], Any]:
    """Domain -> flagged words, and the consensus report they came from (None when given by hand)."""
    if config.shortcuts is not None:
        unknown = sorted(set(config.shortcuts) - set(ctx.domains))
        if unknown:
            raise ConfigError(
                f"invariance: shortcuts name unknown domains {unknown} (domains: {ctx.domains})"
            )
        return {d: list(w) for d, w in config.shortcuts.items()}, None
    texts = {d: ctx.transfer_texts(d) for d in ctx.domains}
    report = consensus_report(experts, texts, config.consensus, champion=ctx.large, seed=ctx.seed)
    return shortcut_words(report, config.flag_top), report


@register_strategy(
    "invariance",
    summary="swarm distillation that discourages the shortcuts one expert alone relies on (input-gradient "
    "penalty, V-REx across domains, counterfactual texts)",
    reference="https://arxiv.org/abs/1703.03717",
    config=InvarianceConfig,
)
def invariance(ctx: FeedbackContext, config: InvarianceConfig) -> StrategyOutput:
    """Distil the selected experts into a copy of ``ctx.large`` without their flagged shortcuts."""
    check_experts(ctx, "invariance")
    ctx, synthetic, augmented = config.augmented(ctx, "invariance")
    if len(ctx.domains) < 2:
        raise ConfigError(
            f"invariance: the swarm has one domain ({ctx.domains[0]}), so there are no environments to "
            "compare; feed back at least two domains, or use swarm_distill"
        )
    train = config.train.model_copy(update={"seed": ctx.seed})
    selection = select_experts(ctx, config.selection_tolerance)
    if not selection.kept:
        raise ConfigError(
            f"invariance: every expert was left out by the selection ({selection.excluded}); raise "
            "selection_tolerance (null switches selection off)"
        )
    experts = {d: ctx.experts[d] for d in selection.kept}
    if config.swarm_lr_floor is not None:
        multipliers = swarm_layer_multipliers(ctx.large, experts, config.swarm_lr_floor)
        train = train.model_copy(update={"lr_multipliers": multipliers})
    flags, report = flagged_words(ctx, config, experts)
    words = sorted({w for found in flags.values() for w in found})
    targets = build_targets(
        ctx, experts, config.teachers, features=config.feature_weight > 0, cache_dir=ctx.teacher_cache_dir
    )
    if not targets:
        raise ConfigError("invariance: no transfer texts; give the context public slices or unlabeled texts")
    start, started = config.starting_point(ctx)
    candidate = copy.deepcopy(ctx.large) if start is None else start
    if config.frozen_layers is not None:
        try:
            candidate.model.freeze_lower(config.frozen_layers)
        except ModelError as exc:
            raise ConfigError(f"invariance: {exc}") from exc
    added: dict[str, int] = {}
    if config.counterfactual != "off" and words:
        vocabulary = plain_vocabulary(list(candidate.tokenizer.get_vocab()), exclude=words)
        for index, head in enumerate(sorted(targets)):
            edit = config.counterfactual
            targets[head], added[head] = counterfactual_targets(
                targets[head], words, edit, vocabulary, ctx.seed + index
            )
    terms: list[LossTerm] = []
    if config.alpha < 1:
        terms.append(MaskedTaskLoss(weight=1 - config.alpha))
    terms.append(SoftLabelLoss(targets, config.alpha, config.teachers.temperature))
    if config.feature_weight > 0:
        terms.append(
            FeatureMatching(targets, config.feature_weight, candidate.model.hidden_size, seed=train.seed)
        )
    penalty = None
    if config.rrr_weight > 0 and words:
        penalty = InputGradientPenalty(
            candidate.model, word_patterns(candidate.tokenizer, words), config.rrr_weight
        )
        terms.append(penalty)
    if config.vrex_weight > 0:
        terms.append(RiskVariance(targets, config.vrex_weight, config.teachers.temperature))
    data = {h: (t.texts, t.labels.tolist()) for h, t in targets.items()}
    # the penalty differentiates a gradient: the fused attention kernels have no second derivative
    kernels = sdpa_kernel(SDPBackend.MATH) if penalty is not None else contextlib.nullcontext()
    try:
        with kernels:
            result = fit_candidate(candidate, ctx, data, terms, train, config.continual, "invariance")
    finally:
        if penalty is not None:
            penalty.close()
    details: dict[str, Any] = {
        **started,
        **augmented,
        "selection": selection.as_details(),
        "flagged": flags,
        "counterfactual_rows": added,
        "targets": {h: t.stats() for h, t in targets.items()},
        "best_step": result.state.best_step,
        "start": config.start,
        "consensus": report,
    }
    metrics = {"steps": float(result.state.global_step), **validation_metrics(ctx, candidate)}
    return StrategyOutput(candidate, "distilled", metrics, details, synthetic)
