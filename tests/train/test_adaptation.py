"""The domain-adaptation loss terms in the one loop, on a tiny feature model and two shifted Gaussians."""

from __future__ import annotations

import torch

from fanbu.train.adaptation import TARGET_INDEX, CoralLoss, DomainAdversarialLoss, MMDLoss, PseudoLabelLoss
from fanbu.train.config import TrainConfig
from fanbu.train.loop import Trainer
from fanbu.train.terms import Batch, LoopState, TaskLoss
from fanbu.unlabeled.features import FeatureClassifier, PairPlan, pair_forward


def shifted_data(n: int = 96, seed: int = 0):
    """Two classes along the first axis; the target is the source moved by +2 on every axis."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n,), generator=gen)
    source = torch.randn(n, 8, generator=gen) * 0.5
    source[:, 0] += labels * 3.0 - 1.5
    target_labels = torch.randint(0, 2, (n,), generator=gen)
    target = torch.randn(n, 8, generator=gen) * 0.5 + 2.0
    target[:, 0] += target_labels * 3.0 - 1.5
    return source, labels, target


def train(terms, steps: int = 60, seed: int = 0) -> FeatureClassifier:
    source, labels, target = shifted_data()
    model = FeatureClassifier(8, 16, 2, dropout=0.0, seed=seed)
    plan = PairPlan(source, labels, target, batch_size=16, target_batch_size=16, seed=seed)
    config = TrainConfig(epochs=-(-steps // len(plan)), max_steps=steps, lr=1e-2, progress=False, seed=seed,
                         restore_best=False, threads=1)
    Trainer(model, plan, config, [TaskLoss(), *terms], forward=pair_forward).fit(resume=False)
    return model


def test_dann_trains_end_to_end_through_the_loop():
    term = DomainAdversarialLoss(16, total_steps=60, hidden=16, seed=0)
    before = [p.detach().clone() for p in term.classifier.parameters()]
    adapted = train([term])
    assert term.step == 60 and 0.99 < term.coefficient < 1.0  # the schedule ran to its end
    assert any(not torch.equal(a, b) for a, b in zip(before, term.classifier.parameters(), strict=True))
    plain = train([])  # same seed, same batches, the task loss alone
    assert all(torch.isfinite(p).all() for p in adapted.parameters())
    # the reversed domain gradient reached the features: the bottleneck moved elsewhere
    assert not torch.allclose(adapted.bottleneck[0].weight, plain.bottleneck[0].weight)


def test_dann_state_round_trips():
    term = DomainAdversarialLoss(4, total_steps=10, hidden=3)
    term.on_step_end(LoopState(global_step=7))
    other = DomainAdversarialLoss(4, total_steps=10, hidden=3, seed=1)
    other.load_state_dict(term.state_dict())
    assert other.step == 7
    assert all(torch.equal(a, b) for a, b in zip(term.classifier.parameters(), other.classifier.parameters(),
                                                  strict=True))


def test_coral_and_mmd_terms_train_and_skip_batches_without_target_rows():
    for term in (CoralLoss(weight=10.0), MMDLoss()):
        model = train([term], steps=20)
        assert all(torch.isfinite(p).all() for p in model.parameters())
        outputs = {"features": torch.randn(4, 3), "logits": torch.randn(4, 2)}
        assert term.losses(outputs, Batch({"features": torch.zeros(4, 3)}), model) == {}


def test_pseudo_label_loss_reads_only_kept_rows():
    term = PseudoLabelLoss(torch.tensor([1, -1, 0, -1]))
    logits = torch.tensor([[0.0, 5.0], [9.0, -9.0], [5.0, 0.0], [0.0, 0.0]], requires_grad=True)
    batch = Batch({"features": torch.zeros(4, 1)}, {TARGET_INDEX: torch.arange(4)})
    loss = term.losses({"target_logits": logits}, batch, torch.nn.Identity())["pseudo"]
    loss.backward()
    assert loss.detach().item() < 0.01  # both kept rows are confidently right
    assert torch.equal(logits.grad[1], torch.zeros(2)) and torch.equal(logits.grad[3], torch.zeros(2))
    none_kept = PseudoLabelLoss(torch.tensor([-1, -1]))
    batch = Batch({"features": torch.zeros(2, 1)}, {TARGET_INDEX: torch.arange(2)})
    assert none_kept.losses({"target_logits": logits[:2]}, batch, torch.nn.Identity()) == {}
