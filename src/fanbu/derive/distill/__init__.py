"""Knowledge distillation as strategies of the one loop: soft logits, hidden states, attention relations.

Encoder students learn from an encoder teacher (:func:`distill`), causal-LM students from a causal-LM
teacher with the same vocabulary (:func:`distill_causal_lm`). Teacher outputs can be computed once and
cached (:class:`TeacherCache`).
"""

from fanbu.derive.distill.causal_lm import LMDistillation, distill_causal_lm, token_kd_loss
from fanbu.derive.distill.config import DistillConfig, LMDistillConfig
from fanbu.derive.distill.encoder import distill, distill_strategies
from fanbu.train.distill.attention import AttentionDistillation, relation_kl, relation_scores
from fanbu.train.distill.forward import distill_forward
from fanbu.train.distill.losses import HiddenDistillation, LogitDistillation, MaskedTaskLoss, kd_loss
from fanbu.train.distill.teacher import (
    LiveTeacher,
    TeacherCache,
    TeacherOutputs,
    teacher_fingerprint,
    texts_fingerprint,
)

__all__ = [
    "AttentionDistillation",
    "DistillConfig",
    "HiddenDistillation",
    "LMDistillConfig",
    "LMDistillation",
    "LiveTeacher",
    "LogitDistillation",
    "MaskedTaskLoss",
    "TeacherCache",
    "TeacherOutputs",
    "distill",
    "distill_causal_lm",
    "distill_forward",
    "distill_strategies",
    "kd_loss",
    "relation_kl",
    "relation_scores",
    "teacher_fingerprint",
    "texts_fingerprint",
    "token_kd_loss",
]
