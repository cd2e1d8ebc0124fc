"""Meta decision forests: split structure learned across the swarm's domains, leaves re-estimated per domain.

Meta-training (:meth:`MetaForest.fit_meta`) grows complete binary trees of a fixed depth on the pooled
features of several domains at once. Each tree owns a shared random subset of the features; at every
node it picks, among a few of those features and quantile thresholds, the split with the largest Gini
gain *summed over the meta-training domains* (each domain's own labels, each domain weighted equally),
so a split is kept because it separates classes in many domains, not in one. A node with too few
examples routes everything left (``threshold = +inf``), so every tree keeps its complete shape.

Adaptation to a new domain (:meth:`MetaForest.adapt`) keeps every split and re-estimates the class
distribution of every node from the k labelled examples per class, with hierarchical shrinkage toward
the parent's (Agarwal et al. 2022, https://arxiv.org/abs/2202.00858): ``p(node) = (counts(node) +
lam * p(parent)) / (n(node) + lam)``, the root's being the class frequencies of the support set. Few
examples reach a deep leaf; shrinkage lets the leaf fall back on its ancestors instead of guessing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.linalg
from pydantic import Field, model_validator

from fanbu.config import Strict
from fanbu.errors import ConfigError


class MetaForestConfig(Strict):
    """Shape and meta-training of a meta decision forest."""

    trees: int = Field(64, ge=1, description="Trees in the forest.")
    depth: int = Field(6, ge=1, le=14, description="Depth of every (complete) tree: 2**depth leaves.")
    tree_features: int = Field(24, ge=1, description="Features each tree may split on (its shared subset).")
    node_features: int = Field(8, ge=1, description="Features of the tree's subset tried at each node.")
    thresholds: int = Field(8, ge=1, description="Quantile thresholds tried per feature at each node.")
    min_node: int = Field(8, ge=2, description="A node with fewer meta-training examples does not split.")
    subsample: float = Field(0.7, gt=0, le=1, description="Share of each domain's examples each tree grows on.")
    shrinkage: float = Field(4.0, ge=0, description="Hierarchical shrinkage strength lam of adaptation.")
    regrow: int = Field(0, ge=0, description="Levels at the top of every tree whose splits adaptation chooses "
                        "again on the new domain's k examples (among the features the tree splits on); the "
                        "levels below keep the meta-learned splits. 0: keep every split.")
    basis: Literal["raw", "discriminant"] = Field(
        "discriminant", description="Split on the raw features, or on discriminant directions shared by the "
        "meta-training domains (generalised eigenvectors of their pooled between- and within-class scatter).")
    basis_dims: int = Field(48, ge=1, description="Directions of the discriminant basis (basis=discriminant).")
    ridge: float = Field(0.1, gt=0, description="Within-class scatter ridge, relative to its mean eigenvalue.")
    seed: int = Field(0, description="Seeds the feature subsets, candidate features and subsamples.")

    @model_validator(mode="after")
    def _check(self) -> MetaForestConfig:
        if self.node_features > self.tree_features:
            raise ValueError(f"node_features {self.node_features} exceeds tree_features {self.tree_features}: "
                             "a node tries features of its tree's subset; lower node_features")
        if self.regrow > self.depth:
            raise ValueError(f"regrow {self.regrow} exceeds depth {self.depth}: a tree has {self.depth} levels of "
                             "splits; lower regrow")
        if self.basis == "discriminant" and self.tree_features > self.basis_dims:
            raise ValueError(f"tree_features {self.tree_features} exceeds basis_dims {self.basis_dims}: a tree "
                             "splits on directions of the basis; lower tree_features or raise basis_dims")
        return self


@dataclass(frozen=True)
class DomainData:
    """One meta-training domain's features ``(n, dim)`` and label ids ``(n,)``."""

    name: str
    features: np.ndarray
    labels: np.ndarray


def discriminant_basis(domains: Sequence[DomainData], dims: int, ridge: float) -> np.ndarray:
    """Directions ``(dim, dims)`` that separate classes in the meta-training domains, each domain weighted
    equally: the top generalised eigenvectors of between-class scatter against (ridged) within-class scatter."""
    dim = domains[0].features.shape[1]
    if dims > dim:
        raise ConfigError(f"meta_forest.basis_dims {dims} exceeds the {dim} features; lower it")
    within, between = np.zeros((dim, dim)), np.zeros((dim, dim))
    for d in domains:
        x = d.features.astype(np.float64)
        centre = x.mean(axis=0)
        for c in np.unique(d.labels):
            members = x[d.labels == c]
            mean = members.mean(axis=0)
            within += (members - mean).T @ (members - mean) / len(x)
            between += len(members) / len(x) * np.outer(mean - centre, mean - centre)
    within += ridge * np.trace(within) / dim * np.eye(dim)
    _, vectors = scipy.linalg.eigh(between, within)  # ascending eigenvalues; vectors within-orthonormal
    return vectors[:, ::-1][:, :dims].astype(np.float32).copy()


