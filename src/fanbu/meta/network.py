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

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad

Params = dict[str, Tensor]
Inner = Literal["all", "head"]
HEAD_KEYS = ("head.weight", "head.bias")


LR_SHAPES = {"head.weight": (1, -1), "head.bias": (1,)}  # one rate per head column / for every bias:
# the head's row count (the task's labels) differs between tasks, so its rates broadcast over the rows


class MetaBody(nn.Module):
    """The meta-learned projection of pooled features: ``Linear(in_dim, hidden) -> ReLU``.

    With ``learned_lr`` (Meta-SGD) it also carries a learned *rate profile*: per parameter of the body
    (and per column of the task head), a positive factor on the adaptation learning rate, kept as buffers
    (saved with the weights, never trained by an optimiser outside meta-learning).
    """

    def __init__(self, in_dim: int, hidden: int, learned_lr: bool = False) -> None:
        super().__init__()
        self.in_dim, self.hidden, self.learned_lr = int(in_dim), int(hidden), bool(learned_lr)
        self.proj = nn.Linear(self.in_dim, self.hidden)
        if self.learned_lr:
            self.rates = nn.Module()  # buffers named like the parameters, "." -> "_"
            for name, p in self.proj.named_parameters():
                self.rates.register_buffer(f"proj_{name}", torch.ones_like(p))
            self.rates.register_buffer("head_weight", torch.ones(1, self.hidden))
            self.rates.register_buffer("head_bias", torch.ones(1))

    def forward(self, x: Tensor) -> Tensor:
        """``(batch, in_dim)`` features to ``(batch, hidden)``."""
        return torch.relu(self.proj(x))

    def rate_profile(self) -> dict[str, Tensor] | None:
        """Parameter name -> its learned rate factor (Meta-SGD), or None for a plain body."""
        if not self.learned_lr:
            return None
        return {name.replace("_", ".", 1): buffer for name, buffer in self.rates.named_buffers()}

    def learning_rates(self, lr: float) -> float | dict[str, Tensor]:
        """The adaptation learning rate(s): ``lr`` times the learned profile, or ``lr`` alone."""
        profile = self.rate_profile()
        return lr if profile is None else {k: lr * v for k, v in profile.items()}

    @torch.no_grad()
    def set_rate_profile(self, profile: Mapping[str, Tensor]) -> None:
        """Store a learned profile (parameter name -> positive factors of the parameter's shape)."""
        if not self.learned_lr:
            raise ValueError("this body has no rate profile: build it with learned_lr=True")
        for name, value in profile.items():
            getattr(self.rates, name.replace(".", "_", 1)).copy_(value.detach())


def new_body(in_dim: int, hidden: int, seed: int, learned_lr: bool = False) -> MetaBody:
    """A body at PyTorch's standard initialisation, drawn from ``seed`` only."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MetaBody(in_dim, hidden, learned_lr)


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
                 lr: Tensor | float | Mapping[str, Tensor], steps: int, inner: Inner = "all") -> Params:
    """``steps`` full-batch SGD steps on ``(x, y)`` from ``theta`` and a zero head; the adapted body + head.

    ``lr`` is one rate, or one per parameter name (Meta-SGD: tensors that broadcast to the parameter).
    ``inner="head"`` keeps the body at ``theta`` and adapts the head only (ANIL).
    """
    params: Params = {**theta, **zero_head(body.hidden, n_way, x)}
    rates = lr if isinstance(lr, Mapping) else dict.fromkeys(params, lr)
    step = grad(lambda p, xs, ys: loss(body, p, xs, ys))
    for _ in range(steps):
        g = step(params, x, y)
        params = {k: (p - rates[k] * g[k]) if (inner == "all" or k in HEAD_KEYS) else p for k, p in params.items()}
    return params


@torch.no_grad()
def predict_proba(body: MetaBody, params: Mapping[str, Tensor], x: Tensor, batch_size: int = 4096) -> Tensor:
    """Class probabilities ``(n, n_way)`` of features ``x`` ``(n, in_dim)``."""
    out = [torch.softmax(logits(body, params, x[i:i + batch_size]), dim=-1) for i in range(0, len(x), batch_size)]
    return torch.cat(out) if out else x.new_zeros(0, params["head.bias"].shape[-1])


class AdaptedNet(nn.Module):
    """A meta-initialised body adapted to one task, with its head: features ``(batch, in_dim)`` to logits
    ``(batch, n_way)``. A plain module (saved as safetensors through a module handle)."""

    def __init__(self, in_dim: int, hidden: int, n_way: int) -> None:
        super().__init__()
        self.proj = nn.Linear(int(in_dim), int(hidden))
        self.head = nn.Linear(int(hidden), int(n_way))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(torch.relu(self.proj(x)))

    @torch.no_grad()
    def predict_proba(self, features: Tensor | np.ndarray) -> np.ndarray:
        """Class probabilities ``(n, n_way)`` (the :class:`~fanbu.meta.predictor.FeatureModel` protocol)."""
        self.eval()
        return torch.softmax(self(torch.as_tensor(features, dtype=torch.float32)), dim=-1).numpy()

    @classmethod
    def from_params(cls, body: MetaBody, params: Mapping[str, Tensor]) -> AdaptedNet:
        """The network of ``params`` (an adapted body and head, as :func:`adapt_params` returns)."""
        net = cls(body.in_dim, body.hidden, int(params["head.bias"].shape[-1]))
        net.load_state_dict({k: v.detach() for k, v in params.items()})
        return net
