"""The domain tree: leaf domains under groups, groups under groups, every top group under the trunk.

A recipe names each domain's group (``group`` on the domain source) and each group's parent (the
``groups:`` section, ``null`` for a top group that sits directly on the trunk). :class:`TreeConfig`
holds that as written and checks it; :class:`DomainTree` is the checked tree that training, merging
and attaching walk (paths from the top, levels from the bottom).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import cached_property

from pydantic import Field, model_validator

from fanbu.config import Strict
from fanbu.errors import ConfigError

ROOT = "trunk"
"""The name of the tree's root: the shared trunk every top group (or flat leaf) sits on."""


class TreeConfig(Strict):
    """Leaf domains and the groups above them, as written in a recipe."""

    groups: dict[str, str | None] = Field(
        default_factory=dict,
        description="Group name -> its parent group (null: a top group directly on the trunk). Any depth; "
        "no cycles.",
    )
    leaves: dict[str, str | None] = Field(
        default_factory=dict,
        description="Leaf domain name -> its group (the domain source's 'group'); null puts the leaf "
        "directly on the trunk.",
    )

    @model_validator(mode="after")
    def _check(self) -> TreeConfig:
        check_tree(self.groups, self.leaves)
        return self


def check_tree(groups: Mapping[str, str | None], leaves: Mapping[str, str | None]) -> None:
    """Raise a :class:`ConfigError` naming the setting for a cycle, an unknown parent or a name clash."""
    if ROOT in groups or ROOT in leaves:
        raise ConfigError(f"'{ROOT}' names the shared trunk; rename the group or domain called '{ROOT}'")
    clash = sorted(set(groups) & set(leaves))
    if clash:
        raise ConfigError(f"groups and domains share the names {clash}; give every node a distinct name")
    for group, parent in groups.items():
        if parent is not None and parent not in groups:
            raise ConfigError(
                f"groups.{group}: parent group '{parent}' is not defined (define it under groups:, or set "
                f"null to put '{group}' on the trunk)"
            )
    for leaf, group in leaves.items():
        if group is not None and group not in groups:
            known = ", ".join(sorted(groups)) or "none"
            raise ConfigError(
                f"domain '{leaf}': group '{group}' is unknown (groups: {known}); add it under groups: or fix "
                "the domain's group"
            )
    for start in groups:
        seen = [start]
        parent = groups[start]
        while parent is not None:
            if parent in seen:
                loop = " -> ".join([*seen[seen.index(parent):], parent])
                raise ConfigError(f"groups: the parents form a cycle {loop}; a group cannot be its own ancestor")
            seen.append(parent)
            parent = groups[parent]


class DomainTree:
    """A checked tree of groups and leaf domains under the trunk (:data:`ROOT`)."""

    def __init__(self, groups: Mapping[str, str | None], leaves: Mapping[str, str | None]) -> None:
        check_tree(groups, leaves)
        if not leaves:
            raise ConfigError("the domain tree has no leaf domains; give at least one domain")
        self.parent: dict[str, str] = {g: p or ROOT for g, p in groups.items()}
        self.parent.update({leaf: g or ROOT for leaf, g in leaves.items()})
        self.groups: tuple[str, ...] = tuple(groups)
        self.leaves: tuple[str, ...] = tuple(leaves)

    @classmethod
    def from_config(cls, config: TreeConfig) -> DomainTree:
        """The tree of a recipe's tree section."""
        return cls(config.groups, config.leaves)

    @classmethod
    def flat(cls, leaves: Iterable[str]) -> DomainTree:
        """Every leaf directly on the trunk: the flat baseline."""
        return cls({}, dict.fromkeys(leaves))

    def path(self, node: str) -> list[str]:
        """The nodes from the top group down to ``node`` itself (the trunk excluded)."""
        if node not in self.parent:
            raise ConfigError(f"'{node}' is not in the domain tree (nodes: {', '.join(self.parent)})")
        out = [node]
        while self.parent[out[-1]] != ROOT:
            out.append(self.parent[out[-1]])
        return out[::-1]

    def ancestors(self, node: str) -> list[str]:
        """The groups above ``node``, top first."""
        return self.path(node)[:-1]

    def depth(self, node: str) -> int:
        """1 for a node on the trunk, 2 below that, ..."""
        return len(self.path(node))

    def children(self, node: str) -> list[str]:
        """The direct children of a group (or of :data:`ROOT`), in declaration order."""
        return [n for n, p in self.parent.items() if p == node]

    def leaves_under(self, node: str) -> list[str]:
        """The leaf domains under ``node`` (a leaf: itself; :data:`ROOT`: all)."""
        if node == ROOT:
            return list(self.leaves)
        return [leaf for leaf in self.leaves if node in self.path(leaf)]

    @cached_property
    def top_down(self) -> list[str]:
        """Groups by depth, shallowest first (training order); leaves are trained after every group."""
        return sorted(self.groups, key=self.depth)

    def bottom_up(self) -> list[str]:
        """Groups by depth, deepest first (merge order)."""
        return sorted(self.groups, key=self.depth, reverse=True)

    def describe(self) -> dict[str, str]:
        """Node -> parent, for reports."""
        return dict(self.parent)

