"""The ``hierarchy`` recipe: a trunk, the domain tree, the adapters, top-down training and merging by level.

With domain sources carrying a ``group`` and a recipe's ``groups:`` section, :func:`tree_config` builds
the same :class:`TreeConfig` from them (see :func:`~fanbu.hierarchy.tree.tree_from_sources`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pydantic import Field

from fanbu.config import Strict
from fanbu.hierarchy.merge import LevelMergeSettings
from fanbu.hierarchy.stack import AdapterSettings, AdapterStack
from fanbu.hierarchy.training import TopDownSettings
from fanbu.hierarchy.tree import DomainTree, TreeConfig
from fanbu.hierarchy.trunks import BertTail, MeanPooled
from fanbu.models.encoder import EncoderHandle


class HierarchyRecipe(Strict):
    """Hierarchical adapters over a domain tree."""

    trunk: str = Field("package:all-MiniLM-L6-v2", description="The shared trunk encoder (a source or model id).")
    max_length: int = Field(128, ge=8, description="Tokens of each text the trunk reads.")
    tail_layers: int | None = Field(
        None,
        ge=1,
        description="Adapt only the trunk's top N layers, the lower ones frozen and their states cached; "
        "null: adapters on the whole encoder.",
    )
    tree: TreeConfig = Field(default_factory=TreeConfig, description="Groups and the leaf domains under them.")
    adapter: AdapterSettings = Field(default_factory=AdapterSettings, description="Every node's LoRA adapter.")
    training: TopDownSettings = Field(default_factory=TopDownSettings, description="Top-down training per level.")
    merge: LevelMergeSettings = Field(
        default_factory=LevelMergeSettings, description="Merging by level (leaves into groups, groups into the trunk)."
    )


def tree_config(sources: Sequence[object], groups: Mapping[str, str | None]) -> TreeConfig:
    """The tree section of domain sources with an optional ``group`` and a recipe's ``groups:``."""
    leaves = {str(getattr(s, "name")): getattr(s, "group", None) for s in sources}  # noqa: B009
    return TreeConfig(groups=dict(groups), leaves=leaves)


def build_stack(
    recipe: HierarchyRecipe, handle: EncoderHandle, labels: Mapping[str, Sequence[str]], seed: int = 0
) -> AdapterStack:
    """The recipe's adapter stack on ``handle``'s encoder (a copy): whole, or its top ``tail_layers``."""
    encoder = handle.model.encoder
    trunk = MeanPooled(encoder) if recipe.tail_layers is None else BertTail(encoder, recipe.tail_layers)
    return AdapterStack(trunk, DomainTree.from_config(recipe.tree), labels, recipe.adapter, seed=seed)
