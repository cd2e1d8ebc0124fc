"""``fanbu hierarchy``: hierarchical adapters on your own domain tree, and a start for each new domain.

A :class:`HierarchyRunRecipe` names the data (the built-in benchmark, or your files, each with an optional
``group``), the groups above them, the adapter stack and its training (``hierarchy:``, a
:class:`~fanbu.hierarchy.recipe.HierarchyRecipe`), and the domains to ``attach``: domains of the data that
are not leaves of the tree. :func:`run_hierarchy`, recorded as a ``hierarchy`` run:

1. trains the stack top-down (:func:`~fanbu.hierarchy.training.fit_top_down`) on each leaf's private
   slice, early stopping on its validation part; each leaf's test split is scored once, for the report;
2. saves the stack (:func:`~fanbu.hierarchy.saving.save_stack`) and registers it (kind ``adapter_stack``,
   relation ``adapter``, the trunk as parent);
3. attaches each new domain under the group its source names, or else the group whose plain-trunk
   centroid is nearest its own (:func:`~fanbu.hierarchy.attach.nearest_group`, training examples only);
4. registers each new domain's starting model ``<domain>.start``: the trunk with its group's path of
   adapters merged in and a fresh head for the domain (:func:`~fanbu.hierarchy.start.group_start_handle`;
   relation ``merge``, the stack as parent). A derive recipe takes its id as ``teacher:``.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import Field, field_validator, model_validator
from torch import Tensor

from fanbu.config import Strict, short_repr
from fanbu.data.domain import Benchmark, Split
from fanbu.data.slices import SliceSpec, benchmark_of, domain_names
from fanbu.errors import ConfigError, RegistryError
from fanbu.hierarchy.attach import nearest_group
from fanbu.hierarchy.data import LeafData, split_examples
from fanbu.hierarchy.recipe import HierarchyRecipe, build_stack, tree_config
from fanbu.hierarchy.saving import save_stack
from fanbu.hierarchy.stack import AdapterStack
from fanbu.hierarchy.start import group_start_handle
from fanbu.hierarchy.training import StageRecord, TopDownSettings, accuracy, fit_top_down
from fanbu.hierarchy.tree import DomainTree, TreeConfig
from fanbu.hierarchy.trunks import cache_hidden
from fanbu.models.artefact import Provenance
from fanbu.models.encoder import EncoderHandle
from fanbu.registry.checks import check_model_name
from fanbu.registry.workspace import Workspace

STACK_RELATION = "adapter"  # the stack adapts its trunk
START_RELATION = "merge"  # a start is the trunk with the group's path of adapters merged in
FLAT_NOTE = ("the built-in source's domains carry no group, so every domain sits flat on the trunk; give "
             "hierarchy.tree (groups and leaves) to group them")


class HierarchyRunRecipe(Strict):
    """What ``fanbu hierarchy`` runs."""

    data: SliceSpec = Field(
        default_factory=SliceSpec,
        description="The domains: the built-in benchmark, or your files (source: files), each file's 'group' "
        "naming its place in the tree.",
    )
    groups: dict[str, str | None] = Field(
        default_factory=dict,
        description="Group -> its parent group (null: a top group on the trunk), for the groups the files "
        "name; not together with hierarchy.tree.",
    )
    hierarchy: HierarchyRecipe = Field(
        default_factory=HierarchyRecipe,
        description="Trunk, adapters, top-down training; its tree, when it has leaves, replaces the files' "
        "groups.",
    )
    attach: list[str] = Field(
        default_factory=list,
        description="Domains of the data that are not leaves of the tree: each is attached under the nearest "
        "group (or the group its file names) and gets a registered starting model <domain>.start.",
    )
    max_train: int | None = Field(
        None, ge=1, description="Cap on each domain's training examples (its private slice), drawn with the seed; "
        "null: all."
    )
    seed: int = Field(
        0, description="Seeds the draw of the training examples, the adapters and heads, and every stage's loop "
        "(it replaces the seed of hierarchy.training's sections)."
    )
    name: str = Field("hierarchy", description="Registry name of the adapter stack.")

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        try:
            return check_model_name(name)
        except RegistryError as exc:
            raise ValueError(str(exc)) from None

    @model_validator(mode="after")
    def _check(self) -> HierarchyRunRecipe:
        """Check what needs no data read: all of it for files, whose domain names the recipe holds."""
        try:
            if self.data.source == "files":
                plan_tree(self, domain_names(self.data))
            else:
                _check_settings(self)
        except ConfigError as exc:  # a ValueError, so that the error names the recipe file too
            raise ValueError(str(exc)) from None
        return self


def _check_settings(recipe: HierarchyRunRecipe) -> None:
    """The checks that need no domain names."""
    if recipe.attach and recipe.hierarchy.tail_layers is not None:
        raise ConfigError(
            f"hierarchy.tail_layers: a starting model for the attach domains needs adapters on the whole "
            f"encoder, not on its top {recipe.hierarchy.tail_layers} layer(s); set hierarchy.tail_layers: null "
            "to export starting models, or leave attach empty"
        )
    for index, name in enumerate(recipe.attach):
        if recipe.attach.index(name) != index:
            raise ConfigError(f"attach.{index}: {short_repr(name)} is listed twice; name each domain once")
        try:
            check_model_name(f"{name}.start")
        except RegistryError:
            raise ConfigError(
                f"attach.{index}: {short_repr(name)} cannot name its starting model {short_repr(name + '.start')}; "
                "a domain to attach has a name of letters, digits, '_', '-' and '.'"
            ) from None
    if recipe.hierarchy.tree.leaves and recipe.groups:
        raise ConfigError(
            "groups: given together with hierarchy.tree; describe the tree once: groups: with each file's "
            "group, or hierarchy.tree (groups and leaves)"
        )


def _domains_listed(recipe: HierarchyRunRecipe, available: Sequence[str]) -> str:
    """Where the data's domains are named, for messages."""
    if recipe.data.source == "files" and recipe.data.domains is None:
        return ", ".join(f"data.files.{i}.name: {short_repr(s.name, 60)}" for i, s in enumerate(recipe.data.files))
    where = "data.domains: " if recipe.data.domains is not None else ""
    return where + ", ".join(short_repr(n, 60) for n in available)


