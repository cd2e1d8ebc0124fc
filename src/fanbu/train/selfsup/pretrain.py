"""Self-supervised continued pretraining of an encoder on unlabeled text, through the one loop.

Two objectives (seed technique 17: pretext tasks that learn features without labels):

- ``mlm``: masked-language-model continued pretraining, domain-adaptive pretraining as in
  https://arxiv.org/abs/2004.10964. A prediction head (dense, GELU, LayerNorm, a decoder tied to the
  encoder's input embeddings) is built fresh, since sentence encoders ship without theirs; it first
  trains alone for ``head_warmup`` of the steps with the encoder frozen, so that a random head does not
  send noise into the encoder, then both train. The head is dropped at the end.
- ``simcse``: the unsupervised contrastive objective of https://arxiv.org/abs/2104.08821 on the pooled
  features (two dropout views of each text, in-batch negatives): it keeps a sentence encoder a sentence
  encoder while moving it toward the domain's text.

The classification heads are left as they are; what follows (fine-tuning, distillation) trains them on
the moved features. Masks are drawn per batch from ``(seed, epoch, the batch's indices)``, so a rerun
with the same seed sees the same masks.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from fanbu.config import Strict
from fanbu.errors import DomainError
from fanbu.models.encoder import EncoderHandle
from fanbu.train.batching import PlanItem, TaskData, TextPlan
from fanbu.train.config import TrainConfig
from fanbu.train.loop import Trainer
from fanbu.train.selfsup.contrastive import SimCSELoss
from fanbu.train.selfsup.masking import IGNORE, mask_tokens
from fanbu.train.terms import Batch

Objective = Literal["mlm", "simcse"]


class SSLConfig(Strict):
    """Settings of self-supervised continued pretraining (the ``ssl`` derive stage and feedback option)."""

    objective: Objective = Field(
        "mlm",
        description="mlm: masked-language-model continued pretraining (a fresh tied head); simcse: the "
        "contrastive sentence objective on pooled features (dropout views, in-batch negatives).",
    )
    steps: int = Field(200, ge=1, description="Optimiser steps (the pool is cycled when it is smaller).")
    batch_size: int = Field(
        16, ge=2, description="Texts per step (SimCSE's negatives are the batch's others)."
    )
    lr: float = Field(5e-5, gt=0, description="Peak learning rate of the encoder.")
    warmup_ratio: float = Field(0.06, ge=0, lt=1, description="Linear warm-up share of the steps.")
    weight_decay: float = Field(0.01, ge=0)
    mask_rate: float = Field(0.15, gt=0, lt=1, description="mlm: share of real tokens chosen for prediction.")
    head_warmup: float = Field(
        0.2, ge=0, lt=1, description="mlm: share of the steps in which only the new head trains."
    )
    head_lr: float = Field(
        1e-3, gt=0, description="mlm: learning rate of the new head while it trains alone."
    )
    temperature: float = Field(
        0.05, gt=0, description="simcse: softmax temperature of the cosine similarities."
    )
    max_texts: int | None = Field(
        None, ge=1, description="Cap on the pool's texts (a seeded sample); null: all."
    )


@dataclass
class SSLResult:
    """What a pretraining run did: its objective, steps, pool size and the mean loss of its first and
    last tenth of steps (a falling loss says the pretext task was learned)."""

    objective: str
    steps: int
    texts: int
    first_loss: float
    last_loss: float
    losses: list[float] = field(default_factory=list, repr=False)

    def summary(self) -> dict[str, float | int | str]:
        return {
            "objective": self.objective,
            "steps": self.steps,
            "texts": self.texts,
            "first_loss": self.first_loss,
            "last_loss": self.last_loss,
        }


class MaskedLMHead(nn.Module):
    """BERT's prediction head on a model's own input embeddings: dense, GELU, LayerNorm, tied decoder.

    The embedding matrix is read, not owned (it belongs to the encoder), so that an optimiser over the
    encoder and this head holds it once.
    """

    def __init__(self, embeddings: nn.Embedding, hidden_size: int, eps: float = 1e-12) -> None:
        super().__init__()
        width = embeddings.weight.shape[1]
        self.dense = nn.Linear(hidden_size, width)
        self.norm = nn.LayerNorm(width, eps=eps)
        self.bias = nn.Parameter(torch.zeros(embeddings.weight.shape[0]))
        self._tied = (embeddings,)  # a tuple: not registered as a submodule

    def forward(self, hidden: Tensor) -> Tensor:
        """Vocabulary logits ``(n, vocab)`` of hidden states ``(n, hidden)``."""
        return F.linear(self.norm(F.gelu(self.dense(hidden))), self._tied[0].weight, self.bias)


class MaskedLMLoss:
    """A loss term: cross-entropy of the tied head's predictions at the masked positions.

    The batch carries the masked ids as ``inputs['input_ids']`` and the originals at the chosen
    positions as ``targets['mlm_labels']`` (``IGNORE`` elsewhere); only chosen positions are decoded.
    """

    name = "mlm"

    def __init__(self, head: MaskedLMHead, weight: float = 1.0) -> None:
        self.head, self.weight = head, weight
        self.seen: list[float] = []

    def modules(self) -> list[nn.Module]:
        return [self.head]

    def losses(self, outputs: Mapping[str, Tensor], batch: Batch, model: nn.Module) -> Mapping[str, Tensor]:
        labels = batch.targets["mlm_labels"]  # (batch, seq)
        chosen = labels != IGNORE  # (batch, seq)
        if not bool(chosen.any()):
            return {}
        hidden = model.encoder(**batch.inputs).last_hidden_state  # (batch, seq, hidden)
        logits = self.head(hidden[chosen])  # (chosen, vocab)
        loss = F.cross_entropy(logits, labels[chosen])
        self.seen.append(float(loss.detach()))
        return {"mlm": self.weight * loss}


class _Recorded(SimCSELoss):
    """SimCSE's term, keeping each step's loss for the result."""

    def __init__(self, temperature: float) -> None:
        super().__init__(temperature=temperature)
        self.seen: list[float] = []

    def losses(self, outputs: Mapping[str, Tensor], batch: Batch, model: nn.Module) -> Mapping[str, Tensor]:
        out = super().losses(outputs, batch, model)
        for value in out.values():
            self.seen.append(float(value.detach()))
        return out


class MaskedPlan(TextPlan):
    """A :class:`TextPlan` whose batches are masked for MLM, the masks drawn from the batch's own seed."""

    def __init__(
        self, texts: Sequence[str], handle: EncoderHandle, batch_size: int, seed: int, rate: float
    ) -> None:
        super().__init__([TaskData("ssl", texts)], handle.tokenize, batch_size, seed=seed)
        tokenizer = handle.tokenizer
        if tokenizer.mask_token_id is None:
            raise DomainError(
                "ssl.objective mlm: the tokenizer of this model has no mask token; use objective: simcse"
            )
        self.mask_id = int(tokenizer.mask_token_id)
        self.vocab = len(tokenizer)
        self.special = set(tokenizer.all_special_ids)
        self.rate = rate
        self.epoch = 0

    def schedule(self, epoch: int) -> list[PlanItem]:
        self.epoch = epoch
        return super().schedule(epoch)

    def make(self, item: PlanItem) -> Batch:
        batch = super().make(item)
        key = zlib.crc32(repr((self.seed, self.epoch, item.indices)).encode())
        generator = torch.Generator().manual_seed(key)
        ids, mask = batch.inputs["input_ids"], batch.inputs["attention_mask"]
        masked, labels = mask_tokens(ids, mask, self.mask_id, self.vocab, self.special, self.rate, generator)
        batch.inputs["input_ids"] = masked
        batch.targets["mlm_labels"] = labels
        return batch


