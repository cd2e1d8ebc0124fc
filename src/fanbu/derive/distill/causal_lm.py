"""Distil a causal-LM teacher into a student with the same vocabulary (e.g. a depth-pruned copy).

Per-token ``KL(teacher_T || student_T)`` over the shared vocabulary, mixed with the next-token loss;
padding never counts. The teacher runs live on the student's batches (caching full-vocabulary logits
per token would cost more memory than recomputing them).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fanbu.derive.distill.config import LMDistillConfig
from fanbu.errors import DomainError, ModelError
from fanbu.evaluate.metrics import perplexity
from fanbu.models.causal_lm import CausalLMHandle
from fanbu.train.batching import TaskData, TextPlan
from fanbu.train.loop import Trainer, TrainResult
from fanbu.train.terms import Batch, CausalLMLoss, LossTerm, causal_lm_forward

LM_TASK = "lm"


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


def check_texts(texts: Sequence[str], what: str) -> list[str]:
    """A non-empty list of strings, or a :class:`DomainError` that says which item is wrong."""
    if isinstance(texts, str) or len(texts) == 0:
        raise DomainError(f"{what}: pass a non-empty list of texts")
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise DomainError(f"{what}: item {index} is a {type(text).__name__}, not a str")
    return list(texts)


def perplexity_evaluator(
    handle: CausalLMHandle, validation: Sequence[str], batch_size: int
) -> Callable[[nn.Module], dict[str, float]]:
    """Evaluation for causal-LM runs: ``ppl`` and ``score = -ppl`` (higher is better) on ``validation``."""
    texts = check_texts(validation, "validation")

    def evaluate(model: nn.Module) -> dict[str, float]:
        ppl = perplexity(model, handle.tokenizer, texts, batch_size=batch_size, max_length=handle.max_length)
        return {"ppl": ppl, "score": -ppl}

    return evaluate


def check_vocabulary(student: CausalLMHandle, teacher: CausalLMHandle) -> None:
    """Raise unless the two models are distinct and share tokenizer and vocabulary."""
    if student.model is teacher.model:
        raise ModelError(
            "student and teacher are the same model object; distil into a copy or a pruned model"
        )
    s_vocab, t_vocab = student.tokenizer.get_vocab(), teacher.tokenizer.get_vocab()
    if s_vocab != t_vocab:
        raise ModelError(
            f"causal-LM distillation compares next-token distributions, so student ({len(s_vocab)} tokens) and "
            f"teacher ({len(t_vocab)} tokens) need the same tokenizer; prune depth/width but keep the vocabulary"
        )
    needed = len(s_vocab)
    for who, handle in (("student", student), ("teacher", teacher)):
        size = int(handle.model.get_output_embeddings().weight.shape[0])
        if size < needed:
            raise ModelError(
                f"the {who}'s output layer has {size} rows for a {needed}-token tokenizer; re-create it"
            )


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
        config: Temperature, KL weight and loop settings (metric ``score`` = -perplexity, or ``ppl``).
        validation: Texts whose perplexity is evaluated (and early-stopped on).
        checkpoint_dir: Checkpoints for resume; ``None``: off.
    """
    check_vocabulary(student, teacher)
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
