"""The recipe switch in one call: what ``augment: {kind: lm|gan|none, ...}`` adds to a training set.

A derive or feedback recipe that carries an :class:`AugmentConfig` calls :func:`synthesise` with what it
has (the public slice's texts per label, the experts, the real texts; or the real features), adds the
returned rows to its training set, registers the set with :func:`register_synthetic` and records the share
with :func:`with_synthetic_share`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

import torch
from torch import Tensor

from fanbu.errors import ConfigError, DomainError
from fanbu.models.causal_lm import CausalLMHandle
from fanbu.synthetic.config import AugmentConfig
from fanbu.synthetic.filter import Expert, filter_generated
from fanbu.synthetic.gan import train_gan
from fanbu.synthetic.lineage import SyntheticSet
from fanbu.synthetic.text import build_prompt, generate_texts


def synthesise(config: AugmentConfig, domain: str, label_names: Sequence[str], *,
               examples: Mapping[str, Sequence[str]] | None = None, experts: Mapping[str, Expert] | None = None,
               real_texts: Iterable[str] = (), features: Tensor | None = None, labels: Tensor | None = None,
               load_generator: Callable[[str], CausalLMHandle] = CausalLMHandle.from_source) -> SyntheticSet | None:
    """The synthetic rows ``config`` asks for, with their lineage; ``None`` for kind ``none``.

    ``lm`` needs ``examples`` (texts per label name) and ``experts``; ``gan`` needs ``features`` ``(n, d)``
    and ``labels`` ``(n,)``.

    Raises:
        DomainError: an empty pool (no examples, no feature rows) or a label with no examples.
        ConfigError: a kind without the inputs it needs.
    """
    name = f"synthetic/{domain}-{config.kind}"
    if config.kind == "none":
        return None
    if config.kind == "lm":
        if examples is None or experts is None:
            raise ConfigError("augment.kind 'lm' needs the public slice's examples per label and the experts")
        if not any(examples.values()):
            raise DomainError(f"augment.kind 'lm' for {domain!r}: the pool of examples to prompt with is empty; "
                              "give labelled public-slice texts")
        generated = generate_texts(load_generator(config.lm.generator), examples, label_names, config.lm, config.seed)
        result = filter_generated(generated, experts, label_names, config.lm.filter, real_texts)
        lineage = {"generator": config.lm.generator, "seed": config.seed,
                   "prompts": {"template": build_prompt("{label}", ["{example}"]), "count": len(generated),
                               "shots": config.lm.shots},
                   "filter": {"experts": sorted(experts), "settings": config.lm.filter.model_dump(mode="json"),
                              **result.summary()}}
        return SyntheticSet(name, domain, list(label_names), lineage, texts=result.kept)
    if features is None or labels is None:
        raise ConfigError("augment.kind 'gan' needs the real feature rows and their labels")
    trained = train_gan(features, labels, len(label_names), config.gan, config.seed)
    fake, fake_labels = trained.gan.sample_per_label(len(label_names), config.gan.per_label, config.seed + 1)
    lineage = {"generator": f"conditional GAN on {trained.rows} feature rows", "seed": config.seed, "prompts": None,
               "filter": None, "gan": config.gan.model_dump(mode="json"), "history": trained.gan.history[-1:]}
    return SyntheticSet(name, domain, list(label_names), lineage, features=fake, labels=fake_labels.to(torch.long))
