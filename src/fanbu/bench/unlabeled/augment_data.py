"""The data of the ``augment`` section: one domain's splits, the public slice, the experts and the held-out
checkers, and the LM's generations filtered at the threshold chosen on validation.

Everything here is fixed across seeds (the public slice, the experts, the generated texts); a seed draws
the unlabeled pool, the GAN and the students (:mod:`fanbu.bench.unlabeled.augment`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from pydantic import Field
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import ComplementNB
from sklearn.pipeline import make_pipeline
from torch import Tensor

from fanbu.config import Strict
from fanbu.data.builtin import load_builtin
from fanbu.data.domain import Domain
from fanbu.synthetic import FilterConfig, GANConfig, Generated, LMAugmentConfig, filter_generated
from fanbu.unlabeled.augment_student import StudentConfig, accuracy, one_hot, train_student
from fanbu.unlabeled.features import FeatureClassifier, FeatureConfig

Encode = Callable[[list[str]], Tensor]


class AugmentBenchConfig(Strict):
    """The augment section's settings: the domain, the scarce data, the generators and the students."""

    domain: str = Field("bbc-news", description="Built-in source of the one classification domain.")
    max_train_per_label: int = Field(150, ge=4, description="Train texts per label loaded (experts, pool, slice).")
    public_per_label: int = Field(8, ge=1, description="Labelled public-slice texts per label (prompts, head data).")
    pool: int = Field(100, ge=1, le=100, description="Unlabeled texts the distilled student sees (<= 100).")
    features: FeatureConfig = Field(default_factory=FeatureConfig, description="The large model's frozen encoder.")
    student: StudentConfig = Field(default_factory=StudentConfig, description="Every student (equal steps).")
    teacher: StudentConfig = Field(default_factory=lambda: StudentConfig(steps=600),
                                   description="The teacher (an expert) and the held-out feature checker.")
    lm: LMAugmentConfig = Field(default_factory=LMAugmentConfig, description="Text generation and its filter.")
    gan: GANConfig = Field(default_factory=GANConfig, description="The conditional GAN.")
    thresholds: tuple[float, ...] = Field((0.2, 0.3, 0.4, 0.5, 0.7), min_length=1,
                                          description="Filter thresholds tried; one is chosen on validation.")
    gan_steps: tuple[int, ...] = Field((200, 600), min_length=1,
                                       description="GAN step counts tried; one is chosen on validation per run.")


@dataclass
class Prepared:
    """What every seed shares."""

    domain: Domain
    labels: tuple[str, ...]
    public: np.ndarray  # train indices of the labelled public slice
    rest: np.ndarray  # train indices the pool is drawn from
    train_x: Tensor  # (train, d)
    train_y: Tensor  # (train,)
    valid: tuple[Tensor, Tensor]
    test: tuple[Tensor, Tensor]
    teacher: FeatureClassifier
    checker: FeatureClassifier
    experts: dict[str, Callable[[Sequence[str]], np.ndarray]]
    text_checker: Any
    info: dict[str, Any]


def _labelled(encode: Encode, texts: Sequence[str], labels: Sequence[int] | None) -> tuple[Tensor, Tensor]:
    return encode(list(texts)), torch.tensor(labels or (), dtype=torch.long)


def _public(labels: np.ndarray, per_label: int, num_labels: int) -> np.ndarray:
    order = np.random.default_rng(0).permutation(len(labels))
    return np.sort(np.concatenate([order[labels[order] == c][:per_label] for c in range(num_labels)]))


def _centroid_acc(x: Tensor, y: Tensor, test: tuple[Tensor, Tensor], num_labels: int) -> float:
    """The few-shot floor: nearest class mean (cosine) of the public slice."""
    means = torch.nn.functional.normalize(torch.stack([x[y == c].mean(0) for c in range(num_labels)]), dim=-1)
    predicted = (torch.nn.functional.normalize(test[0], dim=-1) @ means.T).argmax(-1)  # (n,)
    return float((predicted == test[1]).float().mean())


