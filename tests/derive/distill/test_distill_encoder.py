"""distill(): the student moves towards the teacher; projection, attention transfer, and bad inputs."""

from __future__ import annotations

import copy

import pytest
import torch
from distill_helpers import LABELS, quick
from safetensors.torch import load_file

from fanbu.derive.distill import (
    AttentionDistillation,
    DistillConfig,
    HiddenDistillation,
    TeacherCache,
    distill,
    distill_forward,
    kd_loss,
    relation_kl,
    relation_scores,
)
from fanbu.errors import DomainError, ModelError
from fanbu.models import EncoderHandle
from fanbu.models.tiny import tiny_tokenizer
from fanbu.train import Batch, latest_checkpoint
from fanbu.train.classify import evaluate_heads


def kl_to_teacher(student: EncoderHandle, teacher: EncoderHandle, texts: list[str]) -> float:
    student.model.eval()
    with torch.no_grad():
        s = student.model(**student.tokenize(texts), head="topic")
        t = teacher.model(**teacher.tokenize(texts), head="topic")
    return kd_loss(s, t, 1.0).item()


def test_distilled_student_gets_closer_to_the_teacher(teacher, student, task_data) -> None:
    heldout = task_data["heldout"][0]
    before = kl_to_teacher(student, teacher, heldout)
    config = DistillConfig(alpha=0.7, hidden_weight=0.5, train=quick(epochs=6, lr=1e-2, restore_best=False))
    result = distill(
        student, teacher, {"topic": task_data["train"]}, config, {"topic": task_data["validation"]}
    )
    after = kl_to_teacher(student, teacher, heldout)
    assert after < 0.2 * before
    assert result.state.best is not None and result.state.best >= 0.8  # mean validation accuracy
    accuracy = evaluate_heads(student, {"topic": task_data["heldout"]})["topic"]["accuracy"]
    assert accuracy >= 0.8


def test_unlabeled_texts_get_only_the_soft_terms(teacher, student, task_data) -> None:
    texts, _ = task_data["train"]
    unlabeled = {"topic": (texts, [-1] * len(texts))}
    before = kl_to_teacher(student, teacher, task_data["heldout"][0])
    distill(student, teacher, unlabeled, DistillConfig(alpha=0.5, train=quick(epochs=4)))
    assert kl_to_teacher(student, teacher, task_data["heldout"][0]) < 0.5 * before


def test_hidden_projection_is_optimised_and_checkpointed(teacher, student, task_data, tmp_path) -> None:
    fresh = HiddenDistillation(TeacherCache({}, {}, {}), 1.0, student_width=16, teacher_width=32, seed=0)
    initial = {k: v.clone() for k, v in fresh.state_dict().items()}
    config = DistillConfig(alpha=0.5, hidden_weight=1.0, train=quick(epochs=2, seed=0))
    distill(student, teacher, {"topic": task_data["train"]}, config, checkpoint_dir=tmp_path)
    saved = load_file(str(latest_checkpoint(tmp_path) / "strategy-hidden.safetensors"))
    assert saved["proj.weight"].shape == (32, 16)
    assert not torch.allclose(saved["proj.weight"], initial["proj.weight"])  # it trained
    fresh.load_state_dict(saved)
    assert torch.equal(fresh.proj.weight, saved["proj.weight"])


def test_hidden_projection_starts_as_identity_for_equal_widths() -> None:
    strategy = HiddenDistillation(TeacherCache({}, {}, {}), 1.0, student_width=8, teacher_width=8)
    assert torch.equal(strategy.proj.weight, torch.eye(8)) and not strategy.proj.bias.any()
    assert strategy.modules() == [strategy.proj]


def attention_gap(student: EncoderHandle, teacher: EncoderHandle, texts: list[str]) -> float:
    strategy = AttentionDistillation(student, teacher, 1.0)
    inputs = student.tokenize(texts)
    batch = Batch(inputs, {}, "topic", torch.arange(len(texts)))
    student.model.eval()
    with torch.no_grad():
        outputs = distill_forward(student.model, batch, relations=True)
        loss = strategy.losses(outputs, batch, student.model)["attn"]
    return loss.item()


