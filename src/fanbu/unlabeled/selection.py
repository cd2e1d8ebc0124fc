"""Choosing a domain-adaptation method without the target's labels: importance-weighted validation with
DEV's control variate (Deep Embedded Validation, You et al. 2019, https://proceedings.mlr.press/v97/you19a.html).

A source validation text that looks like the target counts more: a logistic domain classifier on the
shared frozen features estimates the density ratio ``w(x) = p_target(x) / p_source(x)`` (from its odds,
rescaled by the two sample sizes), and a model's target risk is estimated by the weighted mean of its
per-text validation losses. DEV subtracts the control variate ``eta * (mean(w) - 1)``, with ``eta`` the
variance-minimising coefficient, which keeps the estimate's variance low when a few weights are large.
Only the target's unlabeled pool is read; its labels never are.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from torch import Tensor

from fanbu.errors import DomainError


def importance_weights(source: Tensor, target: Tensor, validation: Tensor, seed: int = 0,
                       clip: float = 50.0) -> np.ndarray:
    """Density-ratio weights ``(n_validation,)`` of the source validation rows toward the target.

    Args:
        source: Source training features ``(n_s, d)`` (the domain classifier's negatives).
        target: Unlabeled target features ``(n_t, d)`` (its positives).
        validation: Source validation features ``(n_v, d)`` to weigh.
        seed: Seeds the classifier.
        clip: Largest weight kept (a near-certain "target" text would otherwise carry the estimate).
    """
    if source.shape[0] == 0 or target.shape[0] == 0:
        raise DomainError("importance weights need source and unlabeled target rows; the pool or the source is empty")
    features = torch.cat([source, target]).numpy()
    domain = np.concatenate([np.zeros(source.shape[0]), np.ones(target.shape[0])])
    classifier = LogisticRegression(C=1.0, max_iter=2000, random_state=seed).fit(features, domain)
    p_target = classifier.predict_proba(validation.numpy())[:, 1].clip(1e-6, 1 - 1e-6)  # (n_v,)
    ratio = p_target / (1 - p_target) * (source.shape[0] / target.shape[0])
    return np.minimum(ratio, clip)


def dev_risk(losses: np.ndarray, weights: np.ndarray) -> float:
    """DEV's estimate of the target risk from per-text validation ``losses`` and their ``weights``."""
    losses, weights = np.asarray(losses, dtype=float), np.asarray(weights, dtype=float)
    if losses.shape != weights.shape or losses.size < 2:
        raise ValueError(f"losses and weights must have one equal shape of at least 2 rows, got {losses.shape} "
                         f"and {weights.shape}")
    weighted = weights * losses
    variance = float(np.var(weights, ddof=1))
    eta = -float(np.cov(weighted, weights, ddof=1)[0, 1]) / variance if variance > 0 else 0.0
    return float(weighted.mean() + eta * weights.mean() - eta)


def per_text_loss(probabilities: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Cross-entropy of each row's true label ``(n,)`` from ``probabilities`` ``(n, classes)``."""
    picked = probabilities[np.arange(len(labels)), labels]
    return -np.log(np.clip(picked, 1e-12, 1.0))
