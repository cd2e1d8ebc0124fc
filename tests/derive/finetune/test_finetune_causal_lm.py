"""finetune_causal_lm(): full and LoRA fine-tuning lower the validation perplexity."""

from __future__ import annotations

import pytest
from finetune_helpers import quick
from peft import PeftModel
from transformers import LlamaForCausalLM

from fanbu.derive.finetune import FinetuneConfig, LoraSettings, finetune_causal_lm
from fanbu.errors import ConfigError, DomainError, ModelError
from fanbu.evaluate import perplexity
from fanbu.models import CausalLMHandle


def ppl(handle: CausalLMHandle, texts: list[str]) -> float:
    return perplexity(handle.model, handle.tokenizer, texts, max_length=handle.max_length)


def test_full_finetune_lowers_perplexity(causal_lm, lm_texts) -> None:
    before = ppl(causal_lm, lm_texts["validation"])
    config = FinetuneConfig(train=quick(epochs=3))
    tuned, result = finetune_causal_lm(causal_lm, lm_texts["train"], config, lm_texts["validation"])
    assert tuned is causal_lm
    after = ppl(tuned, lm_texts["validation"])
    assert after < 0.5 * before
    assert result.last_metrics["ppl"] == pytest.approx(-result.last_metrics["score"])


@pytest.mark.parametrize("merge", [True, False])
def test_lora_finetune_lowers_perplexity(causal_lm, lm_texts, merge) -> None:
    before = ppl(causal_lm, lm_texts["validation"])
    lora = LoraSettings(r=4, alpha=8, merge=merge)
    config = FinetuneConfig(mode="lora", lora=lora, train=quick(epochs=6, lr=2e-2))
    tuned, _ = finetune_causal_lm(causal_lm, lm_texts["train"], config)
    if merge:
        assert type(tuned.model) is LlamaForCausalLM
    else:
        assert isinstance(tuned.model, PeftModel)
        trainable = [n for n, p in tuned.model.named_parameters() if p.requires_grad]
        assert trainable and all("lora_" in n for n in trainable)
        assert any("o_proj.lora_A" in n for n in trainable)  # the Llama defaults: q/k/v/o projections
    assert ppl(tuned, lm_texts["validation"]) < 0.85 * before  # only attention adapts: a modest gain


def test_causal_lm_finetune_errors(causal_lm, lm_texts) -> None:
    with pytest.raises(ConfigError, match="causal-LM evaluation reports 'score'"):
        finetune_causal_lm(causal_lm, lm_texts["train"], FinetuneConfig(train=quick(metric="acc")), ["a b c"])
    with pytest.raises(DomainError, match="train: pass a non-empty list of texts"):
        finetune_causal_lm(causal_lm, "just one string", FinetuneConfig(train=quick()))
    lora = FinetuneConfig(mode="lora", lora=LoraSettings(merge=False), train=quick(epochs=1))
    finetune_causal_lm(causal_lm, lm_texts["train"][:4], lora)
    with pytest.raises(ModelError, match="already carries a LoRA adapter"):
        finetune_causal_lm(causal_lm, lm_texts["train"][:4], lora)


def test_packed_full_finetune_trains_on_windows_and_lowers_perplexity() -> None:
    texts = ["the team will play a great game on the first day of the year"] * 24
    handle = CausalLMHandle.tiny(hidden_size=32, num_layers=1, seed=2)
    before = perplexity(handle.model, handle.tokenizer, texts[:4], max_length=32)
    config = FinetuneConfig(train=quick(epochs=5, batch_size=4, lr=3e-3))
    _, result = finetune_causal_lm(handle, texts, config, pack_window=16, max_windows=20)
    assert result.state.global_step == 25  # 20 windows / 4 per batch x 5 epochs
    assert perplexity(handle.model, handle.tokenizer, texts[:4], max_length=32) < 0.5 * before
