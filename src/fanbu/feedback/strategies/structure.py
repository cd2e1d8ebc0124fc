"""Swarm structure: the champion cut down to the union of what the swarm's pruned students kept.

Every domain's student was pruned from the champion and records which of its units it kept
(:mod:`fanbu.derive.prune.subnetwork`). What no domain kept is a structural change that won across
domains; this strategy proposes it for the next large version, along the chosen axes:

- ``vocab``: the token ids some student kept, plus the tokens always kept (special and added tokens,
  single characters: any text still tokenises); the embedding rows and the tokenizer are trimmed.
- ``ffn``: per layer, the FFN neurons the students that kept the layer kept. BERT gives every layer
  one width, so every layer keeps as many neurons as the widest union; a narrower union, and a layer no
  student kept (no evidence either way), is filled with the neurons most students kept, then those of
  the largest weight magnitude in the champion.

Hidden width, layers and heads are never cut: the domains disagree on the hidden width, and BERT's head
size is ``hidden / heads``, so heads cannot go while the width stays. The cut is the prune stage's own
surgery (:func:`~fanbu.derive.prune.shrink_encoder` with a :class:`~fanbu.derive.prune.Plan` of explicit
indices); the gate then judges the candidate like any other.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, field_validator
from torch import Tensor

from fanbu.config import Strict
from fanbu.derive.prune import count_parameters, make_plan, shrink_encoder, trim_tokenizer, unit_importance
from fanbu.derive.prune.layout import Family, Layout, encoder_layout
from fanbu.derive.prune.schedule import Targets
from fanbu.derive.prune.subnetwork import weights_fingerprint
from fanbu.derive.prune.vocab import required_ids
from fanbu.errors import ConfigError
from fanbu.feedback.shared.context import (
    FeedbackContext,
    Labeled,
    StrategyOutput,
    check_experts,
    register_strategy,
)
from fanbu.feedback.shared.continual import ContinualConfig
from fanbu.feedback.shared.fit import fit_candidate
from fanbu.feedback.shared.swarm_structure import kept_indices, kept_layers, swarm_records
from fanbu.feedback.shared.weights import validation_metrics
from fanbu.train.config import TrainConfig
from fanbu.train.distill.losses import MaskedTaskLoss

Axis = Literal["vocab", "ffn"]
Kept = dict[Family, Tensor | None]  # one student's kept indices per champion axis family
INSTEAD = "drop swarm_structure from strategies"


class StructureConfig(Strict):
    """Which axes are cut to the swarm's union, how much agreement keeps a unit, an optional fine-tune."""

    axes: list[Axis] = Field(
        default_factory=lambda: ["vocab"],
        min_length=1,
        description="Axes cut to the union of what the students kept: vocab (tokens), ffn (FFN neurons "
        "per layer). Heads are not an axis: BERT's head size is hidden / heads and the hidden width is "
        "kept, so dropping heads cannot be expressed.",
    )
    min_share: float | None = Field(
        None,
        gt=0,
        le=1,
        description="Keep a unit if at least this share of the students kept it (for FFN neurons: of the "
        "students that kept the layer); null: if any did.",
    )
    finetune: TrainConfig | None = Field(
        None, description="Fine-tune the candidate on the domains' public slices; null: no fine-tune."
    )

    @field_validator("axes", mode="before")
    @classmethod
    def _check_axes(cls, value: Any) -> Any:
        if isinstance(value, list) and "heads" in value:
            raise ValueError(
                "heads cannot be cut while the hidden width is kept (BERT's head size is hidden / heads); "
                "choose from vocab and ffn"
            )
        if isinstance(value, list) and all(isinstance(v, str) for v in value) and len(set(value)) != len(value):
            raise ValueError(f"{value}: name each axis once")
        return value


def needed(voters: int, share: float | None) -> int:
    """Votes a unit needs out of ``voters``: 1 when ``share`` is unset, else ``ceil(share * voters)``."""
    return 1 if share is None else max(1, math.ceil(share * voters - 1e-9))


def vocab_union(
    ctx: FeedbackContext, kept: Sequence[Kept], layout: Layout, share: float | None
) -> Tensor | None:
    """Token ids kept (ascending), or ``None`` when the union is the whole vocabulary."""
    votes = torch.zeros(layout.vocab, dtype=torch.long)  # (vocab,)
    for student in kept:
        index = student.get("vocab")
        votes[slice(None) if index is None else index] += 1
    keep = votes >= needed(len(kept), share)  # (vocab,)
    if bool(keep.all()):
        return None
    tokenizer = ctx.large.tokenizer
    if len(tokenizer) > layout.vocab:
        raise ConfigError(
            f"swarm_structure: the champion's tokenizer has {len(tokenizer)} tokens but its embedding only "
            f"{layout.vocab} rows; fix its vocab_size, or leave vocab out of axes"
        )
    keep[required_ids(tokenizer)] = True
    keep[len(tokenizer) :] = False  # rows no token reads
    return keep.nonzero().flatten()


