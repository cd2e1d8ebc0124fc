"""First-order MAML and Reptile over episodes of the meta-training domains, with ``torch.func``.

* FOMAML (Finn et al. 2017, https://arxiv.org/abs/1703.03400, first-order variant): adapt a copy of
  ``theta`` on each episode's support set, take the gradient of the query loss *at the adapted weights*
  as the meta-gradient (second-order terms dropped), average over the meta-batch, one Adam step.
* Reptile (Nichol et al. 2018, https://arxiv.org/abs/1803.02999): adapt on the whole episode (support
  and query), then ``theta <- theta + eps * (mean(phi) - theta)``, ``eps`` annealed linearly.
* Meta-SGD (Li et al. 2017, https://arxiv.org/abs/1707.09835): MAML that also learns a per-parameter
  inner learning rate. Here the rate is ``inner_lr * exp(s)`` with ``s`` learned per element of the body
  and per column of the head; the meta-gradient runs through the inner loop (second order, ``torch.func``
  ``grad`` of ``grad``). The body keeps ``exp(s)`` as its rate profile, which scales whatever rate later
  adaptation uses.

Each meta-iteration draws one domain and ``meta_batch`` episodes of it (one shape), adapted together
under ``torch.func.vmap``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import Tensor
from torch.func import grad, grad_and_value, vmap

from fanbu.config import Strict
from fanbu.errors import ConfigError
from fanbu.meta.episodes import Episode, FeatureTask, check_shots, sample_episode, stack_episodes
from fanbu.meta.network import (
    HEAD_KEYS,
    LR_SHAPES,
    Inner,
    MetaBody,
    Params,
    adapt_params,
    body_params,
    loss,
    new_body,
)
from fanbu.train.anneal import linear_anneal

Method = Literal["fomaml", "reptile", "metasgd"]


class MetaConfig(Strict):
    """How the top network is meta-learned over the meta-training domains' episodes."""

    method: Method = Field("fomaml", description="fomaml (first-order MAML), reptile, or metasgd (MAML with a "
                           "learned per-parameter inner learning rate, second order).")
    hidden: int = Field(256, ge=1, description="Width of the meta-learned projection of the pooled features.")
    n_way: int = Field(5, ge=2, description="Labels per episode (a domain with fewer uses all of its labels).")
    k_shot: int = Field(8, ge=1, description="Support examples per label in a meta-training episode.")
    query: int = Field(8, ge=1, description="Query examples per label in a meta-training episode.")
    iterations: int = Field(300, ge=1, description="Meta-iterations (outer steps).")
    meta_batch: int = Field(4, ge=1, description="Episodes of one domain adapted together per meta-iteration.")
    inner_steps: int = Field(5, ge=1, description="Full-batch SGD steps of the inner loop.")
    inner_lr: float = Field(0.5, gt=0, description="Learning rate of the inner loop.")
    inner: Inner = Field("all", description="Adapt body and head in the inner loop (all), or the head only "
                         "(head: ANIL).")
    meta_lr: float = Field(1e-3, gt=0, description="FOMAML, Meta-SGD: Adam learning rate of the outer step.")
    step_size: float = Field(0.5, gt=0, le=1, description="Reptile: eps at the first iteration.")
    final_step_size: float = Field(0.05, ge=0, le=1, description="Reptile: eps at the last iteration (linear).")
    seed: int = Field(0, description="Seeds the initial body and every episode drawn.")

    @model_validator(mode="after")
    def _check(self) -> MetaConfig:
        if self.final_step_size > self.step_size:
            raise ValueError(f"final_step_size {self.final_step_size} exceeds step_size {self.step_size}; "
                             "Reptile's step size anneals down: lower final_step_size")
        if self.method == "reptile" and self.inner == "head":
            raise ValueError("reptile with inner='head' never moves the body (the head is re-initialised per "
                             "task): set inner='all', or method='fomaml'")
        return self

    def step_size_at(self, iteration: int) -> float:
        """Reptile's eps at ``iteration`` (0-based), linear from ``step_size`` to ``final_step_size``."""
        return linear_anneal(self.step_size, self.final_step_size, iteration, self.iterations)


def fomaml_gradient(body: MetaBody, theta: Params, episodes: Episode, n_way: int, lr: float, steps: int,
                    inner: Inner = "all") -> tuple[Params, Tensor]:
    """The first-order MAML meta-gradient of a stacked batch of episodes, and their mean query loss.

    Per episode: adapt on the support set to ``phi``, then the gradient of the query loss at ``phi``
    (with respect to ``phi``'s body parameters); averaged over the batch.
    """
    theta = {k: v.detach() for k, v in theta.items()}

    def one(sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor) -> tuple[Params, Tensor]:
        phi = adapt_params(body, theta, n_way, sx, sy, lr, steps, inner)
        phi = {k: v.detach() for k, v in phi.items()}  # first order: no gradient through the inner loop
        query_loss = loss(body, phi, qx, qy)
        g = grad(lambda p: loss(body, p, qx, qy))(phi)
        return {k: g[k] for k in theta}, query_loss

    grads, losses = vmap(one)(episodes.support_x, episodes.support_y, episodes.query_x, episodes.query_y)
    return {k: g.mean(dim=0) for k, g in grads.items()}, losses.mean()


RATE = "rate/"  # prefix of the log rate factors in Meta-SGD's joint parameter dict


