"""Baselines a derived student must beat: TF-IDF + logistic regression, and a same-shape student from scratch.

The scratch student gets what the distilled student gets, less the teacher: the same labelled data,
the same validation split, the same transfer texts and the same number of optimiser steps
(:func:`self_train_scratch`). Without a teacher it can use the unlabelled transfer texts only through
its own predictions, so it self-trains.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import torch
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from transformers import AutoConfig, AutoModel

from fanbu.evaluate.metrics import accuracy
from fanbu.models.encoder import EncoderClassifier, EncoderHandle
from fanbu.train.classify import evaluate_heads, train_heads
from fanbu.train.config import TrainConfig
from fanbu.unlabeled.pseudo import choose_threshold  # the one threshold rule: self-training's

Pairs = tuple[Sequence[str], Sequence[int]]


def tfidf_accuracy(
    train: tuple[Sequence[str], Sequence[int]], test: tuple[Sequence[str], Sequence[int]], c: float = 10.0
) -> float:
    """Test accuracy of TF-IDF (words and bigrams, sublinear tf) + logistic regression trained on ``train``."""
    model = make_pipeline(
        TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=2, max_features=200_000),
        LogisticRegression(C=c, max_iter=2000),
    )
    model.fit(list(train[0]), list(train[1]))
    return accuracy(model.predict(list(test[0])), list(test[1]))


def scratch_like(student: EncoderHandle, seed: int = 0) -> EncoderHandle:
    """A randomly initialised model of the student's exact shape and tokenizer (no teacher knowledge)."""
    config = AutoConfig.for_model(**student.model.encoder.config.to_dict())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = AutoModel.from_config(config)
        model = EncoderClassifier(encoder, {h: len(n) for h, n in student.labels.items()}, student.model.dropout.p)
    return EncoderHandle(model, student.tokenizer, student.labels, student.max_length,
                         truncation=student.truncation)


def planned_steps(examples: int, config: TrainConfig) -> int:
    """The optimiser steps the loop takes on one task of ``examples`` examples under ``config``.

    ``ceil(ceil(examples / batch_size) / grad_accum) * epochs``, capped at ``max_steps``; early stopping
    (``patience``) can only end a run sooner.
    """
    batches = math.ceil(examples / config.batch_size)
    steps = math.ceil(batches / config.grad_accum) * config.epochs
    return steps if config.max_steps is None else min(steps, config.max_steps)


@dataclass(frozen=True)
class ScratchResult:
    """The scratch student's test accuracy and what it was given."""

    accuracy: float
    steps: int  # optimiser steps taken, both phases
    budget: int  # the distilled student's steps, which ``steps`` matches
    labelled_steps: int  # phase 1: the labelled data alone
    self_training_steps: int  # phase 2: labelled + pseudo-labelled
    transfer_texts: int  # transfer texts the model pseudo-labelled (all of them)
    pseudo_labelled: int  # of those, kept (confidence >= threshold)
    threshold: float | None  # None: none kept
    kept: Literal["labelled", "self_trained"]  # which phase's model won on validation

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _validation_accuracy(handle: EncoderHandle, head: str, validation: Pairs) -> float:
    return evaluate_heads(handle, {head: validation})[head]["accuracy"]


def self_train_scratch(
    student: EncoderHandle,
    head: str,
    train: Pairs,
    validation: Pairs,
    test: Pairs,
    transfer: Sequence[str],
    config: TrainConfig,
    threshold: float | Literal["validation"] = "validation",
) -> ScratchResult:
    """A student of ``student``'s shape from scratch, self-trained on the transfer texts, scored on ``test``.

    The budget is the distilled student's: the steps ``config`` gives on ``len(train) + len(transfer)``
    examples (:func:`planned_steps`). Phase 1 trains on the labelled data as ``config`` says (its epochs,
    at most the budget), keeping its best validation weights. The model then labels every transfer text
    with its argmax; those at least ``threshold`` confident are kept (``"validation"``: the threshold
    :func:`choose_threshold` picks on the validation split; 0: all). Phase 2 continues from phase 1's
    weights on labelled + pseudo-labelled texts for the remaining steps (a fresh warm-up and decay) and
    ends with its last weights, unless phase 1's scored higher on validation. The test split is only
    ever scored.
    """
    budget = planned_steps(len(train[0]) + len(transfer), config)
    scratch = scratch_like(student, config.seed)
    first = planned_steps(len(train[0]), config)
    phase1 = config if first <= budget else config.model_copy(update={"max_steps": budget})
    done = train_heads(scratch, {head: train}, phase1, {head: validation}, description=f"{head} scratch")
    labelled_steps = done.state.global_step
    remaining = budget - labelled_steps
    kept_threshold: float | None = None
    pseudo: list[tuple[str, int]] = []
    if transfer:
        probs = scratch.predict_proba(list(transfer), head, batch_size=64)  # (transfer, labels)
        if threshold == "validation":
            val_probs = scratch.predict_proba(list(validation[0]), head, batch_size=64)  # (validation, labels)
            correct = val_probs.argmax(axis=-1) == np.asarray(validation[1])
            kept_threshold = choose_threshold(val_probs.max(axis=-1), correct)
        else:
            kept_threshold = float(threshold)
        if kept_threshold is not None:
            keep = probs.max(axis=-1) >= kept_threshold
            pseudo = [(t, int(y)) for t, y, k in zip(transfer, probs.argmax(axis=-1), keep, strict=True) if k]
    steps, kept = labelled_steps, "labelled"
    if remaining > 0:
        phase1_score = _validation_accuracy(scratch, head, validation)
        phase1_weights = {k: v.detach().clone() for k, v in scratch.model.state_dict().items()}
        texts = [*train[0], *(t for t, _ in pseudo)]
        labels = [*(int(y) for y in train[1]), *(y for _, y in pseudo)]
        per_epoch = planned_steps(len(texts), config.model_copy(update={"epochs": 1, "max_steps": None}))
        phase2 = config.model_copy(
            update={"epochs": math.ceil(remaining / per_epoch), "max_steps": remaining, "restore_best": False}
        )
        result = train_heads(scratch, {head: (texts, labels)}, phase2, {head: validation},
                             description=f"{head} scratch self-training")
        steps += result.state.global_step
        if _validation_accuracy(scratch, head, validation) >= phase1_score:
            kept = "self_trained"
        else:
            scratch.model.load_state_dict(phase1_weights)
    return ScratchResult(
        accuracy=evaluate_heads(scratch, {head: test})[head]["accuracy"],
        steps=steps,
        budget=budget,
        labelled_steps=labelled_steps,
        self_training_steps=steps - labelled_steps,
        transfer_texts=len(transfer),
        pseudo_labelled=len(pseudo),
        threshold=kept_threshold,
        kept=kept,
    )


def scratch_accuracy(
    student: EncoderHandle,
    head: str,
    train: Pairs,
    validation: Pairs,
    test: Pairs,
    config: TrainConfig,
    transfer: Sequence[str] = (),
) -> float:
    """Test accuracy of :func:`self_train_scratch` (no transfer texts: the labelled data alone, same steps)."""
    return self_train_scratch(student, head, train, validation, test, transfer, config).accuracy
