"""lm_merge: the LoRA experts' full-rank updates merged into the large LM (task arithmetic, TIES, DARE)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from lm_helpers import LM_DOMAINS, lm_context, lm_texts

from fanbu.errors import ConfigError
from fanbu.feedback.lm import LM_METHODS
from fanbu.feedback.lm.merge import LMMergeConfig
from fanbu.models.causal_lm import CausalLMHandle


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory):
    return lm_context(tmp_path_factory.mktemp("lm-merge"))


def logits(model: torch.nn.Module, handle: CausalLMHandle) -> torch.Tensor:
    """Logits ``(batch, seq, vocab)`` on a fixed pair of texts."""
    model.eval()
    with torch.no_grad():
        return model(**handle.tokenize(lm_texts("sport", 2, 99))).logits


@pytest.mark.parametrize("method", ["task_arithmetic", "ties", "dare_ties", "dare_linear"])
def test_single_expert_with_weight_one_equals_that_expert(ctx, method: str) -> None:
    domain = LM_DOMAINS[0]
    single = dataclasses.replace(ctx, experts={domain: ctx.experts[domain]})
    density = None if method == "task_arithmetic" else 1.0  # density 1 keeps every entry
    config = LMMergeConfig(method=method, density=density, weights={domain: 1.0})
    out = LM_METHODS.get("lm_merge").run(single, config)
    expected = logits(ctx.experts[domain].model, ctx.large)
    base = logits(ctx.large.model, ctx.large)
    assert not torch.allclose(expected, base, atol=1e-4)  # the expert did learn something
    torch.testing.assert_close(logits(out.handle.model, ctx.large), expected, atol=1e-5, rtol=1e-5)
    assert not hasattr(out.handle.model, "peft_config")  # a plain model: no adapter left


def test_merging_two_experts_lands_between_them_and_leaves_inputs_alone(ctx) -> None:
    before = {k: v.clone() for k, v in ctx.large.model.state_dict().items()}
    out = LM_METHODS.get("lm_merge").run(ctx, LMMergeConfig(method="task_arithmetic", scalings=[0.5, 1.0]))
    assert out.details["scaling"] in (0.5, 1.0)
    assert set(out.details["val_log_ppl_by_scaling"]) == {"0.5", "1.0"}
    assert all(f"val_ppl/{d}" in out.metrics for d in LM_DOMAINS)
    for key, value in ctx.large.model.state_dict().items():
        assert torch.equal(value, before[key]), key  # the champion is never changed
    merged = logits(out.handle.model, ctx.large)
    assert not torch.allclose(merged, logits(ctx.large.model, ctx.large), atol=1e-4)


def test_merge_refuses_experts_without_an_adapter(ctx) -> None:
    plain = dataclasses.replace(ctx, experts={"sport": ctx.large})
    with pytest.raises(ConfigError, match="not an unmerged LoRA adapter"):
        LM_METHODS.get("lm_merge").run(plain, LMMergeConfig())


def test_merge_config_checks() -> None:
    with pytest.raises(ValueError, match="density applies"):
        LMMergeConfig(method="task_arithmetic", density=0.5)
    with pytest.raises(ValueError, match="scalings must be positive"):
        LMMergeConfig(scalings=[0.0])
