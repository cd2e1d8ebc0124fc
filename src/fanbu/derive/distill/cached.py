"""Causal-LM distillation from a top-k teacher cache over packed windows (the teacher runs once)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from torch import Tensor

from fanbu.derive.distill.config import LMDistillConfig
from fanbu.derive.distill.lm_checks import check_texts, check_vocabulary, perplexity_evaluator
from fanbu.derive.distill.packing import PackedPlan, pack_texts
from fanbu.derive.distill.topk_cache import CachedLMDistillation, HiddenMatch, TopKCache, hidden_forward
from fanbu.models.causal_lm import CausalLMHandle
from fanbu.train.loop import Trainer, TrainResult
from fanbu.train.terms import CausalLMLoss, LossTerm, causal_lm_forward


def build_cache(
    teacher: CausalLMHandle, texts: Sequence[str], config: LMDistillConfig, max_windows: int | None = None
) -> tuple[Tensor, TopKCache]:
    """Pack ``texts`` with the teacher's tokenizer and cache the teacher's top-k logits on every window.

    Returns:
        The ``(windows, window)`` token ids and the cache built on them.
    """
    if config.top_k is None:
        raise ValueError("build_cache needs config.top_k; set top_k (e.g. 64)")
    windows = pack_texts(teacher.tokenizer, check_texts(texts, "train"), config.window, max_windows)
    cache = TopKCache.build(
        teacher, windows, config.top_k, config.teacher_batch_size, hidden=config.hidden_weight > 0
    )
    return windows, cache


def distill_from_cache(
    student: CausalLMHandle,
    windows: Tensor,
    cache: TopKCache,
    config: LMDistillConfig,
    validation: Sequence[str] | None = None,
    checkpoint_dir: str | Path | None = None,
) -> TrainResult:
    """Train ``student`` in place on packed ``windows`` against the cached teacher (one cache, many students)."""
    cache.check(windows)
    plan = PackedPlan(windows, config.train.batch_size, config.train.seed, targets=cache.targets)
    terms: list[LossTerm] = []
    if config.alpha < 1:
        terms.append(CausalLMLoss(weight=1 - config.alpha))
    if config.alpha > 0:
        terms.append(CachedLMDistillation(config.alpha, config.temperature))
    forward = causal_lm_forward
    if config.hidden_weight > 0:
        if cache.hidden is None:
            raise ValueError(
                "hidden_weight > 0 but the cache has no hidden states; rebuild it with hidden=True"
            )
        width = int(student.model.config.hidden_size)
        terms.append(HiddenMatch(width, int(cache.hidden.shape[-1]), config.hidden_weight))
        forward = hidden_forward
    evaluate = (
        perplexity_evaluator(student, validation, config.train.batch_size) if validation is not None else None
    )
    trainer = Trainer(
        student.model,
        plan,
        config.train,
        terms,
        forward=forward,
        evaluate=evaluate,
        checkpoint_dir=checkpoint_dir,
        description="distill-lm-cached",
    )
    return trainer.fit()


def distill_cached(
    student: CausalLMHandle,
    teacher: CausalLMHandle,
    texts: Sequence[str],
    config: LMDistillConfig,
    validation: Sequence[str] | None = None,
    checkpoint_dir: str | Path | None = None,
) -> TrainResult:
    """Pack ``texts``, cache the teacher once, and distil ``student`` in place from the cache."""
    check_vocabulary(student, teacher)
    if validation is not None:
        check_texts(validation, "validation")
    windows, cache = build_cache(teacher, texts, config)
    return distill_from_cache(student, windows, cache, config, validation, checkpoint_dir)
