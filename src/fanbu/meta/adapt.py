"""Few-shot adaptation of a top network to a new domain, and the choice of its learning rate.

Every initialisation (meta-learned or standard random) adapts the same way: a zero head, ``steps``
full-batch SGD steps on the k labelled examples per class. The learning rate is chosen per
initialisation on the *meta-training* domains only (:func:`choose_lr`: support drawn from their train
splits, queries from their validation splits), never on a domain it is then tested on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from pydantic import Field, field_validator
from torch import Tensor
from torch.func import vmap

from fanbu.config import Strict
from fanbu.errors import ConfigError
from fanbu.meta.episodes import FeatureTask, sample_episode, stack_episodes
from fanbu.meta.network import Inner, MetaBody, Params, adapt_params, body_params, logits, predict_proba


class AdaptConfig(Strict):
    """How a top network adapts to a new domain from k labelled examples per class."""

    steps: int = Field(25, ge=1, description="Full-batch SGD steps on the k examples per class.")
    lr_grid: list[float] = Field([0.1, 0.3, 1.0, 3.0], min_length=1,
                                 description="Learning rates tried; the one with the best mean accuracy on "
                                 "the meta-training domains' validation episodes is used.")
    inner: Inner = Field("all", description="Adapt body and head (all) or the head only (head).")
    selection_episodes: int = Field(6, ge=1, description="Validation episodes per meta-training domain and k "
                                    "when choosing the learning rate.")
    selection_query: int = Field(16, ge=1, description="Validation queries per label in a selection episode.")

    @field_validator("lr_grid")
    @classmethod
    def _positive(cls, grid: list[float]) -> list[float]:
        bad = [lr for lr in grid if lr <= 0]
        if bad:
            raise ValueError(f"learning rates {bad} are not positive; give lr_grid positive values")
        return sorted(set(grid))


@dataclass(frozen=True)
class Adapted:
    """A body and head adapted to one domain: class probabilities of new features."""

    body: MetaBody
    params: Params

    def predict_proba(self, features: Tensor | np.ndarray) -> np.ndarray:
        """Probabilities ``(n, labels)`` of features ``(n, dim)``."""
        return predict_proba(self.body, self.params, torch.as_tensor(features, dtype=torch.float32)).numpy()

    def predict(self, features: Tensor | np.ndarray) -> np.ndarray:
        """Label ids ``(n,)``."""
        return self.predict_proba(features).argmax(axis=-1)


def adapt(body: MetaBody, x: Tensor, y: Tensor, n_way: int, lr: float, steps: int, inner: Inner = "all") -> Adapted:
    """Adapt ``body`` (its weights as the initialisation) and a zero head to ``(x, y)`` (a Meta-SGD body
    scales ``lr`` by its learned per-parameter profile)."""
    if int(y.max()) >= n_way or int(y.min()) < 0:
        raise ConfigError(f"labels must lie in 0..{n_way - 1} for a {n_way}-way head; renumber them")
    params = adapt_params(body, body_params(body), n_way, x, y, body.learning_rates(lr), steps, inner)
    return Adapted(body, {k: v.detach() for k, v in params.items()})


def episode_accuracy(body: MetaBody, train: FeatureTask, validation: FeatureTask, k: int, lrs: Sequence[float],
                     config: AdaptConfig, rng: np.random.Generator) -> list[float]:
    """Mean accuracy, per learning rate, of adapting ``body`` on validation episodes of one domain."""
    n_way = train.num_labels
    batch = stack_episodes([sample_episode(train, n_way, k, config.selection_query, rng, query_task=validation)
                            for _ in range(config.selection_episodes)])
    theta = body_params(body)
    out = []
    for lr in lrs:
        def one(sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor, lr: float = lr) -> Tensor:
            phi = adapt_params(body, theta, n_way, sx, sy, body.learning_rates(lr), config.steps, config.inner)
            return (logits(body, phi, qx).argmax(dim=-1) == qy).float().mean()

        with torch.no_grad():
            acc = vmap(one)(batch.support_x, batch.support_y, batch.query_x, batch.query_y)
        out.append(float(acc.mean()))
    return out


def choose_lr(body: MetaBody, domains: Sequence[tuple[FeatureTask, FeatureTask]], ks: Sequence[int],
              config: AdaptConfig, seed: int) -> dict[int, dict[str, object]]:
    """Per k: the learning rate of ``config.lr_grid`` with the best mean validation accuracy over
    ``domains`` (pairs of a meta-training domain's train and validation splits), and every score."""
    if not domains:
        raise ConfigError("choosing the adaptation learning rate needs at least one meta-training domain")
    rng = np.random.default_rng(seed)
    chosen: dict[int, dict[str, object]] = {}
    for k in ks:
        scores = np.mean([episode_accuracy(body, train, val, k, config.lr_grid, config, rng)
                          for train, val in domains], axis=0)
        best = int(np.argmax(scores))
        chosen[k] = {"lr": config.lr_grid[best], "scores": dict(zip(map(str, config.lr_grid), map(float, scores),
                                                                    strict=True))}
    return chosen
