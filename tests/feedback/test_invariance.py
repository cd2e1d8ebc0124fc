"""The invariance feedback option on tiny models: its penalty terms, counterfactual copies, errors, a run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from feedback_helpers import quick_dict
from torch.nn.attention import SDPBackend, sdpa_kernel

from fanbu.attribution.counterfactual import edit_words, plant_at_random
from fanbu.config import validate
from fanbu.errors import ConfigError
from fanbu.feedback import get_strategy
from fanbu.feedback.shared.soft_targets import SoftTargets
from fanbu.feedback.strategies.invariance_terms import (
    InputGradientPenalty,
    RiskVariance,
    counterfactual_targets,
    flagged_positions,
    word_patterns,
)
from fanbu.models import EncoderHandle
from fanbu.train.distill.forward import distill_forward
from fanbu.train.terms import Batch

PLANTED = "zqxv"


def tiny_batch(handle: EncoderHandle, texts: list[str]) -> Batch:
    return Batch(handle.tokenize(texts), task="topic", indices=torch.arange(len(texts)))


@pytest.fixture
def tiny() -> EncoderHandle:
    handle = EncoderHandle.tiny(seed=0)
    handle.add_head("topic", ["a", "b"], seed=0)
    handle.model.train()
    return handle


def test_flagged_positions_cover_every_piece_of_a_flagged_word(tiny):
    patterns = word_patterns(tiny.tokenizer, [PLANTED])
    ids = tiny.tokenize([f"the {PLANTED} model", "the model"])["input_ids"]
    mask = flagged_positions(ids, patterns)
    pieces = len(tiny.tokenizer(PLANTED, add_special_tokens=False)["input_ids"])
    assert pieces > 1 and mask[0].sum() == pieces and not mask[1].any()


def test_input_gradient_penalty_is_zero_without_flagged_words_and_positive_with_them(tiny):
    penalty = InputGradientPenalty(tiny.model, word_patterns(tiny.tokenizer, [PLANTED]), weight=1.0)
    try:
        clean = tiny_batch(tiny, ["the computer software", "the doctor and the patient"])
        loss = penalty.losses(distill_forward(tiny.model, clean), clean, tiny.model)["rrr"]
        assert float(loss.detach()) == 0.0
        planted = tiny_batch(tiny, [f"the computer {PLANTED} software", f"the computer {PLANTED} hardware"])
        with sdpa_kernel(SDPBackend.MATH):  # no padding: CPU attention would take the fused kernel
            loss = penalty.losses(distill_forward(tiny.model, planted), planted, tiny.model)["rrr"]
            assert float(loss.detach()) > 0
            loss.backward()  # the penalty trains the model: a second-order gradient reaches the weights
        assert tiny.model.heads["topic"].weight.grad.abs().sum() > 0
    finally:
        penalty.close()
    assert not tiny.model.encoder.get_input_embeddings()._forward_hooks


def soft_rows(texts: list[str], labels: list[int]) -> SoftTargets:
    probs = torch.tensor([[0.9, 0.1] if y == 0 else [0.2, 0.8] for y in labels])
    return SoftTargets(texts, ["tech"] * len(texts), torch.tensor(labels), probs, torch.ones(len(texts)))


def test_counterfactual_copies_keep_the_teachers_labels_and_swap_the_flagged_word():
    rows = soft_rows([f"the {PLANTED} model", "a clean text", f"{PLANTED.upper()} first"], [0, 1, -1])
    merged, added = counterfactual_targets(rows, [PLANTED], "swap", ["apple", "river"], seed=0)
    assert added == 2 and len(merged) == 5
    assert merged.texts[:3] == rows.texts
    for copy_row, original in ((3, 0), (4, 2)):
        assert PLANTED not in merged.texts[copy_row].lower()
        assert merged.texts[copy_row].split()[1 - original // 2] in {"apple", "river"}
        assert merged.labels[copy_row] == rows.labels[original]
        assert torch.equal(merged.probs[copy_row], rows.probs[original])
    removed, _ = counterfactual_targets(rows, [PLANTED], "remove", [], seed=0)
    assert removed.texts[3:] == ["the model", "first"]


def test_text_edits_only_touch_whole_words():
    rng = np.random.default_rng(0)
    assert edit_words(f"{PLANTED}s and {PLANTED}.", [PLANTED], "remove", [], rng) == f"{PLANTED}s and ."
    planted = plant_at_random(["a b", "c d", "e f", "g h"], PLANTED, rate=1.0, seed=0)
    assert all(PLANTED in t.split() for t in planted)
    assert plant_at_random(["a b"], PLANTED, rate=0.0, seed=0) == ["a b"]


def test_risk_variance_needs_two_environments():
    term = RiskVariance(
        {"tech": soft_rows(["a", "b"], [0, 1]), "health": soft_rows(["c", "d"], [1, 0])}, 1.0, 1.0
    )
    logits = torch.tensor([[2.0, -1.0], [0.0, 0.5]], requires_grad=True)
    first = term.losses({"logits": logits}, Batch({}, task="tech", indices=torch.arange(2)), None)["vrex"]
    assert float(first.detach()) == 0.0
    second = term.losses({"logits": logits * 3}, Batch({}, task="health", indices=torch.arange(2)), None)
    assert float(second["vrex"].detach()) > 0 and second["vrex"].requires_grad


def test_invariance_refuses_a_swarm_of_one_domain(make_context, experts):
    info = get_strategy("invariance")
    ctx = make_context(swarm={"tech": experts["tech"]})
    with pytest.raises(ConfigError, match="invariance.*one domain.*environments"):
        info.run(ctx, validate(info.config, {"train": quick_dict(epochs=1)}))


def test_invariance_runs_with_its_own_consensus_report(make_context, large_v0):
    info = get_strategy("invariance")
    settings = {
        "train": quick_dict(epochs=1),
        "vrex_weight": 0.5,
        "consensus": {"texts": 12, "threshold": 1.0, "ig": {"steps": 4}},
    }
    output = info.run(make_context(), validate(info.config, settings))
    assert output.handle.labels == large_v0.labels and output.handle.model is not large_v0.model
    report = output.details["consensus"]
    assert set(report["domains"]) == {"tech", "health"}
    assert set(output.details["flagged"]) == {"tech", "health"}
    assert all(len(words) <= 3 for words in output.details["flagged"].values())
    assert "val.mean_acc" in output.metrics