def log_rates(theta: Params, hidden: int) -> Params:
    """Meta-SGD's learned log rate factors at zero (every rate starts at ``inner_lr``)."""
    out = {RATE + k: torch.zeros_like(v) for k, v in theta.items()}
    out.update({RATE + k: torch.zeros(tuple(hidden if d == -1 else d for d in shape)) for k, shape in LR_SHAPES.items()})
    return out


def metasgd_gradient(body: MetaBody, params: Params, episodes: Episode, n_way: int, lr: float, steps: int,
                     inner: Inner = "all") -> tuple[Params, Tensor]:
    """Meta-SGD's meta-gradient, through the inner loop, of the body and the log rate factors together
    (``params``: the body's weights and :func:`log_rates`), and the mean query loss."""
    params = {k: v.detach() for k, v in params.items()}

    def episode_loss(p: Params, sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor) -> Tensor:
        theta = {k: v for k, v in p.items() if not k.startswith(RATE)}
        rates = {k[len(RATE):]: lr * v.exp() for k, v in p.items() if k.startswith(RATE)}
        return loss(body, adapt_params(body, theta, n_way, sx, sy, rates, steps, inner), qx, qy)

    grads, losses = vmap(grad_and_value(episode_loss), in_dims=(None, 0, 0, 0, 0))(
        params, episodes.support_x, episodes.support_y, episodes.query_x, episodes.query_y)
    return {k: g.mean(dim=0) for k, g in grads.items()}, losses.mean()


def reptile_adapted(body: MetaBody, theta: Params, episodes: Episode, n_way: int, lr: float,
                    steps: int) -> Params:
    """Per episode of a stacked batch: the body adapted on the whole episode (support + query)."""
    theta = {k: v.detach() for k, v in theta.items()}
    x = torch.cat([episodes.support_x, episodes.query_x], dim=1)  # (batch, n_way*(k+q), dim)
    y = torch.cat([episodes.support_y, episodes.query_y], dim=1)  # (batch, n_way*(k+q))

    def one(xs: Tensor, ys: Tensor) -> Params:
        phi = adapt_params(body, theta, n_way, xs, ys, lr, steps, "all")
        return {k: v for k, v in phi.items() if k not in HEAD_KEYS}

    return vmap(one)(x, y)  # each (batch, *shape)


def reptile_step(theta: Mapping[str, Tensor], adapted: Mapping[str, Tensor], step_size: float) -> Params:
    """``theta + step_size * (mean(adapted) - theta)``; ``adapted`` holds a leading batch axis per tensor."""
    if set(adapted) != set(theta):
        raise ConfigError("reptile: adapted weights do not match the meta weights' names; adapt copies of "
                          "the same body")
    return {k: v + step_size * (adapted[k].mean(dim=0) - v) for k, v in theta.items()}


@dataclass
class MetaResult:
    """The meta-learned body and the history of its meta-training (mean query or episode loss)."""

    body: MetaBody
    config: MetaConfig
    domains: list[str]
    history: list[dict[str, float | int | str]] = field(default_factory=list)


def meta_train(tasks: Sequence[FeatureTask], config: MetaConfig) -> MetaResult:
    """Meta-learn a :class:`MetaBody` over episodes of ``tasks`` (the meta-training domains' train splits)."""
    if not tasks:
        raise ConfigError("meta-training needs at least one domain: give meta_domains")
    for task in tasks:
        check_shots(task, config.k_shot, setting="meta.k_shot", extra=config.query)
    rng = np.random.default_rng(config.seed)
    body = new_body(tasks[0].features.shape[1], config.hidden, config.seed, learned_lr=config.method == "metasgd")
    theta = body_params(body)
    if config.method == "metasgd":
        theta.update(log_rates(theta, config.hidden))
    optimiser = torch.optim.Adam(list(theta.values()), lr=config.meta_lr) if config.method != "reptile" else None
    if optimiser is not None:
        for value in theta.values():
            value.requires_grad_(True)
    history: list[dict[str, float | int | str]] = []
    for iteration in range(config.iterations):
        task = tasks[int(rng.integers(len(tasks)))]
        n_way = min(config.n_way, task.num_labels)
        batch = stack_episodes([sample_episode(task, n_way, config.k_shot, config.query, rng)
                                for _ in range(config.meta_batch)])
        if optimiser is not None:
            gradient = metasgd_gradient if config.method == "metasgd" else fomaml_gradient
            grads, value = gradient(body, theta, batch, n_way, config.inner_lr, config.inner_steps, config.inner)
            optimiser.zero_grad()
            for k, p in theta.items():
                p.grad = grads[k]
            optimiser.step()
            history.append({"iteration": iteration, "domain": task.name, "query_loss": float(value)})
        else:
            adapted = reptile_adapted(body, theta, batch, n_way, config.inner_lr, config.inner_steps)
            theta = reptile_step(theta, adapted, config.step_size_at(iteration))
            history.append({"iteration": iteration, "domain": task.name, "eps": config.step_size_at(iteration)})
    with torch.no_grad():
        for name, p in body.named_parameters():
            p.copy_(theta[name].detach())
    if config.method == "metasgd":  # the profile relative to inner_lr: later adaptation scales its own rate
        body.set_rate_profile({k[len(RATE):]: v.detach().exp() for k, v in theta.items() if k.startswith(RATE)})
    return MetaResult(body, config, [t.name for t in tasks], history)
