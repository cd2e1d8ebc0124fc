"""Tiny causal-LM swarms for the LM feedback tests: a tiny random Llama and LoRA experts trained on it."""

from __future__ import annotations

import copy

import torch
from peft import PeftModel

from fanbu.derive.finetune import FinetuneConfig, LoraSettings, finetune_causal_lm
from fanbu.feedback.lm import LMFeedbackContext
from fanbu.models.causal_lm import CausalLMHandle
from fanbu.train.config import TrainConfig

LM_DOMAINS = ("sport", "science")
WORDS = {
    "sport": ["game", "team", "sport", "sports", "play", "win", "best", "great"],
    "science": ["science", "data", "model", "models", "learning", "computer", "space", "test"],
}


def lm_texts(domain: str, n: int, seed: int) -> list[str]:
    """``n`` short sentences of a domain's words (deterministic)."""
    g = torch.Generator().manual_seed(seed)
    words = WORDS[domain]
    return [" ".join(words[int(i)] for i in torch.randint(len(words), (8,), generator=g)) for _ in range(n)]


def quick_train(steps: int = 6) -> TrainConfig:
    """A few optimiser steps on one thread, no progress bar."""
    return TrainConfig(
        epochs=100, max_steps=steps, batch_size=4, lr=1e-2, progress=False, threads=1, warmup_ratio=0
    )


def lora_expert(large: CausalLMHandle, texts: list[str], seed: int = 0) -> CausalLMHandle:
    """The large LM with an unmerged LoRA adapter fine-tuned on ``texts`` (B made non-zero)."""
    expert = copy.deepcopy(large)
    config = FinetuneConfig(
        mode="lora",
        lora=LoraSettings(r=4, alpha=8, dropout=0.0, merge=False),
        train=quick_train().model_copy(update={"seed": seed}),
    )
    finetune_causal_lm(expert, texts, config)
    assert isinstance(expert.model, PeftModel)
    return expert


def lm_context(tmp_path, general: bool = True) -> LMFeedbackContext:
    """A tiny champion, one LoRA expert per domain, transfer/validation texts and general text."""
    large = CausalLMHandle.tiny(seed=0)
    experts = {d: lora_expert(large, lm_texts(d, 24, i), seed=i) for i, d in enumerate(LM_DOMAINS)}
    return LMFeedbackContext(
        large=large,
        experts=experts,
        transfer={d: lm_texts(d, 12, 10 + i) for i, d in enumerate(LM_DOMAINS)},
        validation={d: lm_texts(d, 6, 20 + i) for i, d in enumerate(LM_DOMAINS)},
        general=lm_texts("sport", 4, 30) + lm_texts("science", 4, 31) if general else [],
        corrections=[
            ("what is the best sport", "the best sport is the game"),
            ("name a science", "computer science"),
        ],
        work_dir=tmp_path,
    )
