"""lm_distill, lm_corrections and lm_sequential on a tiny Llama swarm."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from lm_helpers import LM_DOMAINS, lm_context, quick_train

from fanbu.errors import ConfigError, ModelError
from fanbu.feedback import FeedbackContext
from fanbu.feedback.lm import LM_METHODS
from fanbu.feedback.lm.corrections import CorrectionPlan, LMCorrectionsSettings
from fanbu.feedback.lm.distill import LMDistillSettings, mixture_logits
from fanbu.feedback.lm.sequential import LMSequentialSettings
from fanbu.feedback.shared.prompts import IGNORE, pair_batch
from fanbu.models.causal_lm import CausalLMHandle
from fanbu.models.tiny import tiny_tokenizer


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory):
    return lm_context(tmp_path_factory.mktemp("lm-methods"))


def test_mixture_of_one_teacher_is_that_teacher_and_confidence_weights_sum_to_one() -> None:
    torch.manual_seed(0)
    z = torch.randn(2, 3, 7)  # (batch, seq, vocab)
    torch.testing.assert_close(
        torch.softmax(mixture_logits([z], "confidence", 2.0, 1.0) / 2.0, -1), torch.softmax(z / 2.0, -1)
    )
    mixed = mixture_logits([z, torch.randn(2, 3, 7)], "confidence", 1.0, 3.0)
    torch.testing.assert_close(torch.softmax(mixed, -1).sum(-1), torch.ones(2, 3))
    uniform = mixture_logits([z, z], "uniform", 1.0, 1.0)
    torch.testing.assert_close(torch.softmax(uniform, -1), torch.softmax(z, -1))


@pytest.mark.parametrize("routing", ["domain", "confidence"])
def test_distill_moves_the_large_lm_towards_the_experts(ctx, routing: str) -> None:
    config = LMDistillSettings(routing=routing, replay=0.5, train=quick_train(8))
    out = LM_METHODS.get("lm_distill").run(ctx, config)
    assert out.metrics["steps"] == 8
    assert out.relation == "distilled"
    before = {d: ctx.validation_ppl(ctx.large.model, d) for d in LM_DOMAINS}
    after = {d: out.metrics[f"val_ppl/{d}"] for d in LM_DOMAINS}
    assert sum(after.values()) < sum(before.values())
    assert not hasattr(out.handle.model, "peft_config")  # the LoRA adapter was merged


def test_distill_refuses_a_teacher_with_another_vocabulary(ctx) -> None:
    other = tiny_tokenizer()
    other.add_tokens(["zebra"])
    odd = CausalLMHandle(copy.deepcopy(ctx.large.model), other, 64)
    with pytest.raises(ModelError, match="vocabulary"):
        LM_METHODS.get("lm_distill").run(
            dataclasses.replace(ctx, experts={"sport": odd}), LMDistillSettings()
        )


def test_distill_on_classification_context_says_so(tmp_path) -> None:
    from fanbu.models import EncoderHandle

    classification = FeedbackContext(large=EncoderHandle.tiny(), experts={}, public={}, work_dir=tmp_path)
    with pytest.raises(ConfigError, match="causal language models"):
        LM_METHODS.get("lm_distill").run(classification, LMDistillSettings())


def test_pair_batch_puts_labels_on_the_completion_only(ctx) -> None:
    inputs, labels = pair_batch(ctx.large.tokenizer, [("what is best", "the game"), ("a", "b c d")], 64)
    assert inputs["input_ids"].shape == labels.shape
    first = labels[0][labels[0] != IGNORE].tolist()
    completion = ctx.large.tokenizer("the game", add_special_tokens=False)["input_ids"]
    assert first == [*completion, ctx.large.tokenizer.eos_token_id]
    assert (labels[inputs["attention_mask"] == 0] == IGNORE).all()


def test_corrections_train_on_completions_with_replay(ctx) -> None:
    plan = CorrectionPlan(ctx.large, ctx.corrections, ctx.general, 1, 1.0, 0)
    tasks = [item.task for item in plan.schedule(0)]
    assert tasks.count("_general") == tasks.count("_corrections") == 2
    config = LMCorrectionsSettings(mode="full", train=quick_train(6))
    out = LM_METHODS.get("lm_corrections").run(ctx, config)
    _, labels = pair_batch(ctx.large.tokenizer, ctx.corrections, 64)
    inputs, _ = pair_batch(ctx.large.tokenizer, ctx.corrections, 64)

    def nll(model: torch.nn.Module) -> float:
        with torch.no_grad():
            return float(model(**inputs, labels=labels).loss)

    assert nll(out.handle.model) < nll(ctx.large.model)
    with pytest.raises(ConfigError, match="no general text"):
        LM_METHODS.get("lm_corrections").run(dataclasses.replace(ctx, general=[]), config)


def test_sequential_trains_each_domain_in_order(ctx) -> None:
    config = LMSequentialSettings(order=list(reversed(LM_DOMAINS)), train=quick_train(3))
    out = LM_METHODS.get("lm_sequential").run(ctx, config)
    assert out.details["order"] == list(reversed(LM_DOMAINS))
    assert out.metrics["steps"] == 6
    with pytest.raises(ConfigError, match="distinct domains"):
        LM_METHODS.get("lm_sequential").run(ctx, LMSequentialSettings(order=["sport", "sport"]))
