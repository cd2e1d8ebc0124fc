"""Loss terms of encoder distillation, as terms of the one loop.

Each term returns its already weighted term: the task term (hard labels, unlabeled rows ignored),
the soft-logit KL (:class:`LogitDistillation`, Hinton et al. 2015) and pooled hidden-state matching
through a learned projection (:class:`HiddenDistillation`, as in TinyBERT).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fanbu.train.distill.teacher import TeacherOutputs
from fanbu.train.terms import Batch

UNLABELED = -1


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """``T^2 * KL(softmax(teacher / T) || softmax(student / T))``, averaged over the batch.

    The ``T^2`` factor keeps the gradient scale of the soft term independent of ``T``.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits {tuple(teacher_logits.shape)} "
            "differ in shape; student and teacher heads must have the same labels"
        )
    student = F.log_softmax(student_logits.float() / temperature, dim=-1)  # (batch, labels)
    teacher = F.log_softmax(teacher_logits.float() / temperature, dim=-1)  # (batch, labels)
    kl = F.kl_div(student, teacher, reduction="batchmean", log_target=True)
    return kl * temperature**2


class MaskedTaskLoss:
    """Cross-entropy on labeled rows only: rows labeled ``-1`` (unlabeled transfer text) are ignored."""

    name = "task"

    def __init__(self, weight: float = 1.0) -> None:
        self.weight = weight

    def losses(self, outputs: Mapping[str, Tensor], batch: Batch, model: nn.Module) -> Mapping[str, Tensor]:
        labels = batch.targets.get("labels")
        if labels is None:
            return {}
        logits = outputs["logits"]  # (batch, labels)
        if not bool((labels != UNLABELED).any()):
            return {"task": logits.sum() * 0.0}  # an all-unlabeled batch: no hard-label signal
        loss = F.cross_entropy(logits, labels, ignore_index=UNLABELED)
        return {"task": self.weight * loss}


class LogitDistillation:
    """``alpha * T^2 * KL(teacher_T || student_T)`` on the head's logits, teacher from a cache or live."""

    name = "kd"

    def __init__(self, teacher: TeacherOutputs, alpha: float, temperature: float) -> None:
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.teacher = teacher
        self.alpha = alpha
        self.temperature = temperature

    def losses(self, outputs: Mapping[str, Tensor], batch: Batch, model: nn.Module) -> Mapping[str, Tensor]:
        if batch.task is None or batch.indices is None:
            raise ValueError(
                "logit distillation needs batches with a task and example indices (use a TextPlan)"
            )
        student = outputs["logits"]  # (batch, labels)
        teacher = self.teacher.logits(batch.task, batch.indices).to(student.device)  # (batch, labels)
        return {"kd": self.alpha * kd_loss(student, teacher, self.temperature)}


class HiddenDistillation:
    """``weight * MSE(proj(student_pooled), teacher_pooled)``; the projection trains with the model.

    Args:
        teacher: Source of the teacher's pooled states.
        weight: Multiplier of the term.
        student_width: Student hidden size (projection input).
        teacher_width: Teacher hidden size (projection output).
        seed: Seeds the projection's initialisation (identity when the widths are equal).
    """

    name = "hidden"

    def __init__(
        self, teacher: TeacherOutputs, weight: float, student_width: int, teacher_width: int, seed: int = 0
    ) -> None:
        self.teacher = teacher
        self.weight = weight
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.proj = nn.Linear(student_width, teacher_width)
        if student_width == teacher_width:
            with torch.no_grad():
                self.proj.weight.copy_(torch.eye(teacher_width))
                self.proj.bias.zero_()

    def modules(self) -> list[nn.Module]:
        """The projection, optimised by the loop together with the student."""
        return [self.proj]

    def state_dict(self) -> dict[str, Tensor]:
        """The projection's weights (checkpointed by the loop)."""
        return {f"proj.{k}": v for k, v in self.proj.state_dict().items()}

    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        """Restore the projection from a checkpoint."""
        self.proj.load_state_dict({k.removeprefix("proj."): v for k, v in state.items()})

    def losses(self, outputs: Mapping[str, Tensor], batch: Batch, model: nn.Module) -> Mapping[str, Tensor]:
        if "pooled" not in outputs:
            raise ValueError("hidden-state distillation needs outputs['pooled']; train with distill_forward")
        if batch.task is None or batch.indices is None:
            raise ValueError(
                "hidden distillation needs batches with a task and example indices (use a TextPlan)"
            )
        student = self.proj(outputs["pooled"])  # (batch, teacher_hidden)
        teacher = self.teacher.pooled(batch.task, batch.indices).to(student)  # (batch, teacher_hidden)
        return {"hidden": self.weight * F.mse_loss(student, teacher)}
