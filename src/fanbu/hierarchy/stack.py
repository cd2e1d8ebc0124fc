"""The adapter stack: a shared trunk, one PEFT LoRA adapter per group and per leaf, one head per (node, leaf).

A leaf's forward runs the trunk with the adapters of its path active at once (top group, ..., the leaf),
so PEFT adds their deltas: ``W x + sum over the path of B_n A_n x * scaling``. A group's forward uses
the path down to the group only. Heads: a group trains one head per leaf under it (its pooled data is
multi-task, one head per leaf's label set), or one head over the union of their label names
(``group_head: union``, read for a leaf through that leaf's columns); a leaf trains its own head, started
from its parent's head for it. The flat baseline is the same stack on :meth:`DomainTree.flat`.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Literal

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from pydantic import Field
from torch import Tensor, nn

from fanbu.config import Strict
from fanbu.errors import ConfigError
from fanbu.hierarchy.tree import ROOT, DomainTree


class AdapterSettings(Strict):
    """The LoRA adapter of every node, and the heads."""

    rank: int = Field(8, ge=1, description="LoRA rank of every group and leaf adapter.")
    alpha: float = Field(16.0, gt=0, description="LoRA alpha (the delta is scaled by alpha / rank).")
    dropout: float = Field(0.0, ge=0, lt=1, description="LoRA dropout on the adapter inputs.")
    target_modules: list[str] = Field(
        default_factory=lambda: ["query", "value"],
        min_length=1,
        description="Names of the trunk's linear layers that get adapters (BERT: query, key, value, dense).",
    )
    head_dropout: float = Field(0.1, ge=0, lt=1, description="Dropout on the pooled features before a head.")
    group_head: Literal["per_leaf", "union"] = Field(
        "per_leaf",
        description="A group's heads: per_leaf (one head per leaf under it, multi-task) or union (one head over "
        "the union of its leaves' label names, so the group also learns to tell its leaves' classes apart).",
    )


def node_key(name: str) -> str:
    """A module-safe key for a node name (PEFT and ``ModuleDict`` keys may not hold dots)."""
    return name.replace(".", "_").replace("-", "_")


class AdapterStack(nn.Module):
    """A trunk (``(**inputs) -> (batch, hidden)``) under one adapter per node of ``tree``.

    Args:
        trunk: The shared trunk (copied: the module passed in is left as it is); it has ``hidden_size``
            and the ``target_modules`` as submodules.
        tree: Groups and leaves.
        labels: Leaf name -> its label names.
        settings: Adapter and head settings.
        seed: Seeds every adapter's and head's initialisation (the global generators are left alone).
    """

    def __init__(
        self,
        trunk: nn.Module,
        tree: DomainTree,
        labels: Mapping[str, Sequence[str]],
        settings: AdapterSettings | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        missing = [leaf for leaf in tree.leaves if leaf not in labels]
        if missing:
            raise ConfigError(f"no label names for the leaf domains {missing}; give each leaf its labels")
        self.tree, self.settings = tree, settings or AdapterSettings()
        self.labels = {leaf: list(labels[leaf]) for leaf in tree.leaves}
        nodes = [*tree.top_down, *tree.leaves]
        keys = [node_key(n) for n in nodes]
        if len(set(keys)) != len(keys):
            raise ConfigError(f"node names {nodes} collide once dots become '_'; rename one of them")
        self.hidden_size = int(getattr(trunk, "hidden_size"))  # noqa: B009
        s = self.settings
        self.lora = LoraConfig(
            r=s.rank, lora_alpha=s.alpha, lora_dropout=s.dropout, target_modules=list(s.target_modules)
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.peft: PeftModel = get_peft_model(copy.deepcopy(trunk), self.lora, adapter_name=keys[0])
            for key in keys[1:]:
                self.peft.add_adapter(key, self.lora)
            self.heads = nn.ModuleDict(
                {self.head_key(n, leaf): nn.Linear(self.hidden_size, len(self.labels[leaf]))
                 for n in [ROOT, *nodes] for leaf in tree.leaves_under(n) if not self.is_union(n)}
            )
            for n in [ROOT, *tree.groups]:
                if self.is_union(n):
                    self.heads[self.head_key(n, "*")] = nn.Linear(self.hidden_size, len(self.union_labels(n)))
        self.head_dropout = nn.Dropout(s.head_dropout)
        self.adapter_of: dict[str, str] = dict(zip(nodes, keys, strict=True))
        """Node -> the key of its adapter; a node whose adapter was dropped or merged up has none."""
        self._active: tuple[str, ...] | None = None
        self._trainable: set[str] = set()
        self.freeze()

    @staticmethod
    def head_key(node: str, leaf: str) -> str:
        """The key of ``node``'s head for ``leaf`` (a leaf's own head: ``head_key(leaf, leaf)``)."""
        return f"{node_key(node)}__{node_key(leaf)}"

    def is_union(self, node: str) -> bool:
        """Whether ``node`` (a group or :data:`ROOT`) has one head over its leaves' union of labels."""
        return self.settings.group_head == "union" and node not in self.tree.leaves

    def union_labels(self, node: str) -> list[str]:
        """The distinct label names of the leaves under ``node``, in order of first appearance."""
        return list(dict.fromkeys(name for leaf in self.tree.leaves_under(node) for name in self.labels[leaf]))

    def columns(self, node: str, leaf: str) -> list[int]:
        """Where ``leaf``'s labels sit in ``node``'s union head."""
        union = self.union_labels(node)
        return [union.index(name) for name in self.labels[leaf]]

    def node_heads(self, node: str) -> list[str]:
        """The keys of the heads ``node`` trains."""
        if self.is_union(node):
            return [self.head_key(node, "*")]
        return [self.head_key(node, leaf) for leaf in self.tree.leaves_under(node)]

    @torch.no_grad()
    def start_heads(self, node: str) -> None:
        """Start ``node``'s heads from its parent's (rows picked by label name where the parent's is a union)."""
        parent = self.tree.parent[node]
        parent_union = self.is_union(parent)
        if self.is_union(node):
            rows = [self.union_labels(parent).index(n) for n in self.union_labels(node)] if parent_union else None
            if rows is not None:
                self._copy_rows(self.head_key(parent, "*"), self.head_key(node, "*"), rows)
            return
        for leaf in self.tree.leaves_under(node):
            source = self.head_key(parent, "*") if parent_union else self.head_key(parent, leaf)
            rows = self.columns(parent, leaf) if parent_union else list(range(len(self.labels[leaf])))
            self._copy_rows(source, self.head_key(node, leaf), rows)

    def _copy_rows(self, source: str, target: str, rows: list[int]) -> None:
        self.heads[target].weight.copy_(self.heads[source].weight[rows])
        self.heads[target].bias.copy_(self.heads[source].bias[rows])

    @property
    def adapter_names(self) -> list[str]:
        """The keys of the adapters the trunk carries now."""
        return list(self.peft.peft_config)

    def path_adapters(self, node: str) -> list[str]:
        """The adapter keys of ``node``'s path, top first (:data:`ROOT`: none)."""
        path = [] if node == ROOT else self.tree.path(node)
        return [self.adapter_of[n] for n in path if n in self.adapter_of]

    def activate(self, node: str) -> tuple[str, ...]:
        """Make the adapters of ``node``'s path active (:data:`ROOT`: none, the plain trunk)."""
        path = tuple(self.path_adapters(node))
        if path != self._active:
            if path:
                self.peft.base_model.enable_adapter_layers()
                self.peft.base_model.set_adapter(list(path))
            else:
                self.peft.base_model.disable_adapter_layers()
            self._active = path
            self._apply_trainable()
        return path

    def freeze(self, nodes: Sequence[str] = (), heads: Sequence[str] = (), trunk: bool = False) -> None:
        """Train only the adapters of ``nodes``, the heads with keys ``heads`` and (optionally) the trunk."""
        self._trainable = {self.adapter_of[n] for n in nodes if n in self.adapter_of}
        self._trunk_trainable = trunk
        for key, head in self.heads.items():
            head.requires_grad_(key in heads)
        self._apply_trainable()

    def _apply_trainable(self) -> None:
        for name, param in self.peft.named_parameters():
            if "lora_" in name:
                param.requires_grad_(any(f".{key}." in name for key in self._trainable))
            else:
                param.requires_grad_(self._trunk_trainable)

    def features(self, node: str, **inputs: Tensor) -> Tensor:
        """Pooled trunk features with ``node``'s path active: ``(batch, hidden)``."""
        self.activate(node)
        return self.peft(**inputs)  # (batch, hidden)

    def forward(self, node: str, leaf: str, **inputs: Tensor) -> Tensor:
        """Logits ``(batch, labels of leaf)`` of ``node``'s head for ``leaf``, ``node``'s path active
        (``leaf`` ``"*"``: a union head's logits over all its labels)."""
        pooled = self.head_dropout(self.features(node, **inputs))  # (batch, hidden)
        if not self.is_union(node):
            return self.heads[self.head_key(node, leaf)](pooled)  # (batch, labels)
        logits = self.heads[self.head_key(node, "*")](pooled)  # (batch, union labels)
        return logits if leaf == "*" else logits[:, self.columns(node, leaf)]  # (batch, labels)

    def drop(self, node: str) -> None:
        """Remove ``node``'s adapter: its forward is then that of its path without it."""
        self.delete_adapters([self.adapter_key(node)])
        del self.adapter_of[node]

    def adapter_key(self, node: str) -> str:
        """The key of ``node``'s adapter; a :class:`ConfigError` when it has none."""
        if node not in self.adapter_of:
            raise ConfigError(f"node '{node}' has no adapter now (nodes with one: {', '.join(self.adapter_of)})")
        return self.adapter_of[node]

    def delete_adapters(self, keys: Sequence[str]) -> None:
        """Delete the adapters ``keys`` from the trunk (PEFT keeps at least one)."""
        remaining = [k for k in self.peft.peft_config if k not in keys]
        if not remaining:
            raise ConfigError("PEFT keeps at least one adapter; merge into the trunk with merge_into_trunk")
        self._active = None
        self.peft.base_model.set_adapter(remaining[:1])
        for key in keys:
            self.peft.delete_adapter(key)
            self._trainable.discard(key)