def test_attention_transfer_runs_with_identical_tokenisation(teacher, student, task_data) -> None:
    texts = task_data["heldout"][0][:16]
    before = attention_gap(student, teacher, texts)
    assert before > 0
    config = DistillConfig(alpha=0.0, attention_weight=10.0, train=quick(epochs=6, lr=1e-2))
    distill(student, teacher, {"topic": task_data["train"]}, config)
    assert attention_gap(student, teacher, texts) < 0.5 * before


def test_attention_relations_group_heads_when_counts_differ(teacher, student) -> None:
    strategy = AttentionDistillation(student, teacher, 1.0)
    assert strategy.relation_heads == 2  # gcd(student 2 heads, teacher 4 heads)
    same = AttentionDistillation(copy.deepcopy(teacher), teacher, 1.0)
    assert same.relation_heads == 4
    inputs = teacher.tokenize(["the game was great"])
    outputs = distill_forward(teacher.model, Batch(inputs, {}, "topic"), relations=True)
    scores = relation_scores(outputs["queries"], outputs["keys"], 4)
    assert relation_kl(scores, scores, inputs["attention_mask"]).item() == pytest.approx(0.0, abs=1e-6)


def test_attention_transfer_errors_on_different_tokenisers(teacher, student, task_data) -> None:
    other = tiny_tokenizer(model_max_length=64)
    other.add_tokens(["zzword"])
    trimmed = EncoderHandle(student.model, other, student.labels, student.max_length)
    config = DistillConfig(attention_weight=1.0, train=quick(epochs=1))
    with pytest.raises(ModelError, match="must tokenise identically.*vocabulary trimmed"):
        distill(trimmed, teacher, {"topic": task_data["train"]}, config)
    shorter = EncoderHandle(student.model, student.tokenizer, student.labels, max_length=16)
    with pytest.raises(ModelError, match="same max_length"):
        AttentionDistillation(shorter, teacher, 1.0)


def test_different_tokenisers_work_without_attention(teacher, student, task_data) -> None:
    other = tiny_tokenizer(model_max_length=64)
    other.add_tokens(["zzword"])
    student.model.encoder.resize_token_embeddings(len(other))
    trimmed = EncoderHandle(student.model, other, student.labels, student.max_length)
    result = distill(trimmed, teacher, {"topic": task_data["train"]}, DistillConfig(train=quick(epochs=1)))
    assert result.state.global_step == 4


def test_heads_must_match(teacher, task_data) -> None:
    other = EncoderHandle.tiny(hidden_size=16, num_layers=1, seed=4)
    other.add_head("topic", ["tech", "sport"])
    with pytest.raises(ModelError, match=r"same heads and label names.*differ on \['topic'\]"):
        distill(other, teacher, {"topic": task_data["train"]}, DistillConfig())
    with pytest.raises(ModelError, match="same model object"):
        distill(teacher, teacher, {"topic": task_data["train"]}, DistillConfig())


def test_bad_training_data(teacher, student, task_data) -> None:
    texts, labels = task_data["train"]
    config = DistillConfig(train=quick(epochs=1))
    with pytest.raises(ModelError, match="train task 'other' has no head"):
        distill(student, teacher, {"other": (texts, labels)}, config)
    with pytest.raises(DomainError, match="64 texts but 63 labels"):
        distill(student, teacher, {"topic": (texts, labels[:-1])}, config)
    with pytest.raises(DomainError, match=r"labels \[2\] are outside 0..1 \(use -1 for unlabeled texts\)"):
        distill(student, teacher, {"topic": (texts, [2] + labels[1:])}, config)
    with pytest.raises(DomainError, match="every validation text needs its label"):
        distill(student, teacher, {"topic": (texts, labels)}, config, {"topic": (texts[:2], [-1, 0])})
    with pytest.raises(DomainError, match="train has no tasks"):
        distill(student, teacher, {}, config)
    assert student.labels == {"topic": LABELS}
