"""Distil an encoder teacher into an encoder student through the one training loop.

Student and teacher share heads and label names; the student may be narrower, shallower, have fewer
heads or a trimmed vocabulary. Unlabeled texts (label ``-1``) get only the soft terms.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from pathlib import Path

from fanbu.derive.distill.config import DistillConfig
from fanbu.errors import CheckpointError, DomainError, ModelError
from fanbu.models.encoder import EncoderHandle
from fanbu.train.classify import train_heads
from fanbu.train.distill.attention import AttentionDistillation
from fanbu.train.distill.forward import distill_forward
from fanbu.train.distill.losses import UNLABELED, HiddenDistillation, LogitDistillation, MaskedTaskLoss
from fanbu.train.distill.teacher import LiveTeacher, TeacherCache, TeacherOutputs
from fanbu.train.loop import TrainResult
from fanbu.train.terms import LossTerm

Pairs = tuple[Sequence[str], Sequence[int]]
CACHE_FILE = "teacher-cache.safetensors"


def check_pair(student: EncoderHandle, teacher: EncoderHandle) -> None:
    """Raise unless student and teacher are distinct models with the same heads and label names."""
    if student.model is teacher.model:
        raise ModelError(
            "student and teacher are the same model object; distil into a copy (copy.deepcopy(handle)) "
            "or a pruned model"
        )
    if student.labels != teacher.labels:
        differ = sorted(
            h
            for h in set(student.labels) | set(teacher.labels)
            if student.labels.get(h) != teacher.labels.get(h)
        )
        raise ModelError(
            f"student and teacher must have the same heads and label names, but they differ on {differ} "
            f"(student: {student.labels}, teacher: {teacher.labels}); add the teacher's heads to the student "
            "with student.add_head(name, teacher.labels[name])"
        )


def check_tasks(student: EncoderHandle, data: Mapping[str, Pairs], what: str, unlabeled: bool = True) -> None:
    """Raise unless every task has a head, as many labels as texts, and labels in range (or -1 if allowed)."""
    if not data:
        raise DomainError(f"{what} has no tasks; pass {{task: (texts, labels)}} with at least one task")
    for task, (texts, labels) in data.items():
        if task not in student.labels:
            raise ModelError(
                f"{what} task {task!r} has no head (heads: {', '.join(student.labels) or 'none'}); "
                "add one to student and teacher with add_head(name, label_names)"
            )
        if len(texts) == 0 or len(texts) != len(labels):
            raise DomainError(
                f"{what} task {task!r}: {len(texts)} texts but {len(labels)} labels; give one label per "
                "text (-1 for unlabeled texts)"
            )
        low = UNLABELED if unlabeled else 0
        bad = sorted({int(y) for y in labels if not low <= int(y) < len(student.labels[task])})
        if bad:
            hint = "use -1 for unlabeled texts" if unlabeled else "every validation text needs its label"
            raise DomainError(
                f"{what} task {task!r}: labels {bad[:5]} are outside 0..{len(student.labels[task]) - 1} ({hint})"
            )


def distill_strategies(
    student: EncoderHandle, teacher: EncoderHandle, config: DistillConfig, source: TeacherOutputs
) -> list[LossTerm]:
    """The loss terms ``config`` asks for, in the order the loop adds them."""
    strategies: list[LossTerm] = []
    if config.alpha < 1:
        strategies.append(MaskedTaskLoss(weight=1 - config.alpha))
    if config.alpha > 0:
        strategies.append(LogitDistillation(source, config.alpha, config.temperature))
    if config.hidden_weight > 0:
        widths = (student.model.hidden_size, teacher.model.hidden_size)
        strategies.append(HiddenDistillation(source, config.hidden_weight, *widths, seed=config.train.seed))
    if config.attention_weight > 0:
        strategies.append(AttentionDistillation(student, teacher, config.attention_weight))
    return strategies


def teacher_source(
    teacher: EncoderHandle,
    texts: Mapping[str, Sequence[str]],
    config: DistillConfig,
    cache: TeacherCache | None,
    checkpoint_dir: str | Path | None = None,
) -> TeacherOutputs:
    """The given cache, the run's saved cache, a new one, or a live teacher (``cache_teacher: false``).

    With a checkpoint directory a new cache is saved there, so a resumed run does not recompute it.
    """
    saved = Path(checkpoint_dir) / CACHE_FILE if checkpoint_dir is not None else None
    if cache is not None:
        cache.check(texts, teacher=teacher)
    elif config.cache_teacher and saved is not None and saved.is_file():
        try:
            cache = TeacherCache.load(saved, texts, teacher)
        except CheckpointError as exc:
            raise CheckpointError(f"{exc} (or delete {checkpoint_dir} to start this run afresh)") from None
    if cache is not None:
        if config.hidden_weight > 0 and not cache.has_hidden:
            raise ModelError(
                "hidden_weight > 0 but the teacher cache holds no pooled states; rebuild it with "
                "TeacherCache.build(..., hidden=True)"
            )
        return cache
    if config.cache_teacher:
        cache = TeacherCache.build(teacher, texts, batch_size=config.train.batch_size * 2, hidden=True)
        if saved is not None:
            cache.save(saved)
        return cache
    return LiveTeacher(teacher, texts)


def distill(
    student: EncoderHandle,
    teacher: EncoderHandle,
    train: Mapping[str, Pairs],
    config: DistillConfig,
    validation: Mapping[str, Pairs] | None = None,
    cache: TeacherCache | None = None,
    checkpoint_dir: str | Path | None = None,
) -> TrainResult:
    """Train ``student`` in place towards ``teacher`` on every task of ``train`` (task name = head name).

    Args:
        student: The model to train; must have the teacher's heads and label names.
        teacher: The model to imitate; never updated.
        train: Task -> (texts, labels); label ``-1`` marks an unlabeled text (soft terms only).
        config: Weights of the terms, temperature, caching and loop settings.
        validation: Task -> (texts, labels) scored each evaluation; ``score`` = mean accuracy.
        cache: Precomputed teacher outputs for exactly these training texts.
        checkpoint_dir: Checkpoints (student, optimiser, projection) for resume; ``None``: off.
    """
    check_pair(student, teacher)
    check_tasks(student, train, "train")
    if validation:
        check_tasks(student, validation, "validation", unlabeled=False)
    texts = {task: list(pairs[0]) for task, pairs in train.items()}
    source = teacher_source(teacher, texts, config, cache, checkpoint_dir)
    strategies = distill_strategies(student, teacher, config, source)
    return train_heads(
        student,
        train,
        config.train,
        validation,
        terms=strategies,
        checkpoint_dir=checkpoint_dir,
        description="distill",
        forward=functools.partial(distill_forward, relations=config.attention_weight > 0),
    )
