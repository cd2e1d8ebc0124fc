"""Loss terms of swarm distillation, as strategies of the one loop.

:class:`SoftLabelLoss` is the per-sample weighted form of the distillation KL (it equals
:func:`~fanbu.train.distill.losses.kd_loss` when every weight is 1 and one teacher labels each row);
:class:`FeatureMatching` pulls the candidate's pooled state, through one learned projection per
expert, towards that expert's pooled state (experts may be narrower than the large model).
:class:`MainOnly` keeps a term off replay batches.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fanbu.feedback.shared.soft_targets import SoftTargets
from fanbu.train.terms import Batch, LossTerm

REPLAY_FLAG = "replay"  # a target present only on replay batches


def is_replay(batch: Batch) -> bool:
    """Whether the batch comes from the replay slices (see :mod:`fanbu.feedback.shared.replay_batches`)."""
    return REPLAY_FLAG in batch.targets


def weighted_kd(student_logits: Tensor, target_probs: Tensor, weights: Tensor, temperature: float) -> Tensor:
    """``T^2 * sum_i w_i KL(p_i || softmax(s_i / T)) / n`` for targets ``p`` already at temperature ``T``."""
    if student_logits.shape != target_probs.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and soft targets {tuple(target_probs.shape)} differ "
            "in shape; the experts' heads must have the large model's labels"
        )
    log_student = F.log_softmax(student_logits.float() / temperature, dim=-1)  # (batch, C)
    target = target_probs.float()
    kl = (target * (target.clamp_min(1e-12).log() - log_student)).sum(dim=-1)  # (batch,)
    return (weights.float() * kl).sum() / student_logits.shape[0] * temperature**2


def _rows(targets: Mapping[str, SoftTargets], batch: Batch, what: str) -> tuple[SoftTargets, Tensor]:
    if batch.task is None or batch.indices is None:
        raise ValueError(f"{what} needs batches with a task and example indices (use a TextPlan)")
    if batch.task not in targets:
        raise ValueError(f"{what}: no soft targets for head {batch.task!r} (heads: {sorted(targets)})")
    return targets[batch.task], batch.indices.cpu()


class SoftLabelLoss:
    """``alpha * T^2 * weighted KL`` between the swarm's soft targets and the candidate's head."""

    name = "kd"

    def __init__(self, targets: Mapping[str, SoftTargets], alpha: float, temperature: float) -> None:
        self.targets = dict(targets)
        self.alpha = alpha
        self.temperature = temperature

    def losses(self, outputs: Mapping[str, Tensor], batch: Batch, model: nn.Module) -> Mapping[str, Tensor]:
        if is_replay(batch):
            return {}
        soft, rows = _rows(self.targets, batch, "soft-label distillation")
        logits = outputs["logits"]  # (batch, C)
        probs = soft.probs[rows].to(logits.device)  # (batch, C)
        weights = soft.weights[rows].to(logits.device)  # (batch,)
        return {"kd": self.alpha * weighted_kd(logits, probs, weights, self.temperature)}


class FeatureMatching:
    """``weight * sum_e mean_i w_ei * MSE(proj_e(pooled_i), expert_e_pooled_i)``; projections train too.

    Args:
        targets: Head -> soft targets carrying each expert's pooled states.
        weight: Multiplier of the term.
        width: The candidate's hidden size.
        seed: Seeds the projections (identity where the widths are equal).
    """

    name = "feature"

    def __init__(self, targets: Mapping[str, SoftTargets], weight: float, width: int, seed: int = 0) -> None:
        self.targets = dict(targets)
        self.weight = weight
        widths: dict[str, int] = {}
        for soft in self.targets.values():
            for expert, (pooled, _) in soft.features.items():
                widths[expert] = int(pooled.shape[-1])
        self.experts = sorted(widths)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.proj = nn.ModuleList([nn.Linear(width, widths[e]) for e in self.experts])
        for layer in self.proj:
            if layer.in_features == layer.out_features:
                with torch.no_grad():
                    layer.weight.copy_(torch.eye(width))
                    layer.bias.zero_()

    def modules(self) -> list[nn.Module]:
        """The projections, optimised by the loop with the model."""
        return [self.proj]

    def state_dict(self) -> dict[str, Tensor]:
        """The projections' weights (checkpointed by the loop)."""
        return dict(self.proj.state_dict())

    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        """Restore the projections from a checkpoint."""
        self.proj.load_state_dict(dict(state))

    def losses(self, outputs: Mapping[str, Tensor], batch: Batch, model: nn.Module) -> Mapping[str, Tensor]:
        if is_replay(batch):
            return {}
        if "pooled" not in outputs:
            raise ValueError("feature matching needs outputs['pooled']; train with distill_forward")
        soft, rows = _rows(self.targets, batch, "feature matching")
        pooled = outputs["pooled"]  # (batch, hidden)
        total = pooled.sum() * 0.0
        for expert, (features, weights) in soft.features.items():
            layer = self.proj[self.experts.index(expert)]
            target = features[rows].to(pooled)  # (batch, expert_hidden)
            w = weights[rows].to(pooled)  # (batch,)
            per_row = ((layer(pooled) - target) ** 2).mean(dim=-1)  # (batch,)
            total = total + (w * per_row).sum() / pooled.shape[0]
        return {"feature": self.weight * total}


class MainOnly:
    """Wraps a strategy so it contributes nothing on replay batches (everything else passes through)."""

    def __init__(self, inner: LossTerm) -> None:
        self.inner = inner
        self.name = inner.name

    def __getattr__(self, attribute: str) -> Any:
        if attribute == "inner":  # not yet set (copy / unpickle): avoid recursing
            raise AttributeError(attribute)
        return getattr(self.inner, attribute)  # modules / state_dict / hooks of the wrapped strategy

    def losses(self, outputs: Mapping[str, Tensor], batch: Batch, model: nn.Module) -> Mapping[str, Tensor]:
        return {} if is_replay(batch) else self.inner.losses(outputs, batch, model)
