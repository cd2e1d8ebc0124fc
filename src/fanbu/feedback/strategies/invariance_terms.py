"""The loss terms and data edits of the ``invariance`` feedback option.

* :class:`InputGradientPenalty` (right for the right reasons, Ross et al. 2017): the squared gradient of
  the candidate's summed log-probabilities with respect to the word embeddings at the positions of
  flagged (shortcut) words; zero on a batch that holds none of them.
* :class:`RiskVariance` (V-REx, Krueger et al. 2021): the variance of the distillation risk across the
  domains as environments. A batch holds one domain, so the other domains' risks are their latest
  batch's (constants); the gradient is the variance's gradient with respect to the current domain's risk.
* :func:`counterfactual_targets`: copies of the transfer texts that hold a flagged word, with the word
  swapped for a random vocabulary word or removed, and the teachers' soft labels of the original kept.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from fanbu.attribution.counterfactual import Edit, contains_any, edit_words
from fanbu.feedback.shared.soft_losses import is_replay, weighted_kd
from fanbu.feedback.shared.soft_targets import SoftTargets
from fanbu.train.terms import Batch


def word_patterns(tokenizer, words: Sequence[str]) -> list[tuple[int, ...]]:
    """The token-id sequences a tokenizer gives each word (as typed and lower-cased, with and without a
    leading space, for tokenizers that mark word starts), deduplicated."""
    found: dict[tuple[int, ...], None] = {}
    for word in words:
        for form in dict.fromkeys((word, word.lower(), " " + word, " " + word.lower())):
            ids = tuple(tokenizer(form, add_special_tokens=False)["input_ids"])
            if ids:
                found[ids] = None
    return list(found)


def flagged_positions(input_ids: Tensor, patterns: Sequence[tuple[int, ...]]) -> Tensor:
    """``(batch, seq)`` True where a token belongs to an occurrence of any of ``patterns``."""
    _batch, seq = input_ids.shape
    mask = torch.zeros_like(input_ids, dtype=torch.bool)  # (batch, seq)
    for pattern in patterns:
        length = len(pattern)
        if length > seq:
            continue
        windows = input_ids.unfold(1, length, 1)  # (batch, seq - length + 1, length)
        target = torch.tensor(pattern, dtype=input_ids.dtype, device=input_ids.device)
        match = (windows == target).all(dim=-1)  # (batch, seq - length + 1)
        for offset in range(length):
            mask[:, offset : offset + seq - length + 1] |= match
    return mask


class InputGradientPenalty:
    """``weight * sum over flagged positions of ||d sum_k log p_k / d embedding||^2 / batch``.

    Args:
        model: The classifier trained; a forward hook on its word-embedding layer keeps that layer's
            output of the last forward pass with gradients (call :meth:`close` when training is done).
        patterns: Token-id sequences of the flagged words (:func:`word_patterns`).
        weight: Multiplier of the term.
    """

    name = "rrr"

    def __init__(self, model: nn.Module, patterns: Sequence[tuple[int, ...]], weight: float) -> None:
        self.patterns = list(patterns)
        self.weight = weight
        self.embedded: Tensor | None = None
        embedding = model.encoder.get_input_embeddings()
        self._hook: RemovableHandle | None = embedding.register_forward_hook(self._keep)

    def _keep(self, module: nn.Module, args: object, output: Tensor) -> Tensor:
        if not torch.is_grad_enabled():
            return output
        if not output.requires_grad:  # frozen embeddings: the penalty still needs this gradient
            output = output.detach().requires_grad_()
        self.embedded = output  # (batch, seq, width)
        return output

    def close(self) -> None:
        """Remove the forward hook."""
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def losses(self, outputs: Mapping[str, Tensor], batch: Batch, model: nn.Module) -> Mapping[str, Tensor]:
        logits = outputs["logits"]  # (batch, C)
        if is_replay(batch):
            return {}
        mask = flagged_positions(batch.inputs["input_ids"], self.patterns)  # (batch, seq)
        if not mask.any() or self.embedded is None:
            return {"rrr": logits.sum() * 0.0}
        log_probs = torch.log_softmax(logits.float(), dim=-1)  # (batch, C)
        (grad,) = torch.autograd.grad(
            log_probs.sum(), self.embedded, create_graph=True
        )  # (batch, seq, width)
        per_token = (grad.float() ** 2).sum(dim=-1)  # (batch, seq)
        penalty = (per_token * mask.to(per_token.dtype)).sum() / logits.shape[0]
        return {"rrr": self.weight * penalty}


class RiskVariance:
    """``weight * Var_e(R_e)`` over the domains' distillation risks (V-REx); the other domains' risks are
    those of their latest batch, held constant."""

    name = "vrex"

    def __init__(self, targets: Mapping[str, SoftTargets], weight: float, temperature: float) -> None:
        self.targets = dict(targets)
        self.weight = weight
        self.temperature = temperature
        self.latest: dict[str, float] = {}

    def losses(self, outputs: Mapping[str, Tensor], batch: Batch, model: nn.Module) -> Mapping[str, Tensor]:
        if is_replay(batch) or batch.task not in self.targets or batch.indices is None:
            return {}
        soft = self.targets[batch.task]
        rows = batch.indices.cpu()
        logits = outputs["logits"]  # (batch, C)
        risk = weighted_kd(
            logits, soft.probs[rows].to(logits.device), soft.weights[rows].to(logits.device), self.temperature
        )
        others = [
            torch.tensor(v, device=logits.device) for k, v in sorted(self.latest.items()) if k != batch.task
        ]
        self.latest[batch.task] = float(risk.detach())
        if not others:
            return {"vrex": risk * 0.0}
        risks = torch.stack([risk, *others])  # (environments,)
        return {"vrex": self.weight * ((risks - risks.mean()) ** 2).mean()}

    def state_dict(self) -> dict[str, float]:
        """The latest risk per domain (checkpointed by the loop)."""
        return dict(self.latest)

    def load_state_dict(self, state: Mapping[str, float]) -> None:
        """Restore the latest risks from a checkpoint."""
        self.latest = {k: float(v) for k, v in state.items()}


def counterfactual_targets(
    targets: SoftTargets, words: Sequence[str], edit: Edit, vocabulary: Sequence[str], seed: int
) -> tuple[SoftTargets, int]:
    """``targets`` plus an edited copy of every row whose text holds one of ``words``; the copy keeps the
    row's hard label, soft target, weight and features. Returns the rows and how many were added."""
    if not words:
        return targets, 0
    rng = np.random.default_rng(seed)
    rows = [i for i, text in enumerate(targets.texts) if contains_any(text, words)]
    if not rows:
        return targets, 0
    copies = targets.select(rows)
    copies.texts = [edit_words(t, words, edit, vocabulary, rng) for t in copies.texts]
    features = {
        e: (torch.cat([pooled, copies.features[e][0]]), torch.cat([w, copies.features[e][1]]))
        for e, (pooled, w) in targets.features.items()
    }
    merged = SoftTargets(
        targets.texts + copies.texts,
        targets.sources + copies.sources,
        torch.cat([targets.labels, copies.labels]),
        torch.cat([targets.probs, copies.probs]),
        torch.cat([targets.weights, copies.weights]),
        features,
    )
    return merged, len(rows)
