"""Parameter counts of handles, each tied parameter counted once."""

from __future__ import annotations

from typing import Protocol

from torch import nn

from fanbu.evaluate import param_count


class HasModel(Protocol):
    """Anything with a ``model`` module: every fanbu handle."""

    model: nn.Module


def count_parameters(handle: HasModel | nn.Module) -> int:
    """Parameters of a handle's model (encoder and heads, or the whole causal LM), tied ones once."""
    module = handle if isinstance(handle, nn.Module) else handle.model
    return param_count(module)
