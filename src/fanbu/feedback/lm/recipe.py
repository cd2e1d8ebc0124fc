"""The ``lm:`` section of a feedback recipe with ``task: causal_lm``: LM domains, experts, gate.

A causal-LM feedback run reads causal-LM domains (the built-in BBC News categories, or your own
``task: causal_lm`` files), derives one LoRA expert per domain on its private slice (or takes registered
LMs), and gates on each domain's gate split, a held-out general corpus never used in feedback and the
packaged instruction prompts.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from fanbu.config import Strict
from fanbu.data.builtin import BUILTIN_SOURCES
from fanbu.data.loaders import DomainSource
from fanbu.derive.finetune import FinetuneConfig, LoraSettings
from fanbu.feedback.gate.lm_gate import LMGateConfig
from fanbu.train.config import TrainConfig


def default_expert_finetune() -> FinetuneConfig:
    """LoRA (rank 16, kept as an adapter so that the experts can be merged), 60 steps of 4 texts."""
    return FinetuneConfig(
        mode="lora",
        lora=LoraSettings(r=16, alpha=32, dropout=0.0, merge=False),
        train=TrainConfig(
            epochs=1000,
            max_steps=60,
            batch_size=4,
            lr=1e-3,
            warmup_ratio=0.1,
            progress=False,
            group_by_length=True,
        ),
    )


class LMData(Strict):
    """Which LM domains feed back, how their splits are cut, and the general texts around them."""

    source: str = Field("bbc-news-lm", description="A built-in causal-LM source (unless files are given).")
    files: list[DomainSource] = Field(
        default_factory=list, description="Your own domains (task: causal_lm) instead of the built-in source."
    )
    domains: list[str] | None = Field(None, description="Only these domains (default: all of the source's).")
    max_docs: int | None = Field(
        100, ge=10, description="Cap on documents per built-in domain, before splitting."
    )
    seed: int = Field(0, description="Seeds the splits and subsampling.")
    public_fraction: float = Field(
        0.3,
        gt=0,
        lt=1,
        description="Share of each domain's train split the large LM may see (transfer text).",
    )
    gate_fraction: float = Field(
        0.5, gt=0, lt=1, description="Share of each validation split that is the gate's."
    )
    max_test: int | None = Field(None, ge=1, description="Cap on test texts per domain (the report's).")
    heldout: str = Field(
        "20newsgroups",
        description="A built-in corpus never used in feedback: its validation texts go to the gate, its test "
        "texts to the report (forgetting).",
    )
    max_heldout: int = Field(40, ge=1, description="Held-out texts for the gate and, separately, the report.")
    general: str | None = Field(
        "reuters-r8", description="A built-in corpus whose train texts are replayed; null: none."
    )
    max_general: int = Field(200, ge=1, description="Cap on replayed general texts.")
    corrections: str | None = Field(
        None, description="A JSON-lines file of {prompt, completion} corrections (for lm_corrections)."
    )
    collected: str | None = Field(
        None,
        description="A dataset made by `fanbu collect --lm` (id or name): its prompt/completion pairs (the "
        "completion is the user's correction where there is one) join the corrections.",
    )

    @model_validator(mode="after")
    def _check(self) -> LMData:
        for field_name in ("source", "heldout", "general"):
            value = getattr(self, field_name)
            if value is not None and value not in BUILTIN_SOURCES:
                raise ValueError(
                    f"{field_name}: unknown built-in source {value!r} (one of {sorted(BUILTIN_SOURCES)})"
                )
        if self.general is not None and self.general == self.heldout:
            raise ValueError(
                f"general and heldout are both {self.heldout!r}; the held-out corpus must never be used in "
                "feedback, so replay another corpus (or set general: null)"
            )
        if self.heldout == self.source and not self.files:
            raise ValueError(
                "heldout is the feedback source itself; name a corpus the domains do not come from"
            )
        if any(f.task != "causal_lm" for f in self.files):
            raise ValueError("files: every domain of an LM feedback run needs task: causal_lm")
        return self


class LMExperts(Strict):
    """Where the domain LMs come from: LoRA adapters trained now, or registered causal LMs."""

    source: str = Field(
        "derive",
        pattern="^(derive|registry)$",
        description="derive: a LoRA adapter on the large LM per domain, trained on its private slice; "
        "registry: the causal LMs under models (small LMs: lm_distill and lm_sequential only).",
    )
    models: dict[str, str] = Field(default_factory=dict, description="Domain -> a registered causal LM.")
    finetune: FinetuneConfig = Field(
        default_factory=default_expert_finetune,
        description="How each expert is fine-tuned (lora.merge: false keeps the adapter lm_merge needs).",
    )
    max_train: int | None = Field(None, ge=1, description="Cap on private training texts per domain.")

    @model_validator(mode="after")
    def _check(self) -> LMExperts:
        if self.source == "registry" and not self.models:
            raise ValueError("source is 'registry' but no models are listed; add domain: model under models")
        if self.source == "derive" and self.models:
            raise ValueError("models are listed but source is 'derive'; set source: registry to use them")
        return self


class LMFeedbackSettings(Strict):
    """The ``lm:`` section: data, experts, gate and the champion's registry name."""

    champion_name: str = Field(
        "large-lm",
        description="Registry name of the champion when `champion` is a model source (package:...).",
    )
    data: LMData = Field(default_factory=LMData)
    experts: LMExperts = Field(default_factory=LMExperts)
    gate: LMGateConfig = Field(default_factory=LMGateConfig)
