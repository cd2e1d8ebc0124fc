"""Merge by level: leaf adapters into their group first, deepest groups next, then the top groups into the trunk.

Each merge is PEFT's ``add_weighted_adapter``: with ``cat`` (the default) the new group adapter is exactly
``delta_group + sum_c w_c * delta_c`` over the children ``c`` (``w_c = child_weight / children``), so a
leaf's forward after the merge is the trunk with its group's merged adapter, under its own head. The last
level writes ``sum_g w_g * delta_g`` of the top groups into a copy of the trunk's weights.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Literal

from pydantic import Field, model_validator
from torch import nn

from fanbu.config import Strict
from fanbu.errors import ConfigError
from fanbu.hierarchy.stack import AdapterStack
from fanbu.hierarchy.tree import ROOT

Combination = Literal["cat", "svd", "ties_svd", "dare_linear_svd", "dare_ties_svd", "magnitude_prune_svd"]


class LevelMergeSettings(Strict):
    """How children are merged into their parent at every level."""

    combination: Combination = Field(
        "cat",
        description="PEFT add_weighted_adapter combination: cat (exact weighted sum of the deltas, ranks add "
        "up); svd and the *_svd variants (TIES / DARE / magnitude pruning of the deltas, then a rank-svd_rank "
        "SVD).",
    )
    child_weight: float = Field(
        1.0, gt=0, description="Total weight of the children's deltas, shared equally among them."
    )
    density: float | None = Field(
        None, gt=0, le=1, description="Share kept by the ties/dare/magnitude_prune variants; default 0.5."
    )
    svd_rank: int | None = Field(None, ge=1, description="Rank of an svd merge; default the largest input rank.")

    @model_validator(mode="after")
    def _check(self) -> LevelMergeSettings:
        if self.density is not None and self.combination in ("cat", "svd"):
            raise ValueError(f"density applies to the pruning variants, not {self.combination!r}; remove it")
        return self


@dataclass(frozen=True)
class MergeStep:
    """One merge: ``children`` into ``into`` (:data:`ROOT` for the trunk), at tree depth ``depth``."""

    into: str
    children: tuple[str, ...]
    weights: tuple[float, ...]
    depth: int


def _weighted(peft: nn.Module, keys: list[str], weights: list[float], name: str,
              settings: LevelMergeSettings) -> None:
    """PEFT's weighted merge of the adapters ``keys`` into a new adapter ``name``."""
    pruning = settings.combination not in ("cat", "svd")
    density = settings.density if settings.density is not None or not pruning else 0.5
    peft.base_model.add_weighted_adapter(
        keys, weights, name, combination_type=settings.combination, svd_rank=settings.svd_rank, density=density
    )


def merge_into_groups(stack: AdapterStack, settings: LevelMergeSettings | None = None) -> list[MergeStep]:
    """Merge every group's children into it, deepest groups first (in place); returns the steps in order."""
    settings = settings or LevelMergeSettings()
    steps = []
    for group in stack.tree.bottom_up():
        children = [c for c in stack.tree.children(group) if c in stack.adapter_of]
        if not children or group not in stack.adapter_of:
            continue
        share = settings.child_weight / len(children)
        keys = [stack.adapter_key(group), *(stack.adapter_key(c) for c in children)]
        weights = [1.0, *([share] * len(children))]
        name = f"{keys[0]}__merged{len(steps)}"
        _weighted(stack.peft, keys, weights, name, settings)
        stack.delete_adapters(keys)
        for node in (group, *children):
            del stack.adapter_of[node]
        stack.adapter_of[group] = name
        steps.append(MergeStep(group, tuple(children), tuple(weights[1:]), stack.tree.depth(group)))
    return steps


def merge_into_trunk(stack: AdapterStack, settings: LevelMergeSettings | None = None) -> tuple[nn.Module, MergeStep]:
    """A copy of the trunk with ``sum_g w_g * delta_g`` of the top nodes' adapters written into its weights.

    The stack is left as it is; call :func:`merge_into_groups` first to merge the whole tree.
    """
    settings = settings or LevelMergeSettings()
    tops = [n for n in stack.tree.children(ROOT) if n in stack.adapter_of]
    if not tops:
        raise ConfigError("no adapter is left on the trunk's children; nothing to merge into the trunk")
    share = settings.child_weight / len(tops)
    peft = copy.deepcopy(stack.peft)
    name = "trunk__merged"
    _weighted(peft, [stack.adapter_key(n) for n in tops], [share] * len(tops), name, settings)
    trunk = peft.merge_and_unload(adapter_names=[name])
    return trunk, MergeStep(ROOT, tuple(tops), tuple([share] * len(tops)), 0)


def merge_by_level(
    stack: AdapterStack, settings: LevelMergeSettings | None = None
) -> tuple[nn.Module, list[MergeStep]]:
    """Leaves into groups, groups into their parents, then the top groups into a copy of the trunk."""
    steps = merge_into_groups(stack, settings)
    trunk, last = merge_into_trunk(stack, settings)
    return trunk, [*steps, last]
