"""Knowledge distillation as strategies of the one loop: soft logits, hidden states, attention relations.

Encoder students learn from an encoder teacher (:func:`distill`), causal-LM students from a causal-LM
teacher with the same vocabulary (:func:`distill_causal_lm`). Teacher outputs can be computed once and
cached (:class:`TeacherCache` for encoders, :class:`TopKCache` of top-k logits for causal LMs).
"""

from fanbu.derive.distill.cached import build_cache, distill_cached, distill_from_cache
from fanbu.derive.distill.causal_lm import LMDistillation, distill_causal_lm, token_kd_loss
from fanbu.derive.distill.config import DistillConfig, LMDistillConfig
from fanbu.derive.distill.encoder import distill, distill_strategies
from fanbu.derive.distill.packing import PackedPlan, pack_texts
from fanbu.derive.distill.topk_cache import CachedLMDistillation, HiddenMatch, TopKCache, topk_kd_loss
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
    "CachedLMDistillation",
    "DistillConfig",
    "HiddenDistillation",
    "HiddenMatch",
    "LMDistillConfig",
    "LMDistillation",
    "LiveTeacher",
    "LogitDistillation",
    "MaskedTaskLoss",
    "PackedPlan",
    "TeacherCache",
    "TeacherOutputs",
    "TopKCache",
    "build_cache",
    "distill",
    "distill_cached",
    "distill_causal_lm",
    "distill_forward",
    "distill_from_cache",
    "distill_strategies",
    "kd_loss",
    "pack_texts",
    "relation_kl",
    "relation_scores",
    "teacher_fingerprint",
    "texts_fingerprint",
    "token_kd_loss",
    "topk_kd_loss",
]
