"""Continual-learning safeguards that compose with every training-based feedback strategy.

:class:`ContinualConfig` is the ``continual:`` field of those strategies; each safeguard becomes a
strategy of the one loop (an extra loss term) or extra batches:

* **LwF** (Li & Hoiem 2016): on every batch, distil the previous large version (``ctx.large``,
  frozen) into the candidate on the heads the run does not train (the held-out tasks'; with
  ``lwf_heads: all`` on every head), so heads nobody trains keep their behaviour. With
  ``reference: start`` the model held to is the one training starts from (for example the experts
  merged into the champion) instead of the champion. Heads other than the batch's own are held fixed
  in this term (their gradient would only be noise that Adam amplifies); the shared encoder is what it
  constrains.
  The frozen model's logits are kept per example, so only the first epoch pays for its forward pass.
  ``lwf_feature_weight`` adds a representation-level term: the candidate's pooled features are held to
  the frozen model's (relative squared error), which constrains the shared encoder for every head,
  including heads no batch asks about.
* **EWC** (Kirkpatrick et al. 2017): ``lambda/2 * sum_i F_i (theta_i - theta*_i)^2`` with the diagonal
  Fisher of the champion on general data (public texts labelled by the champion's own predictions),
  scaled to mean 1 so that ``ewc_lambda`` means the same for any model size.
* **Replay**: a share of the batches comes from the public labelled slices (what large v0 was
  trained on), with their hard labels.
* **Head realignment** (``realign_heads``): after training, each head the run did not train is refit
  in closed form (ridge least squares on the candidate's pooled features) so that on the transfer
  texts it gives the reference's logits. The encoder moved under those heads; the refit moves them
  with it, without any of their tasks' data.
"""

from __future__ import annotations

import copy
from collections.abc import Collection, Mapping, Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from fanbu.config import Strict
from fanbu.errors import ConfigError
from fanbu.feedback.shared.context import FeedbackContext, Labeled
from fanbu.feedback.shared.soft_losses import is_replay
from fanbu.models.encoder import EncoderHandle
from fanbu.train.distill.losses import kd_loss
from fanbu.train.terms import Batch, LossTerm


class ContinualConfig(Strict):
    """Safeguards against forgetting; every one is off at its default (0)."""

    lwf_weight: float = Field(
        0.0, ge=0, description="Weight of the LwF term (distil the reference on the heads it holds); 0: off."
    )
    lwf_temperature: float = Field(2.0, gt=0, description="Softmax temperature of the LwF term.")
    lwf_heads: Literal["untrained", "all"] = Field(
        "untrained",
        description="untrained: LwF holds the heads this run does not train (the old tasks, as in LwF); "
        "all: also the heads being trained, pulling their outputs back towards the reference.",
    )
    lwf_feature_weight: float = Field(
        0.0,
        ge=0,
        description="Weight of holding the candidate's pooled features to the reference's on every batch "
        "(squared error relative to the reference's norm); 0: off.",
    )
    ewc_lambda: float = Field(
        0.0, ge=0, description="Strength of the EWC penalty (Fisher scaled to mean 1); 0: off."
    )
    fisher_samples: int = Field(128, ge=1, description="Public texts used to estimate the diagonal Fisher.")
    replay_fraction: float = Field(
        0.0,
        ge=0,
        le=0.9,
        description="Share of training batches drawn from the public labelled slices; 0: off.",
    )
    realign_heads: bool = Field(
        False,
        description="After training, refit the heads the run did not train so that on the transfer texts "
        "they reproduce the reference's logits (ridge least squares on the pooled features).",
    )
    realign_samples: int = Field(1024, ge=16, description="Transfer texts the realignment is fit on.")
    realign_ridge: float = Field(
        1e-3, gt=0, description="Ridge penalty of the realignment, relative to the features' mean energy."
    )
    reference: Literal["champion", "start"] = Field(
        "champion",
        description="The model LwF and EWC hold the candidate to: the champion, or the model training "
        "starts from (the merged experts when a strategy starts from a merge; otherwise the champion).",
    )

    @property
    def enabled(self) -> bool:
        """Whether any safeguard is on."""
        return self.holds or self.ewc_lambda > 0 or self.replay_fraction > 0 or self.realign_heads

    @property
    def holds(self) -> bool:
        """Whether an LwF term (on logits or on features) is on."""
        return self.lwf_weight > 0 or self.lwf_feature_weight > 0


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(getattr(model, "module", None), nn.Module) else model


