"""Derive from a group: a new leaf's small model starts as the trunk with its group's path merged in.

:func:`group_start` gives the merged trunk module; :func:`group_start_handle` wraps it, for a stack
whose trunk is a whole encoder (:class:`~fanbu.hierarchy.trunks.MeanPooled`), as an
:class:`~fanbu.models.encoder.EncoderHandle` with a fresh head for the new domain, which derive
fine-tunes like any other starting model.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

from torch import nn

from fanbu.errors import ConfigError
from fanbu.hierarchy.stack import AdapterStack
from fanbu.hierarchy.trunks import MeanPooled
from fanbu.models.encoder import EncoderClassifier, EncoderHandle


def group_start(stack: AdapterStack, group: str) -> nn.Module:
    """A copy of the trunk with the adapters of ``group``'s path (top group ... ``group``) merged in."""
    if group not in stack.tree.groups:
        raise ConfigError(f"'{group}' is not a group of the tree (groups: {', '.join(stack.tree.groups)})")
    keys = stack.path_adapters(group)
    peft = copy.deepcopy(stack.peft)
    if not keys:
        return peft.unload()
    peft.base_model.add_weighted_adapter(keys, [1.0] * len(keys), "group__start", combination_type="cat")
    return peft.merge_and_unload(adapter_names=["group__start"])


def group_start_handle(
    handle: EncoderHandle, stack: AdapterStack, group: str, domain: str, label_names: Sequence[str], seed: int = 0
) -> EncoderHandle:
    """An encoder handle for a new domain: ``handle``'s tokenizer, the group-merged encoder, a fresh head.

    ``stack`` must sit on a :class:`MeanPooled` copy of ``handle``'s encoder.
    """
    trunk = group_start(stack, group)
    if not isinstance(trunk, MeanPooled):
        raise ConfigError("group_start_handle needs a stack on a whole encoder (MeanPooled), not a cached tail")
    start = EncoderHandle(
        EncoderClassifier(trunk.encoder), handle.tokenizer, max_length=handle.max_length, truncation=handle.truncation
    )
    start.add_head(domain.replace(".", "_"), label_names, seed=seed)
    return start
