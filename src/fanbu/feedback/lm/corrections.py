"""(c) Train the large LM on collected corrections, replaying general text so that it does not forget.

A correction is a prompt and the completion a user wrote instead of the model's. The loss is the
next-token loss on the completion tokens only (the prompt is context), formatted with the tokenizer's
chat template when it has one. Batches of the context's general text are interleaved, ``replay_ratio``
of them per correction batch, with the plain next-token loss weighted by ``replay``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from pydantic import Field
from torch import Tensor, nn

from fanbu.errors import ConfigError
from fanbu.feedback.lm.context import (
    Correction,
    LMFeedbackContext,
    LMStrategyOutput,
    check_lm_context,
    register_lm_method,
)
from fanbu.feedback.lm.distill import GENERAL
from fanbu.feedback.lm.fit import LMTrainable, fit_lm
from fanbu.feedback.shared.prompts import completion_nll, pair_batch
from fanbu.models.causal_lm import CausalLMHandle
from fanbu.train.batching import PlanItem
from fanbu.train.terms import Batch, CausalLMLoss

CORRECTIONS = "_corrections"


class CorrectionPlan:
    """Batches of corrections (labels on the completion) interleaved with batches of general text."""

    def __init__(
        self,
        handle: CausalLMHandle,
        corrections: Sequence[Correction],
        general: Sequence[str],
        batch_size: int,
        replay_ratio: float,
        seed: int,
    ) -> None:
        if not corrections:
            raise ConfigError(
                "lm_corrections: no corrections to train on; collect some (fanbu collect) first"
            )
        self.handle, self.corrections, self.general = handle, list(corrections), list(general)
        self.batch_size, self.replay_ratio, self.seed = batch_size, replay_ratio, seed

    def _chunks(self, task: str, order: np.ndarray, limit: int | None = None) -> list[PlanItem]:
        items = [
            PlanItem(task, tuple(int(i) for i in order[s : s + self.batch_size]))
            for s in range(0, len(order), self.batch_size)
        ]
        return items[:limit]

    def schedule(self, epoch: int) -> list[PlanItem]:
        rng = np.random.default_rng([self.seed, epoch])
        items = self._chunks(CORRECTIONS, rng.permutation(len(self.corrections)))
        if self.general and self.replay_ratio > 0:
            wanted = max(1, round(self.replay_ratio * len(items)))
            items += self._chunks(GENERAL, rng.permutation(len(self.general)), wanted)
        return [items[i] for i in rng.permutation(len(items))]

    def make(self, item: PlanItem) -> Batch:
        indices = torch.tensor(item.indices, dtype=torch.long)
        if item.task == GENERAL:
            return Batch(self.handle.tokenize([self.general[i] for i in item.indices]), {}, GENERAL, indices)
        pairs = [self.corrections[i] for i in item.indices]
        inputs, labels = pair_batch(self.handle.tokenizer, pairs, self.handle.max_length)
        return Batch(inputs, {"labels": labels}, CORRECTIONS, indices)


class CompletionLoss:
    """Mean NLL of the completion tokens on correction batches; ``replay *`` next-token loss on general
    text."""

    name = "completion"

    def __init__(self, replay: float) -> None:
        self.replay = replay
        self.next_token = CausalLMLoss()

    def losses(self, outputs: Mapping[str, Tensor], batch: Batch, model: nn.Module) -> Mapping[str, Tensor]:
        if batch.task == GENERAL:
            return {"replay": self.replay * self.next_token.losses(outputs, batch, model)["lm"]}
        nll, counted = completion_nll(outputs["logits"], batch.targets["labels"])  # (batch,), (batch,)
        return {"completion": nll.sum() / counted.sum().clamp(min=1)}


class LMCorrectionsSettings(LMTrainable):
    """Settings of ``lm_corrections``."""

    replay: float = Field(1.0, ge=0, description="Weight of the next-token loss on replayed general text.")
    replay_ratio: float = Field(
        1.0, ge=0, description="Batches of general text per batch of corrections; 0: no replay."
    )


@register_lm_method(
    "lm_corrections",
    summary="Train the large LM on collected (prompt, corrected completion) pairs, loss on the completion "
    "only, with replay of general text against forgetting",
    reference="https://arxiv.org/abs/2203.02155 (supervised fine-tuning on demonstrations)",
    config=LMCorrectionsSettings,
)
def lm_corrections(ctx: LMFeedbackContext, config: LMCorrectionsSettings) -> LMStrategyOutput:
    """Fine-tune a copy of the champion on the context's corrections, replaying its general text."""
    ctx = check_lm_context(ctx, "lm_corrections")
    if config.replay_ratio > 0 and config.replay > 0 and not ctx.general:
        raise ConfigError(
            "lm_corrections: replay is on but the context has no general text; give general texts or set "
            "replay_ratio: 0"
        )
    plan = CorrectionPlan(
        ctx.large, ctx.corrections, ctx.general, config.train.batch_size, config.replay_ratio, ctx.seed
    )
    candidate, result = fit_lm(ctx, config, plan, [CompletionLoss(config.replay)], "lm-corrections")
    details = {"corrections": len(ctx.corrections), "replay_ratio": config.replay_ratio}
    metrics = {"steps": float(result.state.global_step), **ctx.validation_metrics(candidate.model)}
    return LMStrategyOutput(candidate, "finetune", metrics, details)
