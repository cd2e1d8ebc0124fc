"""Distribution-matching math for domain adaptation: gradient reversal, CORAL and multi-kernel MMD.

Plain functions on feature batches, independent of any model; the loss terms of
:mod:`fanbu.train.adaptation` put them into the one loop.

* Gradient reversal (Ganin & Lempitsky 2015, https://arxiv.org/abs/1409.7495): the identity forward,
  the gradient times ``-lambda`` backward, so that features learn to fool a domain classifier.
* CORAL (Sun & Saenko 2016, https://arxiv.org/abs/1607.01719): the squared Frobenius distance between
  the two batches' feature covariances, over ``4 d^2``.
* MMD with a sum of Gaussian kernels (Long et al. 2015, https://arxiv.org/abs/1502.02791): the biased
  estimate of the squared maximum mean discrepancy, bandwidths spread around the batches' mean squared
  distance.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor


class _GradientReversal(torch.autograd.Function):
    """Identity forward; the incoming gradient times ``-coefficient`` backward."""

    @staticmethod
    def forward(ctx, x: Tensor, coefficient: float) -> Tensor:
        ctx.coefficient = coefficient
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        return -ctx.coefficient * grad, None


def grad_reverse(x: Tensor, coefficient: float = 1.0) -> Tensor:
    """``x`` unchanged; its gradient flips sign and is scaled by ``coefficient`` (>= 0) on the way back."""
    if coefficient < 0:
        raise ValueError(f"the reversal coefficient must be >= 0, got {coefficient}")
    return _GradientReversal.apply(x, float(coefficient))


def dann_coefficient(progress: float, gamma: float = 10.0) -> float:
    """DANN's schedule of the reversal coefficient: ``2 / (1 + exp(-gamma * p)) - 1`` for training progress
    ``p`` in [0, 1]; it rises from 0 to nearly 1, so the noisy domain signal of the first steps stays small."""
    p = min(max(progress, 0.0), 1.0)
    return 2.0 / (1.0 + math.exp(-gamma * p)) - 1.0


def _check_pair(source: Tensor, target: Tensor, least: int) -> None:
    if source.dim() != 2 or target.dim() != 2 or source.shape[1] != target.shape[1]:
        raise ValueError(
            f"source and target features must be (batch, features) with the same width, got "
            f"{tuple(source.shape)} and {tuple(target.shape)}"
        )
    if source.shape[0] < least or target.shape[0] < least:
        raise ValueError(f"each batch needs at least {least} rows, got {source.shape[0]} and {target.shape[0]}")


def _covariance(x: Tensor) -> Tensor:
    centred = x - x.mean(dim=0, keepdim=True)  # (batch, d)
    return centred.T @ centred / (x.shape[0] - 1)  # (d, d)


def coral_loss(source: Tensor, target: Tensor) -> Tensor:
    """``||C_s - C_t||_F^2 / (4 d^2)`` of the batches' feature covariances (each at least 2 rows)."""
    _check_pair(source, target, 2)
    d = source.shape[1]
    difference = _covariance(source.float()) - _covariance(target.float())  # (d, d)
    return (difference**2).sum() / (4 * d * d)


DEFAULT_BANDWIDTHS = (0.25, 0.5, 1.0, 2.0, 4.0)


def mmd_loss(source: Tensor, target: Tensor, bandwidths: Sequence[float] = DEFAULT_BANDWIDTHS) -> Tensor:
    """Biased squared MMD with the kernel ``sum_k exp(-||x - y||^2 / (b_k * s))``.

    ``s`` is the mean squared distance between all rows of both batches (detached), so the bandwidth
    multipliers ``b_k`` hold at any feature scale. Zero for identical batches, positive when they differ.
    """
    _check_pair(source, target, 1)
    if not bandwidths or any(b <= 0 for b in bandwidths):
        raise ValueError(f"bandwidth multipliers must be positive, got {list(bandwidths)}")
    rows = torch.cat([source, target]).float()  # (n_s + n_t, d)
    distances = torch.cdist(rows, rows).pow(2)  # (n, n)
    scale = distances.detach().mean().clamp(min=1e-12)
    kernel = sum(torch.exp(-distances / (b * scale)) for b in bandwidths)  # (n, n)
    n = source.shape[0]
    ss, tt, st = kernel[:n, :n], kernel[n:, n:], kernel[:n, n:]
    return ss.mean() + tt.mean() - 2 * st.mean()
