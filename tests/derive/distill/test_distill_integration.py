"""Distillation from the packaged MiniLM into a one-layer copy of it, every term on (a few steps)."""

from __future__ import annotations

import copy

import pytest
import torch
from distill_helpers import LABELS, quick, topic_task
from torch import nn

from fanbu.derive.distill import DistillConfig, TeacherCache, distill
from fanbu.models import EncoderHandle

pytestmark = pytest.mark.integration


def test_minilm_teacher_to_one_layer_student() -> None:
    teacher = EncoderHandle.from_source("package:all-MiniLM-L6-v2", max_length=32)
    teacher.add_head("topic", LABELS)
    teacher.model.eval()
    student = copy.deepcopy(teacher)
    student.model.encoder.encoder.layer = nn.ModuleList(student.model.encoder.encoder.layer[:1])
    student.model.encoder.config.num_hidden_layers = 1
    texts, labels = topic_task(16, 0)
    cache = TeacherCache.build(teacher, {"topic": texts}, batch_size=8)
    with torch.no_grad():
        expected = teacher.model(**teacher.tokenize(texts[:4]), head="topic")
    assert torch.allclose(cache.logits("topic", torch.arange(4)), expected, atol=1e-4)
    config = DistillConfig(
        alpha=0.7, hidden_weight=1.0, attention_weight=1.0, train=quick(epochs=1, batch_size=8, lr=1e-4)
    )
    before = [p.detach().clone() for p in student.model.encoder.encoder.layer[0].parameters()]
    result = distill(student, teacher, {"topic": (texts, labels)}, config, cache=cache)
    assert result.state.global_step == 2
    after = list(student.model.encoder.encoder.layer[0].parameters())
    assert any(not torch.equal(b, a) for b, a in zip(before, after, strict=True))