class LwF:
    """``weight * mean over heads of T^2 KL(previous_T || candidate_T)`` on each training batch, plus
    ``feature_weight * mean ||pooled - previous pooled||^2 / ||previous pooled||^2``.

    The batch inputs are fed to the previous version as they are: the candidate must share its
    tokenizer (it does, being a copy of it).
    """

    name = "lwf"

    def __init__(
        self,
        previous: EncoderHandle,
        weight: float,
        temperature: float,
        skip: Collection[str] = (),
        feature_weight: float = 0.0,
    ) -> None:
        self.previous = previous
        self.weight = weight
        self.feature_weight = feature_weight
        self.temperature = temperature
        self.heads = sorted(h for h in previous.labels if h not in skip) if weight > 0 else []
        if weight > 0 and not self.heads:
            raise ConfigError(
                "LwF has no head to hold: this run trains every head of the previous version; "
                "set continual.lwf_heads: all or lwf_weight: 0"
            )
        # (replay?, task, example index) -> the previous version's pooled features and logits on every
        # head, (hidden + sum of labels,): the previous version is frozen and in eval mode, so later
        # epochs reuse the first one's outputs
        self._cache: dict[tuple[bool, str, int], Tensor] = {}
        self._widths = [previous.model.hidden_size] + [len(previous.labels[h]) for h in self.heads]

    @torch.no_grad()
    def _compute(self, batch: Batch) -> Tensor:
        model = self.previous.model
        was_training = model.training
        model.eval()
        try:
            device = next(model.parameters()).device
            inputs = {k: v.to(device) for k, v in batch.inputs.items()}
            pooled = model.embed(**inputs)  # (batch, hidden)
            outputs = [pooled.float()] + [model.heads[h](pooled).float() for h in self.heads]
            return torch.cat(outputs, dim=-1).cpu()  # (batch, hidden + sum of labels)
        finally:
            model.train(was_training)

    @torch.no_grad()
    def prefill(self, task: str, pooled: Tensor) -> None:
        """Keep the previous version's outputs for the examples of ``task`` (not replay) from its pooled
        features ``(examples, hidden)``, row i for example i, computed elsewhere (for example once per
        context for the champion), so that the first epoch need not run it."""
        model = self.previous.model
        features = pooled.float().to(next(model.parameters()).device)  # (examples, hidden)
        rows = torch.cat([features] + [model.heads[h](features).float() for h in self.heads], dim=-1)
        for index, row in enumerate(rows.cpu()):
            self._cache[(False, task, index)] = row

    def _previous(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        """The previous version's pooled features ``(batch, hidden)`` and logits per head ``(batch, labels_h)``."""
        if batch.task is None or batch.indices is None:
            rows = self._compute(batch)  # (batch, hidden + sum of labels); no identity to cache by
        else:
            keys = [(is_replay(batch), batch.task, int(i)) for i in batch.indices.tolist()]
            if any(k not in self._cache for k in keys):
                for key, row in zip(keys, self._compute(batch), strict=True):
                    self._cache[key] = row
            rows = torch.stack([self._cache[k] for k in keys])  # (batch, hidden + sum of labels)
        pooled, *logits = rows.split(self._widths, dim=-1)
        return pooled, dict(zip(self.heads, logits, strict=True))

    def losses(self, outputs: Mapping[str, Tensor], batch: Batch, model: nn.Module) -> Mapping[str, Tensor]:
        if "pooled" not in outputs:
            raise ValueError("LwF needs outputs['pooled']; train with distill_forward")
        core = _unwrap(model)
        old_pooled, old = self._previous(batch)
        found: dict[str, Tensor] = {}
        if self.feature_weight > 0:
            reference = old_pooled.to(outputs["pooled"].device)  # (batch, hidden)
            error = (outputs["pooled"].float() - reference).pow(2).sum(-1)  # (batch,)
            relative = error / reference.pow(2).sum(-1).clamp_min(1e-12)  # (batch,)
            found["lwf_features"] = self.feature_weight * relative.mean()
        if self.weight == 0:
            return found
        pooled = core.dropout(outputs["pooled"])  # (batch, hidden), as the model's own forward sees it
        terms = []
        for head in self.heads:
            if head == batch.task:
                student = outputs["logits"]  # (batch, labels_h), the head being trained
            else:  # the head stays as it is; only the shared encoder is held to the old outputs
                layer = core.heads[head]
                student = F.linear(pooled, layer.weight.detach(), layer.bias.detach())  # (batch, labels_h)
            terms.append(kd_loss(student, old[head].to(student.device), self.temperature))
        found["lwf"] = self.weight * torch.stack(terms).mean()
        return found


class EWC:
    """``lambda / 2 * sum_i F_i (theta_i - anchor_i)^2`` over the parameters the Fisher covers."""

    name = "ewc"

    def __init__(self, fisher: Mapping[str, Tensor], anchor: Mapping[str, Tensor], strength: float) -> None:
        self.fisher = dict(fisher)
        self.anchor = dict(anchor)
        self.strength = strength

    def losses(self, outputs: Mapping[str, Tensor], batch: Batch, model: nn.Module) -> Mapping[str, Tensor]:
        params = dict(_unwrap(model).named_parameters())
        penalty = outputs["logits"].sum() * 0.0
        for name, fisher in self.fisher.items():
            param = params[name]
            if fisher.device != param.device:
                self.fisher[name] = fisher = fisher.to(param.device)
                self.anchor[name] = self.anchor[name].to(param.device)
            penalty = penalty + (fisher * (param - self.anchor[name]) ** 2).sum()
        return {"ewc": 0.5 * self.strength * penalty}


class ReplayLoss:
    """Cross-entropy on replay batches only (hard labels of the public slices)."""

    name = "replay"

    def losses(self, outputs: Mapping[str, Tensor], batch: Batch, model: nn.Module) -> Mapping[str, Tensor]:
        if not is_replay(batch):
            return {}
        return {"replay": F.cross_entropy(outputs["logits"], batch.targets["labels"])}


def general_texts(data: Mapping[str, Sequence[str]], samples: int, seed: int) -> list[tuple[str, str]]:
    """Up to ``samples`` (head, text) pairs spread evenly over the heads, drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    orders = {h: list(rng.permutation(len(t))) for h, t in sorted(data.items()) if len(t)}
    picked: list[tuple[str, str]] = []
    while len(picked) < samples and any(orders.values()):
        for head, order in orders.items():
            if order and len(picked) < samples:
                picked.append((head, data[head][int(order.pop(0))]))
    return picked


def fisher_diagonal(champion: EncoderHandle, pairs: Sequence[tuple[str, str]]) -> dict[str, Tensor]:
    """Diagonal Fisher of ``champion`` on (head, text) pairs labelled by its own predictions, mean 1."""
    if not pairs:
        raise ConfigError(
            "EWC needs public texts for the Fisher; give the context public slices or set ewc_lambda: 0"
        )
    model = copy.deepcopy(champion.model).eval()  # gradients never touch the champion
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    fisher = {n: torch.zeros_like(p) for n, p in params.items()}
    device = next(model.parameters()).device
    for head, text in pairs:
        model.zero_grad(set_to_none=True)
        inputs = {k: v.to(device) for k, v in champion.tokenize([text]).items()}
        logits = model(**inputs, head=head)  # (1, labels)
        F.cross_entropy(logits, logits.argmax(dim=-1).detach()).backward()
        for name, param in params.items():
            if param.grad is not None:
                fisher[name] += param.grad.detach() ** 2
    mean = torch.cat([f.reshape(-1) for f in fisher.values()]).mean().clamp_min(1e-20)
    return {n: (f / mean).detach() for n, f in fisher.items() if bool(f.any())}


def replay_data(ctx: FeedbackContext, heads: Mapping[str, Sequence[str]]) -> dict[str, Labeled]:
    """The public labelled slices that have a head in the candidate (``heads``: head -> label names)."""
    return {n: (list(t), list(y)) for n, (t, y) in sorted(ctx.public.items()) if n in heads and len(t)}


def reference_model(
    config: ContinualConfig, ctx: FeedbackContext, start: EncoderHandle | None
) -> EncoderHandle:
    """The model the safeguards hold the candidate to: the champion, or a frozen copy of ``start``."""
    if config.reference == "start" and start is not None:
        reference = copy.deepcopy(start)
        reference.model.eval()
        return reference
    return ctx.large


@torch.no_grad()
def realign_heads(
    candidate: EncoderHandle,
    reference: EncoderHandle,
    heads: Sequence[str],
    texts: Sequence[str],
    ridge: float = 1e-3,
    reference_features: Tensor | None = None,
) -> dict[str, float]:
    """Refit ``heads`` of ``candidate`` so that on ``texts`` they give ``reference``'s logits.

    Ridge least squares of the reference's logits on the candidate's pooled features (with a bias);
    ``ridge`` is relative to the features' mean energy. Returns each head's agreement with the
    reference's predictions on ``texts`` after the refit. ``reference_features`` ``(texts, hidden)``
    are the reference's pooled features of ``texts`` when already computed.
    """
    if not texts:
        raise ConfigError("realign_heads needs transfer texts; give the context public or collected texts")
    missing = [h for h in heads if h not in candidate.labels or h not in reference.labels]
    if missing:
        raise ConfigError(f"realign_heads: heads {missing} are missing from the candidate or the reference")
    new, _ = candidate.encode(texts)  # (n, hidden)
    if reference_features is None:
        _, targets = reference.encode(texts, heads)  # head -> (n, labels)
    else:
        pooled = reference_features.float().to(next(reference.model.parameters()).device)  # (n, hidden)
        targets = {h: reference.model.heads[h](pooled).float().cpu() for h in heads}  # head -> (n, labels)
    design = torch.cat([new, torch.ones(len(new), 1)], dim=1).double()  # (n, hidden + 1)
    gram = design.T @ design  # (hidden + 1, hidden + 1)
    penalty = ridge * float(gram.diagonal()[:-1].mean())
    gram[:-1, :-1] += penalty * torch.eye(gram.shape[0] - 1, dtype=gram.dtype)
    agreement = {}
    for head in heads:
        layer = candidate.model.heads[head]
        target = targets[head]  # (n, labels)
        solution = torch.linalg.solve(gram, design.T @ target.double().cpu())  # (hidden + 1, labels)
        layer.weight.copy_(solution[:-1].T.to(layer.weight))
        layer.bias.copy_(solution[-1].to(layer.bias))
        refit = layer(new.to(layer.weight))  # (n, labels)
        agreement[head] = float((refit.argmax(-1).cpu() == target.argmax(-1)).float().mean())
    return agreement


def continual_strategies(
    config: ContinualConfig,
    ctx: FeedbackContext,
    seed: int,
    start: EncoderHandle | None = None,
    trained: Collection[str] = (),
    reference: EncoderHandle | None = None,
) -> list[LossTerm]:
    """The loss terms of the safeguards ``config`` turns on (replay's extra batches come from the plan).

    ``start`` is the model before training; with ``reference: start`` LwF and EWC hold the candidate
    to a frozen copy of it instead of the champion. ``trained`` names the heads the run trains, which
    LwF leaves alone unless ``lwf_heads`` is ``all``. ``reference``, when given, is that model already
    made (:func:`reference_model`), so a caller that needs it too does not copy the start twice.
    """
    strategies: list[LossTerm] = []
    if not config.holds and config.ewc_lambda == 0:
        return [ReplayLoss()] if config.replay_fraction > 0 else []
    reference = reference if reference is not None else reference_model(config, ctx, start)
    if config.holds:
        skip = trained if config.lwf_heads == "untrained" else ()
        strategies.append(
            LwF(reference, config.lwf_weight, config.lwf_temperature, skip, config.lwf_feature_weight)
        )
    if config.ewc_lambda > 0:
        texts = {n: texts for n, (texts, _) in replay_data(ctx, reference.labels).items()}
        fisher = fisher_diagonal(reference, general_texts(texts, config.fisher_samples, seed))
        anchor = {n: p.detach().clone() for n, p in reference.model.named_parameters() if n in fisher}
        strategies.append(EWC(fisher, anchor, config.ewc_lambda))
    if config.replay_fraction > 0:
        strategies.append(ReplayLoss())
    return strategies
