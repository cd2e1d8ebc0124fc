"""(b) Token-level multi-teacher distillation of the domain LMs into the large LM on transfer text.

Every token's target is a mixture of the teachers' next-token distributions (at temperature ``T``):
``p = sum_k w_k softmax(z_k / T)``, and the student minimises ``T^2 KL(p || softmax(s / T))`` (the derive
helper's :func:`token_kd_loss`), mixed with the next-token loss on the text itself. The weights ``w_k``:

- ``domain``: the teacher of the text's own domain (weight 1; the others do not run);
- ``confidence``: each teacher's top probability at that token, raised to ``sharpness`` and normalised;
- ``uniform``: the plain mean of the teachers.

Teachers may be smaller than the student, but must share its vocabulary (checked; a ModelError says
what to do otherwise). General text, if given and ``replay > 0``, is replayed with the next-token loss
so that the large LM does not forget.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from fanbu.derive.distill import token_kd_loss
from fanbu.errors import ConfigError
from fanbu.feedback.lm.context import (
    LMFeedbackContext,
    LMStrategyOutput,
    check_lm_context,
    check_same_vocabulary,
    register_lm_method,
)
from fanbu.feedback.lm.fit import LMTrainable, fit_lm
from fanbu.train.batching import TaskData, TextPlan
from fanbu.train.terms import Batch, CausalLMLoss

GENERAL = "_general"  # the task name of replayed general text (never a domain's name: it starts with _)
Routing = Literal["domain", "confidence", "uniform"]


def mixture_logits(
    teacher_logits: list[Tensor], routing: Routing, temperature: float, sharpness: float
) -> Tensor:
    """``T * log p`` of the teachers' mixture ``p``, so that ``softmax(result / T) = p``.

    Args:
        teacher_logits: One ``(batch, seq, vocab)`` tensor per teacher.
        routing: ``confidence`` weighs each token by the teacher's top probability; else a plain mean.
        temperature: ``T``.
        sharpness: Exponent of the confidences (larger: closer to the single most confident teacher).
    """
    logp = torch.stack(
        [torch.log_softmax(z.float() / temperature, dim=-1) for z in teacher_logits]
    )  # (k, b, s, v)
    if routing == "confidence":
        top = logp.max(dim=-1).values * sharpness  # (k, batch, seq): log of confidence^sharpness
        logw = torch.log_softmax(top, dim=0).unsqueeze(-1)  # (k, batch, seq, 1)
    else:
        logw = torch.full(logp.shape[:1], -math.log(len(teacher_logits)), device=logp.device).view(
            -1, 1, 1, 1
        )
    return temperature * torch.logsumexp(logp + logw, dim=0)  # (batch, seq, vocab)


class MultiTeacherKD:
    """Per-token KL to the teachers' mixture (domain batches), next-token loss on replayed text."""

    name = "multi_kd"

    def __init__(
        self,
        teachers: Mapping[str, nn.Module],
        vocab: int,
        routing: Routing,
        alpha: float,
        temperature: float,
        sharpness: float,
        replay: float,
    ) -> None:
        self.teachers = dict(teachers)
        self.vocab = vocab
        self.routing = routing
        self.alpha = alpha
        self.temperature = temperature
        self.sharpness = sharpness
        self.replay = replay
        self.next_token = CausalLMLoss()

    @torch.no_grad()
    def _logits(self, teacher: nn.Module, inputs: Mapping[str, Tensor]) -> Tensor:
        was_training = teacher.training
        teacher.eval()
        try:
            return teacher(**inputs).logits[..., : self.vocab]  # (batch, seq, vocab)
        finally:
            teacher.train(was_training)

    def losses(self, outputs: Mapping[str, Tensor], batch: Batch, model: nn.Module) -> Mapping[str, Tensor]:
        lm = self.next_token.losses(outputs, batch, model)["lm"]
        if batch.task == GENERAL:
            return {"replay": self.replay * lm}
        if self.routing == "domain":
            if batch.task not in self.teachers:
                raise ConfigError(f"lm_distill: routing 'domain' has no teacher for texts of {batch.task!r}")
            chosen = [self.teachers[str(batch.task)]]
        else:
            chosen = list(self.teachers.values())
        teacher = mixture_logits(
            [self._logits(t, batch.inputs) for t in chosen], self.routing, self.temperature, self.sharpness
        )  # (batch, seq, vocab)
        student = outputs["logits"][..., : self.vocab]  # (batch, seq, vocab)
        mask = batch.inputs.get("attention_mask", torch.ones(student.shape[:2], device=student.device))
        kd = token_kd_loss(student, teacher, mask, self.temperature)
        return {"kd": self.alpha * kd, "lm": (1 - self.alpha) * lm}