def plan_tree(recipe: HierarchyRunRecipe, available: Sequence[str]) -> tuple[TreeConfig, str | None]:
    """The tree to train on the data's domains ``available``, and a note for the report (or None).

    ``hierarchy.tree`` when it has leaves; else the files' groups under ``groups``; else (the built-in
    source) every domain flat on the trunk. The ``attach`` domains are never leaves.

    Raises:
        ConfigError: naming the setting: an attach domain or tree leaf without data, an attach domain in
            the tree, an unknown group, a group with no leaves, or no group to attach under.
    """
    _check_settings(recipe)
    for index, name in enumerate(recipe.attach):
        if name not in available:
            raise ConfigError(
                f"attach.{index}: {short_repr(name)} is not a domain of the data (domains: "
                f"{_domains_listed(recipe, available)}); add its file under data.files or fix the name"
            )
    note = None
    if recipe.hierarchy.tree.leaves:
        config = recipe.hierarchy.tree
        for leaf in config.leaves:
            if leaf not in available:
                raise ConfigError(
                    f"hierarchy.tree.leaves.{leaf}: no domain of the data has this name (domains: "
                    f"{_domains_listed(recipe, available)}); add a file for it under data.files, or drop it "
                    "from the tree"
                )
            if leaf in recipe.attach:
                raise ConfigError(
                    f"attach.{recipe.attach.index(leaf)}: {short_repr(leaf)} is a leaf of hierarchy.tree; a "
                    "domain to attach is new to the tree: drop it from hierarchy.tree.leaves or from attach"
                )
    elif recipe.data.source == "files":
        leaves = [n for n in available if n not in recipe.attach]
        _check_file_groups(recipe, leaves, list(recipe.groups), "add it under groups: or fix the domain's group")
        config = tree_config([s for s in recipe.data.files if s.name in leaves], recipe.groups)
    elif recipe.groups:
        raise ConfigError(
            "groups: the built-in source's domains carry no group; place them with hierarchy.tree.leaves, or "
            "use your own files (data.source: files), each with its group"
        )
    else:
        config = TreeConfig(leaves=dict.fromkeys(n for n in available if n not in recipe.attach))
        note = FLAT_NOTE
    tree = _checked_tree(recipe, config)
    _check_file_groups(recipe, recipe.attach, list(tree.groups), "fix its group, or leave it unset to attach by "
                       "similarity")
    return config, note


