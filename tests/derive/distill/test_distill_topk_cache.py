"""The top-k teacher cache: packing, the cached loss against the live-teacher loss, save/load, training."""

from __future__ import annotations

import copy

import pytest
import torch
from distill_helpers import quick

from fanbu.derive.distill import (
    LMDistillConfig,
    PackedPlan,
    TopKCache,
    build_cache,
    distill_causal_lm,
    distill_from_cache,
    pack_texts,
    token_kd_loss,
    topk_kd_loss,
)
from fanbu.errors import CheckpointError, DomainError
from fanbu.models import CausalLMHandle


def live_and_cached(teacher: CausalLMHandle, k: int, temperature: float) -> tuple[float, float]:
    student = CausalLMHandle.tiny(hidden_size=32, num_layers=1, seed=9)
    windows = pack_texts(teacher.tokenizer, ["the team will play a great game"] * 12, window=16)
    cache = TopKCache.build(teacher, windows, k, batch_size=3)
    with torch.no_grad():
        s = student.model(input_ids=windows).logits  # (windows, window, vocab)
        t = teacher.model(input_ids=windows).logits  # (windows, window, vocab)
    live = token_kd_loss(s, t, torch.ones_like(windows), temperature).item()
    cached = topk_kd_loss(s, cache.values, cache.indices.long(), temperature).item()
    return live, cached


def test_packing_fills_whole_windows_with_eos_between_texts(trained_lm_teacher) -> None:
    tokenizer = trained_lm_teacher.tokenizer
    windows = pack_texts(tokenizer, ["the team", "will play"], window=2)
    stream = windows.flatten().tolist()
    assert windows.shape[1] == 2 and tokenizer.eos_token_id in stream
    plan = PackedPlan(windows, batch_size=2, seed=1)
    seen = sorted(i for item in plan.schedule(0) for i in item.indices)
    assert seen == list(range(windows.shape[0]))
    batch = plan.make(plan.schedule(0)[0])
    assert bool(batch.inputs["attention_mask"].all())
    with pytest.raises(DomainError, match="fewer than one window of 512"):
        pack_texts(tokenizer, ["the team"], window=512)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_cached_loss_equals_live_loss_when_k_is_the_vocabulary(trained_lm_teacher, temperature) -> None:
    vocab = trained_lm_teacher.model.config.vocab_size
    live, cached = live_and_cached(trained_lm_teacher, vocab, temperature)
    assert cached == pytest.approx(live, rel=1e-4, abs=1e-6)


def test_cached_loss_is_close_for_large_k(trained_lm_teacher) -> None:
    teacher = copy.deepcopy(trained_lm_teacher)
    with torch.no_grad():  # a confident teacher, as real LMs are: the dropped tail holds little mass
        teacher.model.model.norm.weight.mul_(6.0)
    vocab = teacher.model.config.vocab_size
    live, cached = live_and_cached(teacher, vocab // 4, 1.0)
    assert cached == pytest.approx(live, rel=0.1)


def test_cache_saves_reloads_and_refuses_other_windows(trained_lm_teacher, lm_texts, tmp_path) -> None:
    config = LMDistillConfig(top_k=8, window=16, hidden_weight=0.5)
    windows, cache = build_cache(trained_lm_teacher, lm_texts["train"], config)
    assert cache.values.shape == cache.indices.shape == (windows.shape[0], 16, 8)
    assert cache.hidden is not None and cache.hidden.shape == (windows.shape[0], 16, 32)
    loaded = TopKCache.load(cache.save(tmp_path).parent)
    assert torch.equal(loaded.values, cache.values) and torch.equal(loaded.indices, cache.indices)
    loaded.check(windows)
    with pytest.raises(CheckpointError, match="rebuild it"):
        loaded.check(windows.flip(0))


def test_cached_distillation_with_hidden_matching_trains_a_narrower_student(
    trained_lm_teacher, lm_texts
) -> None:
    teacher = copy.deepcopy(trained_lm_teacher)
    config = LMDistillConfig(
        alpha=0.7, top_k=16, window=16, hidden_weight=0.1, train=quick(epochs=20, batch_size=8)
    )
    windows, cache = build_cache(teacher, lm_texts["train"], config)
    student = CausalLMHandle.tiny(hidden_size=16, num_layers=1, num_heads=2, num_kv_heads=1, seed=3)
    before = topk_kd_loss(student.model(input_ids=windows).logits, cache.values, cache.indices.long(), 2.0)
    result = distill_from_cache(student, windows, cache, config, lm_texts["validation"])
    with torch.no_grad():
        after = topk_kd_loss(student.model(input_ids=windows).logits, cache.values, cache.indices.long(), 2.0)
    assert after.item() < 0.5 * before.item()
    assert "ppl" in result.last_metrics


def test_distill_causal_lm_uses_the_cache_by_default(trained_lm_teacher, lm_texts) -> None:
    student = CausalLMHandle.tiny(hidden_size=32, num_layers=1, seed=7)
    config = LMDistillConfig(window=16, train=quick(epochs=2, batch_size=8))
    assert config.top_k == 64
    result = distill_causal_lm(student, copy.deepcopy(trained_lm_teacher), lm_texts["train"], config)
    assert result.state.global_step > 0
    with pytest.raises(ValueError, match="needs the cached teacher"):
        LMDistillConfig(top_k=None, hidden_weight=1.0)
