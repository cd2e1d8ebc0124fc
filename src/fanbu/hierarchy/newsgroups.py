"""20 Newsgroups as a domain tree: the groups of :data:`~fanbu.data.builtin.NEWSGROUP_GROUPS`, and leaf
domains of two or three newsgroups each, named after the newsgroups they hold.

``comp.sys.*`` and ``comp.{graphics,os,windows}`` become the leaves ``comp.sys`` and ``comp.sw`` under
``comp``; ``rec.autos``/``rec.motorcycles`` and ``rec.sport.*`` the leaves ``rec.vehicles`` and
``rec.sport`` under ``rec``; and so on. The labels of a leaf are its newsgroups.
"""

from __future__ import annotations

from collections.abc import Sequence

from fanbu.data.builtin import NEWSGROUP_GROUPS, newsgroups20_domains
from fanbu.data.domain import Domain, Split
from fanbu.errors import DomainError
from fanbu.hierarchy.tree import DomainTree

NEWSGROUP_LEAVES: dict[str, tuple[str, ...]] = {
    "comp.sys": ("comp.sys.ibm.pc.hardware", "comp.sys.mac.hardware"),
    "comp.sw": ("comp.graphics", "comp.os.ms-windows.misc", "comp.windows.x"),
    "rec.vehicles": ("rec.autos", "rec.motorcycles"),
    "rec.sport": ("rec.sport.baseball", "rec.sport.hockey"),
    "sci.tech": ("sci.crypt", "sci.electronics"),
    "sci.medspace": ("sci.med", "sci.space"),
    "talk.politics": ("talk.politics.guns", "talk.politics.mideast", "talk.politics.misc"),
    "religion.talk": ("alt.atheism", "soc.religion.christian", "talk.religion.misc"),
}
"""Leaf domain -> its newsgroups (its labels, sorted)."""


def newsgroup_group(newsgroup: str) -> str:
    """The group a newsgroup belongs to (``comp.sys.mac.hardware`` -> ``comp``)."""
    for group, members in NEWSGROUP_GROUPS.items():
        if newsgroup in members:
            return group
    raise DomainError(f"'{newsgroup}' is not one of the 20 newsgroups")


def leaf_group(leaf: str) -> str:
    """The group of a leaf: the group all of its newsgroups belong to."""
    groups = {newsgroup_group(n) for n in NEWSGROUP_LEAVES[leaf]}
    if len(groups) != 1:
        raise DomainError(f"leaf '{leaf}' mixes newsgroups of the groups {sorted(groups)}")
    return groups.pop()


def newsgroups_tree(leaves: Sequence[str] | None = None) -> DomainTree:
    """The 20 Newsgroups tree: top groups on the trunk, the chosen leaves under their groups."""
    chosen = _check_leaves(leaves)
    groups = sorted({leaf_group(leaf) for leaf in chosen}, key=list(NEWSGROUP_GROUPS).index)
    return DomainTree(dict.fromkeys(groups), {leaf: leaf_group(leaf) for leaf in chosen})


def _check_leaves(leaves: Sequence[str] | None) -> list[str]:
    chosen = list(NEWSGROUP_LEAVES) if leaves is None else list(leaves)
    unknown = [leaf for leaf in chosen if leaf not in NEWSGROUP_LEAVES]
    if unknown:
        raise DomainError(f"unknown 20 Newsgroups leaves {unknown} (choose from {', '.join(NEWSGROUP_LEAVES)})")
    return chosen


def _restrict(split: Split, keep: dict[int, int]) -> Split:
    """The examples whose label is in ``keep`` (old id -> new id), relabelled."""
    labels = split.labels or ()
    picked = [i for i, y in enumerate(labels) if y in keep]
    return Split(tuple(split.texts[i] for i in picked), tuple(keep[labels[i]] for i in picked))


def newsgroups_leaf_domains(
    leaves: Sequence[str] | None = None, seed: int = 0, max_test_per_label: int | None = None
) -> list[Domain]:
    """One classification domain per leaf, cut from its group's built-in domain (same splits)."""
    chosen = _check_leaves(leaves)
    groups = sorted({leaf_group(leaf) for leaf in chosen})
    by_group = {
        d.name: d for d in newsgroups20_domains(seed=seed, groups=groups, max_test_per_label=max_test_per_label)
    }
    out = []
    for leaf in chosen:
        domain = by_group[leaf_group(leaf)]
        names = tuple(sorted(NEWSGROUP_LEAVES[leaf]))
        keep = {domain.label_names.index(n): i for i, n in enumerate(names)}
        out.append(
            Domain(
                name=leaf,
                task="classification",
                train=_restrict(domain.train, keep),
                validation=_restrict(domain.validation, keep),
                test=_restrict(domain.test, keep),
                label_names=names,
                source=f"{domain.source}, newsgroups {', '.join(names)}",
            )
        )
    return out
