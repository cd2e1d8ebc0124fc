"""SimCSE: identical views score a lower loss than shuffled ones; the term trains a tiny encoder."""

from __future__ import annotations

import torch

from fanbu.models.encoder import EncoderHandle
from fanbu.train.selfsup.contrastive import SimCSELoss, simcse_loss
from fanbu.train.terms import Batch


def test_identical_views_give_a_lower_loss_than_shuffled_views():
    views = torch.randn(16, 12, generator=torch.Generator().manual_seed(0))
    shuffled = views[torch.roll(torch.arange(16), 1)]
    assert float(simcse_loss(views, views)) < float(simcse_loss(views, shuffled))
    assert float(simcse_loss(views, views)) < 0.1  # each row finds itself among 16


def test_the_term_draws_two_dropout_views_and_carries_gradients():
    handle = EncoderHandle.tiny(seed=0)
    handle.model.dropout.p = 0.3
    handle.model.train()
    batch = Batch(handle.tokenize(["alpha beta", "gamma delta", "eps zeta eta", "theta"]))
    loss = SimCSELoss().losses({}, batch, handle.model)
    value = loss["simcse"]
    assert torch.isfinite(value) and value.detach().item() > 0
    value.backward()
    grads = [p.grad for p in handle.model.encoder.parameters() if p.grad is not None]
    assert grads and any(float(g.abs().sum()) > 0 for g in grads)
    assert SimCSELoss().losses({}, Batch(handle.tokenize(["one"])), handle.model) == {}
