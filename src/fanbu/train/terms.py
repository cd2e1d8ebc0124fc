"""What methods contribute to the one loop: loss terms and hooks that return values.

("Strategy" names a feedback method and a Flower strategy; what the loop sums is a :class:`LossTerm`.)
A term never touches the loop's variables. The loop asks each term, in the order given, for
its named losses on a batch (:meth:`LossTerm.losses`) and sums them: ``total = sum over
terms, in order, of the losses they return``. Hooks (:meth:`LossTerm.on_epoch_end`) return a
mapping of numbers that the loop logs; a term with state a resumed run needs (a Fisher matrix, a
replay buffer) returns it from ``state_dict`` and takes it back in ``load_state_dict``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class Batch:
    """One training or evaluation batch.

    Attributes:
        inputs: Keyword tensors for the model (``input_ids``, ``attention_mask``...).
        targets: Named target tensors (``labels``, cached teacher ``logits``...).
        task: The task (head) this batch belongs to; batches are homogeneous in task.
        indices: Position of each example in its source split, for per-example caches.
    """

    inputs: dict[str, Tensor]
    targets: dict[str, Tensor] = field(default_factory=dict)
    task: str | None = None
    indices: Tensor | None = None

    def to(self, device: torch.device | str) -> Batch:
        """A copy with every tensor on ``device``."""
        move = {k: v.to(device) for k, v in self.inputs.items()}
        targets = {k: v.to(device) for k, v in self.targets.items()}
        indices = self.indices.to(device) if self.indices is not None else None
        return Batch(move, targets, self.task, indices)

    def __len__(self) -> int:
        first = next(iter(self.inputs.values()))
        return int(first.shape[0])


ForwardFn = Callable[[nn.Module, Batch], dict[str, Tensor]]
"""Runs the model on a batch and returns named outputs (at least ``logits``)."""


@dataclass
class LoopState:
    """Where the loop is; passed read-only to hooks."""

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    best: float | None = None
    best_step: int | None = None
    bad_evals: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    stopped_early: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "best": self.best,
            "best_step": self.best_step,
            "bad_evals": self.bad_evals,
            "history": self.history,
            "stopped_early": self.stopped_early,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LoopState:
        return cls(**{k: data[k] for k in cls().as_dict()})


@runtime_checkable
class LossTerm(Protocol):
    """A contribution to the loop. Only ``name`` and ``losses`` are required."""

    name: str

    def losses(self, outputs: Mapping[str, Tensor], batch: Batch, model: nn.Module) -> Mapping[str, Tensor]:
        """Named, already weighted scalar loss terms for this batch (may be empty)."""
        ...


def hook_values(term: LossTerm, hook: str, *args: Any) -> Mapping[str, float]:
    """Call an optional hook and return what it returned (empty when the term lacks it)."""
    fn = getattr(term, hook, None)
    if fn is None:
        return {}
    values = fn(*args)
    return dict(values or {})


class TaskLoss:
    """The supervised task loss: cross-entropy of ``logits`` against ``targets['labels']``.

    Args:
        weight: Multiplier of the term.
        label_smoothing: Cross-entropy label smoothing.
    """

    name = "task"

    def __init__(self, weight: float = 1.0, label_smoothing: float = 0.0) -> None:
        self.weight = weight
        self.label_smoothing = label_smoothing

    def losses(self, outputs: Mapping[str, Tensor], batch: Batch, model: nn.Module) -> Mapping[str, Tensor]:
        labels = batch.targets.get("labels")
        if labels is None:
            return {}
        logits = outputs["logits"]  # (batch, num_labels)
        loss = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        return {"task": self.weight * loss}


class CausalLMLoss:
    """Next-token cross-entropy for causal LMs; padding (attention_mask == 0) is ignored."""

    name = "lm"

    def __init__(self, weight: float = 1.0) -> None:
        self.weight = weight

    def losses(self, outputs: Mapping[str, Tensor], batch: Batch, model: nn.Module) -> Mapping[str, Tensor]:
        logits = outputs["logits"][:, :-1]  # (batch, seq-1, vocab)
        targets = batch.inputs["input_ids"][:, 1:].clone()  # (batch, seq-1)
        mask = batch.inputs.get("attention_mask")
        if mask is not None:
            targets[mask[:, 1:] == 0] = -100
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)
        return {"lm": self.weight * loss}


def classifier_forward(model: nn.Module, batch: Batch) -> dict[str, Tensor]:
    """Forward for a multi-head classifier called as ``model(**inputs, head=task)``."""
    return {"logits": model(**batch.inputs, head=batch.task)}


def causal_lm_forward(model: nn.Module, batch: Batch) -> dict[str, Tensor]:
    """Forward for a Hugging Face causal LM."""
    return {"logits": model(**batch.inputs).logits}
