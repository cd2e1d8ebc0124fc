"""Running calibration data through a handle: batches, the loss Taylor scores use, activation hooks.

Activation statistics follow Wanda: forward hooks on every ``nn.Linear`` sum the squared inputs per
input feature over real (non-padding) tokens, so ``||X_j||`` is known for each column ``j``. Layer
scores follow ShortGPT's block influence: ``1 - cos(layer input, layer output)`` averaged over tokens,
so a layer that barely changes the residual stream scores low. Mean absolute inputs per feature are
kept too, for Minitron's activation importance (:mod:`.minitron`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fanbu.derive.prune.config import Calibration, PruneError
from fanbu.derive.prune.layout import Layout
from fanbu.models.causal_lm import CausalLMHandle
from fanbu.models.encoder import EncoderHandle

Handle = EncoderHandle | CausalLMHandle
CalibBatch = dict[str, Tensor]


def require_calibration(calibration: Calibration | None, why: str) -> Calibration:
    """``calibration``, or a :class:`PruneError` saying what needs it and how to pass it."""
    if calibration is None:
        raise PruneError(
            f"{why} needs calibration data: pass calibration=Calibration(texts=[...]) (encoders scored "
            "with taylor also need labels=[...] and head=...), or use importance: magnitude"
        )
    return calibration


def encoder_head(handle: EncoderHandle, calibration: Calibration) -> str | None:
    """The head calibration runs through: the one named, else the only one, else ``None``."""
    heads = list(handle.model.heads)
    if calibration.head is not None:
        if calibration.head not in heads:
            raise PruneError(
                f"Calibration.head={calibration.head!r} is not a head of the model (heads: "
                f"{', '.join(heads) or 'none'}); set head to one of them"
            )
        return calibration.head
    return heads[0] if len(heads) == 1 else None


def make_batches(handle: Handle, calibration: Calibration) -> list[CalibBatch]:
    """Tokenised calibration batches on the model's device (``labels`` included when given)."""
    device = next(handle.model.parameters()).device
    batches = []
    for texts, labels in calibration.batches():
        batch = {k: v.to(device) for k, v in handle.tokenize(texts).items()}
        if labels is not None:
            batch["labels"] = torch.tensor(labels, dtype=torch.long, device=device)
        batches.append(batch)
    return batches


def loss_function(handle: Handle, calibration: Calibration) -> Callable[[CalibBatch], Tensor]:
    """The loss Taylor importance differentiates: the task loss (encoder) or the LM loss (causal LM)."""
    if isinstance(handle, CausalLMHandle):

        def lm_loss(batch: CalibBatch) -> Tensor:
            labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)  # (batch, seq)
            out = handle.model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels
            )
            return out.loss

        return lm_loss
    head = encoder_head(handle, calibration)
    if calibration.labels is None or head is None:
        raise PruneError(
            "importance: taylor on an encoder needs the task loss: give Calibration(labels=[...]) and "
            f"head=... (heads: {', '.join(handle.model.heads) or 'none; add one with add_head'})"
        )
    num_labels = handle.model.heads[head].out_features
    bad = [y for y in calibration.labels if not 0 <= int(y) < num_labels]
    if bad:
        raise PruneError(
            f"Calibration.labels: {bad[:3]} out of range for head {head!r} ({num_labels} labels)"
        )

    def task_loss(batch: CalibBatch) -> Tensor:
        logits = handle.model(batch["input_ids"], batch["attention_mask"], head=head)  # (batch, labels)
        return F.cross_entropy(logits, batch["labels"])

    return task_loss


def run_forward(handle: Handle, calibration: Calibration, batch: CalibBatch) -> None:
    """One forward pass for activation statistics (through a head when there is one to use)."""
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    if isinstance(handle, CausalLMHandle):
        handle.model(**inputs)
        return
    head = encoder_head(handle, calibration)
    if head is None:
        handle.model.embed(**inputs)
    else:
        handle.model(**inputs, head=head)


@dataclass
class ActivationStats:
    """Input norms of every linear layer and block influence of every layer, accumulated by hooks."""

    mask: Tensor | None = None
    squares: dict[str, Tensor] = field(default_factory=dict)
    abs_sums: dict[str, Tensor] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    influence: Tensor | None = None
    tokens: Tensor | None = None

    def input_norms(self) -> dict[str, Tensor]:
        """``||X_j||`` per input feature of each linear layer, keyed by module name."""
        return {name: sq.sqrt() for name, sq in self.squares.items()}

    def mean_abs(self) -> dict[str, Tensor]:
        """Mean ``|X_j|`` per input feature of each linear layer over the calibration tokens (Minitron)."""
        return {name: total / max(self.rows[name], 1) for name, total in self.abs_sums.items()}

    def block_influence(self) -> Tensor:
        """``(layers,)`` mean ``1 - cos(input, output)`` over the calibration tokens."""
        assert self.influence is not None and self.tokens is not None
        return self.influence / self.tokens.clamp(min=1.0)

    def _rows(self, x: Tensor) -> Tensor:
        """Flatten ``(batch, seq, width)`` to the real tokens ``(tokens, width)``."""
        if x.ndim == 3 and self.mask is not None and tuple(x.shape[:2]) == tuple(self.mask.shape):
            return x[self.mask.bool()]
        return x.reshape(-1, x.shape[-1])


@contextlib.contextmanager
def collect_activations(model: nn.Module, layout: Layout) -> Iterator[ActivationStats]:
    """Hook every linear layer and every layer of the stack while the block runs forward passes."""
    stats = ActivationStats()
    layers = layout.layer_modules(model)
    stats.influence = torch.zeros(len(layers))
    stats.tokens = torch.zeros(len(layers))
    handles = []

    def linear_hook(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
            rows = stats._rows(args[0].detach().float())  # (tokens, in_features)
            squares = rows.pow(2).sum(dim=0).cpu()  # (in_features,)
            stats.squares[name] = stats.squares.get(name, 0) + squares
            stats.abs_sums[name] = stats.abs_sums.get(name, 0) + rows.abs().sum(dim=0).cpu()  # (in_features,)
            stats.rows[name] = stats.rows.get(name, 0) + int(rows.shape[0])

        return hook

    def layer_hook(index: int) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
            x_in = args[0] if args else kwargs["hidden_states"]  # (batch, seq, hidden)
            x_out = output[0] if isinstance(output, tuple) else output  # (batch, seq, hidden)
            cos = F.cosine_similarity(
                stats._rows(x_in.detach().float()), stats._rows(x_out.detach().float()), dim=-1
            )
            stats.influence[index] += (1.0 - cos).sum().cpu()  # type: ignore[index]
            stats.tokens[index] += cos.numel()  # type: ignore[index]

        return hook

    try:
        for name, module in model.named_modules():
            if isinstance(module, nn.Linear):
                handles.append(module.register_forward_pre_hook(linear_hook(name)))
        for index, layer in enumerate(layers):
            handles.append(layer.register_forward_hook(layer_hook(index), with_kwargs=True))
        yield stats
    finally:
        for hook_handle in handles:
            hook_handle.remove()
