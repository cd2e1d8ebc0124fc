"""The meta-learned network on the frozen encoder's pooled features, and its functional inner loop.

The large encoder (MiniLM) stays frozen: its pooled features are computed once and cached. What is
meta-learned is :class:`MetaBody`, a projection ``Linear(dim, hidden) -> ReLU`` on those features. The
classification head ``Linear(hidden, n_way)`` is *not* meta-learned: every task's label set differs
(3 to 8 labels), so each task starts its head at zero (the "zeroing trick" of Kao et al. 2022,
https://arxiv.org/abs/2110.15278) and learns it in the inner loop. The inner loop adapts the body and
the head (``inner="all"``, first-order MAML / Reptile) or the head alone (``inner="head"``, ANIL:
Raghu et al. 2020, https://arxiv.org/abs/1909.09157).

Everything here is a pure function of a parameter dict (``torch.func.functional_call`` and ``grad``),
so a batch of episodes of one shape adapts at once under ``torch.func.vmap``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad

Params = dict[str, Tensor]
Inner = Literal["all", "head"]
HEAD_KEYS = ("head.weight", "head.bias")


class MetaBody(nn.Module):
    """The meta-learned projection of pooled features: ``Linear(in_dim, hidden) -> ReLU``."""

    def __init__(self, in_dim: int, hidden: int) -> None:
        super().__init__()
        self.in_dim, self.hidden = int(in_dim), int(hidden)
        self.proj = nn.Linear(self.in_dim, self.hidden)

    def forward(self, x: Tensor) -> Tensor:
        """``(batch, in_dim)`` features to ``(batch, hidden)``."""
        return torch.relu(self.proj(x))


def new_body(in_dim: int, hidden: int, seed: int) -> MetaBody:
    """A body at PyTorch's standard initialisation, drawn from ``seed`` only."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MetaBody(in_dim, hidden)


def body_params(body: MetaBody) -> Params:
    """The body's parameters, detached (the meta weights ``theta``)."""
    return {name: p.detach().clone() for name, p in body.named_parameters()}


def zero_head(hidden: int, n_way: int, like: Tensor) -> Params:
    """A task's head at zero: every class starts equally likely."""
    return {"head.weight": like.new_zeros(n_way, hidden), "head.bias": like.new_zeros(n_way)}


def logits(body: MetaBody, params: Mapping[str, Tensor], x: Tensor) -> Tensor:
    """Class logits ``(batch, n_way)`` of features ``x`` ``(batch, in_dim)`` under ``params`` (body + head)."""
    theta = {k: v for k, v in params.items() if k not in HEAD_KEYS}
    h = functional_call(body, theta, (x,))  # (batch, hidden)
    return h @ params["head.weight"].T + params["head.bias"]  # (batch, n_way)


def loss(body: MetaBody, params: Mapping[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
    """Mean cross-entropy of ``params`` on ``(x, y)``."""
    return F.cross_entropy(logits(body, params, x), y)


def adapt_params(body: MetaBody, theta: Mapping[str, Tensor], n_way: int, x: Tensor, y: Tensor,
                 lr: Tensor | float, steps: int, inner: Inner = "all") -> Params:
    """``steps`` full-batch SGD steps on ``(x, y)`` from ``theta`` and a zero head; the adapted body + head.

    ``inner="head"`` keeps the body at ``theta`` and adapts the head only (ANIL).
    """
    params: Params = {**theta, **zero_head(body.hidden, n_way, x)}
    step = grad(lambda p, xs, ys: loss(body, p, xs, ys))
    for _ in range(steps):
        g = step(params, x, y)
        params = {k: (p - lr * g[k]) if (inner == "all" or k in HEAD_KEYS) else p for k, p in params.items()}
    return params


@torch.no_grad()
def predict_proba(body: MetaBody, params: Mapping[str, Tensor], x: Tensor, batch_size: int = 4096) -> Tensor:
    """Class probabilities ``(n, n_way)`` of features ``x`` ``(n, in_dim)``."""
    out = [torch.softmax(logits(body, params, x[i:i + batch_size]), dim=-1) for i in range(0, len(x), batch_size)]
    return torch.cat(out) if out else x.new_zeros(0, params["head.bias"].shape[-1])
