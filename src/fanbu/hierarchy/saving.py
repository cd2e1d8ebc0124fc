"""Save and load an adapter stack: every node's LoRA weights and every head (safetensors), the tree, the
labels and the settings (JSON), with provenance (``base_model_relation: adapter``). The trunk is not
saved: :func:`load_stack` puts the weights back on the trunk the stack was built on.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from safetensors.torch import load_file, save_file
from torch import nn

from fanbu.errors import ModelError
from fanbu.hierarchy.stack import AdapterSettings, AdapterStack, node_key
from fanbu.hierarchy.tree import DomainTree
from fanbu.models.artefact import Provenance, expect_kind, model_directory, write_provenance

KIND = "adapter_stack"
WEIGHTS = "stack.safetensors"
LAYOUT = "stack.json"


def save_stack(stack: AdapterStack, path: str | Path, provenance: Provenance, overwrite: bool = False) -> Path:
    """Save ``stack``'s adapters and heads atomically; a stack merged by level is saved as its trunk instead."""
    if any(stack.adapter_of.get(n) != node_key(n) for n in (*stack.tree.groups, *stack.tree.leaves)):
        raise ModelError("the stack has merged or dropped adapters; save it before merging, or save the merged trunk")
    weights = {n: t.detach().contiguous() for n, t in stack.state_dict().items() if "lora_" in n or n.startswith("heads.")}
    layout = {
        "groups": {g: (None if p == "trunk" else p) for g, p in stack.tree.parent.items() if g in stack.tree.groups},
        "leaves": {leaf: (None if p == "trunk" else p) for leaf, p in stack.tree.parent.items()
                   if leaf in stack.tree.leaves},
        "labels": stack.labels,
        "settings": stack.settings.model_dump(mode="json"),
    }
    provenance = dataclasses.replace(provenance, base_model_relation="adapter")
    with model_directory(path, overwrite) as tmp:
        save_file(weights, str(tmp / WEIGHTS))
        (tmp / LAYOUT).write_text(json.dumps(layout, indent=1))
        write_provenance(tmp, provenance, KIND)
    return Path(path)


def load_stack(path: str | Path, trunk: nn.Module) -> AdapterStack:
    """The stack saved at ``path``, on (a copy of) ``trunk``."""
    directory = Path(path)
    expect_kind(directory, KIND)
    layout = json.loads((directory / LAYOUT).read_text())
    tree = DomainTree(layout["groups"], layout["leaves"])
    stack = AdapterStack(trunk, tree, layout["labels"], AdapterSettings.model_validate(layout["settings"]))
    missing, unexpected = stack.load_state_dict(load_file(str(directory / WEIGHTS)), strict=False)
    wanted = [n for n in missing if "lora_" in n or n.startswith("heads.")]
    if unexpected or wanted:
        raise ModelError(
            f"{directory}: the saved adapters do not fit this trunk (missing {wanted[:3]}, unexpected "
            f"{unexpected[:3]}); pass the trunk the stack was trained on"
        )
    return stack
