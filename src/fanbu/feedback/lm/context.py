"""What an LM feedback method sees and returns: the champion causal LM, its domain experts, and text.

The LM methods register in their own catalog, :data:`LM_METHODS` (the classifiers' strategies are
:data:`fanbu.feedback.STRATEGIES`, which runs them all on classifier swarms), with the same call; they
take an :class:`LMFeedbackContext` instead of the classifiers' context. As there, the
context carries the domains' public (transfer) texts and validation texts, never a private slice, a gate
split or a test split, and never the held-out general text the gate measures forgetting on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel

from fanbu.errors import ConfigError, ModelError
from fanbu.evaluate.metrics import perplexity
from fanbu.feedback.shared.context import StrategyInfo
from fanbu.models.causal_lm import CausalLMHandle
from fanbu.registration import Catalog

Correction = tuple[str, str]  # (prompt, corrected completion)


@dataclass
class LMFeedbackContext:
    """The inputs of one causal-LM feedback step.

    Attributes:
        large: The champion causal LM. Methods copy it (``copy.deepcopy``) before changing anything.
        experts: Domain -> its expert: the champion with an unmerged LoRA adapter (a ``PeftModel``, what
            the merge methods need) or a small LM with the champion's vocabulary (distillation only).
        transfer: Domain -> texts the methods may train on (its public slice, collected prompts).
        validation: Domain -> texts for training-time choices (merge scaling, early stopping).
        general: General text to replay against forgetting; never the gate's held-out corpus.
        corrections: Collected (prompt, corrected completion) pairs.
        work_dir: Scratch directory for checkpoints.
        seed: Seeds every random choice.
        batch_size: Texts per forward pass when evaluating.
        memo: Validation perplexities already computed (the champion and experts never change).
    """

    large: CausalLMHandle
    experts: dict[str, CausalLMHandle]
    transfer: dict[str, list[str]]
    validation: dict[str, list[str]] = field(default_factory=dict)
    general: list[str] = field(default_factory=list)
    corrections: list[Correction] = field(default_factory=list)
    work_dir: Path = Path(".")
    seed: int = 0
    batch_size: int = 4
    memo: dict[tuple[Any, ...], float] = field(default_factory=dict, repr=False, compare=False)

    @property
    def domains(self) -> list[str]:
        """The experts' domains, sorted."""
        return sorted(self.experts)

    def validation_ppl(self, model: torch.nn.Module, domain: str, key: str | None = None) -> float:
        """Perplexity of ``model`` on ``domain``'s validation texts (kept in :attr:`memo` under ``key``)."""
        if domain not in self.validation or not self.validation[domain]:
            raise ConfigError(f"no validation texts for domain {domain!r}; give ctx.validation[{domain!r}]")
        memo_key = (key, domain) if key is not None else None
        if memo_key is not None and memo_key in self.memo:
            return self.memo[memo_key]
        ppl = perplexity(
            model, self.large.tokenizer, self.validation[domain], self.batch_size, self.large.max_length
        )
        if memo_key is not None:
            self.memo[memo_key] = ppl
        return ppl

    def validation_metrics(self, model: torch.nn.Module) -> dict[str, float]:
        """``val_ppl/<domain>`` for every domain with validation texts, for a method's metrics."""
        return {f"val_ppl/{d}": self.validation_ppl(model, d) for d in self.domains if self.validation.get(d)}


@dataclass
class LMStrategyOutput:
    """An LM method's candidate (a plain causal LM, no adapter) and what it measured on the way."""

    handle: CausalLMHandle
    relation: str  # lineage relation to the champion, one of fanbu.registry.RELATIONS
    metrics: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)


LM_METHODS: Catalog[StrategyInfo] = Catalog(
    "LM feedback method",
    field="strategies",
    capabilities={
        "lora_experts": "reads the experts' LoRA adapters: every expert must be the large LM with an "
        "unmerged "
        "LoRA adapter",
    },
    entry=StrategyInfo,
)

# ``@register_lm_method(name, summary=..., reference=..., config=..., capabilities=...)`` registers one.
register_lm_method = LM_METHODS.register


def check_lm_context(ctx: Any, what: str) -> LMFeedbackContext:
    """``ctx`` as an :class:`LMFeedbackContext`, or a ConfigError saying the method is for causal LMs."""
    if not isinstance(ctx, LMFeedbackContext):
        raise ConfigError(
            f"{what} feeds back causal language models (task: causal_lm), but got a {type(ctx).__name__} "
            "(classification domains); use a classification strategy (merge, swarm, ...) or LM domains"
        )
    if not ctx.experts:
        raise ConfigError(f"{what}: the swarm is empty; derive at least one domain expert first")
    return ctx


def check_same_vocabulary(large: CausalLMHandle, experts: Mapping[str, CausalLMHandle], what: str) -> None:
    """Raise a ModelError unless every expert has the champion's tokenizer vocabulary and output size."""
    vocab = large.tokenizer.get_vocab()
    for domain, expert in sorted(experts.items()):
        other = expert.tokenizer.get_vocab()
        if other != vocab:
            raise ModelError(
                f"{what}: expert {domain!r} has a {len(other)}-token vocabulary, the large LM {len(vocab)} "
                "(or the same size, other ids); token-level feedback compares next-token distributions, "
                "so derive the experts from the large LM (prune, distil, LoRA) and keep its tokenizer"
            )
        rows = int(expert.model.get_output_embeddings().weight.shape[0])
        if rows < len(vocab):
            raise ModelError(
                f"{what}: expert {domain!r}'s output layer has {rows} rows for a {len(vocab)}-token "
                "tokenizer; re-create it from the large LM"
            )


def lora_experts(ctx: LMFeedbackContext, domains: Sequence[str], what: str) -> dict[str, PeftModel]:
    """Domain -> the expert's ``PeftModel``, checked to carry a LoRA adapter on the champion's shape."""
    found = {}
    for domain in domains:
        model = ctx.experts[domain].model
        if not isinstance(model, PeftModel):
            raise ConfigError(
                f"{what}: expert {domain!r} is a {type(model).__name__}, not an unmerged LoRA adapter; "
                "merging needs LoRA experts (fine-tune the large LM with mode: lora, lora.merge: false), or use "
                "lm_distill for small LMs"
            )
        base = model.get_base_model().config
        if (base.hidden_size, base.num_hidden_layers) != (
            ctx.large.model.config.hidden_size,
            ctx.large.model.config.num_hidden_layers,
        ):
            raise ConfigError(
                f"{what}: expert {domain!r}'s base model has another shape than the large LM; its adapter "
                "must be trained on the large LM itself"
            )
        found[domain] = model
    return found