def prepare(config: AugmentBenchConfig, encode: Encode) -> Prepared:
    """Load the domain, carve the public slice and the experts' halves, train the experts and checkers."""
    domain = load_builtin(config.domain, seed=0, max_train_per_label=config.max_train_per_label)[0]
    labels, k = tuple(domain.label_names), len(domain.label_names)
    train_x, train_y = _labelled(encode, domain.train.texts, domain.train.labels)
    valid = _labelled(encode, domain.validation.texts, domain.validation.labels)
    test = _labelled(encode, domain.test.texts, domain.test.labels)
    public = _public(train_y.numpy(), config.public_per_label, k)
    rest = np.setdiff1d(np.arange(len(train_y)), public)
    shuffled = np.random.default_rng(1).permutation(rest)
    half_a, half_b = np.sort(shuffled[::2]), np.sort(shuffled[1::2])
    teacher = train_student(train_x[half_a], one_hot(train_y[half_a], k), config.teacher, seed=0)
    checker = train_student(train_x[half_b], one_hot(train_y[half_b], k), config.teacher, seed=1)
    texts = np.array(domain.train.texts, dtype=object)
    tfidf = make_pipeline(TfidfVectorizer(sublinear_tf=True), LogisticRegression(max_iter=2000))
    tfidf.fit(list(texts[half_a]), train_y[half_a].numpy())
    text_checker = make_pipeline(TfidfVectorizer(sublinear_tf=True), ComplementNB())
    text_checker.fit(list(texts[half_b]), train_y[half_b].numpy())
    experts = {"teacher": lambda t: teacher.predict_proba(encode(list(t))),
               "tfidf_lr": lambda t: tfidf.predict_proba(list(t))}
    info = {
        "domain": domain.name, "labels": list(labels), "train": len(train_y), "public": len(public),
        "experts_half": len(half_a), "checker_half": len(half_b), "validation": len(valid[1]), "test": len(test[1]),
        "teacher_acc": accuracy(teacher, *test), "teacher_validation_acc": accuracy(teacher, *valid),
        "floor_acc": _centroid_acc(train_x[public], train_y[public], test, k),
        "checker_acc": accuracy(checker, *test),
        "text_checker_acc": float(np.mean(text_checker.predict(list(domain.test.texts)) == test[1].numpy())),
    }
    return Prepared(domain, labels, public, rest, train_x, train_y, valid, test, teacher, checker, experts,
                    text_checker, info)


def public_examples(prepared: Prepared) -> dict[str, list[str]]:
    """The public slice's texts per label name: what the prompts show."""
    texts, labels = prepared.domain.train.texts, prepared.train_y
    return {name: [texts[i] for i in prepared.public if int(labels[i]) == c] for c, name in enumerate(prepared.labels)}


def choose_filter(prepared: Prepared, config: AugmentBenchConfig, generated: list[Generated],
                  encode: Encode) -> dict[str, Any]:
    """Filter at each threshold; keep the one whose head student (seed 0) scores best on validation."""
    real = [*prepared.domain.train.texts, *prepared.domain.validation.texts]
    x_pub, y_pub = prepared.train_x[prepared.public], prepared.train_y[prepared.public]
    tried = []
    for threshold in config.thresholds:
        settings = FilterConfig.model_validate({**config.lm.filter.model_dump(), "threshold": threshold})
        result = filter_generated(generated, prepared.experts, prepared.labels, settings, real)
        ids = torch.tensor([prepared.labels.index(g.label) for g in result.kept], dtype=torch.long)
        x = torch.cat([x_pub, encode([g.text for g in result.kept])]) if result.kept else x_pub
        y = torch.cat([y_pub, ids])
        student = train_student(x, one_hot(y, len(prepared.labels)), config.student, seed=0)
        tried.append({"threshold": threshold, "validation_acc": accuracy(student, *prepared.valid),
                      **result.summary(), "kept": result.kept})
    best = max(tried, key=lambda t: t["validation_acc"])  # max keeps the first (lowest) of equals
    checks = _agreement(prepared, best["kept"], generated, encode)
    return {"chosen": best, "tried": [{k: v for k, v in t.items() if k != "kept"} for t in tried], **checks}


def _agreement(prepared: Prepared, kept: list[Generated], generated: list[Generated],
               encode: Encode) -> dict[str, Any]:
    """The held-out checkers' accuracy on the synthetic texts against their intended labels."""
    def text_acc(items: list[Generated]) -> float | None:
        if not items:
            return None
        gold = np.array([prepared.labels.index(g.label) for g in items])
        return float(np.mean(prepared.text_checker.predict([g.text for g in items]) == gold))

    def feature_acc(items: list[Generated]) -> float | None:
        if not items:
            return None
        gold = torch.tensor([prepared.labels.index(g.label) for g in items])
        return accuracy(prepared.checker, encode([g.text for g in items]), gold)

    return {"agreement": {"text_checker_kept": text_acc(kept), "text_checker_generated": text_acc(generated),
                          "feature_checker_kept": feature_acc(kept), "feature_checker_generated": feature_acc(generated)}}
