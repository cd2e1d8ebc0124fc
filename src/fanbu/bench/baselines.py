"""Baselines a derived student must beat: TF-IDF + logistic regression, and a same-shape student from scratch."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from transformers import AutoConfig, AutoModel

from fanbu.evaluate.metrics import accuracy
from fanbu.models.encoder import EncoderClassifier, EncoderHandle
from fanbu.train.classify import evaluate_heads, train_heads
from fanbu.train.config import TrainConfig


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


def scratch_accuracy(
    student: EncoderHandle,
    head: str,
    train: tuple[Sequence[str], Sequence[int]],
    validation: tuple[Sequence[str], Sequence[int]],
    test: tuple[Sequence[str], Sequence[int]],
    config: TrainConfig,
) -> float:
    """Test accuracy of the student's shape trained from scratch on the same data with the same budget."""
    scratch = scratch_like(student, config.seed)
    train_heads(scratch, {head: train}, config, {head: validation}, description=f"{head} scratch")
    return evaluate_heads(scratch, {head: test})[head]["accuracy"]