def _no_outputs(model: nn.Module, batch: Batch) -> dict[str, Tensor]:
    return {}  # the terms run the encoder themselves


def pool_texts(texts: Sequence[str], cap: int | None, seed: int, setting: str) -> list[str]:
    """The distinct non-empty texts of ``texts`` in first-seen order, a seeded sample of ``cap`` of them.

    Raises:
        DomainError: nothing is left; the message names ``setting``.
    """
    pool = list(dict.fromkeys(t for t in texts if t and t.strip()))
    if not pool:
        raise DomainError(
            f"{setting}: the unlabeled pool is empty; give unlabeled text (the domain's training or transfer "
            "texts, the swarm's collected or unlabeled text) or remove the ssl setting"
        )
    if cap is not None and len(pool) > cap:
        order = torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))[:cap]
        pool = [pool[i] for i in sorted(order.tolist())]
    return pool


def _train_config(
    config: SSLConfig, steps: int, lr: float, seed: int, pool: int, warmup: float
) -> TrainConfig:
    per_epoch = math.ceil(pool / config.batch_size)
    return TrainConfig(
        epochs=math.ceil(steps / per_epoch),
        max_steps=steps,
        batch_size=config.batch_size,
        lr=lr,
        warmup_ratio=warmup,
        weight_decay=config.weight_decay,
        seed=seed,
        restore_best=False,
        progress=False,
        eval_every=None,
        checkpoint_every=None,
    )


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if values else float("nan")


