"""Unit importance: per-parameter scores (magnitude, Taylor, activation) summed over prunable units.

A *scorer* gives every parameter an elementwise score of its shape:

- ``magnitude``: ``|W|``;
- ``taylor``: ``|dL/dW * W|`` (first-order Taylor estimate of the loss change when ``W`` is removed),
  accumulated over calibration batches; the loss is the task loss (encoder) or the LM loss;
- ``activation``: Wanda's ``|W_ij| * ||X_j||`` for each linear layer, ``||X_j||`` being the norm of
  input feature ``j`` over the calibration tokens; layers are scored by block influence instead;
- ``minitron`` (Llama only): unit scores straight from mean activations, see :mod:`.minitron`.

:func:`reduce_scores` then sums the scores along each unit's axes (see :mod:`.layout`): a head's score
is the sum over its query, key, value rows and output-projection columns, and so on. Any scorer
composes with any pruner and any schedule.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from fanbu.derive.prune.calibrate import (
    collect_activations,
    loss_function,
    make_batches,
    require_calibration,
    run_forward,
)
from fanbu.derive.prune.config import Calibration, ImportanceName, PruneError
from fanbu.derive.prune.layout import Family, Layout, encoder_layout, llama_layout
from fanbu.derive.prune.minitron import minitron_scores
from fanbu.models.causal_lm import CausalLMHandle
from fanbu.models.encoder import EncoderHandle

Handle = EncoderHandle | CausalLMHandle


@dataclass
class Scores:
    """Elementwise scores per parameter name, and layer scores when the scorer has its own."""

    params: dict[str, Tensor]
    layers: Tensor | None = None


@dataclass
class UnitImportance:
    """Importance of every prunable unit of a model (higher = more important, kept first).

    Attributes:
        method: The scorer used.
        layers: ``(layers,)``.
        heads: Per layer, ``(heads,)`` for BERT or ``(kv_groups,)`` for Llama.
        qk_channels: BERT, per layer: ``(heads, head_dim)`` query/key channels (empty for Llama).
        vo_channels: BERT, per layer: ``(heads, head_dim)`` value/output channels (empty for Llama).
        ffn: Per layer, ``(ffn,)`` neurons.
        hidden_by_layer: ``(layers, hidden)`` hidden-channel scores from each layer's parameters.
        hidden_shared: ``(hidden,)`` hidden-channel scores from parameters outside the layers.
    """

    method: str
    layers: Tensor
    heads: list[Tensor]
    qk_channels: list[Tensor]
    vo_channels: list[Tensor]
    ffn: list[Tensor]
    hidden_by_layer: Tensor
    hidden_shared: Tensor

    def hidden(self, layers: Sequence[int] | None = None) -> Tensor:
        """``(hidden,)`` channel scores counting only the given layers (all when ``None``)."""
        rows = self.hidden_by_layer if layers is None else self.hidden_by_layer[list(layers)]
        return self.hidden_shared + rows.sum(dim=0)


def layout_of(handle: Handle) -> Layout:
    """The pruning layout of an encoder or causal-LM handle."""
    if isinstance(handle, EncoderHandle):
        return encoder_layout(handle.model)
    if isinstance(handle, CausalLMHandle):
        return llama_layout(handle.model)
    raise PruneError(f"cannot prune a {type(handle).__name__}; pass an EncoderHandle or a CausalLMHandle")


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode (no dropout) for scoring; the previous mode is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def magnitude_scores(handle: Handle, calibration: Calibration | None, layout: Layout) -> Scores:
    """``|W|`` for every parameter (tied parameters once)."""
    return Scores({n: p.detach().abs().float().cpu() for n, p in handle.model.named_parameters()})


def taylor_scores(handle: Handle, calibration: Calibration | None, layout: Layout) -> Scores:
    """``sum over batches |grad * W|``; gradients come from ``torch.autograd.grad`` (``.grad`` untouched)."""
    calibration = require_calibration(calibration, "importance: taylor")
    loss_fn = loss_function(handle, calibration)
    named = list(handle.model.named_parameters())
    params = [p for _, p in named]
    flags = [p.requires_grad for p in params]
    totals = {n: torch.zeros(p.shape, dtype=torch.float32) for n, p in named}
    with _eval_mode(handle.model), torch.enable_grad():
        try:
            for p in params:
                p.requires_grad_(True)
            for batch in make_batches(handle, calibration):
                grads = torch.autograd.grad(loss_fn(batch), params, allow_unused=True)
                for (name, p), grad in zip(named, grads, strict=True):
                    if grad is not None:
                        totals[name] += (grad.detach() * p.detach()).abs().float().cpu()
        finally:
            for p, flag in zip(params, flags, strict=True):
                p.requires_grad_(flag)
    return Scores(totals)


def activation_scores(handle: Handle, calibration: Calibration | None, layout: Layout) -> Scores:
    """Wanda scores ``|W| * ||X||`` of linear weights; layers by block influence."""
    calibration = require_calibration(calibration, "importance: activation")
    model = handle.model
    with _eval_mode(model), torch.no_grad(), collect_activations(model, layout) as stats:
        for batch in make_batches(handle, calibration):
            stats.mask = batch["attention_mask"]
            run_forward(handle, calibration, batch)
    norms = stats.input_norms()
    params = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and name in norms:
            weight = module.weight.detach().abs().float().cpu()  # (out, in)
            params[f"{name}.weight"] = weight * norms[name][None, :]  # (out, in)
    return Scores(params, stats.block_influence())


SCORERS: dict[str, Callable[[Handle, Calibration | None, Layout], Scores]] = {
    "magnitude": magnitude_scores,
    "taylor": taylor_scores,
    "activation": activation_scores,
}


def reduce_scores(layout: Layout, scores: Scores, method: str) -> UnitImportance:
    """Sum elementwise scores along each unit's axes (the layout's family table)."""
    n, d = layout.num_layers, layout.head_dim
    families: dict[Family, Tensor] = {}
    hidden_by_layer = torch.zeros(n, layout.hidden)
    hidden_shared = torch.zeros(layout.hidden)
    layer_sums = torch.zeros(n)
    for name, score in scores.params.items():
        layer = layout.layer_of(name)
        if layer is not None:
            layer_sums[layer] += score.sum()
        for dim, family in enumerate(layout.axes(name)):
            if family is None or family == "vocab":
                continue
            others = [k for k in range(score.ndim) if k != dim]
            reduced = score.sum(dim=others) if others else score  # (axis length,)
            if family == "hidden":
                (hidden_by_layer[layer] if layer is not None else hidden_shared).add_(reduced)
            else:
                families[family] = families.get(family, 0) + reduced
    heads, qk, vo, ffn = [], [], [], []
    for layer in range(n):
        ffn.append(families.get(("ffn", layer), torch.zeros(layout.ffn)))
        if layout.kind == "encoder":
            qk.append(families.get(("qk", layer), torch.zeros(layout.heads * d)).view(layout.heads, d))
            vo.append(families.get(("vo", layer), torch.zeros(layout.heads * d)).view(layout.heads, d))
            heads.append(qk[-1].sum(dim=1) + vo[-1].sum(dim=1))  # (heads,)
        else:
            q = families.get(("q", layer), torch.zeros(layout.heads * d)).view(layout.groups, -1)
            kv = families.get(("kv", layer), torch.zeros(layout.groups * d)).view(layout.groups, d)
            heads.append(q.sum(dim=1) + kv.sum(dim=1))  # (kv_groups,)
    layers = scores.layers if scores.layers is not None else layer_sums
    return UnitImportance(method, layers, heads, qk, vo, ffn, hidden_by_layer, hidden_shared)


def unit_importance(
    handle: Handle, importance: ImportanceName = "magnitude", calibration: Calibration | None = None
) -> UnitImportance:
    """Score every layer, head (or KV group), head channel, FFN neuron and hidden channel of ``handle``.

    Args:
        handle: An encoder (BERT family) or causal LM (Llama family) handle; it is not modified.
        importance: ``magnitude``, ``taylor``, ``activation`` or ``minitron`` (Llama only).
        calibration: Texts (and, for Taylor on an encoder, labels and head); needed by ``taylor`` and
            ``activation``.

    Raises:
        PruneError: unknown method, missing calibration, or an unsupported architecture.
    """
    layout = layout_of(handle)
    if importance == "minitron":
        m = minitron_scores(handle, calibration, layout)
        return UnitImportance("minitron", m.layers, m.heads, [], [], m.ffn, m.hidden_by_layer, m.hidden_shared)
    if importance not in SCORERS:
        names = ", ".join([*SCORERS, "minitron"])
        raise PruneError(f"importance {importance!r} is not one of {names}; pick one of them")
    return reduce_scores(layout, SCORERS[importance](handle, calibration, layout), importance)
