"""Mixture of experts (BTX): shapes, parity, router training, save / reload."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _merge_fixtures import DOMAINS, quick, tiny_large, tiny_swarm

from fanbu.errors import ConfigError, ModelError
from fanbu.feedback import get_strategy
from fanbu.feedback.shared.weights import SelectionConfig, plain_state
from fanbu.feedback.strategies.moe import MoEConfig, build_moe, moe_strategy, train_router
from fanbu.models.artefact import Provenance
from fanbu.models.encoder import EncoderHandle
from fanbu.models.moe import MoEHandle
from fanbu.models.moe_layers import MixtureFFN, mixtures
from fanbu.train.balance import balance_loss

QUICK = MoEConfig(train=quick(epochs=3, lr=1e-2), selection=SelectionConfig(enabled=False))


def test_moe_is_registered() -> None:
    assert get_strategy("moe").config is MoEConfig


def test_mixture_shapes_and_top1_routing() -> None:
    torch.manual_seed(0)
    block = MixtureFFN(hidden=8, intermediate=16, activation="gelu", num_experts=3, top_k=1)
    x = torch.randn(2, 5, 8)  # (batch, seq, hidden)
    out = block(x)
    assert out.shape == (2, 5, 8) and block.router_logits.shape == (10, 3)
    chosen = block.router_logits.argmax(dim=-1)  # (tokens,)
    flat = x.reshape(-1, 8)
    expected = torch.stack([block.experts[int(e)](flat[i]) for i, e in enumerate(chosen)])
    assert torch.allclose(out.reshape(-1, 8), expected, atol=1e-6)
    with pytest.raises(ConfigError, match="top_k"):
        MixtureFFN(8, 16, "gelu", num_experts=2, top_k=3)


def test_build_moe_mixes_ffns_and_averages_the_rest() -> None:
    swarm = tiny_swarm()
    handle = build_moe(swarm.large, swarm.experts, QUICK)
    assert handle.experts == ["champion", *DOMAINS] and handle.top_k == 2
    blocks = list(mixtures(handle.model.encoder))
    assert len(blocks) == 2 and all(len(b.experts) == 3 for b in blocks)
    sources = [plain_state(swarm.large)] + [plain_state(swarm.experts[d]) for d in DOMAINS]
    for e, source in enumerate(sources):
        assert torch.equal(
            blocks[1].experts[e].up.weight, source["encoder.layer.1.intermediate.dense.weight"]
        )
    key = "encoder.layer.0.attention.self.query.weight"
    mean = torch.stack([s[key] for s in sources]).mean(dim=0)
    assert torch.allclose(handle.model.encoder.state_dict()[key], mean, atol=1e-6)
    texts = swarm.tests["topic"][0][:6]
    assert handle.predict_proba(texts, "topic").shape == (6, 2) and handle.predict(texts, "faith").shape == (
        6,
    )


def test_identical_experts_give_the_champions_outputs() -> None:
    swarm = tiny_swarm()
    clones = {d: copy.deepcopy(swarm.large) for d in DOMAINS}
    handle = build_moe(swarm.large, clones, QUICK)  # any routing mixes identical FFNs: the same function
    texts = swarm.tests["faith"][0]
    np.testing.assert_allclose(
        handle.predict_proba(texts, "faith"), swarm.large.predict_proba(texts, "faith"), atol=1e-5
    )


def _public_loss(handle: MoEHandle, public: dict, config: MoEConfig) -> float:
    handle.model.eval()
    total = 0.0
    with torch.no_grad():
        for domain in DOMAINS:
            texts, labels = public[domain]
            batch = handle.tokenize(texts)
            logits = handle.model(**batch, head=domain)
            total += float(F.cross_entropy(logits, torch.tensor(labels)))
            total += config.balance_weight * float(balance_loss(handle.model, batch["attention_mask"]))
    return total / len(DOMAINS)


def test_router_trains_and_only_the_router_moves(tmp_path: Path) -> None:
    swarm = tiny_swarm()
    handle = build_moe(swarm.large, swarm.experts, QUICK)
    before = {k: v.clone() for k, v in handle.model.state_dict().items()}
    loss_before = _public_loss(handle, swarm.public, QUICK)
    result = train_router(handle, swarm.context(tmp_path), QUICK, list(DOMAINS))
    assert result.state.global_step > 0
    assert _public_loss(handle, swarm.public, QUICK) < loss_before
    after = handle.model.state_dict()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved and all(".router." in k for k in moved)


def test_strategy_output_saves_and_reloads(tmp_path: Path) -> None:
    swarm = tiny_swarm()
    out = moe_strategy(swarm.context(tmp_path), QUICK)
    assert out.relation == "moe" and isinstance(out.handle, MoEHandle)
    assert out.details["router_steps"] > 0 and "sentiment.val_acc" in out.metrics
    path = out.handle.save(tmp_path / "moe", Provenance(base_model_relation="merge"))
    loaded = MoEHandle.load(path)
    for task in ("topic", "faith"):
        texts = swarm.tests[task][0]
        np.testing.assert_allclose(
            loaded.predict_proba(texts, task), out.handle.predict_proba(texts, task), atol=1e-6
        )
    with pytest.raises(ModelError, match="holds a 'moe' model, not 'encoder'"):
        EncoderHandle.load(path)  # a dense loader refuses instead of dropping the experts


def test_moe_refusals(tmp_path: Path) -> None:
    swarm = tiny_swarm()
    with pytest.raises(ConfigError, match="top_k 4 exceeds"):
        build_moe(swarm.large, swarm.experts, MoEConfig(top_k=4))
    with pytest.raises(ConfigError, match="swarm distillation"):
        moe_strategy(swarm.context(tmp_path, {"topic": tiny_large(intermediate_size=48)}), QUICK)
    ctx = swarm.context(tmp_path, {"sentiment": swarm.poisoned, "topic": swarm.experts["topic"]})
    out = moe_strategy(ctx, QUICK.model_copy(update={"selection": SelectionConfig()}))
    assert out.handle.experts == ["champion", "topic"] and "sentiment" in out.details["excluded"]