def _gini_sum(counts: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Per row of ``counts`` ``(rows, classes)``: sum over domain blocks of ``n_block * gini(block)``."""
    totals = np.add.reduceat(counts, starts, axis=1)  # (rows, domains)
    squares = np.add.reduceat(counts**2, starts, axis=1)  # (rows, domains)
    with np.errstate(divide="ignore", invalid="ignore"):
        impurity = np.where(totals > 0, totals - squares / totals, 0.0)  # n * (1 - sum p^2)
    return impurity.sum(axis=1)


class MetaForest:
    """Complete trees of one depth: ``feature``/``threshold`` per internal node (BFS order), and per node
    class probabilities once adapted to a label set."""

    def __init__(self, config: MetaForestConfig, feature: np.ndarray, threshold: np.ndarray,
                 meta_domains: Sequence[str] = (), node_proba: np.ndarray | None = None,
                 label_names: Sequence[str] | None = None, projection: np.ndarray | None = None) -> None:
        internal = 2**config.depth - 1
        if feature.shape != (config.trees, internal) or threshold.shape != feature.shape:
            raise ConfigError(f"forest arrays {feature.shape}/{threshold.shape} do not fit {config.trees} trees of "
                              f"depth {config.depth} ({internal} internal nodes each); rebuild the forest")
        self.config = config
        self.feature = feature.astype(np.int64)
        self.threshold = threshold.astype(np.float32)
        self.meta_domains = list(meta_domains)
        self.node_proba = node_proba  # (trees, nodes, labels) or None before adaptation
        self.label_names = None if label_names is None else [str(n) for n in label_names]
        self.projection = None if projection is None else projection.astype(np.float32)  # (dim, basis_dims)

    # -- meta-training ------------------------------------------------------------------------------
    @classmethod
    def fit_meta(cls, domains: Sequence[DomainData], config: MetaForestConfig) -> MetaForest:
        """Grow the split structure on ``domains`` (their labels each on their own)."""
        if not domains:
            raise ConfigError("a meta forest needs at least one meta-training domain: give meta_domains")
        projection = None
        if config.basis == "discriminant":
            projection = discriminant_basis(domains, config.basis_dims, config.ridge)
        x = np.concatenate([d.features for d in domains]).astype(np.float32)  # (n, dim)
        if projection is not None:
            x = x @ projection  # (n, basis_dims)
        dim = x.shape[1]
        if config.tree_features > dim:
            raise ConfigError(f"meta_forest.tree_features {config.tree_features} exceeds the {dim} features; lower it")
        sizes = [int(d.labels.max()) + 1 for d in domains]
        starts = np.cumsum([0, *sizes[:-1]])
        y = np.zeros((len(x), sum(sizes)), dtype=np.float64)  # (n, classes of every domain)
        weight = np.concatenate([np.full(len(d.labels), 1.0 / len(d.labels)) for d in domains])
        domain_of = np.concatenate([np.full(len(d.labels), i) for i, d in enumerate(domains)])
        y[np.arange(len(x)), np.concatenate([d.labels + s for d, s in zip(domains, starts, strict=True)])] = weight
        rng = np.random.default_rng(config.seed)
        internal = 2**config.depth - 1
        feature = np.zeros((config.trees, internal), dtype=np.int64)
        threshold = np.full((config.trees, internal), np.inf, dtype=np.float32)
        for t in range(config.trees):
            subset = rng.choice(dim, size=config.tree_features, replace=False)
            rows = np.concatenate([rng.permutation(np.flatnonzero(domain_of == i))[:max(1, int(config.subsample
                                   * np.sum(domain_of == i)))] for i in range(len(domains))])
            cls._grow(x, y, starts, rows, subset, config, rng, feature[t], threshold[t])
        return cls(config, feature, threshold, [d.name for d in domains], projection=projection)

    @staticmethod
    def _grow(x: np.ndarray, y: np.ndarray, starts: np.ndarray, rows: np.ndarray, subset: np.ndarray,
              config: MetaForestConfig, rng: np.random.Generator, feature: np.ndarray, threshold: np.ndarray,
              levels: int | None = None, min_node: int | None = None) -> None:
        """Choose the internal nodes' splits of one tree (in place), breadth first: every level, or the top
        ``levels`` (the nodes below keep theirs)."""
        members: list[np.ndarray] = [rows]
        quantiles = (np.arange(config.thresholds) + 1) / (config.thresholds + 1)
        smallest = config.min_node if min_node is None else min_node
        for node in range(2 ** (config.depth if levels is None else levels) - 1):
            idx = members[node]
            if len(idx) >= smallest:
                feats = rng.choice(subset, size=min(config.node_features, len(subset)), replace=False)
                values = x[np.ix_(idx, feats)]  # (n, f)
                cuts = np.quantile(values, quantiles, axis=0).T  # (f, q)
                left = (values[:, :, None] <= cuts[None]).reshape(len(idx), -1)  # (n, f*q)
                counts_left = left.T.astype(np.float64) @ y[idx]  # (f*q, classes)
                parent = y[idx].sum(axis=0, keepdims=True)  # (1, classes)
                gain = _gini_sum(parent, starts) - _gini_sum(counts_left, starts) - _gini_sum(parent - counts_left,
                                                                                                  starts)
                best = int(np.argmax(gain))
                if gain[best] > 1e-12:
                    feature[node], threshold[node] = feats[best // config.thresholds], cuts.reshape(-1)[best]
            goes_left = x[idx, feature[node]] <= threshold[node]
            members += [idx[goes_left], idx[~goes_left]]

    # -- adaptation and prediction ------------------------------------------------------------------
    def paths(self, features: np.ndarray) -> np.ndarray:
        """The node of every tree each example passes at every depth: ``(trees, n, depth + 1)``."""
        x = np.asarray(features, dtype=np.float32)  # (n, dim)
        if self.projection is not None:
            x = x @ self.projection  # (n, basis_dims)
        node = np.zeros((self.config.trees, len(x)), dtype=np.int64)  # (trees, n)
        out = [node]
        trees = np.arange(self.config.trees)[:, None]
        for _ in range(self.config.depth):
            f, t = self.feature[trees, node], self.threshold[trees, node]  # (trees, n)
            right = x[np.arange(len(x))[None], f] > t
            node = 2 * node + 1 + right
            out.append(node)
        return np.stack(out, axis=-1)

    def adapt(self, features: np.ndarray, labels: np.ndarray, label_names: Sequence[str], *,
              relabel: bool = False) -> MetaForest:
        """A copy with the same splits and every node's class distribution re-estimated from ``(features, labels)``.

        Raises:
            ConfigError: ``label_names`` has another size than the label set the forest is adapted to,
                and ``relabel`` is not set; or a label id lies outside ``label_names``.
        """
        names = [str(n) for n in label_names]
        if self.label_names is not None and len(names) != len(self.label_names) and not relabel:
            raise ConfigError(f"the forest is adapted to {len(self.label_names)} labels {self.label_names}, but "
                              f"{len(names)} labels were given; pass relabel=True to adapt it to a new label set")
        labels = np.asarray(labels, dtype=np.int64)
        if len(labels) == 0 or labels.min() < 0 or labels.max() >= len(names):
            raise ConfigError(f"labels must be ids in 0..{len(names) - 1} (one per example, at least one); "
                              "renumber them to index label_names")
        forest = self._regrown(features, labels, len(names)) if self.config.regrow else self
        nodes = 2 ** (self.config.depth + 1) - 1
        counts = np.zeros((self.config.trees, nodes, len(names)))  # (trees, nodes, labels)
        paths = forest.paths(features)  # (trees, n, depth+1)
        trees = np.repeat(np.arange(self.config.trees)[:, None], paths.shape[1], axis=1)  # (trees, n)
        for level in range(paths.shape[2]):
            np.add.at(counts, (trees, paths[:, :, level], np.broadcast_to(labels, trees.shape)), 1.0)
        proba = np.zeros_like(counts)
        proba[:, 0] = counts[:, 0] / counts[:, 0].sum(axis=-1, keepdims=True)
        lam = self.config.shrinkage
        for node in range(1, nodes):
            parent = proba[:, (node - 1) // 2]  # (trees, labels)
            here = counts[:, node]
            proba[:, node] = (here + lam * parent) / (here.sum(axis=-1, keepdims=True) + lam)
        return MetaForest(self.config, forest.feature.copy(), forest.threshold.copy(), self.meta_domains,
                          proba.astype(np.float32), names, self.projection)

    def _regrown(self, features: np.ndarray, labels: np.ndarray, n_labels: int) -> MetaForest:
        """A copy whose top ``config.regrow`` levels are split again on ``(features, labels)``: per node, the
        best Gini split among the features its tree splits on and quantile thresholds of the examples there."""
        x = np.asarray(features, dtype=np.float32)
        if self.projection is not None:
            x = x @ self.projection
        y = np.zeros((len(x), n_labels))
        y[np.arange(len(x)), labels] = 1.0 / len(x)
        feature, threshold = self.feature.copy(), self.threshold.copy()
        top = 2**self.config.regrow - 1
        rng = np.random.default_rng(self.config.seed + 1)
        for t in range(self.config.trees):
            used = np.unique(self.feature[t][np.isfinite(self.threshold[t])])
            subset = used if len(used) else np.unique(self.feature[t])
            threshold[t, :top] = np.inf  # a node the k examples cannot split routes everything left
            self._grow(x, y, np.zeros(1, dtype=np.int64), np.arange(len(x)), subset, self.config, rng, feature[t],
                       threshold[t], levels=self.config.regrow, min_node=2)
        return MetaForest(self.config, feature, threshold, self.meta_domains, None, None, self.projection)

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """Class probabilities ``(n, labels)``: the mean of every tree's leaf distribution."""
        if self.node_proba is None or self.label_names is None:
            raise ConfigError("the forest is not adapted to a label set yet; call adapt(features, labels, "
                              "label_names) with k labelled examples per class first")
        leaves = self.paths(features)[:, :, -1]  # (trees, n)
        trees = np.arange(self.config.trees)[:, None]
        return self.node_proba[trees, leaves].mean(axis=0)  # (n, labels)

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Label ids ``(n,)``."""
        return self.predict_proba(features).argmax(axis=-1)
