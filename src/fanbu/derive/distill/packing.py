"""Sequence packing for causal-LM training: domain text as fixed windows of tokens, no padding.

Texts are tokenised without truncation, joined with the end-of-sequence token between documents, and
cut into windows of ``window`` tokens (the ragged tail is dropped). Every token of every window is a
training token, so no step is spent on padding, and a window's index is a stable key for the teacher's
cached outputs (:mod:`.topk_cache`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from fanbu.errors import DomainError
from fanbu.train.batching import PlanItem
from fanbu.train.terms import Batch

LM_TASK = "lm"


def pack_texts(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], window: int, max_windows: int | None = None
) -> Tensor:
    """``(windows, window)`` token ids of ``texts`` joined by the eos token and cut into full windows.

    Raises:
        DomainError: the texts hold fewer than ``window`` tokens in all.
    """
    separator = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    stream: list[int] = []
    for text in texts:
        stream.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
        stream.extend(separator)
        if max_windows is not None and len(stream) >= window * max_windows:
            break
    count = len(stream) // window
    if max_windows is not None:
        count = min(count, max_windows)
    if count == 0:
        raise DomainError(
            f"packing: {len(texts)} texts hold {len(stream)} tokens, fewer than one window of {window}; "
            "give more text or lower window"
        )
    return torch.tensor(stream[: count * window], dtype=torch.long).view(count, window)  # (windows, window)


class PackedPlan:
    """A deterministic batch plan over packed windows; ``Batch.indices`` are window indices.

    Args:
        windows: ``(windows, window)`` token ids from :func:`pack_texts`.
        batch_size: Windows per batch.
        seed: Seeds the window order; epoch ``e`` uses ``(seed, e)``.
        targets: Optional per-batch targets (e.g. cached teacher outputs), given the window indices.
    """

    def __init__(
        self,
        windows: Tensor,
        batch_size: int,
        seed: int = 0,
        targets: Callable[[Tensor], dict[str, Tensor]] | None = None,
    ) -> None:
        if windows.ndim != 2 or windows.shape[0] == 0:
            raise DomainError("packed windows must be a non-empty (windows, window) tensor; see pack_texts")
        self.windows = windows
        self.batch_size = batch_size
        self.seed = seed
        self.targets = targets

    def __len__(self) -> int:
        return (int(self.windows.shape[0]) + self.batch_size - 1) // self.batch_size

    def schedule(self, epoch: int) -> list[PlanItem]:
        order = np.random.default_rng([self.seed, epoch]).permutation(self.windows.shape[0])
        return [
            PlanItem(LM_TASK, tuple(int(i) for i in order[start : start + self.batch_size]))
            for start in range(0, len(order), self.batch_size)
        ]

    def make(self, item: PlanItem) -> Batch:
        index = torch.tensor(item.indices, dtype=torch.long)  # (batch,)
        ids = self.windows[index]  # (batch, window)
        targets = self.targets(index) if self.targets is not None else {}
        return Batch({"input_ids": ids, "attention_mask": torch.ones_like(ids)}, targets, LM_TASK, index)
