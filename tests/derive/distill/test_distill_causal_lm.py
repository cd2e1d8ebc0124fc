"""distill_causal_lm(): per-token KL + LM loss lowers the student's perplexity; bad pairs are refused."""

from __future__ import annotations

import copy

import pytest
import torch
from distill_helpers import quick

from fanbu.derive.distill import LMDistillConfig, distill_causal_lm, token_kd_loss
from fanbu.errors import DomainError, ModelError
from fanbu.evaluate import perplexity
from fanbu.models import CausalLMHandle
from fanbu.models.tiny import tiny_tokenizer


def token_kl(student: CausalLMHandle, teacher: CausalLMHandle, texts: list[str]) -> float:
    inputs = student.tokenize(texts)
    student.model.eval()
    with torch.no_grad():
        s, t = student.model(**inputs).logits, teacher.model(**inputs).logits
    return token_kd_loss(s, t, inputs["attention_mask"], 1.0).item()


def ppl(handle: CausalLMHandle, texts: list[str]) -> float:
    return perplexity(handle.model, handle.tokenizer, texts, max_length=handle.max_length)


def test_lm_distillation_lowers_validation_perplexity(trained_lm_teacher, lm_texts) -> None:
    teacher = copy.deepcopy(trained_lm_teacher)
    student = CausalLMHandle.tiny(hidden_size=32, num_layers=1, seed=7)
    validation = lm_texts["validation"]
    start_ppl, start_kl = ppl(student, validation), token_kl(student, teacher, validation)
    config = LMDistillConfig(alpha=0.5, top_k=None, train=quick(epochs=4))
    result = distill_causal_lm(student, teacher, lm_texts["train"], config, validation)
    end_ppl = ppl(student, validation)
    assert end_ppl < 0.5 * start_ppl
    assert token_kl(student, teacher, validation) < 0.5 * start_kl
    assert result.last_metrics["score"] == pytest.approx(-result.last_metrics["ppl"])
    assert result.state.best == pytest.approx(max(h["score"] for h in result.state.history))
    assert end_ppl == pytest.approx(-result.state.best, rel=1e-4)  # best weights restored


def test_lm_distillation_with_only_the_kl_term(trained_lm_teacher, lm_texts) -> None:
    teacher = copy.deepcopy(trained_lm_teacher)
    student = CausalLMHandle.tiny(hidden_size=32, num_layers=1, seed=8)
    before = token_kl(student, teacher, lm_texts["validation"])
    distill_causal_lm(student, teacher, lm_texts["train"], LMDistillConfig(alpha=1.0, top_k=None, train=quick(epochs=3)))
    assert token_kl(student, teacher, lm_texts["validation"]) < 0.5 * before


def test_lm_distillation_needs_the_same_vocabulary(trained_lm_teacher, lm_texts) -> None:
    other = tiny_tokenizer(model_max_length=64)
    other.add_tokens(["zzword"])
    student = CausalLMHandle.tiny(num_layers=1, seed=1)
    student.tokenizer = other
    config = LMDistillConfig(train=quick(epochs=1))
    with pytest.raises(
        ModelError, match="need the same tokenizer; prune depth/width but keep the vocabulary"
    ):
        distill_causal_lm(student, trained_lm_teacher, lm_texts["train"], config)
    with pytest.raises(ModelError, match="same model object"):
        distill_causal_lm(trained_lm_teacher, trained_lm_teacher, lm_texts["train"], config)


def test_lm_distillation_needs_texts(trained_lm_teacher) -> None:
    student = CausalLMHandle.tiny(num_layers=1, seed=1)
    config = LMDistillConfig(train=quick(epochs=1))
    with pytest.raises(DomainError, match="train: pass a non-empty list of texts"):
        distill_causal_lm(student, trained_lm_teacher, [], config)
    with pytest.raises(DomainError, match="validation: item 1 is a int, not a str"):
        distill_causal_lm(student, trained_lm_teacher, ["a b"], config, validation=["a", 3])
