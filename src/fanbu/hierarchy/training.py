"""Top-down training of an adapter stack through THE loop: the trunk (optional), each group on its leaves'
pooled data, then each leaf on its own data with its ancestors frozen.

A group trains multi-task: one head per leaf under it, each batch from one leaf. Each head of a stage
starts from the parent node's head for that leaf when the parent has been trained, so a leaf starts from
its group's model. Early stopping reads the leaves' validation examples only.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from pydantic import Field
from torch import Tensor, nn

from fanbu.config import Strict
from fanbu.errors import ConfigError
from fanbu.hierarchy.data import Examples, LeafData, TensorPlan
from fanbu.hierarchy.stack import AdapterStack
from fanbu.hierarchy.tree import ROOT
from fanbu.train.config import TrainConfig
from fanbu.train.loop import Trainer
from fanbu.train.terms import Batch, TaskLoss


def _stage_config(lr: float) -> TrainConfig:
    return TrainConfig(epochs=30, batch_size=16, lr=lr, patience=5, progress=False, warmup_ratio=0.0)


class TopDownSettings(Strict):
    """How each level of the tree is trained."""

    trunk: TrainConfig | None = Field(
        None, description="Tune the trunk first on every leaf (one head each); null keeps the trunk frozen."
    )
    groups: TrainConfig = Field(
        default_factory=lambda: _stage_config(1e-3), description="Loop settings of every group stage."
    )
    leaves: TrainConfig = Field(
        default_factory=lambda: _stage_config(1e-3), description="Loop settings of every leaf stage."
    )
    keep_start: bool = Field(
        True,
        description="Score each stage's starting point on validation too and keep it when no trained epoch "
        "beats it (a leaf then stays its group's model, its own adapter zero).",
    )


@dataclass(frozen=True)
class StageRecord:
    """One trained node: its leaves, the loop's steps, the best validation score, the seconds taken, and
    whether the starting point was kept (no epoch beat it on validation)."""

    node: str
    leaves: tuple[str, ...]
    steps: int
    validation: float | None
    seconds: float
    kept_start: bool = False


@torch.no_grad()
def predict(stack: AdapterStack, node: str, leaf: str, examples: Examples, batch_size: int = 64) -> Tensor:
    """Predicted label ids ``(n,)`` of ``node``'s head for ``leaf``, in eval mode."""
    was = stack.training
    stack.eval()
    try:
        out = [
            stack(node, leaf, **examples.select(range(s, min(s + batch_size, len(examples)))).inputs).argmax(-1)
            for s in range(0, len(examples), batch_size)
        ]
    finally:
        stack.train(was)
    return torch.cat(out)  # (n,)


def accuracy(stack: AdapterStack, node: str, leaf: str, examples: Examples) -> float:
    """Share of ``examples`` that ``node``'s head for ``leaf`` gets right."""
    return float((predict(stack, node, leaf, examples) == examples.labels).float().mean())


def train_node(
    stack: AdapterStack,
    node: str,
    data: Mapping[str, LeafData],
    config: TrainConfig,
    trained: set[str],
    keep_start: bool = False,
) -> StageRecord:
    """Train ``node``'s adapter (the trunk for :data:`ROOT`) and its heads, everything else frozen.

    ``keep_start``: when the best validation score of the run does not beat that of the starting point,
    go back to the starting point.
    """
    leaves = stack.tree.leaves_under(node)
    missing = [leaf for leaf in leaves if leaf not in data]
    if missing:
        raise ConfigError(f"no training data for the leaf domains {missing} under '{node}'")
    if stack.tree.parent.get(node) in trained:
        stack.start_heads(node)
    stack.freeze(nodes=[] if node == ROOT else [node], heads=stack.node_heads(node), trunk=node == ROOT)
    stack.activate(node)
    union = stack.is_union(node)

    def forward(model: nn.Module, batch: Batch) -> dict[str, Tensor]:  # a union head: over all its labels
        return {"logits": model(node, "*" if union else batch.task, **batch.inputs)}

    def evaluate(model: nn.Module) -> dict[str, float]:
        scores = {f"{leaf}.acc": accuracy(stack, node, leaf, data[leaf].validation) for leaf in leaves}
        return {**scores, "score": sum(scores.values()) / len(scores)}

    train = {leaf: data[leaf].train for leaf in leaves}
    if union:  # leaf label ids -> the union head's
        train = {leaf: Examples(ex.inputs, torch.tensor(stack.columns(node, leaf))[ex.labels])
                 for leaf, ex in train.items()}
    plan = TensorPlan(train, config.batch_size, config.seed)
    start = time.perf_counter()
    initial = {n: p.detach().clone() for n, p in stack.named_parameters() if p.requires_grad}
    before = evaluate(stack)["score"] if keep_start else None
    result = Trainer(stack, plan, config, [TaskLoss()], forward, evaluate, description=f"train {node}").fit(
        resume=False
    )
    best, kept = result.state.best, False
    if before is not None and (best is None or best <= before):
        stack.load_state_dict(initial, strict=False)
        best, kept = before, True
    stack.freeze()
    trained.add(node)
    return StageRecord(node, tuple(leaves), result.state.global_step, best, time.perf_counter() - start, kept)


def fit_top_down(
    stack: AdapterStack,
    data: Mapping[str, LeafData],
    settings: TopDownSettings | None = None,
    on_stage: Callable[[StageRecord], None] | None = None,
) -> list[StageRecord]:
    """Train the trunk (when ``settings.trunk`` is set), then the groups shallowest first, then the leaves;
    ``on_stage`` hears of each stage as it ends (a command's progress lines)."""
    settings = settings or TopDownSettings()
    trained: set[str] = set()
    stages = [(ROOT, settings.trunk)] if settings.trunk is not None else []
    stages += [(group, settings.groups) for group in stack.tree.top_down]
    stages += [(leaf, settings.leaves) for leaf in stack.tree.leaves]
    records = []
    for node, config in stages:
        records.append(train_node(stack, node, data, config, trained, settings.keep_start))
        if on_stage is not None:
            on_stage(records[-1])
    return records
