"""Schedules: one-shot and iterative rounds, `recover` between rounds, targets reached exactly."""

from __future__ import annotations

import torch
from prune_helpers import TEXTS

from fanbu.derive.prune import Calibration, PruneConfig, prune_causal_lm, prune_encoder
from fanbu.derive.prune.importance import layout_of
from fanbu.derive.prune.schedule import Targets, interpolate, round_targets


def test_interpolation_ends_at_the_target() -> None:
    assert [interpolate(64, 16, s, 3) for s in (1, 2, 3)] == [48, 32, 16]
    assert [interpolate(4, 2, s, 4) for s in (1, 2, 3, 4)] == [4, 3, 2, 2]  # round half to even


def test_encoder_rounds_keep_hidden_equal_to_heads_times_head_dim(encoder) -> None:
    config = PruneConfig(heads=2, head_dim=4, hidden=8, layers=[1], vocab=300, schedule="iterative", steps=2)
    rounds = round_targets(config, layout_of(encoder))
    assert rounds == [Targets((1,), 3, 6, 64, 18, 300), Targets(1, 2, 4, 64, 8, None)]
    assert all(r.hidden == r.units * r.head_dim for r in rounds)


def test_oneshot_is_one_round(encoder) -> None:
    rounds = round_targets(PruneConfig(ffn=0.5), layout_of(encoder))
    assert rounds == [Targets(2, 4, 8, 32, 32, None)]


def test_iterative_calls_recover_between_rounds_and_ends_at_target(encoder, calibration) -> None:
    calls: list[tuple[int, int, int]] = []

    def recover(handle, round_number: int) -> None:
        config = handle.model.encoder.config
        calls.append((round_number, config.intermediate_size, config.num_attention_heads))
        with torch.no_grad():  # recovery may change the weights; the next round scores the new ones
            handle.model.encoder.encoder.layer[0].intermediate.dense.weight.mul_(1.5)

    config = PruneConfig(ffn=16, heads=2, hidden=16, importance="taylor", schedule="iterative", steps=3)
    pruned = prune_encoder(encoder, config, calibration, recover=recover)
    assert calls == [(1, 48, 3), (2, 32, 3)]  # steps - 1 calls, after every round but the last
    final = pruned.model.encoder.config
    assert (final.intermediate_size, final.num_attention_heads, final.hidden_size) == (16, 2, 16)
    assert pruned.predict_proba(TEXTS[:2], "topic").shape == (2, 3)


def test_iterative_llama_keeps_every_round_valid(causal_lm) -> None:
    seen: list[tuple[int, int, int]] = []

    def recover(handle, round_number: int) -> None:
        config = handle.model.config
        assert config.hidden_size % config.num_attention_heads == 0
        seen.append((config.num_hidden_layers, config.intermediate_size, config.hidden_size))

    config = PruneConfig(layers=1, ffn=16, hidden=16, importance="activation", schedule="iterative", steps=2)
    pruned = prune_causal_lm(causal_lm, config, Calibration(TEXTS), recover=recover)
    assert seen == [(2, 40, 24)]
    assert (pruned.model.config.num_hidden_layers, pruned.model.config.hidden_size) == (1, 16)


def test_no_recover_callback_is_fine(causal_lm) -> None:
    config = PruneConfig(ffn=32, schedule="iterative", steps=2)
    assert prune_causal_lm(causal_lm, config).model.config.intermediate_size == 32
