"""Hierarchical transfer over a domain tree (seed technique 20): a shared trunk, one adapter per group and
per leaf domain, trained top-down, merged bottom-up, with new domains attached under the nearest group.

* :mod:`~fanbu.hierarchy.tree`: the tree a recipe describes (groups, their parents, each domain's group);
* :mod:`~fanbu.hierarchy.stack`: the PEFT LoRA adapter stack and its heads;
* :mod:`~fanbu.hierarchy.training`: top-down training through THE loop;
* :mod:`~fanbu.hierarchy.merge`: merging leaves into groups, groups into the trunk;
* :mod:`~fanbu.hierarchy.attach` and :mod:`~fanbu.hierarchy.start`: a new domain's group, and its start.
"""

from __future__ import annotations

from fanbu.hierarchy.attach import Attachment, nearest_group
from fanbu.hierarchy.merge import LevelMergeSettings, merge_by_level, merge_into_groups, merge_into_trunk
from fanbu.hierarchy.recipe import HierarchyRecipe, build_stack, tree_config
from fanbu.hierarchy.stack import AdapterSettings, AdapterStack
from fanbu.hierarchy.start import group_start, group_start_handle
from fanbu.hierarchy.training import TopDownSettings, fit_top_down, train_node
from fanbu.hierarchy.tree import ROOT, DomainTree, TreeConfig

__all__ = [
    "ROOT",
    "AdapterSettings",
    "AdapterStack",
    "Attachment",
    "DomainTree",
    "HierarchyRecipe",
    "LevelMergeSettings",
    "TopDownSettings",
    "TreeConfig",
    "build_stack",
    "fit_top_down",
    "group_start",
    "group_start_handle",
    "merge_by_level",
    "merge_into_groups",
    "merge_into_trunk",
    "nearest_group",
    "train_node",
    "tree_config",
]