class LMDistillSettings(LMTrainable):
    """Settings of ``lm_distill``."""

    routing: Routing = Field(
        "domain",
        description="Which teachers a token learns from: domain (its text's own domain's teacher), "
        "confidence (all, weighted by their top probability), uniform (all, equally).",
    )
    alpha: float = Field(0.9, ge=0, le=1, description="Weight of the KL; the next-token loss gets 1 - alpha.")
    temperature: float = Field(1.0, gt=0, description="Softmax temperature of teachers and student.")
    sharpness: float = Field(
        1.0, gt=0, description="With routing: confidence, the exponent of the confidences."
    )
    replay: float = Field(
        0.0, ge=0, description="Weight of the next-token loss on the context's general text; 0: no replay."
    )
    max_general: int | None = Field(None, ge=1, description="Cap on replayed general texts; null: all.")


def transfer_plan(ctx: LMFeedbackContext, batch_size: int, replay: bool, max_general: int | None) -> TextPlan:
    """Batches over every domain's transfer texts (one task per domain), plus general text to replay."""
    tasks = [TaskData(d, ctx.transfer[d]) for d in ctx.domains if ctx.transfer.get(d)]
    if not tasks:
        raise ConfigError("no domain has transfer texts; give ctx.transfer[domain] (its public slice)")
    if replay:
        if not ctx.general:
            raise ConfigError(
                "replay > 0 but the context has no general text; give general texts or set replay: 0"
            )
        tasks.append(TaskData(GENERAL, ctx.general[:max_general]))
    return TextPlan(tasks, ctx.large.tokenize, batch_size=batch_size, seed=ctx.seed, group_by_length=True)


@register_lm_method(
    "lm_distill",
    summary="Token-level multi-teacher distillation of the domain LMs (LoRA experts or smaller LMs with the "
    "same vocabulary) into the large LM on transfer text, routed by domain or confidence",
    reference="https://arxiv.org/abs/2401.10491 (knowledge fusion of LLMs); https://arxiv.org/abs/1503.02531",
    config=LMDistillSettings,
)
def lm_distill(ctx: LMFeedbackContext, config: LMDistillSettings) -> LMStrategyOutput:
    """Distil every expert into a copy of the champion on the domains' transfer texts."""
    ctx = check_lm_context(ctx, "lm_distill")
    check_same_vocabulary(ctx.large, ctx.experts, "lm_distill")
    vocab = len(ctx.large.tokenizer)
    term = MultiTeacherKD(
        {d: ctx.experts[d].model for d in ctx.domains},
        vocab,
        config.routing,
        config.alpha,
        config.temperature,
        config.sharpness,
        config.replay,
    )
    plan = transfer_plan(ctx, config.train.batch_size, config.replay > 0, config.max_general)
    candidate, result = fit_lm(ctx, config, plan, [term], "lm-distill")
    details = {"routing": config.routing, "teachers": ctx.domains, "replay": config.replay}
    metrics = {"steps": float(result.state.global_step), **ctx.validation_metrics(candidate.model)}
    return LMStrategyOutput(candidate, "distilled", metrics, details)
