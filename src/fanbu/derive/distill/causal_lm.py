"""Distil a causal-LM teacher into a student with the same vocabulary (e.g. a depth-pruned copy).

Per-token ``KL(teacher_T || student_T)`` over the shared vocabulary, mixed with the next-token loss;
padding never counts. With ``top_k`` set (the default) the text is packed and the teacher's top-k
logits are cached once (:mod:`.cached`); with ``top_k: null`` the teacher runs live on the student's
padded batches.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fanbu.derive.distill.cached import distill_cached
from fanbu.derive.distill.config import LMDistillConfig
from fanbu.derive.distill.lm_checks import check_texts, check_vocabulary, perplexity_evaluator
from fanbu.models.causal_lm import CausalLMHandle
from fanbu.train.batching import TaskData, TextPlan
from fanbu.train.loop import Trainer, TrainResult
from fanbu.train.terms import Batch, CausalLMLoss, LossTerm, causal_lm_forward

LM_TASK = "lm"
__all__ = ["LM_TASK", "LMDistillation", "check_texts", "distill_causal_lm", "perplexity_evaluator", "token_kd_loss"]


def token_kd_loss(student_logits: Tensor, teacher_logits: Tensor, mask: Tensor, temperature: float) -> Tensor:
    """``T^2 *`` mean over real tokens of ``KL(softmax(teacher / T) || softmax(student / T))``.

    Args:
        student_logits: ``(batch, seq, vocab)``.
        teacher_logits: ``(batch, seq, vocab')``; only the first ``min(vocab, vocab')`` entries are compared.
        mask: ``(batch, seq)``, 1 for real tokens, 0 for padding.
        temperature: Softmax temperature.
    """
    vocab = min(student_logits.shape[-1], teacher_logits.shape[-1])
    keep = mask.bool()  # (batch, seq)
    student = student_logits[..., :vocab][keep].float() / temperature  # (tokens, vocab)
    teacher = teacher_logits[..., :vocab][keep].float() / temperature  # (tokens, vocab)
    if student.shape[0] == 0:
        return student_logits.sum() * 0.0
    kl = F.kl_div(
        F.log_softmax(student, dim=-1), F.log_softmax(teacher, dim=-1), reduction="batchmean", log_target=True
    )
    return kl * temperature**2


class LMDistillation:
    """``alpha * T^2 *`` per-token KL against a live teacher that reads the student's batch inputs."""

    name = "kd"

    def __init__(self, teacher: nn.Module, alpha: float, temperature: float) -> None:
        self.teacher = teacher
        self.alpha = alpha
        self.temperature = temperature

    @torch.no_grad()
    def teacher_logits(self, inputs: Mapping[str, Tensor]) -> Tensor:
        """Teacher logits ``(batch, seq, vocab)`` in eval mode."""
        was_training = self.teacher.training
        self.teacher.eval()
        device = next(self.teacher.parameters()).device
        try:
            return self.teacher(**{k: v.to(device) for k, v in inputs.items()}).logits
        finally:
            self.teacher.train(was_training)

    def losses(self, outputs: Mapping[str, Tensor], batch: Batch, model: nn.Module) -> Mapping[str, Tensor]:
        student = outputs["logits"]  # (batch, seq, vocab)
        teacher = self.teacher_logits(batch.inputs).to(student.device)  # (batch, seq, vocab)
        mask = batch.inputs.get("attention_mask", torch.ones(student.shape[:2], device=student.device))
        return {"kd": self.alpha * token_kd_loss(student, teacher, mask, self.temperature)}


def distill_causal_lm(
    student: CausalLMHandle,
    teacher: CausalLMHandle,
    texts: Sequence[str],
    config: LMDistillConfig,
    validation: Sequence[str] | None = None,
    checkpoint_dir: str | Path | None = None,
) -> TrainResult:
    """Train ``student`` in place towards ``teacher`` on ``texts``.

    Args:
        student: The model to train (same tokenizer as the teacher).
        teacher: The model to imitate; never updated.
        texts: Training text.
        config: Temperature, KL weight, teacher cache and loop settings (metric ``score`` = -perplexity).
        validation: Texts whose perplexity is evaluated (and early-stopped on).
        checkpoint_dir: Checkpoints for resume; ``None``: off.
    """
    check_vocabulary(student, teacher)
    if config.top_k is not None:
        return distill_cached(student, teacher, texts, config, validation, checkpoint_dir)
    plan = TextPlan(
        [TaskData(LM_TASK, check_texts(texts, "train"))],
        student.tokenize,
        batch_size=config.train.batch_size,
        seed=config.train.seed,
        group_by_length=config.train.group_by_length,
    )
    strategies: list[LossTerm] = []
    if config.alpha < 1:
        strategies.append(CausalLMLoss(weight=1 - config.alpha))
    if config.alpha > 0:
        strategies.append(LMDistillation(teacher.model, config.alpha, config.temperature))
    evaluate = (
        perplexity_evaluator(student, validation, config.train.batch_size) if validation is not None else None
    )
    trainer = Trainer(
        student.model,
        plan,
        config.train,
        strategies,
        forward=causal_lm_forward,
        evaluate=evaluate,
        checkpoint_dir=checkpoint_dir,
        description="distill-lm",
    )
    return trainer.fit()
