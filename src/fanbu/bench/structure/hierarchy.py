"""The hierarchy section of ``fanbu bench structure``: flat vs hierarchical adapters on the 20 Newsgroups tree.

Leaves (:data:`~fanbu.hierarchy.newsgroups.NEWSGROUP_LEAVES`) get ``k`` labelled examples per class (8 and
32), drawn per seed from their train split. Rows, on the same draws and the same loop settings:

* ``flat``: one LoRA adapter per leaf straight on the trunk, with its head;
* ``hierarchical``: trunk -> group adapter (trained on its leaves' pooled draws) -> leaf adapter;
* ``group_alone``: the hierarchical model's group adapter with the leaf's head from the group stage.

The trunk is the packaged MiniLM, frozen, run once per text: by default (``adapt: neck``) its pooled
features are cached and every adapter is a LoRA bottleneck on a frozen residual neck over them
(:class:`~fanbu.hierarchy.trunks.FeatureNeck`); ``adapt: tail`` puts LoRA on the top ``tail_layers``
transformer layers over hidden states cached below them (several times slower on a CPU). Early stopping
reads each leaf's validation cut; the test split is scored once per (row, k, seed) for the report.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, field_validator
from rich.console import Console
from rich.table import Table
from safetensors.torch import load_file, save_file

from fanbu.bench.stats import INTERVAL_METHOD, mean_interval, seed_interval
from fanbu.config import Strict, load_recipe
from fanbu.data.domain import Domain
from fanbu.hierarchy.attach import nearest_group
from fanbu.hierarchy.data import Examples, LeafData
from fanbu.hierarchy.newsgroups import NEWSGROUP_LEAVES, newsgroups_leaf_domains, newsgroups_tree
from fanbu.hierarchy.stack import AdapterSettings, AdapterStack
from fanbu.hierarchy.training import TopDownSettings, accuracy, fit_top_down
from fanbu.hierarchy.tree import DomainTree
from fanbu.hierarchy.trunks import BertTail, FeatureNeck, cache_hidden
from fanbu.io import sha256_json
from fanbu.models.encoder import EncoderHandle
from fanbu.train.config import TrainConfig

METHODS = ("flat", "hierarchical", "group_alone")
QUICK_LEAVES = ("comp.sys", "comp.sw", "rec.vehicles", "rec.sport", "sci.tech", "sci.medspace")


def _stage(lr: float = 2e-3) -> TrainConfig:
    """Every stage's loop: steps are cheap on cached features, so up to 100 epochs with patience 15 (a
    shorter run, 25 epochs with patience 5, left the flat leaves under-trained: 2 points lower at k=8)."""
    return TrainConfig(epochs=100, batch_size=8, lr=lr, patience=15, progress=False, warmup_ratio=0.0,
                       weight_decay=0.01)


class HierarchyBenchSettings(Strict):
    """What the hierarchy section runs."""

    trunk: str = Field("package:all-MiniLM-L6-v2", description="The frozen trunk encoder.")
    max_length: int = Field(128, ge=8, description="Tokens of each text the trunk reads.")
    adapt: Literal["neck", "tail"] = Field(
        "neck", description="Where the adapters sit: neck (LoRA bottlenecks on a frozen residual neck over the "
        "cached pooled features) or tail (LoRA in the top tail_layers layers over cached hidden states).")
    neck_width: int = Field(512, ge=1, description="Inner width of the neck (adapt: neck).")
    tail_layers: int = Field(1, ge=1, description="Top trunk layers that carry the adapters (adapt: tail).")
    leaves: list[str] = Field(list(NEWSGROUP_LEAVES), min_length=1, description="20 Newsgroups leaves in the tree.")
    labels_per_class: list[int] = Field([8, 32], min_length=1, description="k labelled train examples per class.")
    seeds: int = Field(3, ge=1, description="Draws of the k examples (and of the adapters' initialisation).")
    cache_dir: str | None = Field(
        None, description="Keep the trunk's cached features here (safetensors) and reuse them on the next run.")
    validation_per_class: int = Field(16, ge=1, description="Validation examples per class (early stopping).")
    test_per_class: int | None = Field(None, ge=1, description="Cap of each class's test texts (None: all).")
    adapter: AdapterSettings = Field(
        AdapterSettings(rank=8, alpha=16.0, target_modules=["down", "up"]),
        description="Every group and leaf adapter, and the heads (adapt: tail wants BERT modules, e.g. "
        "query, key, value, dense).",
    )
    training: TopDownSettings = Field(
        TopDownSettings(groups=_stage(), leaves=_stage()),
        description="Loop settings per level; flat leaves train with training.leaves.",
    )

    @field_validator("leaves")
    @classmethod
    def _leaves(cls, leaves: list[str]) -> list[str]:
        unknown = [leaf for leaf in leaves if leaf not in NEWSGROUP_LEAVES]
        if unknown:
            raise ValueError(f"unknown leaves {unknown}; choose from {', '.join(NEWSGROUP_LEAVES)}")
        return leaves

    @classmethod
    def quick(cls) -> HierarchyBenchSettings:
        """Six leaves under comp, rec and sci; 3 seeds; at most 100 test texts per class."""
        return cls(leaves=list(QUICK_LEAVES), test_per_class=100)


def hierarchy_settings(quick: bool, overrides: list[str] | None = None) -> HierarchyBenchSettings:
    """The quick or full preset, then ``key=value`` overrides (``--set seeds=5``)."""
    preset = HierarchyBenchSettings.quick() if quick else HierarchyBenchSettings()
    return load_recipe(HierarchyBenchSettings, overrides=overrides, base=preset.model_dump(mode="json"))


def _draw(domain: Domain, k: int, seed: int) -> list[int]:
    """``k`` train indices per class, the first ``k`` of a seeded permutation (nested over k)."""
    rng = np.random.default_rng([seed, 7919])
    labels = np.asarray(domain.train.labels)
    return [int(i) for c in range(domain.num_labels) for i in rng.permutation(np.flatnonzero(labels == c))[:k]]


class FeatureCache:
    """What the adapters read for every text the section needs, computed once: the trunk's pooled features
    (``tail_layers`` None) or its hidden states below the top ``tail_layers`` layers."""

    def __init__(self, handle: EncoderHandle, tail_layers: int | None, source: str) -> None:
        self.handle, self.tail_layers, self.source = handle, tail_layers, source
        self.rows: dict[str, int] = {}
        self.states: dict[str, torch.Tensor] = {}

    def add(self, texts: list[str]) -> None:
        """Cache the texts not cached yet."""
        new = list(dict.fromkeys(t for t in texts if t not in self.rows))
        if not new:
            return
        if self.tail_layers is None:
            cached = {"features": self.handle.encode(new)[0]}  # (n, hidden)
        else:
            cached = cache_hidden(self.handle, new, self.tail_layers)
        offset = len(self.rows)
        self.rows.update({t: offset + i for i, t in enumerate(new)})
        for name, tensor in cached.items():
            self.states[name] = torch.cat([self.states[name], tensor]) if name in self.states else tensor

    def _files(self, directory: str) -> tuple[Path, Path]:
        key = sha256_json([self.source, self.handle.max_length, self.handle.truncation, self.tail_layers])[:16]
        return Path(directory) / f"hierarchy-{key}.safetensors", Path(directory) / f"hierarchy-{key}.json"

    def load(self, directory: str) -> None:
        """Take the features cached under ``directory`` by an earlier run with the same trunk settings."""
        tensors, texts = self._files(directory)
        if tensors.is_file() and texts.is_file():
            self.states = load_file(str(tensors))
            self.rows = {t: i for i, t in enumerate(json.loads(texts.read_text()))}

    def save(self, directory: str) -> None:
        """Write the cache under ``directory`` (safetensors beside the JSON list of its texts)."""
        tensors, texts = self._files(directory)
        tensors.parent.mkdir(parents=True, exist_ok=True)
        save_file({n: t.contiguous() for n, t in self.states.items()}, str(tensors))
        texts.write_text(json.dumps(list(self.rows)))

    def examples(self, texts: list[str], labels: list[int]) -> Examples:
        """Cached inputs of ``texts`` with their labels."""
        index = torch.tensor([self.rows[t] for t in texts], dtype=torch.long)
        return Examples({n: t[index] for n, t in self.states.items()}, torch.tensor(labels, dtype=torch.long))


def _split_examples(cache: FeatureCache, domain: Domain, split: str, indices: list[int] | None = None) -> Examples:
    data = getattr(domain, split)
    picked = range(len(data)) if indices is None else indices
    return cache.examples([data.texts[i] for i in picked], [data.labels[i] for i in picked])


def _run(trunk: torch.nn.Module, tree: DomainTree, domains: dict[str, Domain], data: dict[str, LeafData],
         test: dict[str, Examples], settings: HierarchyBenchSettings, seed: int) -> dict[str, Any]:
    """Train one stack on ``tree`` and score its leaves (and, on a grouped tree, their groups) on test."""
    labels = {n: list(d.label_names) for n, d in domains.items()}
    stack = AdapterStack(trunk, tree, labels, settings.adapter, seed=seed)
    seeded = settings.training.model_copy(update={
        "groups": settings.training.groups.model_copy(update={"seed": seed}),
        "leaves": settings.training.leaves.model_copy(update={"seed": seed}),
    })
    records = fit_top_down(stack, data, seeded)
    leaf = {n: accuracy(stack, n, n, test[n]) for n in tree.leaves}
    group = {n: accuracy(stack, tree.parent[n], n, test[n]) for n in tree.leaves if tree.groups}
    stages = [{"node": r.node, "steps": r.steps, "validation": r.validation, "kept_start": r.kept_start,
               "seconds": round(r.seconds, 2)} for r in records]
    return {"leaf": leaf, "group": group, "stages": stages}


def _row(method: str, k: int, per_seed: list[dict[str, float]]) -> dict[str, Any]:
    leaves = list(per_seed[0])
    means = [statistics.fmean(s.values()) for s in per_seed]
    mean, interval = mean_interval(means)
    per_leaf = {}
    for leaf in leaves:
        values = [s[leaf] for s in per_seed]
        m, iv = mean_interval(values)
        per_leaf[leaf] = {"mean": m, "lo": iv[0] if iv else None, "hi": iv[1] if iv else None, "seeds": values}
    return {"method": method, "labels_per_class": k, "acc_mean": mean,
            "acc_lo": interval[0] if interval else None, "acc_hi": interval[1] if interval else None,
            "seeds": means, "per_leaf": per_leaf}


def attachments(stack: AdapterStack, data: dict[str, LeafData]) -> dict[str, Any]:
    """Each leaf held out in turn and attached by centroid among the other leaves' groups (train draws only)."""
    out = {}
    for leaf, own in data.items():
        others = {n: d.train for n, d in data.items() if n != leaf}
        found = nearest_group(stack, leaf, own.train, others)
        out[leaf] = {"group": found.group, "true_group": stack.tree.parent[leaf],
                     "similarities": found.similarities}
    return {"leaves": out, "correct": sum(v["group"] == v["true_group"] for v in out.values()) / len(out)}