def continue_pretraining(
    handle: EncoderHandle, texts: Sequence[str], config: SSLConfig, seed: int = 0, setting: str = "ssl"
) -> SSLResult:
    """Pretrain ``handle``'s encoder in place on ``texts`` with ``config.objective``; see the module doc.

    Raises:
        DomainError: the pool is empty, or MLM is asked of a tokenizer without a mask token (the message
            names ``setting``).
    """
    pool = pool_texts(texts, config.max_texts, seed, setting)
    model = handle.model
    if config.objective == "simcse":
        term = _Recorded(config.temperature)
        plan = TextPlan([TaskData("ssl", pool)], handle.tokenize, config.batch_size, seed=seed)
        train = _train_config(config, config.steps, config.lr, seed, len(pool), config.warmup_ratio)
        Trainer(model, plan, train, [term], forward=_no_outputs, description="ssl simcse").fit(resume=False)
        seen = term.seen
    else:
        embeddings = model.encoder.get_input_embeddings()
        eps = float(getattr(model.encoder.config, "layer_norm_eps", 1e-12))
        with torch.random.fork_rng(devices=[]):  # the head's start depends on the seed alone
            torch.manual_seed(seed)
            head = MaskedLMHead(embeddings, model.hidden_size, eps).to(embeddings.weight.device)
        term = MaskedLMLoss(head)
        plan = MaskedPlan(pool, handle, config.batch_size, seed, config.mask_rate)
        alone = int(config.steps * config.head_warmup)
        if alone:
            frozen = [p for p in model.parameters() if p.requires_grad]
            for p in frozen:
                p.requires_grad_(False)
            try:
                head_only = _train_config(config, alone, config.head_lr, seed, len(pool), 0.0)
                Trainer(
                    head,
                    plan,
                    head_only,
                    [_HeadOnly(term, model)],
                    forward=_no_outputs,
                    description="ssl mlm head",
                ).fit(resume=False)
            finally:
                for p in frozen:
                    p.requires_grad_(True)
        rest = config.steps - alone
        if rest:
            both = _train_config(config, rest, config.lr, seed + 1, len(pool), config.warmup_ratio)
            Trainer(model, plan, both, [term], forward=_no_outputs, description="ssl mlm").fit(resume=False)
        seen = term.seen
    tenth = max(1, len(seen) // 10)
    return SSLResult(config.objective, len(seen), len(pool), _mean(seen[:tenth]), _mean(seen[-tenth:]), seen)


class _HeadOnly:
    """The MLM term while only its head trains: the loop's model is the head, the encoder is read."""

    name = "mlm"

    def __init__(self, term: MaskedLMLoss, model: nn.Module) -> None:
        self.term, self.model = term, model

    def losses(self, outputs: Mapping[str, Tensor], batch: Batch, model: nn.Module) -> Mapping[str, Tensor]:
        return self.term.losses(outputs, batch, self.model)
