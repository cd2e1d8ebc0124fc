"""The ``augment`` section of ``fanbu bench unlabeled``, one seed: students trained when real data is scarce,
with no augmentation, LM-generated texts or GAN-generated features, at equal steps.

Two tasks: ``head`` trains on the labelled public slice (``public_per_label`` texts per label); ``distill``
trains on ``pool`` (<= 100) unlabeled texts labelled by the teacher's probabilities. Augmentation adds
the filtered generated texts (head: their intended labels; distill: the teacher's probabilities on them)
or GAN samples of the real rows' features (head: the conditioning label; distill: the teacher's
probabilities on the samples: feature-level distillation). The GAN's step count is chosen on validation.
Each student is scored once on the test split; PGR is ``(acc - floor) / (teacher - floor)``, the floor
the public slice's nearest-class-mean accuracy.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from fanbu.bench.unlabeled.augment_data import AugmentBenchConfig, Encode, Prepared
from fanbu.synthetic import GANConfig, Generated, train_gan
from fanbu.unlabeled.augment_student import accuracy, one_hot, train_student

KINDS = ("none", "lm", "gan")
TASKS = ("head", "distill")


def pgr(acc: float, floor: float, teacher: float) -> float | None:
    """Performance gap recovered between the few-shot floor and the teacher (``None`` without a gap)."""
    return None if teacher - floor <= 1e-9 else (acc - floor) / (teacher - floor)


def _soft(prepared: Prepared, x: Tensor) -> Tensor:
    return torch.from_numpy(prepared.teacher.predict_proba(x)).float()  # (n, labels)


def _real(prepared: Prepared, task: str, pool: np.ndarray) -> tuple[Tensor, Tensor, Tensor]:
    """Real features, targets (one-hot or teacher probabilities) and hard labels of ``task``."""
    k = len(prepared.labels)
    if task == "head":
        x, y = prepared.train_x[prepared.public], prepared.train_y[prepared.public]
        return x, one_hot(y, k), y
    x = prepared.train_x[pool]
    soft = _soft(prepared, x)
    return x, soft, soft.argmax(-1)


def _gan_rows(prepared: Prepared, config: AugmentBenchConfig, task: str, real: tuple[Tensor, Tensor, Tensor],
              seed: int) -> tuple[Tensor, Tensor, dict[str, Any]]:
    """GAN samples and their targets, with the GAN steps chosen on the validation split."""
    k, tried, candidates = len(prepared.labels), [], []
    x, targets, hard = real
    for steps in config.gan_steps:
        gan = train_gan(x, hard, k, GANConfig.model_validate({**config.gan.model_dump(), "steps": steps}), seed).gan
        fake_x, fake_y = gan.sample_per_label(k, config.gan.per_label, seed=seed + 1)
        fake_t = one_hot(fake_y, k) if task == "head" else _soft(prepared, fake_x)
        student = train_student(torch.cat([x, fake_x]), torch.cat([targets, fake_t]), config.student, seed)
        score = accuracy(student, *prepared.valid)
        tried.append({"steps": steps, "validation_acc": score})
        candidates.append((score, steps, fake_x, fake_t, fake_y, student))
    _, steps, fake_x, fake_t, fake_y, student = max(candidates, key=lambda c: c[0])  # first of equals
    info = {"gan_steps": steps, "gan_tried": tried, "agreement": accuracy(prepared.checker, fake_x, fake_y),
            "student": student}
    return fake_x, fake_t, info


def _lm_rows(prepared: Prepared, task: str, kept: list[Generated], encode: Encode) -> tuple[Tensor, Tensor]:
    k = len(prepared.labels)
    if not kept:
        return torch.zeros(0, prepared.train_x.shape[1]), torch.zeros(0, k)
    x = encode([g.text for g in kept])
    if task == "head":
        return x, one_hot(torch.tensor([prepared.labels.index(g.label) for g in kept]), k)
    return x, _soft(prepared, x)


def run_seed(prepared: Prepared, config: AugmentBenchConfig, kept: list[Generated], acceptance: float,
             seed: int, encode: Encode) -> dict[str, Any]:
    """Every (task, kind) row of one seed: test and validation accuracy, PGR, synthetic share."""
    pool = np.sort(np.random.default_rng([seed, 1]).choice(prepared.rest, size=config.pool, replace=False))
    floor, teacher = prepared.info["floor_acc"], prepared.info["teacher_acc"]
    rows = []
    for task in TASKS:
        real = _real(prepared, task, pool)
        for kind in KINDS:
            extra: dict[str, Any] = {}
            if kind == "gan":
                fake_x, fake_t, extra = _gan_rows(prepared, config, task, real, seed)
                student = extra.pop("student")
            else:
                fake_x, fake_t = (_lm_rows(prepared, task, kept, encode) if kind == "lm"
                                  else (real[0][:0], real[1][:0]))
                student = train_student(torch.cat([real[0], fake_x]), torch.cat([real[1], fake_t]),
                                        config.student, seed)
            acc = accuracy(student, *prepared.test)
            synthetic = int(fake_x.shape[0])
            rows.append({
                "task": task, "kind": kind, "pool": int(real[0].shape[0]), "synthetic": synthetic,
                "synthetic_share": synthetic / (synthetic + int(real[0].shape[0])),
                "acc": acc, "validation_acc": accuracy(student, *prepared.valid), "pgr": pgr(acc, floor, teacher),
                "acceptance": acceptance if kind == "lm" else None, "steps": config.student.steps, **extra,
            })
    return {"seed": seed, "rows": rows}