def targets(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """At 8 labels per class: hierarchical beats flat by >= 2 points on the mean, and loses <= 1 on any leaf."""
    by = {(r["method"], r["labels_per_class"]): r for r in rows}
    hier, flat = by.get(("hierarchical", 8)), by.get(("flat", 8))
    if hier is None or flat is None:
        return {}
    gain = 100 * (hier["acc_mean"] - flat["acc_mean"])
    gaps = {n: 100 * (hier["per_leaf"][n]["mean"] - flat["per_leaf"][n]["mean"]) for n in flat["per_leaf"]}
    worst_leaf = min(gaps, key=gaps.__getitem__)

    def seed_gaps(pick: Any) -> list[float] | None:  # each seed's own gap, seeds paired by position
        h, f = pick(hier), pick(flat)
        return seed_interval([100 * (a - b) for a, b in zip(h, f, strict=True)]) if len(h) == len(f) else None

    return {
        "hierarchical_vs_flat_mean_k8": {"value": gain, "bar": 2.0, "met": gain >= 2.0,
                                         "interval": seed_gaps(lambda r: r["seeds"]),
                                         "rule": "points of mean leaf accuracy over flat, >= bar"},
        "hierarchical_vs_flat_worst_leaf_k8": {"value": gaps[worst_leaf], "bar": -1.0, "met": gaps[worst_leaf] >= -1.0,
                                               "interval": seed_gaps(lambda r: r["per_leaf"][worst_leaf]["seeds"]),
                                               "rule": f"points on the worst leaf ({worst_leaf}) vs flat, >= bar"},
    }


def run_hierarchy(settings: HierarchyBenchSettings, log: Any = print) -> dict[str, Any]:
    """Run the section; returns the JSON-able report (``hierarchy`` rows, per-leaf accuracies, ``target``)."""
    start = time.perf_counter()
    handle = EncoderHandle.from_source(settings.trunk, max_length=settings.max_length)
    domains = {d.name: d for d in newsgroups_leaf_domains(settings.leaves, max_test_per_label=settings.test_per_class)}
    validation = {n: d.validation.cap_per_label(settings.validation_per_class, 0) for n, d in domains.items()}
    draws = {(n, s): _draw(d, max(settings.labels_per_class), s) for n, d in domains.items()
             for s in range(settings.seeds)}
    tail = settings.tail_layers if settings.adapt == "tail" else None
    cache = FeatureCache(handle, tail, settings.trunk)
    if settings.cache_dir is not None:
        cache.load(settings.cache_dir)
    for n, d in domains.items():
        cache.add(list(d.test.texts) + list(validation[n].texts)
                  + [d.train.texts[i] for s in range(settings.seeds) for i in draws[n, s]])
    if settings.cache_dir is not None:
        cache.save(settings.cache_dir)
    feature_seconds = time.perf_counter() - start
    log(f"hierarchy: cached {len(cache.rows)} texts in {feature_seconds:.0f} s")
    hidden = int(handle.model.hidden_size)
    trunk = FeatureNeck(hidden, settings.neck_width) if tail is None else BertTail(handle.model.encoder, tail)
    test = {n: _split_examples(cache, d, "test") for n, d in domains.items()}
    val = {n: cache.examples(list(v.texts), list(v.labels or ())) for n, v in validation.items()}
    tree, flat = newsgroups_tree(settings.leaves), DomainTree.flat(settings.leaves)
    scores: dict[tuple[str, int], list[dict[str, float]]] = {}
    runs, attach = [], None
    for k in settings.labels_per_class:
        for seed in range(settings.seeds):
            data = {}
            for n, d in domains.items():
                labels = np.asarray(d.train.labels)[draws[n, seed]]
                picked = [i for c in range(d.num_labels) for i in
                          [j for j, y in zip(draws[n, seed], labels, strict=True) if y == c][:k]]
                data[n] = LeafData(_split_examples(cache, d, "train", picked), val[n])
            hier = _run(trunk, tree, domains, data, test, settings, seed)
            base = _run(trunk, flat, domains, data, test, settings, seed)
            for method, result in (("flat", base["leaf"]), ("hierarchical", hier["leaf"]),
                                   ("group_alone", hier["group"])):
                scores.setdefault((method, k), []).append(result)
            runs.append({"labels_per_class": k, "seed": seed, "hierarchical": hier, "flat": base})
            if seed == 0 and k == max(settings.labels_per_class) and len(tree.groups) > 1:
                labels = {n: list(d.label_names) for n, d in domains.items()}
                attach = attachments(AdapterStack(trunk, tree, labels, settings.adapter), data)
                log(f"hierarchy attach by centroid: {attach['correct']:.0%} of leaves under their own group")
            log(f"hierarchy k={k} seed={seed}: flat {statistics.fmean(base['leaf'].values()):.3f} "
                f"hierarchical {statistics.fmean(hier['leaf'].values()):.3f} "
                f"group_alone {statistics.fmean(hier['group'].values()):.3f}")
    rows = [_row(m, k, scores[m, k]) for k in settings.labels_per_class for m in METHODS]
    return {
        "section": "hierarchy",
        "settings": settings.model_dump(mode="json"),
        "tree": tree.describe(),
        "labels": {n: list(d.label_names) for n, d in domains.items()},
        "test_sizes": {n: len(t) for n, t in test.items()},
        "interval": INTERVAL_METHOD,
        "hierarchy": rows,
        "runs": runs,
        "attach": attach,
        "target": targets(rows),
        "torch_threads": torch.get_num_threads(),
        "feature_seconds": feature_seconds,
        "seconds": time.perf_counter() - start,
    }


def print_hierarchy(report: dict[str, Any], console: Console) -> None:
    """One table (method and k by leaf, mean test accuracy over seeds), then the targets."""
    leaves = list(report["labels"])
    table = Table("method", "k", *leaves, "mean [interval]", title=f"hierarchy ({report['seconds']:.0f} s)")
    for row in report["hierarchy"]:
        interval = "" if row["acc_lo"] is None else f" [{row['acc_lo']:.3f}, {row['acc_hi']:.3f}]"
        table.add_row(row["method"], str(row["labels_per_class"]),
                      *(f"{row['per_leaf'][n]['mean']:.3f}" for n in leaves), f"{row['acc_mean']:.3f}{interval}")
    console.print(table)
    for name, t in report["target"].items():
        console.print(f"target {name}: {t['value']:.2f} ({t['rule']}, bar {t['bar']:.3g}): "
                      f"{'met' if t['met'] else 'SHORT'}", highlight=False)
