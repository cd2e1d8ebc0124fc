"""Save/load round trips of the meta-initialised body and the forest: safetensors, provenance, no pickle."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fanbu.errors import ModelError
from fanbu.meta.artefacts import load_forest, load_meta_init, meta_provenance, save_forest, save_meta_init
from fanbu.meta.forest import DomainData, MetaForest, MetaForestConfig
from fanbu.meta.learn import MetaConfig, meta_train
from fanbu.models.artefact import Provenance
from tests.meta.conftest import toy_task


def test_meta_init_round_trip(tasks, tmp_path, one_thread) -> None:
    result = meta_train(tasks[:2], MetaConfig(hidden=6, k_shot=2, query=2, iterations=2, meta_batch=1, inner_steps=1))
    provenance = meta_provenance(result, "package:all-MiniLM-L6-v2", {"max_length": 128}, {"a": "f1", "b": "f2"})
    path = save_meta_init(result.body, tmp_path / "meta", provenance)
    assert (path / "model.safetensors").is_file() and not list(path.glob("*.bin")) and not list(path.glob("*.pt"))
    body, loaded = load_meta_init(path)
    x = tasks[2].features
    assert torch.equal(body(x), result.body(x))
    assert loaded.base_model == "package:all-MiniLM-L6-v2" and loaded.base_model_relation == "adapter"
    assert loaded.data_fingerprints == {"a": "f1", "b": "f2"}
    assert loaded.extra["meta"]["meta_domains"] == ["a", "b"]


def test_a_metasgd_body_keeps_its_rate_profile_through_save_and_load(tasks, tmp_path, one_thread) -> None:
    result = meta_train(tasks[:2], MetaConfig(method="metasgd", hidden=6, k_shot=2, query=2, iterations=3,
                                              meta_batch=1, inner_steps=1, meta_lr=0.1))
    provenance = meta_provenance(result, "package:all-MiniLM-L6-v2", {"max_length": 128}, {"a": "f1", "b": "f2"})
    body, _ = load_meta_init(save_meta_init(result.body, tmp_path / "metasgd", provenance))
    assert body.learned_lr
    for name, value in result.body.rate_profile().items():
        assert torch.equal(body.rate_profile()[name], value)


def test_forest_round_trip(tmp_path) -> None:
    domains = [DomainData(t.name, t.features.numpy(), t.labels.numpy()) for t in (toy_task("a", 3), toy_task("b", 4))]
    config = MetaForestConfig(trees=3, depth=2, tree_features=6, node_features=2, thresholds=3, min_node=4, basis_dims=8)
    new = toy_task("c", 3, seed=5)
    forest = MetaForest.fit_meta(domains, config).adapt(new.features.numpy(), new.labels.numpy(), new.label_names)
    path = save_forest(forest, tmp_path / "forest", Provenance(name="meta-forest", base_model="enc"))
    loaded, provenance = load_forest(path)
    assert provenance.name == "meta-forest"
    assert loaded.label_names == list(new.label_names) and loaded.config == config
    assert np.array_equal(loaded.projection, forest.projection)
    assert np.array_equal(loaded.predict_proba(new.features.numpy()), forest.predict_proba(new.features.numpy()))
    record = json.loads((path / "forest.json").read_text())
    assert record["kind"] == "meta_forest"
    (path / "forest.safetensors").write_bytes(b"damaged")
    with pytest.raises(ModelError, match="re-save the forest"):
        load_forest(path)


def test_adapted_models_serve_behind_the_predictor_protocol(tasks, one_thread) -> None:
    from fanbu.meta.adapt import adapt
    from fanbu.meta.features import normalise
    from fanbu.meta.network import new_body
    from fanbu.meta.predictor import FeaturePredictor
    from fanbu.models.encoder import EncoderHandle
    from fanbu.models.predict import Predictor

    encoder = EncoderHandle.tiny(hidden_size=12)
    texts = ["alpha beta", "gamma delta epsilon", "zeta", "eta theta", "iota kappa", "lambda mu nu"]
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    pooled = normalise(encoder.encode(texts)[0])
    config = MetaForestConfig(trees=3, depth=2, tree_features=6, node_features=2, thresholds=3, min_node=4, basis="raw")
    domains = [DomainData(t.name, t.features.numpy(), t.labels.numpy()) for t in tasks[:2]]
    forest = MetaForest.fit_meta(domains, config).adapt(pooled.numpy(), labels.numpy(), ["x", "y", "z"])
    top = adapt(new_body(12, 4, seed=0), pooled, labels, 3, lr=0.5, steps=3)
    for model in (forest, top):
        predictor = FeaturePredictor(encoder, model, "topic", ["x", "y", "z"])
        assert isinstance(predictor, Predictor)
        proba = predictor.predict_proba(texts, "topic")
        assert proba.shape == (6, 3) and np.allclose(proba.sum(axis=1), 1.0, atol=1e-5)
        assert np.allclose(proba, model.predict_proba(pooled.numpy()), atol=1e-5)
        assert predictor.predict(texts[:2], "topic").shape == (2,)
        with pytest.raises(ModelError, match="unknown head"):
            predictor.predict_proba(texts, "other")
