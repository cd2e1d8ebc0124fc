"""The derive recipe's ``augment`` switch: label-conditioned text, filtered by the teacher, joins every
stage's training data for a domain.

Before the stages run, a causal LM (``augment.lm.generator``) writes texts for each label from few-shot
prompts of the domain's own labelled examples. The teacher (the model the stages start from, with its
head for the domain) filters them: a text is kept only when the teacher gives its intended label at
least ``augment.lm.filter.threshold``; near duplicates of real texts are dropped. The kept texts are
registered as a dataset with their lineage (generator, prompts, filter, seed), and every model the
stages make records in its card how much of its training set was synthetic.

``kind: gan`` makes pooled-feature rows, not text, so it has no place in a pipeline whose stages train
on text; it augments head training and distillation in feature space (``fanbu bench unlabeled``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from fanbu.derive.data import DomainData
from fanbu.errors import ConfigError
from fanbu.models.causal_lm import CausalLMHandle
from fanbu.models.encoder import EncoderHandle
from fanbu.registry import Registry
from fanbu.synthetic import AugmentConfig, register_synthetic, synthesise

LoadGenerator = Callable[[str], CausalLMHandle]


def _load_generator(source: str) -> CausalLMHandle:
    return CausalLMHandle.from_source(source, max_length=1024)


def augment_domain(
    config: AugmentConfig,
    data: DomainData,
    teacher: EncoderHandle,
    registry: Registry,
    load_generator: LoadGenerator = _load_generator,
) -> tuple[DomainData, dict[str, Any] | None]:
    """``data`` with the kept synthetic texts added to its training split, and the share record for the
    model cards (``None`` and ``data`` unchanged for ``kind: none``).

    Raises:
        ConfigError: ``kind: gan``, or a teacher without a head for the domain to filter with.
        DomainError: a label with no labelled example to prompt with.
    """
    if config.kind == "none":
        return data, None
    if config.kind == "gan":
        raise ConfigError(
            "augment.kind 'gan' makes pooled-feature rows, not texts, and the derive stages train on text; use "
            "kind: lm here (the GAN augments head training and distillation in feature space)"
        )
    if data.name not in teacher.labels or list(teacher.labels[data.name]) != list(data.label_names):
        raise ConfigError(
            f"augment.kind 'lm' filters the generated texts with the teacher's head {data.name!r}, which the "
            f"teacher lacks (heads: {sorted(teacher.labels)}); derive from a model trained on this domain, or "
            "set augment.kind: none"
        )
    texts, labels = data.train
    examples = {name: [t for t, y in zip(texts, labels, strict=True) if y == index]
                for index, name in enumerate(data.label_names)}

    def expert(batch: Any) -> Any:
        return teacher.predict_proba(list(batch), data.name)

    synthetic = synthesise(config, data.name, data.label_names, examples=examples, experts={"teacher": expert},
                           real_texts=[*texts, *data.validation[0]], load_generator=load_generator)
    assert synthetic is not None  # kind lm
    record = register_synthetic(registry, synthetic)
    added = [g.text for g in synthetic.texts]
    added_labels = [data.label_names.index(g.label) for g in synthetic.texts]
    share = {"dataset": record.id, "synthetic_rows": len(added), "real_rows": len(texts),
             "synthetic_share": len(added) / (len(added) + len(texts)) if texts or added else 0.0}
    augmented = replace(data, train=(list(texts) + added, list(labels) + added_labels))
    return augmented, share
