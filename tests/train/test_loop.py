from __future__ import annotations

import pytest
import torch
from torch import nn

from fanbu.errors import CheckpointError
from fanbu.train import TaskData, TaskLoss, TextPlan, TrainConfig, Trainer, latest_checkpoint

from .conftest import TinyClassifier, tokenize, toy_task


def make_plan(toy_data, seed=0, batch_size=8):
    tasks = [TaskData(name, texts, labels) for name, (texts, labels) in toy_data.items()]
    return TextPlan(tasks, tokenize, batch_size=batch_size, seed=seed)


def accuracy(model, task, texts, labels):
    model.eval()
    with torch.no_grad():
        pred = model(**tokenize(texts), head=task).argmax(-1)
    return float((pred == torch.tensor(labels)).float().mean())


def config(**kw):
    base = {"epochs": 4, "batch_size": 8, "lr": 0.05, "progress": False, "warmup_ratio": 0.0}
    base.update(kw)
    return TrainConfig(**base)


def test_trains_every_head(toy_data):
    torch.manual_seed(0)
    model = TinyClassifier({"a": 2, "b": 3})
    Trainer(model, make_plan(toy_data), config(epochs=10), [TaskLoss()]).fit()
    for task, words, seed in (("a", ("alpha", "beta"), 11), ("b", ("gamma", "delta", "eps"), 12)):
        texts, labels = toy_task(40, seed, words)  # held-out examples
        assert accuracy(model, task, texts, labels) >= 0.9


def test_plan_is_deterministic_and_covers_every_example(toy_data):
    plan = make_plan(toy_data)
    first, again, other = plan.schedule(0), plan.schedule(0), plan.schedule(1)
    assert first == again and first != other
    seen = sorted((item.task, i) for item in first for i in item.indices)
    assert seen == sorted([("a", i) for i in range(64)] + [("b", i) for i in range(48)])
    assert all(len(item.indices) <= 8 for item in first)


class Interrupt(Exception):
    pass


class CrashAt:
    """A loss term whose step hook crashes the run at a given step (a simulated kill)."""

    name = "crash"

    def __init__(self, step: int) -> None:
        self.step = step

    def losses(self, outputs, batch, model):
        return {}

    def on_step_end(self, state):
        if state.global_step == self.step:
            raise Interrupt
        return {}


