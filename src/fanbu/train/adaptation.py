"""Domain-adaptation loss terms for the one loop: DANN, CORAL, MMD and confident pseudo-labels.

They read what a domain-adaptation forward returns beside the source ``logits``:
``features`` (the source rows' features, ``(batch, d)``), ``target_features`` (the unlabelled target
rows', ``(target_batch, d)``) and ``target_logits``. A batch without target rows gets no loss from them.
The math lives in :mod:`fanbu.train.alignment`.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fanbu.train.alignment import DEFAULT_BANDWIDTHS, coral_loss, dann_coefficient, grad_reverse, mmd_loss
from fanbu.train.terms import Batch, LoopState

TARGET_INDEX = "target_index"
"""The key in ``batch.targets`` of each target row's position in the unlabelled pool."""


def _pair(outputs: Mapping[str, Tensor]) -> tuple[Tensor, Tensor] | None:
    source, target = outputs.get("features"), outputs.get("target_features")
    if source is None or target is None or target.shape[0] == 0:
        return None
    return source, target


class DomainAdversarialLoss:
    """DANN: a domain classifier on the features behind a gradient-reversal layer.

    The classifier learns to tell source rows (0) from target rows (1); the reversed gradient pushes
    the features to make them indistinguishable. The reversal coefficient follows
    :func:`~fanbu.train.alignment.dann_coefficient` over ``total_steps``.

    Args:
        features: Width of the features.
        total_steps: The run's optimiser steps (the schedule's length).
        weight: Multiplier of the domain loss.
        hidden: Width of the classifier's hidden layer.
        gamma: Steepness of the coefficient's schedule.
        seed: Seeds the classifier's initialisation.
    """

    name = "dann"

    def __init__(
        self, features: int, total_steps: int, weight: float = 1.0, hidden: int = 256, gamma: float = 10.0,
        seed: int = 0,
    ) -> None:
        if total_steps < 1:
            raise ValueError(f"total_steps must be at least 1, got {total_steps}")
        self.total_steps, self.weight, self.gamma = total_steps, weight, gamma
        self.step = 0
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.classifier = nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    @property
    def coefficient(self) -> float:
        """The reversal coefficient at the current step."""
        return dann_coefficient(self.step / self.total_steps, self.gamma)

    def modules(self) -> list[nn.Module]:
        """The domain classifier, optimised by the loop with the model."""
        return [self.classifier]

    def losses(self, outputs: Mapping[str, Tensor], batch: Batch, model: nn.Module) -> Mapping[str, Tensor]:
        pair = _pair(outputs)
        if pair is None:
            return {}
        source, target = pair
        rows = grad_reverse(torch.cat([source, target]), self.coefficient)  # (n_s + n_t, d)
        logits = self.classifier(rows).squeeze(-1)  # (n_s + n_t,)
        domain = torch.cat([torch.zeros(source.shape[0]), torch.ones(target.shape[0])]).to(logits)
        return {"domain": self.weight * F.binary_cross_entropy_with_logits(logits, domain)}

    def on_step_end(self, state: LoopState) -> Mapping[str, float]:
        self.step = state.global_step
        return {"coefficient": self.coefficient}

    def state_dict(self) -> dict[str, Tensor]:
        """The classifier's weights and the step (checkpointed by the loop)."""
        state = {f"classifier.{k}": v for k, v in self.classifier.state_dict().items()}
        return {**state, "step": torch.tensor(self.step)}

    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        """Restore from a checkpoint."""
        self.step = int(state["step"])
        self.classifier.load_state_dict(
            {k.removeprefix("classifier."): v for k, v in state.items() if k.startswith("classifier.")}
        )


class CoralLoss:
    """``weight *`` :func:`~fanbu.train.alignment.coral_loss` between source and target features."""

    name = "coral"

    def __init__(self, weight: float = 1.0) -> None:
        self.weight = weight

    def losses(self, outputs: Mapping[str, Tensor], batch: Batch, model: nn.Module) -> Mapping[str, Tensor]:
        pair = _pair(outputs)
        if pair is None or min(pair[0].shape[0], pair[1].shape[0]) < 2:
            return {}
        return {"coral": self.weight * coral_loss(*pair)}


class MMDLoss:
    """``weight *`` multi-kernel Gaussian :func:`~fanbu.train.alignment.mmd_loss` between the features."""

    name = "mmd"

    def __init__(self, weight: float = 1.0, bandwidths: tuple[float, ...] = DEFAULT_BANDWIDTHS) -> None:
        self.weight = weight
        self.bandwidths = bandwidths

    def losses(self, outputs: Mapping[str, Tensor], batch: Batch, model: nn.Module) -> Mapping[str, Tensor]:
        pair = _pair(outputs)
        if pair is None:
            return {}
        return {"mmd": self.weight * mmd_loss(*pair, self.bandwidths)}


class PseudoLabelLoss:
    """Cross-entropy of ``target_logits`` against fixed pseudo-labels of the unlabelled pool.

    ``labels[i]`` is the pseudo-label of pool text ``i``, or -1 where it was not confident enough to
    keep; batches carry each target row's pool position in ``targets['target_index']``.
    """

    name = "pseudo"

    def __init__(self, labels: Tensor, weight: float = 1.0) -> None:
        self.labels = labels.long()
        self.weight = weight

    def losses(self, outputs: Mapping[str, Tensor], batch: Batch, model: nn.Module) -> Mapping[str, Tensor]:
        logits, index = outputs.get("target_logits"), batch.targets.get(TARGET_INDEX)
        if logits is None or index is None:
            return {}
        labels = self.labels.to(index.device)[index]  # (target_batch,)
        if not bool((labels >= 0).any()):
            return {}
        return {"pseudo": self.weight * F.cross_entropy(logits, labels, ignore_index=-1)}
