"""Meta decision forests: structure learned across domains, leaves re-estimated, relabel guard."""

from __future__ import annotations

import numpy as np
import pytest

from fanbu.errors import ConfigError
from fanbu.meta.forest import DomainData, MetaForest, MetaForestConfig
from tests.meta.conftest import toy_task

CONFIG = MetaForestConfig(trees=6, depth=3, tree_features=8, node_features=3, thresholds=4, min_node=4, basis_dims=10)


def _domains() -> list[DomainData]:
    return [DomainData(t.name, t.features.numpy(), t.labels.numpy())
            for t in (toy_task("a", 3, seed=1), toy_task("b", 4, seed=2))]


def test_structure_is_learned_and_complete() -> None:
    forest = MetaForest.fit_meta(_domains(), CONFIG)
    assert forest.feature.shape == forest.threshold.shape == (6, 7)
    assert np.isfinite(forest.threshold[:, 0]).all()  # every root splits the meta-training data
    assert forest.meta_domains == ["a", "b"]
    with pytest.raises(ConfigError, match="not adapted"):
        forest.predict_proba(_domains()[0].features)


def test_adaptation_re_estimates_leaves_and_keeps_the_structure() -> None:
    forest = MetaForest.fit_meta(_domains(), CONFIG)
    new = toy_task("c", 3, seed=3)
    x, y = new.features.numpy(), new.labels.numpy()
    shots = np.concatenate([np.flatnonzero(y == c)[:5] for c in range(3)])
    adapted = forest.adapt(x[shots], y[shots], new.label_names)
    assert np.array_equal(adapted.feature, forest.feature) and np.array_equal(adapted.threshold, forest.threshold)
    assert forest.projection is not None and np.array_equal(adapted.projection, forest.projection)
    assert forest.node_proba is None and adapted.node_proba is not None
    assert np.allclose(adapted.node_proba.sum(axis=-1), 1.0, atol=1e-5)
    # a leaf reached by no support example holds its parent's distribution (shrinkage with no counts)
    paths = adapted.paths(x[shots])
    leaves = set(map(int, paths[0, :, -1]))
    empty = next(n for n in range(7, 15) if n not in leaves)
    assert np.allclose(adapted.node_proba[0, empty], adapted.node_proba[0, (empty - 1) // 2])
    # the root holds the support's class frequencies
    assert np.allclose(adapted.node_proba[:, 0], 1 / 3, atol=1e-6)
    again = adapted.adapt(x[shots[::-1]][:6], y[shots[::-1]][:6], new.label_names)
    assert not np.allclose(again.node_proba, adapted.node_proba)
    accuracy = float((adapted.predict(x) == y).mean())
    assert accuracy > 0.5


def test_a_new_label_set_size_needs_relabel() -> None:
    forest = MetaForest.fit_meta(_domains(), CONFIG)
    new = toy_task("c", 3, seed=3)
    adapted = forest.adapt(new.features.numpy()[:30], new.labels.numpy()[:30] % 3, new.label_names)
    four = toy_task("d", 4, seed=4)
    with pytest.raises(ConfigError, match="relabel=True"):
        adapted.adapt(four.features.numpy(), four.labels.numpy(), four.label_names)
    relabelled = adapted.adapt(four.features.numpy(), four.labels.numpy(), four.label_names, relabel=True)
    assert relabelled.predict_proba(four.features.numpy()).shape == (len(four.labels), 4)


def test_config_checks() -> None:
    with pytest.raises(ValueError, match="node_features"):
        MetaForestConfig(tree_features=4, node_features=5)
    with pytest.raises(ValueError, match="basis_dims"):
        MetaForestConfig(tree_features=20, node_features=3, basis_dims=10)
    with pytest.raises(ConfigError, match="tree_features"):
        MetaForest.fit_meta(_domains(), MetaForestConfig(tree_features=20, node_features=3, basis="raw"))
    with pytest.raises(ConfigError, match="basis_dims"):
        MetaForest.fit_meta(_domains(), MetaForestConfig(tree_features=8, node_features=3))


def test_raw_basis_splits_on_the_features() -> None:
    raw = MetaForest.fit_meta(_domains(), CONFIG.model_copy(update={"basis": "raw"}))
    assert raw.projection is None and raw.feature.max() < 12


def test_regrow_splits_the_top_levels_again_on_the_new_domain_and_keeps_the_rest() -> None:
    config = CONFIG.model_copy(update={"regrow": 1})
    forest = MetaForest.fit_meta(_domains(), config)
    new = toy_task("c", 3, seed=3)
    x, y = new.features.numpy(), new.labels.numpy()
    shots = np.concatenate([np.flatnonzero(y == c)[:4] for c in range(3)])
    adapted = forest.adapt(x[shots], y[shots], new.label_names)
    # the levels below the regrown one keep the meta-learned splits
    assert np.array_equal(adapted.feature[:, 1:], forest.feature[:, 1:])
    assert np.array_equal(adapted.threshold[:, 1:], forest.threshold[:, 1:])
    # the root splits again, on features its tree already split on, where the new classes separate
    assert not np.array_equal(adapted.threshold[:, 0], forest.threshold[:, 0])
    for t in range(config.trees):
        assert adapted.feature[t, 0] in set(forest.feature[t][np.isfinite(forest.threshold[t])])
    plain = MetaForest(CONFIG, forest.feature, forest.threshold, forest.meta_domains,
                       projection=forest.projection).adapt(x[shots], y[shots], new.label_names)
    assert np.array_equal(plain.threshold, forest.threshold)  # regrow 0 keeps every split
    with pytest.raises(ValueError, match="regrow 4 exceeds depth 3"):
        MetaForestConfig(trees=6, depth=3, tree_features=8, node_features=3, basis_dims=10, regrow=4)
