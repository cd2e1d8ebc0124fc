"""Encoder pruning: sizes, exact surgery, index bookkeeping, save and plain reload."""

from __future__ import annotations

import pytest
import torch
from prune_helpers import TEXTS, bert_params, scale_bert_neuron
from transformers import AutoModel

from fanbu.derive.prune import PruneConfig, count_parameters, prune_encoder, shrink_encoder
from fanbu.derive.prune.plan import Plan
from fanbu.models import EncoderHandle, Provenance

V = 592  # the tiny tokenizer's size


def logits(handle: EncoderHandle, texts: list[str] = TEXTS) -> torch.Tensor:
    handle.model.eval()
    with torch.no_grad():
        return handle.model(**handle.tokenize(texts), head="topic")  # (batch, 3)


def test_formula_matches_the_tiny_encoder(encoder) -> None:
    assert count_parameters(encoder) == bert_params(V, 32, 2, 32, 64)


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"layers": 1}, bert_params(V, 32, 1, 32, 64)),
        ({"ffn": 16}, bert_params(V, 32, 2, 32, 16)),
        ({"ffn": 0.25}, bert_params(V, 32, 2, 32, 16)),
        ({"heads": 2, "hidden": 16}, bert_params(V, 16, 2, 16, 64)),
        ({"head_dim": 4, "hidden": 16}, bert_params(V, 16, 2, 16, 64)),
        ({"heads": 3, "head_dim": 4, "hidden": 12}, bert_params(V, 12, 2, 12, 64)),
        ({"vocab": 300}, bert_params(300, 32, 2, 32, 64)),
        ({"layers": 1, "heads": 2, "hidden": 16, "ffn": 32, "vocab": 200}, bert_params(200, 16, 1, 16, 32)),
    ],
)
def test_each_unit_shrinks_as_expected(encoder, calibration, settings, expected) -> None:
    before = count_parameters(encoder)
    pruned = prune_encoder(encoder, PruneConfig(**settings), calibration)
    assert count_parameters(pruned) == expected
    assert count_parameters(encoder) == before  # the input handle is untouched
    config = pruned.model.encoder.config
    assert config.hidden_size == pruned.model.hidden_size == pruned.model.heads["topic"].in_features
    assert config.hidden_size % config.num_attention_heads == 0
    assert logits(pruned).shape == (len(TEXTS), 3)
    assert pruned.predict_proba(TEXTS[:2], "topic").shape == (2, 3)


def test_keeping_everything_gives_the_same_outputs(encoder, calibration) -> None:
    reference = logits(encoder)
    nothing = prune_encoder(encoder, PruneConfig(), calibration)
    torch.testing.assert_close(logits(nothing), reference)
    full = PruneConfig(layers=2, heads=4, head_dim=8, ffn=64, hidden=32, vocab=V, importance="taylor")
    everything = prune_encoder(encoder, full, calibration)
    assert everything.tokenize(TEXTS)["input_ids"].tolist() == encoder.tokenize(TEXTS)["input_ids"].tolist()
    torch.testing.assert_close(logits(everything), reference)
    same_layers = prune_encoder(encoder, PruneConfig(layers=[0, 1]))
    torch.testing.assert_close(logits(same_layers), reference)


@pytest.mark.parametrize("importance", ["magnitude", "taylor", "activation"])
def test_dropping_dead_ffn_neurons_changes_nothing(encoder, calibration, importance) -> None:
    dead = [3, 17, 40, 63]
    for layer in range(2):
        for neuron in dead:
            scale_bert_neuron(encoder.model, layer, neuron, 0.0)
    reference = logits(encoder)
    pruned = prune_encoder(encoder, PruneConfig(ffn=60, importance=importance), calibration)
    assert pruned.model.encoder.config.intermediate_size == 60
    torch.testing.assert_close(logits(pruned), reference)


@torch.no_grad()
def test_head_and_channel_bookkeeping_is_exact_in_the_attention_block(encoder) -> None:
    """Drop heads, channels inside heads and hidden channels whose weights are zero: same attention output."""
    d = 8
    units, qk, vo = (
        torch.tensor([1, 3]),
        torch.tensor([[0, 2, 5, 7], [1, 3, 4, 6]]),
        torch.tensor([[1, 2, 3, 6], [0, 4, 5, 7]]),
    )
    hidden = torch.tensor([0, 3, 4, 9, 15, 20, 26, 31])
    block = encoder.model.encoder.encoder.layer[0].attention
    kept_qk = (units[:, None] * d + qk).flatten()
    kept_vo = (units[:, None] * d + vo).flatten()
    for linear, kept in ((block.self.query, kept_qk), (block.self.key, kept_qk), (block.self.value, kept_vo)):
        dropped = torch.ones(32, dtype=torch.bool)
        dropped[kept] = False
        linear.weight[dropped] = 0
        linear.bias[dropped] = 0
        dropped_hidden = torch.ones(32, dtype=torch.bool)
        dropped_hidden[hidden] = False
        linear.weight[:, dropped_hidden] = 0
    plan = Plan(
        layers=[0, 1],
        units={0: units, 1: units},
        qk={0: qk, 1: qk},
        vo={0: vo, 1: vo},
        ffn={0: torch.arange(64), 1: torch.arange(64)},
        hidden=hidden,
    )
    pruned = shrink_encoder(encoder, plan)
    new_block = pruned.model.encoder.encoder.layer[0].attention
    assert pruned.model.encoder.config.num_attention_heads == 2
    assert new_block.self.attention_head_size == 4
    x = torch.randn(2, 5, 32)  # (batch, seq, hidden)
    original = block.output.dense(block.self(x)[0])[..., hidden]  # (batch, seq, 8)
    smaller = new_block.output.dense(new_block.self(x[..., hidden])[0])  # (batch, seq, 8)
    torch.testing.assert_close(smaller, original)


def test_pruned_handle_reloads_with_plain_automodel(encoder, calibration, tmp_path) -> None:
    config = PruneConfig(layers=1, heads=2, hidden=16, ffn=0.5, vocab=200, importance="activation")
    pruned = prune_encoder(encoder, config, calibration)
    pruned.save(tmp_path / "small", Provenance(name="pruned"))
    batch = pruned.tokenize(TEXTS)
    plain = AutoModel.from_pretrained(tmp_path / "small").eval()
    assert plain.config.vocab_size == 200 and plain.config.hidden_size == 16
    with torch.no_grad():
        expected = pruned.model.encoder(**batch).last_hidden_state
        torch.testing.assert_close(plain(**batch).last_hidden_state, expected)
    reloaded = EncoderHandle.load(tmp_path / "small")
    assert reloaded.tokenize(TEXTS)["input_ids"].tolist() == batch["input_ids"].tolist()
    torch.testing.assert_close(logits(reloaded), logits(pruned))


def test_input_handle_is_not_modified(encoder, calibration) -> None:
    before = {k: v.clone() for k, v in encoder.model.state_dict().items()}
    encoder.model.train()
    prune_encoder(encoder, PruneConfig(layers=1, heads=2, hidden=16, importance="taylor"), calibration)
    assert encoder.model.training
    assert all(p.grad is None for p in encoder.model.parameters())
    for key, value in encoder.model.state_dict().items():
        assert torch.equal(value, before[key]), key
