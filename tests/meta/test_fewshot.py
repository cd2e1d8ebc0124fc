"""``fanbu adapt --shots K DOMAIN``: a registered model taken to a new domain from K examples per class."""

from __future__ import annotations

import json
import random

import pytest
import torch
from typer.testing import CliRunner

from fanbu.cli import app
from fanbu.data.domain import Split
from fanbu.errors import ConfigError
from fanbu.meta.fewshot import FewShotConfig, draw_shots, run_fewshot
from fanbu.models import EncoderHandle
from fanbu.models.artefact import Provenance
from fanbu.registry import Registry

WORDS = {"space": "orbit rocket nasa launch moon", "med": "doctor patient disease drug clinic",
         "sport": "goal match team score league"}


def _write(path, n, seed):
    rng = random.Random(seed)
    with open(path, "w") as fh:
        for i in range(n):
            label = sorted(WORDS)[i % 3]
            words = rng.sample(WORDS[label].split(), 3) + [rng.choice(["the", "a", "of"]) for _ in range(2)]
            fh.write(json.dumps({"text": " ".join(words), "label": label}) + "\n")


@pytest.fixture
def setup(tmp_path):
    for split, n, seed in (("train", 30, 0), ("validation", 12, 1), ("test", 12, 2)):
        _write(tmp_path / f"{split}.jsonl", n, seed)
    EncoderHandle.tiny(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64).save(
        tmp_path / "base", Provenance(name="tiny"))
    data = {"name": "news", "train": str(tmp_path / "train.jsonl"), "validation": str(tmp_path / "validation.jsonl"),
            "test": str(tmp_path / "test.jsonl")}
    return tmp_path, data


def test_a_model_adapts_from_k_shots_and_is_registered_with_lineage(setup, one_thread):
    tmp_path, data = setup
    registry = Registry.open(tmp_path / "home")
    config = FewShotConfig(model=str(tmp_path / "base"), domain="news", data=data, shots=4, max_length=32,
                           train={"epochs": 2, "batch_size": 8, "lr": 1e-3, "progress": False})
    summary = run_fewshot(config, registry)
    assert summary["examples"] == 12 and summary["shots"] == 4
    made = registry.get_model(summary["model"])
    assert made.name == "news.fewshot" and made.relation == "finetune" and made.parents == (summary["parent"],)
    assert made.metadata["shots"] == 4
    assert {e.split for e in registry.evaluations(made.id)} == {"validation", "test"}
    handle = EncoderHandle.load(made.path)
    assert handle.labels == {"news": ["med", "space", "sport"]}
    assert handle.predict(["orbit rocket moon"], "news").shape == (1,)
    registry.close()


def test_the_same_seed_draws_the_same_shots_and_too_many_shots_are_refused():
    split = Split(tuple(f"t{i}" for i in range(9)), (0, 1, 2, 0, 1, 2, 0, 1, 0))
    first = draw_shots(split, ("a", "b", "c"), 2, seed=3)
    assert first == draw_shots(split, ("a", "b", "c"), 2, seed=3)
    assert sorted(first.labels) == [0, 0, 1, 1, 2, 2]
    with pytest.raises(ConfigError, match=r"shots 3: more than these labels have training examples: \{'c': 2\}"):
        draw_shots(split, ("a", "b", "c"), 3, seed=0)


def test_the_cli_runs_few_shot_and_names_what_is_missing(setup, one_thread):
    tmp_path, data = setup
    home = tmp_path / "cli-home"
    runner = CliRunner()
    args = ["adapt", "news", f"data={json.dumps(data)}", "max_length=32", "train.epochs=1", "train.progress=false",
            "--shots", "2", "--model", str(tmp_path / "base"), "--home", str(home)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "news.fewshot:v0" in result.output
    missing = runner.invoke(app, ["adapt", "news", "--shots", "2", "--home", str(home)])
    assert missing.exit_code != 0 and "--shots needs --model" in missing.output
    unknown = runner.invoke(app, ["adapt", "nowhere", "--shots", "2", "--model", str(tmp_path / "base"),
                                  "--home", str(home)])
    assert unknown.exit_code != 0 and "not a built-in domain" in unknown.output


def test_a_meta_initialisation_adapts_on_its_encoders_features(setup, one_thread):
    from fanbu.meta.artefacts import save_meta_init
    from fanbu.meta.network import new_body
    from fanbu.models.module import ModuleHandle

    tmp_path, data = setup
    provenance = Provenance(name="meta-reptile", base_model=str(tmp_path / "base"), base_model_relation="adapter",
                            extra={"meta": {"encoder": str(tmp_path / "base"), "features": {"max_length": 32}}})
    save_meta_init(new_body(32, 8, seed=0), tmp_path / "meta", provenance)
    registry = Registry.open(tmp_path / "home")
    config = FewShotConfig(model=str(tmp_path / "meta"), domain="news", data=data, shots=4,
                           meta_adapt={"steps": 5, "lr_grid": [0.1, 1.0]})
    summary = run_fewshot(config, registry)
    made = registry.get_model(summary["model"])
    assert made.kind == "module" and made.relation == "finetune" and made.metadata["lr"] in (0.1, 1.0)
    assert set(made.metadata["lr_validation"]) == {"0.1", "1.0"}  # every rate scored on validation
    source = registry.get_model(made.parents[0])
    assert source.kind == "module" and source.metadata["role"] == "meta-initialisation"
    net = ModuleHandle.load(made.path).module
    assert net.predict_proba(torch.zeros(2, 32)).shape == (2, 3)
    registry.close()
