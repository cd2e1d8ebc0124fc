"""Training a copy of the champion LM through the one loop, fully or through a LoRA adapter merged after.

The LM methods that train (multi-teacher distillation, corrections, the sequential baseline) share
:class:`LMTrainable` (how the copy trains) and :func:`fit_lm` (one run of the loop on a batch plan).
"""

from __future__ import annotations

import copy
from typing import Literal

from peft import PeftModel
from pydantic import Field
from torch import nn

from fanbu.config import Strict
from fanbu.derive.finetune import LoraSettings, add_lora
from fanbu.feedback.lm.context import LMFeedbackContext
from fanbu.models.causal_lm import CausalLMHandle
from fanbu.train.batching import BatchPlan
from fanbu.train.config import TrainConfig
from fanbu.train.loop import Trainer, TrainResult
from fanbu.train.terms import LossTerm, causal_lm_forward


def default_lm_train() -> TrainConfig:
    """A short run: 60 steps of 4 texts at a LoRA learning rate, no progress bar."""
    return TrainConfig(
        epochs=1000,
        max_steps=60,
        batch_size=4,
        lr=5e-4,
        warmup_ratio=0.1,
        progress=False,
        group_by_length=True,
    )


def default_lm_lora() -> LoraSettings:
    """Rank 16 on the attention projections, no dropout (the adapter is merged into the candidate)."""
    return LoraSettings(r=16, alpha=32, dropout=0.0)


class LMTrainable(Strict):
    """How an LM method trains its copy of the champion."""

    mode: Literal["full", "lora"] = Field(
        "lora", description="full: every weight trains; lora: a PEFT LoRA adapter, merged into the candidate."
    )
    lora: LoraSettings = Field(
        default_factory=default_lm_lora, description="LoRA settings with mode: lora (lora.merge is ignored)."
    )
    train: TrainConfig = Field(
        default_factory=default_lm_train,
        description="Loop settings (train.seed is replaced by the context's seed).",
    )


def fit_lm(
    ctx: LMFeedbackContext,
    settings: LMTrainable,
    plan: BatchPlan,
    terms: list[LossTerm],
    description: str,
    start: nn.Module | None = None,
) -> tuple[CausalLMHandle, TrainResult]:
    """Train a copy of ``start`` (default: the champion) on ``plan`` with ``terms``; a plain LM handle.

    With ``mode: lora`` the adapter is merged afterwards, so the candidate has the champion's shape.
    """
    model = copy.deepcopy(start if start is not None else ctx.large.model)
    if settings.mode == "lora":
        model = add_lora(model, settings.lora, task_type="CAUSAL_LM")
    train = settings.train.model_copy(update={"seed": ctx.seed})
    trainer = Trainer(
        model, plan, train, terms, forward=causal_lm_forward, evaluate=None, description=description
    )
    result = trainer.fit(resume=False)
    if isinstance(model, PeftModel):
        model = model.merge_and_unload()
    model.eval()
    return CausalLMHandle(model, ctx.large.tokenizer, ctx.large.max_length), result