def _check_file_groups(recipe: HierarchyRunRecipe, names: Sequence[str], groups: list[str], remedy: str) -> None:
    """Every file of the domains ``names`` names a group of ``groups`` (or none)."""
    known = ", ".join(groups) or "none"
    for index, source in enumerate(recipe.data.files):
        if source.name in names and source.group is not None and source.group not in groups:
            raise ConfigError(
                f"data.files.{index}.group: group {short_repr(source.group, 60)} of domain "
                f"{short_repr(source.name, 60)} is unknown (groups: {known}); {remedy}"
            )


def _checked_tree(recipe: HierarchyRunRecipe, config: TreeConfig) -> DomainTree:
    if not config.leaves:
        raise ConfigError("attach: every domain of the data is in attach, so the tree has no leaf to train; "
                          "leave at least one domain out of attach")
    tree = DomainTree.from_config(config)
    section = "hierarchy.tree.groups" if recipe.hierarchy.tree.leaves else "groups"
    for group in tree.groups:
        if not tree.leaves_under(group):
            raise ConfigError(
                f"{section}.{group}: no leaf domain is under this group, so its adapter has nothing to train on; "
                "give a domain this group (its file's group), or remove the group"
            )
    if recipe.attach and not tree.groups:
        raise ConfigError(
            "attach: the tree has no groups to attach a domain under; define groups (groups: and each file's "
            "group, or hierarchy.tree.groups)"
        )
    return tree


def _source_groups(recipe: HierarchyRunRecipe) -> dict[str, str | None]:
    """Each attach domain's group as its file names it (None: attach by similarity)."""
    named = {s.name: s.group for s in recipe.data.files}
    return {name: named.get(name) for name in recipe.attach}


@dataclass(frozen=True)
class DomainSplits:
    """One domain's training draw, its validation part (training-time choices) and its test split (report)."""

    train: Split
    validation: Split
    test: Split


def _capped(split: Split, cap: int | None, seed: int) -> Split:
    return split if cap is None else split.subsample(cap, seed)


def domain_splits(bench: Benchmark, name: str, recipe: HierarchyRunRecipe) -> DomainSplits:
    """``name``'s private slice (capped by ``max_train``), validation part and test split (data caps)."""
    domain = bench.domain(name)
    if domain.task != "classification":
        raise ConfigError(f"domain '{name}' is a {domain.task} task; the adapter stack's heads classify")
    caps = recipe.data
    return DomainSplits(
        _capped(bench.private(name), recipe.max_train, recipe.seed),
        _capped(bench.validation(name), caps.max_validation, caps.seed),
        _capped(domain.test, caps.max_test, caps.seed),
    )


def stack_inputs(handle: EncoderHandle, tail_layers: int | None) -> Callable[[Sequence[str]], dict[str, Tensor]]:
    """What turns texts into the stack's inputs: token ids for a whole encoder, else the hidden states
    cached below its top ``tail_layers`` layers."""
    if tail_layers is None:
        return handle.tokenize
    return functools.partial(cache_hidden, handle, tail_layers=tail_layers)


def seeded(settings: TopDownSettings, seed: int) -> TopDownSettings:
    """``settings`` with every stage's loop seeded by ``seed``."""
    update: dict[str, Any] = {stage: getattr(settings, stage).model_copy(update={"seed": seed})
                              for stage in ("trunk", "groups", "leaves") if getattr(settings, stage) is not None}
    return settings.model_copy(update=update)


