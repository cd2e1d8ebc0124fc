"""MiniLM-style self-attention transfer: last-layer attention distributions and value relations.

The student mimics the teacher's last-layer self-attention distributions ``softmax(Q K^T / sqrt(d))``
and value relations ``softmax(V V^T / sqrt(d))`` (Wang et al. 2020, MiniLM,
https://arxiv.org/abs/2002.10957). Both are recomputed from the captured Q/K/V projections, so any
attention implementation (eager or SDPA) works and attention dropout does not distort them. When the
head counts differ (after head pruning) the projections are split into ``gcd(student, teacher)``
relation heads, as MiniLMv2 does (https://arxiv.org/abs/2012.15828); with equal counts these are
exactly the attention heads.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fanbu.errors import ModelError
from fanbu.models.encoder import EncoderHandle
from fanbu.train.distill.forward import last_self_attention
from fanbu.train.terms import Batch

MASKED = -1e9


def relation_scores(left: Tensor, right: Tensor, heads: int) -> Tensor:
    """Scaled dot products per relation head: ``(batch, seq, width)`` x2 -> ``(batch, heads, seq, seq)``."""
    batch, seq, width = left.shape
    if width % heads:
        raise ValueError(f"projection width {width} is not divisible into {heads} relation heads")
    dim = width // heads
    left = left.float().view(batch, seq, heads, dim).transpose(1, 2)  # (batch, heads, seq, dim)
    right = right.float().view(batch, seq, heads, dim).transpose(1, 2)  # (batch, heads, seq, dim)
    return left @ right.transpose(-1, -2) / math.sqrt(dim)  # (batch, heads, seq, seq)


def relation_kl(student: Tensor, teacher: Tensor, mask: Tensor) -> Tensor:
    """Mean over real query tokens of ``KL(softmax(teacher) || softmax(student))`` over real key tokens.

    Args:
        student: Scores ``(batch, heads, seq, seq)``.
        teacher: Scores of the same shape.
        mask: Attention mask ``(batch, seq)``; padding (0) is excluded as key and as query.
    """
    keys = mask.bool()[:, None, None, :]  # (batch, 1, 1, seq)
    log_s = F.log_softmax(student.masked_fill(~keys, MASKED), dim=-1)  # (batch, heads, seq, seq)
    log_t = F.log_softmax(teacher.masked_fill(~keys, MASKED), dim=-1)  # (batch, heads, seq, seq)
    terms = torch.where(keys, log_t.exp() * (log_t - log_s), torch.zeros_like(log_s))
    per_query = terms.sum(dim=-1)  # (batch, heads, seq)
    queries = mask.to(per_query.dtype)[:, None, :].expand_as(per_query)  # (batch, heads, seq)
    return (per_query * queries).sum() / queries.sum().clamp(min=1.0)


def check_same_tokenisation(student: EncoderHandle, teacher: EncoderHandle) -> None:
    """Raise unless student and teacher turn every text into the same token ids."""
    s_vocab, t_vocab = student.tokenizer.get_vocab(), teacher.tokenizer.get_vocab()
    if s_vocab != t_vocab:
        raise ModelError(
            "attention transfer compares attention token by token, so student and teacher must tokenise "
            f"identically, but their vocabularies differ (student {len(s_vocab)} tokens, teacher "
            f"{len(t_vocab)}; was the student's vocabulary trimmed?); set attention_weight: 0, or "
            "distill with attention before trimming the vocabulary"
        )
    if student.max_length != teacher.max_length:
        raise ModelError(
            f"attention transfer needs the same max_length for student ({student.max_length}) and teacher "
            f"({teacher.max_length}) so that both see the same tokens; set them equal"
        )


class AttentionDistillation:
    """``weight * (KL_attention + KL_value)`` on the last layer, against a live teacher.

    Args:
        student: The student handle (its last self-attention block sets the head count).
        teacher: The teacher handle; it runs on the student's batch inputs, which is why both must
            tokenise identically.
        weight: Multiplier of the term.
    """

    name = "attn"

    def __init__(self, student: EncoderHandle, teacher: EncoderHandle, weight: float) -> None:
        check_same_tokenisation(student, teacher)
        self.teacher = teacher
        self.weight = weight
        self._teacher_attention = last_self_attention(teacher.model.encoder)
        s_heads = int(last_self_attention(student.model.encoder).num_attention_heads)
        self.relation_heads = math.gcd(s_heads, int(self._teacher_attention.num_attention_heads))

    @torch.no_grad()
    def _teacher_qkv(self, inputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        captured: dict[str, Tensor] = {}
        hooks = [
            getattr(self._teacher_attention, n).register_forward_hook(
                lambda module, args, output, n=n: captured.__setitem__(n, output)
            )
            for n in ("query", "key", "value")
        ]
        model = self.teacher.model
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        try:
            model.encoder(**{k: v.to(device) for k, v in inputs.items()})
        finally:
            model.train(was_training)
            for hook in hooks:
                hook.remove()
        return captured

    def losses(self, outputs: Mapping[str, Tensor], batch: Batch, model: nn.Module) -> Mapping[str, Tensor]:
        if not {"queries", "keys", "values"} <= set(outputs):
            raise ValueError(
                "attention transfer needs the student's Q/K/V; train with distill_forward(..., relations=True)"
            )
        teacher = self._teacher_qkv(batch.inputs)
        device = outputs["queries"].device
        tq, tk, tv = (teacher[n].to(device) for n in ("query", "key", "value"))  # (batch, seq, width)
        mask = batch.inputs["attention_mask"]  # (batch, seq)
        heads = self.relation_heads
        attention = relation_kl(
            relation_scores(outputs["queries"], outputs["keys"], heads), relation_scores(tq, tk, heads), mask
        )
        values = relation_kl(
            relation_scores(outputs["values"], outputs["values"], heads), relation_scores(tv, tv, heads), mask
        )
        return {"attn": self.weight * (attention + values)}
