"""Settings of knowledge distillation, for encoders (:class:`DistillConfig`) and causal LMs."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from fanbu.config import Strict
from fanbu.train.config import TrainConfig


def _encoder_train() -> TrainConfig:
    return TrainConfig(epochs=5, batch_size=32, lr=1e-4, warmup_ratio=0.1)


def _lm_train() -> TrainConfig:
    return TrainConfig(epochs=3, batch_size=8, lr=2e-4, warmup_ratio=0.05, metric="score", mode="max")


class DistillConfig(Strict):
    """Distilling an encoder teacher into an encoder student: soft logits, hidden states, attention.

    The loss is ``(1 - alpha) * task + alpha * T^2 * KL + hidden_weight * MSE + attention_weight * KL_attn``.
    """

    temperature: float = Field(2.0, gt=0, description="Softmax temperature T of the soft (KL) term.")
    alpha: float = Field(
        0.7, ge=0, le=1, description="Weight of the soft KL term; the hard-label task term gets 1 - alpha."
    )
    hidden_weight: float = Field(
        0.0, ge=0, description="Weight of pooled hidden-state MSE through a learned projection (0: off)."
    )
    attention_weight: float = Field(
        0.0,
        ge=0,
        description="Weight of MiniLM-style last-layer attention + value-relation transfer (0: off); "
        "needs identical tokenisation of student and teacher.",
    )
    cache_teacher: bool = Field(
        True, description="Compute teacher logits/pooled states once per example and reuse them every epoch."
    )
    train: TrainConfig = Field(default_factory=_encoder_train, description="Settings of the training loop.")

    @model_validator(mode="after")
    def _check(self) -> DistillConfig:
        if self.alpha == 0 and self.hidden_weight == 0 and self.attention_weight == 0:
            raise ValueError(
                "alpha, hidden_weight and attention_weight are all 0, so nothing is distilled; "
                "set alpha > 0 (e.g. 0.7) or use the finetune stage instead"
            )
        return self


class LMDistillConfig(Strict):
    """Distilling a causal-LM teacher into a student with the same vocabulary (per-token KL + LM loss).

    The loss is ``(1 - alpha) * LM + alpha * T^2 * KL (+ hidden_weight * MSE)``; the evaluation
    ``score`` is minus the validation perplexity (``ppl`` is reported too), so early stopping maximises
    ``score``. With ``top_k`` set, the text is packed into windows and the teacher runs once, its top-k
    logits cached (see :mod:`fanbu.derive.distill.topk_cache` for the approximation); with ``top_k:
    null`` the teacher runs live on every padded batch of texts.
    """

    temperature: float = Field(2.0, gt=0, description="Softmax temperature T of the per-token KL.")
    alpha: float = Field(
        0.5, ge=0, le=1, description="Weight of the per-token KL; the next-token LM loss gets 1 - alpha."
    )
    top_k: int | None = Field(
        64, ge=1, description="Teacher logits cached per token (teacher runs once); null: a live teacher."
    )
    window: int = Field(256, ge=8, description="Tokens per packed training window (cached teacher only).")
    hidden_weight: float = Field(
        0.0, ge=0, description="Weight of last-hidden-state MSE through a learned projection (needs top_k)."
    )
    teacher_batch_size: int = Field(4, ge=1, description="Windows per teacher forward pass when caching.")
    train: TrainConfig = Field(default_factory=_lm_train, description="Settings of the training loop.")

    @field_validator("train")
    @classmethod
    def _lm_metric(cls, train: TrainConfig) -> TrainConfig:
        check_lm_metric(train)  # as a field check, the error's location is the train section itself
        return train

    @model_validator(mode="after")
    def _check(self) -> LMDistillConfig:
        if self.hidden_weight > 0 and self.top_k is None:
            raise ValueError("hidden_weight > 0 needs the cached teacher: set top_k (e.g. 64)")
        if self.alpha == 0 and self.hidden_weight == 0 and self.top_k is not None:
            raise ValueError("alpha is 0, so the cached teacher would be unused; set top_k: null or alpha > 0")
        return self


def check_lm_metric(train: TrainConfig) -> None:
    """Causal-LM runs evaluate ``score`` (= -perplexity, maximise) or ``ppl`` (minimise); nothing else."""
    expected = {"score": "max", "ppl": "min"}
    if train.metric not in expected:
        raise ValueError(
            f"train.metric is {train.metric!r}, but causal-LM evaluation reports 'score' (-perplexity) and "
            "'ppl'; set train.metric to score (mode max) or ppl (mode min)"
        )
    if train.mode != expected[train.metric]:
        raise ValueError(
            f"train.metric {train.metric!r} needs train.mode {expected[train.metric]!r} (got {train.mode!r}): "
            "a lower perplexity is better"
        )