def run_hierarchy(recipe: HierarchyRunRecipe, workspace: Workspace,
                  log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train, register, attach and register the starts; recorded as a ``hierarchy`` run. Returns its summary.

    ``log`` hears a line as each stage of the tree ends.
    """
    with workspace.run("hierarchy", recipe) as run:
        run.summary = _run(recipe, workspace, run.id, log or (lambda _: None))
    return run.summary


def _run(recipe: HierarchyRunRecipe, workspace: Workspace, run_id: str, log: Callable[[str], None]) -> dict[str, Any]:
    started = time.perf_counter()
    bench = benchmark_of(recipe.data)
    config, note = plan_tree(recipe, domain_names(recipe.data, bench))
    settings = recipe.hierarchy.model_copy(update={"tree": config})
    tree = DomainTree.from_config(config)
    splits = {name: domain_splits(bench, name, recipe) for name in (*tree.leaves, *recipe.attach)}
    handle, trunk_id = workspace.load_spec(settings.trunk, settings.max_length)
    labels = {leaf: list(bench.domain(leaf).label_names) for leaf in tree.leaves}
    stack = build_stack(settings, handle, labels, recipe.seed)
    encode = stack_inputs(handle, settings.tail_layers)
    data = {leaf: LeafData(split_examples(splits[leaf].train, encode), split_examples(splits[leaf].validation, encode))
            for leaf in tree.leaves}
    log(f"training {len(tree.groups)} group(s) then {len(tree.leaves)} leaf domain(s), top-down")

    def done(record: StageRecord) -> None:
        score = "-" if record.validation is None else f"{record.validation:.3f}"
        kept = ", its start kept" if record.kept_start else ""
        log(f"trained {record.node}: {record.steps} steps, validation {score}{kept} ({record.seconds:.0f} s)")

    records = fit_top_down(stack, data, seeded(settings.training, recipe.seed), on_stage=done)
    scores = {leaf: {"validation": accuracy(stack, leaf, leaf, data[leaf].validation),
                     "test": accuracy(stack, leaf, leaf, split_examples(splits[leaf].test, encode))}
              for leaf in tree.leaves}
    stages = [_stage(r) for r in records]
    stack_id = _register_stack(workspace, recipe, stack, trunk_id, splits, scores, stages, run_id)
    leaves = {leaf: ex.train for leaf, ex in data.items()}
    attachments = {}
    for name, group in _source_groups(recipe).items():
        found = nearest_group(stack, name, split_examples(splits[name].train, encode), leaves, group=group)
        facts = {"domain": name, "group": found.group, "how": found.source, "similarities": found.similarities}
        start = group_start_handle(handle, stack, found.group, name, bench.domain(name).label_names, recipe.seed)
        attachments[name] = {**facts, "model": _register_start(workspace, recipe, start, stack_id, splits[name],
                                                              facts)}
    return {
        "tree": tree.describe(),
        "note": note,
        "trunk": trunk_id,
        "stack": stack_id,
        "stages": stages,
        "leaves": {leaf: {"group": tree.parent[leaf], **scores[leaf]} for leaf in tree.leaves},
        "attachments": attachments,
        "seconds": time.perf_counter() - started,
    }


def _stage(record: StageRecord) -> dict[str, Any]:
    return {"node": record.node, "leaves": list(record.leaves), "steps": record.steps,
            "validation": record.validation, "kept_start": record.kept_start, "seconds": round(record.seconds, 2)}


def _register_stack(workspace: Workspace, recipe: HierarchyRunRecipe, stack: AdapterStack, trunk_id: str,
                    splits: dict[str, DomainSplits], scores: dict[str, dict[str, float]],
                    stages: list[dict[str, Any]], run_id: str) -> str:
    """Save and register the stack (the trunk its parent), and record each leaf's accuracies; its id."""
    leaves = stack.tree.leaves
    provenance = Provenance(
        recipe=recipe.model_dump(mode="json"),
        parents=[trunk_id],
        data_fingerprints={leaf: {"train": splits[leaf].train.fingerprint,
                                  "validation": splits[leaf].validation.fingerprint} for leaf in leaves},
        base_model=trunk_id,
        base_model_relation=STACK_RELATION,
        metrics={f"{leaf}.val_acc": scores[leaf]["validation"] for leaf in leaves},
    )
    made = workspace.save_and_register(
        stack, provenance, name=recipe.name, relation=STACK_RELATION,
        metadata={"tree": stack.tree.describe(), "stages": stages},
        save=lambda path, prov: save_stack(stack, path, prov),
    )
    for leaf in leaves:
        for split in ("validation", "test"):
            workspace.registry.record_evaluation(
                made.id, domain=leaf, split=split, metrics={"accuracy": scores[leaf][split]},
                dataset_fingerprint=getattr(splits[leaf], split).fingerprint, run_id=run_id)
    return made.id


def _register_start(workspace: Workspace, recipe: HierarchyRunRecipe, start: EncoderHandle, stack_id: str,
                    splits: DomainSplits, facts: dict[str, Any]) -> str:
    """Save and register a new domain's starting model as ``<domain>.start`` (the stack its parent); its id.

    Nothing scores it: its head is fresh, for derive (or a fine-tune) to train.
    """
    domain = facts["domain"]
    provenance = Provenance(recipe=recipe.model_dump(mode="json"), parents=[stack_id],
                            data_fingerprints={domain: {"attach": splits.train.fingerprint}},
                            base_model=stack_id, base_model_relation=START_RELATION)
    made = workspace.save_and_register(start, provenance, name=f"{domain}.start", relation=START_RELATION,
                                       metadata=facts)
    return made.id
