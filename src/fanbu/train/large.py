"""Large v0: the source encoder with one new head per task, trained on the tasks' public slices.

``fanbu demo`` and the feedback and federated benches all start from it. Loading the source (and,
in the demo, registering it) stays with the caller, which hands over a fresh copy of the encoder.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from fanbu.data.domain import Benchmark
from fanbu.models.encoder import EncoderHandle
from fanbu.train.classify import train_heads
from fanbu.train.config import TrainConfig
from fanbu.train.loop import TrainResult

Labeled = tuple[Sequence[str], Sequence[int]]


def train_large_v0(
    handle: EncoderHandle,
    bench: Benchmark,
    public: Mapping[str, Labeled],
    config: TrainConfig,
    validation: Mapping[str, Labeled] | None = None,
    *,
    head_seed: int | None = None,
    checkpoint_dir: str | Path | None = None,
) -> TrainResult:
    """Add a head per task of ``public`` (in its order, labels from ``bench``) to ``handle`` and train it.

    Args:
        handle: The source encoder, freshly loaded; trained in place.
        bench: The benchmark the tasks come from (their label names).
        public: Task -> its public (texts, labels): the training data, one head each.
        config: The loop's settings.
        validation: Task -> (texts, labels) for model selection.
        head_seed: Seeds the heads' initialisation, each from ``(head_seed, task)`` alone (None: the
            loop's ``config.seed``). Never the global generators: a fresh process starts them from a
            different seed each time, so heads drawn from them made two runs of one command differ.
        checkpoint_dir: Checkpoints for resume; ``None`` disables them.
    """
    seed = config.seed if head_seed is None else head_seed
    for name in public:
        handle.add_head(name, bench.domain(name).label_names, seed=seed)
    return train_heads(
        handle, public, config, validation, checkpoint_dir=checkpoint_dir, description="large v0"
    )