@pytest.mark.parametrize("checkpoint_every", [None, 3])
def test_resume_ends_with_the_same_weights(toy_data, tmp_path, checkpoint_every):
    cfg = config(epochs=3, checkpoint_every=checkpoint_every)
    torch.manual_seed(0)
    reference = TinyClassifier({"a": 2, "b": 3})
    Trainer(reference, make_plan(toy_data), cfg, [TaskLoss()], checkpoint_dir=tmp_path / "ref").fit()

    torch.manual_seed(0)
    interrupted = TinyClassifier({"a": 2, "b": 3})
    crash_step = 20  # mid-epoch 2 (14 steps per epoch)
    with pytest.raises(Interrupt):
        Trainer(
            interrupted,
            make_plan(toy_data),
            cfg,
            [TaskLoss(), CrashAt(crash_step)],
            checkpoint_dir=tmp_path / "run",
        ).fit()
    assert latest_checkpoint(tmp_path / "run") is not None

    torch.manual_seed(123)  # a fresh process would start from other weights
    resumed = TinyClassifier({"a": 2, "b": 3})
    result = Trainer(
        resumed, make_plan(toy_data), cfg, [TaskLoss(), CrashAt(-1)], checkpoint_dir=tmp_path / "run"
    ).fit()
    assert result.resumed_from is not None and 0 < result.resumed_from < crash_step
    for (name, a), (_, b) in zip(reference.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_early_stopping_restores_best(toy_data):
    scores = iter([0.5, 0.9, 0.7, 0.6, 0.4, 0.3])
    snapshots = []

    def evaluate(model):
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        return {"score": next(scores)}

    torch.manual_seed(0)
    model = TinyClassifier({"a": 2, "b": 3})
    cfg = config(epochs=6, patience=2)
    result = Trainer(model, make_plan(toy_data), cfg, [TaskLoss()], evaluate=evaluate).fit()
    assert result.state.stopped_early
    assert len(result.state.history) == 4  # 0.5, 0.9 (best), 0.7, 0.6 -> stop
    assert result.state.best == 0.9
    for key, value in model.state_dict().items():
        assert torch.equal(value, snapshots[1][key])


class ExtraTerm:
    """A loss term adding an L2 penalty and reporting a value from its epoch hook."""

    name = "l2"

    def __init__(self) -> None:
        self.calls = 0

    def losses(self, outputs, batch, model):
        self.calls += 1
        return {"l2": 1e-3 * sum((p**2).sum() for p in model.parameters())}

    def on_epoch_end(self, state):
        return {"calls": self.calls}


def test_terms_add_losses_and_hooks_return_values(toy_data):
    torch.manual_seed(0)
    extra = ExtraTerm()
    result = Trainer(
        TinyClassifier({"a": 2, "b": 3}), make_plan(toy_data), config(epochs=2), [TaskLoss(), extra]
    ).fit()
    assert extra.calls == 2 * len(make_plan(toy_data))
    assert [h["l2.calls"] for h in result.state.history] == [
        float(len(make_plan(toy_data))),
        2.0 * len(make_plan(toy_data)),
    ]


def test_no_loss_is_an_error(toy_data):
    tasks = [TaskData("a", toy_data["a"][0], None)]
    plan = TextPlan(tasks, tokenize, batch_size=8)
    trainer = Trainer(TinyClassifier({"a": 2}), plan, config(epochs=1), [TaskLoss()])
    with pytest.raises(ValueError, match="no term returned a loss for task 'a'"):
        trainer.fit()


def test_corrupt_checkpoint_is_reported(toy_data, tmp_path):
    torch.manual_seed(0)
    Trainer(
        TinyClassifier({"a": 2, "b": 3}),
        make_plan(toy_data),
        config(epochs=1),
        [TaskLoss()],
        checkpoint_dir=tmp_path,
    ).fit()
    ckpt = latest_checkpoint(tmp_path)
    weights = ckpt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    trainer = Trainer(
        TinyClassifier({"a": 2, "b": 3}),
        make_plan(toy_data),
        config(epochs=2),
        [TaskLoss()],
        checkpoint_dir=tmp_path,
    )
    with pytest.raises(CheckpointError, match="model.safetensors: checkpoint file is corrupt or truncated"):
        trainer.fit()


def test_empty_task_is_rejected():
    with pytest.raises(ValueError, match="task 'x' has no training texts"):
        TaskData("x", [], [])


class Projected:
    """A loss term that owns a trainable module: pull a projection of the logits towards zero."""

    name = "proj"

    def __init__(self) -> None:
        torch.manual_seed(5)
        self.projection = torch.nn.Linear(2, 4)

    def modules(self):
        return [self.projection]

    def losses(self, outputs, batch, model):
        if batch.task != "a":
            return {}
        return {"proj": self.projection(outputs["logits"]).pow(2).mean()}

    def state_dict(self):
        return self.projection.state_dict()

    def load_state_dict(self, state):
        self.projection.load_state_dict(state)


def test_term_modules_are_trained_and_checkpointed(toy_data, tmp_path):
    torch.manual_seed(0)
    strategy = Projected()
    before = strategy.projection.weight.detach().clone()
    Trainer(
        TinyClassifier({"a": 2, "b": 3}),
        make_plan(toy_data),
        config(epochs=1),
        [TaskLoss(), strategy],
        checkpoint_dir=tmp_path,
    ).fit()
    assert not torch.equal(before, strategy.projection.weight)
    saved = latest_checkpoint(tmp_path) / "strategy-proj.safetensors"
    assert saved.is_file()


def test_group_by_length_batches_similar_lengths_and_covers_every_example():
    texts = ["x " * n for n in range(1, 200)]
    task = TaskData("a", texts, [n % 2 for n in range(1, 200)])
    plain = TextPlan([task], tokenize, batch_size=8, seed=3)
    grouped = TextPlan([task], tokenize, batch_size=8, seed=3, group_by_length=True)
    first = grouped.schedule(0)
    assert first == grouped.schedule(0) and first != grouped.schedule(1)
    assert sorted(i for item in first for i in item.indices) == list(range(199))

    def spread(items):  # mean (longest - shortest) length within a batch
        return sum(
            max(len(texts[i]) for i in it.indices) - min(len(texts[i]) for i in it.indices) for it in items
        ) / len(items)

    assert spread(first) < spread(plain.schedule(0)) / 3


class DropoutProbe:
    """Records, on every batch, whether the model's training-mode forward is deterministic."""

    name = "probe"

    def __init__(self) -> None:
        self.repeatable: list[bool] = []

    def losses(self, outputs, batch, model):
        with torch.no_grad():
            first = model(**batch.inputs, head=batch.task)
            second = model(**batch.inputs, head=batch.task)
        self.repeatable.append(bool(torch.equal(first, second)))
        return {}


@pytest.mark.parametrize("dropout", [None, 0.0])
def test_dropout_override_applies_while_training_and_is_restored(toy_data, dropout):
    torch.manual_seed(0)
    model = TinyClassifier({"a": 2, "b": 3})
    model.dropout.p = 0.5
    probe = DropoutProbe()
    Trainer(model, make_plan(toy_data), config(epochs=1, dropout=dropout), [TaskLoss(), probe]).fit()
    assert probe.repeatable and all(probe.repeatable) == (dropout == 0.0)
    assert model.dropout.p == 0.5  # the model's own setting is back after training


def test_dropout_override_sets_attention_dropout_floats():
    from fanbu.train.loop import dropout_override

    class Attention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attention_dropout = 0.1
            self.drop = nn.Dropout(0.3)

    module = Attention()
    with dropout_override(module, 0.0):
        assert module.attention_dropout == 0.0 and module.drop.p == 0.0
    assert module.attention_dropout == 0.1 and module.drop.p == 0.3
