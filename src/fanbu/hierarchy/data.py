"""Examples as tensors (token ids, or hidden states cached below a trunk's tail) and the loop's batch plan."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from fanbu.data.domain import Split
from fanbu.errors import DomainError
from fanbu.train.batching import PlanItem
from fanbu.train.terms import Batch


@dataclass(frozen=True)
class Examples:
    """Model inputs (each ``(n, ...)``; with token inputs an ``attention_mask`` ``(n, seq)``) and labels ``(n,)``."""

    inputs: dict[str, Tensor]
    labels: Tensor

    def __post_init__(self) -> None:
        sizes = {name: int(t.shape[0]) for name, t in self.inputs.items()}
        if not sizes or set(sizes.values()) != {int(self.labels.shape[0])}:
            raise DomainError(f"examples need inputs with one row per label; got sizes {sizes}")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def select(self, indices: Sequence[int] | Tensor) -> Examples:
        """The examples at ``indices``, with the padding no row of them uses trimmed off."""
        index = torch.as_tensor(indices, dtype=torch.long)
        if "attention_mask" not in self.inputs:  # pooled features: nothing to trim
            return Examples({name: t[index] for name, t in self.inputs.items()}, self.labels[index])
        mask = self.inputs["attention_mask"][index]  # (k, seq)
        used = int(mask.sum(dim=1).max()) if len(index) else 1
        seq = mask.shape[1]
        trimmed = {
            name: (t[index][:, :used] if t.dim() >= 2 and t.shape[1] == seq else t[index])
            for name, t in self.inputs.items()
        }
        return Examples(trimmed, self.labels[index])


@dataclass(frozen=True)
class LeafData:
    """One leaf domain's training examples and its validation examples (early stopping only)."""

    train: Examples
    validation: Examples


def split_examples(split: Split, encode: Callable[[Sequence[str]], dict[str, Tensor]]) -> Examples:
    """A labelled split as :class:`Examples`, its texts turned into inputs by ``encode`` (a tokenizer,
    or :func:`~fanbu.hierarchy.trunks.cache_hidden`)."""
    if split.labels is None:
        raise DomainError("the split has no labels; the adapter stack trains on labelled examples")
    return Examples(encode(list(split.texts)), torch.tensor(split.labels, dtype=torch.long))


class TensorPlan:
    """Shuffled batches over several leaves' examples, one leaf per batch; epoch ``e`` uses ``(seed, e)``."""

    def __init__(self, tasks: Mapping[str, Examples], batch_size: int, seed: int = 0) -> None:
        if not tasks or any(len(t) == 0 for t in tasks.values()):
            raise DomainError(f"every task needs training examples; sizes {[len(t) for t in tasks.values()]}")
        self.tasks, self.batch_size, self.seed = dict(tasks), batch_size, seed

    def schedule(self, epoch: int) -> list[PlanItem]:
        """Every example of every task once, in batches of one task, the batches in random order."""
        rng = np.random.default_rng([self.seed, epoch])
        items = []
        for name, examples in self.tasks.items():
            order = rng.permutation(len(examples))
            for start in range(0, len(order), self.batch_size):
                items.append(PlanItem(name, tuple(int(i) for i in order[start : start + self.batch_size])))
        return [items[i] for i in rng.permutation(len(items))]

    def make(self, item: PlanItem) -> Batch:
        """The inputs and labels of one scheduled batch."""
        picked = self.tasks[item.task].select(item.indices)
        return Batch(picked.inputs, {"labels": picked.labels}, item.task, torch.tensor(item.indices))
