"""Training batches of feedback: the strategy's own batches plus a share of replay batches.

Replay batches come from the public labelled slices; they are tagged (``targets['replay']``) so the
swarm's soft terms skip them while LwF, EWC and the replay loss see them. The order of every epoch
follows from (seed, epoch) alone, as the loop's resume requires.
"""

from __future__ import annotations

import numpy as np
import torch

from fanbu.feedback.shared.soft_losses import REPLAY_FLAG
from fanbu.train.batching import PlanItem, TextPlan
from fanbu.train.terms import Batch

REPLAY_PREFIX = "replay."  # head names contain no '.', so a replay item's task cannot clash with a head


class MixedPlan:
    """The batches of ``main`` with replay batches from ``replay`` interleaved.

    Args:
        main: The strategy's batches (one task per head).
        replay: Batches of the public labelled slices; ``None`` or ``fraction`` 0: no replay.
        fraction: Share of all batches that are replay batches (below 1).
        seed: Seeds the interleaving.
    """

    def __init__(
        self, main: TextPlan, replay: TextPlan | None = None, fraction: float = 0.0, seed: int = 0
    ) -> None:
        if not 0 <= fraction < 1:
            raise ValueError(f"replay fraction must be in [0, 1), got {fraction}")
        self.main = main
        self.replay = replay if fraction > 0 else None
        self.fraction = fraction
        self.seed = seed

    def _replay_count(self, main_batches: int) -> int:
        return round(self.fraction / (1 - self.fraction) * main_batches) if self.replay is not None else 0

    def __len__(self) -> int:
        return len(self.main) + self._replay_count(len(self.main))

    def schedule(self, epoch: int) -> list[PlanItem]:
        items = self.main.schedule(epoch)
        wanted = self._replay_count(len(items))
        if not wanted or self.replay is None:
            return items
        pool: list[PlanItem] = []
        round_ = 0
        while len(pool) < wanted:  # cycle through the replay data when it is smaller than needed
            pool += self.replay.schedule(epoch * 1000 + round_)
            round_ += 1
        extra = [PlanItem(REPLAY_PREFIX + item.task, item.indices) for item in pool[:wanted]]
        merged = items + extra
        order = np.random.default_rng([self.seed, epoch, 1]).permutation(len(merged))
        return [merged[i] for i in order]

    def make(self, item: PlanItem) -> Batch:
        if item.task.startswith(REPLAY_PREFIX) and self.replay is not None:
            batch = self.replay.make(PlanItem(item.task.removeprefix(REPLAY_PREFIX), item.indices))
            batch.targets[REPLAY_FLAG] = torch.ones(len(batch), dtype=torch.bool)
            return batch
        return self.main.make(item)
