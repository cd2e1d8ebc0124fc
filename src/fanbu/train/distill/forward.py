"""The forward pass of distillation: logits plus what the soft terms compare (pooled state, Q/K/V).

Outputs are captured with forward hooks during the ordinary ``model(**inputs, head=task)`` call, so
the model is called exactly as in plain training (through a DDP wrapper too) and nothing is
computed twice.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from fanbu.errors import ModelError
from fanbu.train.terms import Batch


def last_self_attention(encoder: nn.Module) -> nn.Module:
    """The last self-attention block with ``query``/``key``/``value`` projections (BERT family).

    Raises:
        ModelError: the encoder has no such block (not a BERT-family encoder).
    """
    found = [
        m
        for m in encoder.modules()
        if all(hasattr(m, name) for name in ("query", "key", "value", "num_attention_heads"))
    ]
    if not found:
        raise ModelError(
            f"{type(encoder).__name__} has no BERT-style self-attention (query/key/value projections), so "
            "attention transfer cannot read it; set attention_weight: 0 for this architecture"
        )
    return found[-1]


def _unwrap(model: nn.Module) -> nn.Module:
    """The classifier inside a DDP / accelerate wrapper (or the model itself)."""
    return model.module if isinstance(getattr(model, "module", None), nn.Module) else model


def distill_forward(model: nn.Module, batch: Batch, relations: bool = False) -> dict[str, Tensor]:
    """Run an :class:`~fanbu.models.encoder.EncoderClassifier` on a batch for distillation.

    Returns ``logits`` ``(batch, labels)`` and ``pooled`` ``(batch, hidden)`` (masked mean of the last
    hidden states, before dropout); with ``relations`` also the last self-attention layer's
    ``queries``, ``keys`` and ``values``, each ``(batch, seq, width)``.
    """
    core = _unwrap(model)
    captured: dict[str, Any] = {}

    def keep(name: str):
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            captured[name] = output

        return hook

    hooks = [core.encoder.register_forward_hook(keep("encoder"))]
    if relations:
        attention = last_self_attention(core.encoder)
        hooks += [getattr(attention, n).register_forward_hook(keep(n)) for n in ("query", "key", "value")]
    try:
        logits = model(**batch.inputs, head=batch.task)  # (batch, labels)
    finally:
        for hook in hooks:
            hook.remove()
    hidden = captured["encoder"][0]  # (batch, seq, hidden)
    mask = batch.inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (batch, seq, 1)
    pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)  # (batch, hidden)
    outputs = {"logits": logits, "pooled": pooled}
    if relations:
        outputs.update(queries=captured["query"], keys=captured["key"], values=captured["value"])
    return outputs
