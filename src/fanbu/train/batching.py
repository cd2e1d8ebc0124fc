"""Deterministic batch plans: the batch order of every epoch follows from (seed, epoch) alone.

A plan separates *which* examples form each batch (:meth:`schedule`, cheap, index arrays) from
*building* the batch (:meth:`make`, tokenisation). A resumed run recomputes the epoch's schedule and
skips what it already consumed without tokenising it, so it sees exactly the batches an uninterrupted
run would.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from fanbu.train.terms import Batch

Tokenize = Callable[[Sequence[str]], dict[str, Tensor]]


@dataclass(frozen=True)
class PlanItem:
    """One scheduled batch: a task and the example indices within that task's data."""

    task: str
    indices: tuple[int, ...]


class BatchPlan(Protocol):
    """The protocol the loop needs from training data."""

    def schedule(self, epoch: int) -> list[PlanItem]:
        """The batches of ``epoch``, in order (deterministic)."""
        ...

    def make(self, item: PlanItem) -> Batch:
        """Build the batch tensors for one scheduled item."""
        ...


@dataclass(frozen=True)
class TaskData:
    """Texts of one task, with integer labels for classification or ``None`` for language modelling."""

    name: str
    texts: Sequence[str]
    labels: Sequence[int] | None = None

    def __post_init__(self) -> None:
        if len(self.texts) == 0:
            raise ValueError(f"task {self.name!r} has no training texts; give it a non-empty split")
        if self.labels is not None and len(self.labels) != len(self.texts):
            raise ValueError(f"task {self.name!r}: {len(self.texts)} texts but {len(self.labels)} labels")


class TextPlan:
    """Batches over one or more text tasks; each batch holds examples of a single task.

    Args:
        tasks: The tasks to draw from; every example of every task is seen once per epoch.
        tokenize: Turns a list of texts into model inputs.
        batch_size: Examples per batch (the last batch of a task may be smaller).
        seed: Seeds the shuffling; epoch ``e`` uses ``(seed, e)``.
        shuffle: Shuffle examples and interleave tasks; off gives a fixed task-by-task order.
        group_by_length: Within shuffled windows of ``batch_size * 32`` examples, batch texts of
            similar length together (batches still come in random order), so that little is padded.
    """

    GROUP_WINDOW = 32  # batches per window sorted by length

    def __init__(
        self,
        tasks: Sequence[TaskData],
        tokenize: Tokenize,
        batch_size: int,
        seed: int = 0,
        shuffle: bool = True,
        group_by_length: bool = False,
    ) -> None:
        if not tasks:
            raise ValueError("a batch plan needs at least one task")
        self.tasks = {t.name: t for t in tasks}
        if len(self.tasks) != len(tasks):
            raise ValueError("task names in a batch plan must be unique")
        self.tokenize = tokenize
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.group_by_length = group_by_length
        self._lengths = {t.name: np.array([len(x) for x in t.texts]) for t in tasks} if group_by_length else {}

    def __len__(self) -> int:
        return sum(-(-len(t.texts) // self.batch_size) for t in self.tasks.values())

    def schedule(self, epoch: int) -> list[PlanItem]:
        rng = np.random.default_rng([self.seed, epoch])
        items: list[PlanItem] = []
        for task in self.tasks.values():
            order = rng.permutation(len(task.texts)) if self.shuffle else np.arange(len(task.texts))
            if self.group_by_length:
                window = self.batch_size * self.GROUP_WINDOW
                lengths = self._lengths[task.name]
                order = np.concatenate([
                    chunk[np.argsort(-lengths[chunk], kind="stable")]
                    for chunk in np.split(order, range(window, len(order), window))
                ])
            for start in range(0, len(order), self.batch_size):
                chunk = order[start : start + self.batch_size]
                items.append(PlanItem(task.name, tuple(int(i) for i in chunk)))
        if self.shuffle:
            items = [items[i] for i in rng.permutation(len(items))]
        return items

    def make(self, item: PlanItem) -> Batch:
        task = self.tasks[item.task]
        texts = [task.texts[i] for i in item.indices]
        inputs = self.tokenize(texts)
        targets = {}
        if task.labels is not None:
            targets["labels"] = torch.tensor([task.labels[i] for i in item.indices], dtype=torch.long)
        return Batch(inputs, targets, task.name, torch.tensor(item.indices, dtype=torch.long))
