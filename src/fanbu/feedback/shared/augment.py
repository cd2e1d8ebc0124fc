"""The feedback recipe's ``augment`` switch: label-conditioned text for every domain, filtered by the swarm.

For each feedback domain a causal LM (``augment.lm.generator``, loaded once) writes texts for each label
from few-shot prompts of the domain's public slice. The domain's expert and the champion filter them
together: a text is kept only when both give its intended label at least the threshold (either one
vetoes); near duplicates of the public and validation texts are dropped. The kept texts join the
domain's public slice with their intended labels, so the teachers label them as well. The sets are
registered as datasets with their lineage when the candidate is registered, and its card records the
synthetic share.

``kind: gan`` makes pooled-feature rows, and the strategies train the encoder on text, so it is refused
here with the reason; it augments head training and distillation in feature space.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from fanbu.errors import ConfigError
from fanbu.feedback.shared.context import FeedbackContext
from fanbu.models.causal_lm import CausalLMHandle
from fanbu.synthetic import AugmentConfig, SyntheticSet, synthesise

LoadGenerator = Callable[[str], CausalLMHandle]


def load_generator(source: str) -> CausalLMHandle:
    """The generator of ``augment.lm`` (module-level, so that tests can give a tiny one)."""
    return CausalLMHandle.from_source(source, max_length=1024)


def augment_context(
    ctx: FeedbackContext, config: AugmentConfig, what: str
) -> tuple[FeedbackContext, list[SyntheticSet], dict[str, Any]]:
    """``ctx`` with each domain's kept synthetic texts added to its public slice, the sets, and a summary
    (per domain: generated, kept, real rows); ``ctx`` itself for ``kind: none``.

    Raises:
        ConfigError: ``kind: gan``.
        DomainError: a label of a domain with no public example to prompt with.
    """
    if config.kind == "none":
        return ctx, [], {}
    if config.kind == "gan":
        raise ConfigError(
            f"{what}: augment.kind 'gan' makes pooled-feature rows, not texts, and this strategy trains the encoder "
            "on text; use kind: lm (the GAN augments head training and distillation in feature space)"
        )
    generator = load_generator(config.lm.generator)
    public = dict(ctx.public)
    sets: list[SyntheticSet] = []
    summary: dict[str, Any] = {}
    for domain in ctx.domains:
        texts, labels = ctx.public[domain]
        names = list(ctx.large.labels[domain])
        examples = {name: [t for t, y in zip(texts, labels, strict=True) if y == i] for i, name in enumerate(names)}
        experts = {
            "expert": lambda batch, d=domain: ctx.experts[d].predict_proba(list(batch), d),
            "champion": lambda batch, d=domain: ctx.large.predict_proba(list(batch), d),
        }
        real = [*texts, *ctx.validation.get(domain, ([], []))[0]]
        made = synthesise(config, domain, names, examples=examples, experts=experts, real_texts=real,
                          load_generator=lambda source: generator)
        assert made is not None  # kind lm
        sets.append(made)
        public[domain] = (list(texts) + [g.text for g in made.texts],
                          list(labels) + [names.index(g.label) for g in made.texts])
        summary[domain] = {"real": len(texts), "synthetic": made.rows,
                           "generated": made.lineage["prompts"]["count"]}
    return dataclasses.replace(ctx, public=public), sets, {"augment": summary}
