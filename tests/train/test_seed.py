"""The reproducible set-up: seeds, deterministic kernels, the thread count, heads seeded by name."""

from __future__ import annotations

import pytest
import torch

from fanbu.execute import LocalExecutor
from fanbu.models import EncoderHandle
from fanbu.train import TaskData, TaskLoss, TextPlan, TrainConfig, Trainer
from fanbu.train.seed import deterministic

from .conftest import TinyClassifier, tokenize


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_deterministic_seeds_fixes_the_threads_and_says_what_it_set(restore_threads) -> None:
    setup = deterministic(5, threads=1)
    first = torch.rand(3)
    assert setup == {"threads": 1, "torch": torch.__version__, "deterministic": True}
    assert torch.get_num_threads() == 1 and torch.are_deterministic_algorithms_enabled()
    deterministic(5)  # threads None: the count stays
    assert torch.equal(torch.rand(3), first) and torch.get_num_threads() == 1
    with pytest.raises(ValueError, match="threads must be at least 1"):
        deterministic(0, threads=0)


def test_a_seeded_head_ignores_and_leaves_the_global_generator() -> None:
    heads = []
    for history in (0, 1):
        handle = EncoderHandle.tiny(seed=0)
        torch.manual_seed(history)  # different earlier work in the process
        handle.add_head("topic", ["a", "b"], seed=7)
        handle.add_head("mood", ["a", "b"], seed=7)
        after = torch.rand(2)
        torch.manual_seed(history)
        assert torch.equal(after, torch.rand(2))  # the global generator was not drawn from
        heads.append(handle.model.heads)
    assert all(torch.equal(a, b) for a, b in zip(heads[0].parameters(), heads[1].parameters(), strict=True))
    assert not torch.equal(heads[0]["topic"].weight, heads[0]["mood"].weight)  # each head its own draw
    other = EncoderHandle.tiny(seed=0)
    other.add_head("topic", ["a", "b"], seed=8)
    assert not torch.equal(other.model.heads["topic"].weight, heads[0]["topic"].weight)


def test_the_loop_sets_and_records_its_thread_count(toy_data, restore_threads) -> None:
    torch.set_num_threads(2)
    tasks = [TaskData(name, texts, labels) for name, (texts, labels) in toy_data.items()]
    plan = TextPlan(tasks, tokenize, batch_size=16)
    config = TrainConfig(epochs=1, batch_size=16, progress=False, threads=1)
    result = Trainer(TinyClassifier({"a": 2, "b": 3}), plan, config, [TaskLoss()]).fit()
    assert torch.get_num_threads() == 1
    assert result.environment == {"threads": 1, "torch": torch.__version__, "deterministic": True}


def _draw(_: int) -> float:
    return float(torch.rand(1))


def test_every_executor_item_starts_from_the_same_generators() -> None:
    torch.manual_seed(123)
    assert LocalExecutor().map(_draw, [0, 1]) == LocalExecutor().map(_draw, [2, 3])
    first, second = LocalExecutor().map(_draw, [0, 1])
    assert first == second
