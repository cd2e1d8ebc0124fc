"""The lineage view: the whole registry as JSON, or as a rich tree of models from their roots."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from rich.text import Text
from rich.tree import Tree

from fanbu.registry.engine import describe_url
from fanbu.registry.records import EvaluationRecord, ModelRecord, to_json_dict
from fanbu.registry.store import Registry

STATUS_STYLES: dict[str, str] = {
    "candidate": "yellow",
    "champion": "bold green",
    "rejected": "red",
    "archived": "dim",
}


def lineage_json(registry: Registry) -> dict[str, Any]:
    """Everything in ``registry`` as a ``json.dumps``-able dict (datetimes as ISO strings).

    Keys: ``models``, ``edges`` (parent, child, relation), ``datasets``, ``model_datasets``
    (model, dataset, role), ``evaluations`` and ``runs``.
    """
    models = registry.list_models()
    return {
        "models": [to_json_dict(m) for m in models],
        "edges": [{"parent": p, "child": m.id, "relation": m.relation} for m in models for p in m.parents],
        "datasets": [to_json_dict(d) for d in registry.list_datasets()],
        "model_datasets": [to_json_dict(link) for link in registry.dataset_links()],
        "evaluations": [to_json_dict(e) for e in registry.evaluations()],
        "runs": [to_json_dict(r) for r in registry.list_runs()],
    }


def lineage_tree(registry: Registry, evaluations: bool = True) -> Tree:
    """The model DAG as a tree from its roots (models without parents).

    Each node shows id, kind, status (coloured), relation and, with ``evaluations``, the latest value
    of each metric per domain. A model with several parents appears under each of them; its subtree
    is expanded at its first appearance only, later ones are marked ``(see above)``.
    """
    models = registry.list_models()
    scores = latest_metrics(registry.evaluations()) if evaluations else {}
    children: dict[str, list[ModelRecord]] = defaultdict(list)
    for model in models:
        for parent in model.parents:
            children[parent].append(model)
    tree = Tree(Text(f"lineage of {describe_url(registry.url)}", style="bold"))
    if not models:
        tree.add(Text("no models registered yet", style="dim"))
    expanded: set[str] = set()
    roots = [m for m in models if not m.parents]
    stack: list[tuple[Tree, ModelRecord]] = [(tree, m) for m in reversed(roots)]
    while stack:  # depth-first, iterative: long generation chains must not hit the recursion limit
        parent_node, model = stack.pop()
        if model.id in expanded:
            parent_node.add(Text(f"{model.id} (see above)", style="dim italic"))
            continue
        label = model_label(model, scores.get(model.id, {}))
        expanded.add(model.id)
        node = parent_node.add(label)
        stack.extend((node, child) for child in reversed(children[model.id]))
    return tree


def latest_metrics(records: Iterable[EvaluationRecord]) -> dict[str, dict[str, dict[str, float]]]:
    """``{model_id: {domain: {metric: value}}}`` keeping each metric's most recent value."""
    latest: dict[str, dict[str, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
    for record in sorted(records, key=lambda r: (r.created_at, r.id)):
        latest[record.model_id][record.domain][record.metric] = record.value
    return {model: dict(domains) for model, domains in latest.items()}


def model_label(model: ModelRecord, scores: dict[str, dict[str, float]]) -> Text:
    """One tree line: ``id  kind  status  relation  domain metric value ...``."""
    label = Text(model.id, style="bold")
    label.append(f"  {model.kind}", style="cyan")
    label.append(f"  {model.status}", style=STATUS_STYLES.get(model.status, ""))
    if model.relation:
        label.append(f"  {model.relation}", style="magenta")
    if scores:
        label.append("  ")
        label.append(format_scores(scores), style="blue")
    return label


def format_scores(scores: dict[str, dict[str, float]]) -> str:
    """Compact metrics, e.g. ``comp acc 0.91 f1 0.9 · med acc 0.85``."""
    parts = []
    for domain in sorted(scores):
        values = " ".join(f"{metric} {value:.3g}" for metric, value in sorted(scores[domain].items()))
        parts.append(f"{domain} {values}")
    return " · ".join(parts)