def ffn_union(
    ctx: FeedbackContext, kept: Sequence[Kept], layout: Layout, share: float | None
) -> tuple[dict[int, Tensor], dict[str, Any]]:
    """FFN neurons kept per layer (one width for all layers), and what was filled where."""
    n, total = layout.num_layers, layout.ffn
    votes = torch.zeros(n, total, dtype=torch.long)  # (layers, ffn)
    voters = torch.zeros(n, dtype=torch.long)  # (layers,)
    for student in kept:
        for layer in range(n):
            if ("ffn", layer) in student:
                index = student[("ffn", layer)]
                votes[layer, slice(None) if index is None else index] += 1
                voters[layer] += 1
    union = torch.zeros(n, total, dtype=torch.bool)  # (layers, ffn)
    for layer in range(n):
        if voters[layer] > 0:
            union[layer] = votes[layer] >= needed(int(voters[layer]), share)
            if not union[layer].any():  # no neuron reaches min_share: the most-voted ones
                union[layer] = votes[layer] == votes[layer].max()
    width = int(union.sum(dim=1).max())
    magnitude = unit_importance(ctx.large, "magnitude").ffn  # per layer (ffn,)
    chosen: dict[int, Tensor] = {}
    for layer in range(n):
        ids = np.arange(total)
        order = np.lexsort(
            (ids, -magnitude[layer].numpy(), -votes[layer].numpy(), -union[layer].long().numpy())
        )
        chosen[layer] = torch.as_tensor(np.sort(order[:width]), dtype=torch.long)
    sizes = union.sum(dim=1).tolist()
    report = {
        "kept": width,
        "of": total,
        "union": {str(i): int(sizes[i]) for i in range(n)},
        "filled": {str(i): width - int(sizes[i]) for i in range(n) if sizes[i] < width},
        "voters": {str(i): int(voters[i]) for i in range(n)},  # students that kept the layer
    }
    return chosen, report


def public_slices(ctx: FeedbackContext) -> dict[str, Labeled]:
    """The domains' non-empty public slices (what the optional fine-tune trains on)."""
    return {d: ctx.public[d] for d in ctx.domains if d in ctx.public and len(ctx.public[d][0])}


@register_strategy(
    "swarm_structure",
    summary="the champion cut to the union of what the swarm's pruned students kept (vocabulary, FFN "
    "neurons): a structural change that won across domains, proposed for the next large version",
    reference="https://arxiv.org/abs/2204.00408 (CoFi: structured pruning of encoders)",
    config=StructureConfig,
    capabilities={"pruned_experts"},
)
def swarm_structure(ctx: FeedbackContext, config: StructureConfig) -> StrategyOutput:
    """A copy of the champion with what no student kept cut away along ``config.axes``."""
    check_experts(ctx, "swarm_structure")
    records = swarm_records(ctx.large, ctx.experts, "swarm_structure", INSTEAD)
    train = public_slices(ctx)
    if config.finetune is not None and not train:
        raise ConfigError("swarm_structure.finetune: no domain has a public slice; set finetune: null")
    layout = encoder_layout(ctx.large.model)
    kept = [kept_indices(r, layout) for r in records.values()]
    full = Targets(layout.num_layers, layout.units, layout.head_dim, layout.ffn, layout.hidden)
    plan = make_plan(layout, full, None)  # everything, in the champion's numbering
    details: dict[str, Any] = {"axes": list(config.axes), "min_share": config.min_share}
    tokenizer = None
    if "vocab" in config.axes:
        vocab = vocab_union(ctx, kept, layout, config.min_share)
        if vocab is not None:
            plan = dataclasses.replace(plan, vocab=vocab)
            tokenizer = trim_tokenizer(ctx.large.tokenizer, vocab)
        details["vocab"] = {"kept": layout.vocab if vocab is None else len(vocab), "of": layout.vocab}
    if "ffn" in config.axes:
        ffn, details["ffn"] = ffn_union(ctx, kept, layout, config.min_share)
        plan = dataclasses.replace(plan, ffn=ffn)
    candidate = shrink_encoder(ctx.large, plan, tokenizer)
    candidate.subnetwork = None  # a new large version: its own numbering is the original from now on
    before, after = count_parameters(ctx.large), count_parameters(candidate)
    details["params"] = {"before": before, "after": after, "ratio": after / before}
    same = weights_fingerprint(ctx.large.model.state_dict())
    details["students"] = {
        d: {"source": r.source, "same_weights": r.weights == same, "layers": kept_layers(r, layout)}
        for d, r in records.items()
    }
    metrics: dict[str, float] = {}
    if config.finetune is not None:  # no continual safeguards: they hold to the champion's shapes and tokens
        settings = config.finetune.model_copy(update={"seed": ctx.seed})
        result = fit_candidate(
            candidate, ctx, train, [MaskedTaskLoss()], settings, ContinualConfig(), "swarm_structure"
        )
        metrics["steps"] = float(result.state.global_step)
    return StrategyOutput(candidate, "pruned", {**metrics, **validation_metrics(ctx, candidate)}, details)
