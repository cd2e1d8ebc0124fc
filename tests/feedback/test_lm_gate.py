"""The causal-LM gate: domain gate perplexity, held-out perplexity and instruction prompts, with tolerances."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from lm_helpers import lm_texts

from fanbu.errors import DomainError
from fanbu.feedback.gate.lm_gate import (
    PROMPTS_TASK,
    LMGateConfig,
    LMGateData,
    lm_gate,
    load_prompts,
    score_lm,
)
from fanbu.models.causal_lm import CausalLMHandle


@pytest.fixture(scope="module")
def data() -> LMGateData:
    return LMGateData(
        domains={"sport": lm_texts("sport", 6, 1), "science": lm_texts("science", 6, 2)},
        heldout={"general": lm_texts("sport", 3, 3) + lm_texts("science", 3, 4)},
        prompts=load_prompts()[:3],
    )


def test_packaged_prompt_set_has_references() -> None:
    prompts = load_prompts()
    assert 10 <= len(prompts) <= 20
    assert all(p.strip() and r.strip() for p, r in prompts)


def test_a_prompt_file_without_prompts_is_refused(tmp_path) -> None:
    bad = tmp_path / "prompts.json"
    bad.write_text(json.dumps({"prompts": []}))
    with pytest.raises(DomainError, match="no prompts"):
        load_prompts(bad)
    bad.write_text("{")
    with pytest.raises(DomainError, match="not a prompt set"):
        load_prompts(bad)


def test_the_champion_itself_passes(data: LMGateData) -> None:
    champion = CausalLMHandle.tiny(seed=0)
    decision = lm_gate(copy.deepcopy(champion), champion, data)
    assert decision.promoted, decision.reason
    assert set(decision.tasks) == {"sport", "science", "general", PROMPTS_TASK}
    scores = score_lm(champion, data, LMGateConfig())
    assert scores["sport"]["ppl"] > 1 and scores[PROMPTS_TASK]["logprob"] < 0


def test_a_damaged_candidate_is_rejected_naming_the_tasks(data: LMGateData) -> None:
    champion = CausalLMHandle.tiny(seed=0)
    damaged = copy.deepcopy(champion)
    with torch.no_grad():
        for p in damaged.model.parameters():
            p.add_(torch.randn_like(p) * 0.5, alpha=1.0)
    decision = lm_gate(damaged, champion, data, LMGateConfig(tolerance=0.0))
    assert not decision.promoted
    assert decision.reason.startswith("rejected:") and "perplexity" in decision.reason
    assert decision.failures


def test_the_tolerance_lets_a_small_rise_through(data: LMGateData) -> None:
    champion = CausalLMHandle.tiny(seed=0)
    nudged = copy.deepcopy(champion)
    with torch.no_grad():
        nudged.model.lm_head.weight.mul_(1.001)  # tied to the embeddings: a tiny change everywhere
    strict = lm_gate(
        nudged,
        champion,
        data,
        LMGateConfig(tolerance=0.5, prompt_tolerance=1.0, require_mean_not_worse=False),
    )
    assert strict.promoted, strict.reason
