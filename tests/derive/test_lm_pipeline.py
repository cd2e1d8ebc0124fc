"""The causal-LM derive pipeline (task: causal_lm) end to end on a tiny Llama and a JSONL text domain."""

from __future__ import annotations

import itertools
import json
import random

import pytest
import yaml
from transformers import AutoModelForCausalLM

from fanbu.derive.pipeline import DeriveRecipe, load_derive_recipe, run_any_derive
from fanbu.errors import ConfigError, DomainError
from fanbu.models import CausalLMHandle
from fanbu.registry import Registry

WORDS = ["the", "team", "will", "play", "a", "great", "game", "on", "the", "first", "day", "of", "the", "year", "and", "win"]


def write_texts(path, n=80, seed=0, label=False):
    rng = random.Random(seed)
    with open(path, "w") as fh:
        for _ in range(n):
            start = rng.randrange(5)
            row = {"text": " ".join(WORDS[start : start + 9])}
            if label:
                row["label"] = rng.choice(["a", "b"])
            fh.write(json.dumps(row) + "\n")


@pytest.fixture
def setup(tmp_path):
    write_texts(tmp_path / "sport.jsonl")
    teacher = CausalLMHandle.tiny(hidden_size=32, num_layers=2, seed=0)
    teacher.model.save_pretrained(tmp_path / "teacher")
    teacher.tokenizer.save_pretrained(tmp_path / "teacher")
    fast = {"epochs": 1, "batch_size": 8, "lr": 3e-3, "progress": False, "metric": "score", "mode": "max"}
    recipe = {
        "task": "causal_lm",
        "teacher": str(tmp_path / "teacher"),
        "max_length": 32,
        "data": {
            "source": "files",
            "files": [{"name": "sport", "task": "causal_lm", "train": str(tmp_path / "sport.jsonl")}],
            "max_validation": 8,
            "max_test": 8,
        },
        "stages": [
            {"finetune": {"mode": "lora", "lora": {"r": 4, "alpha": 8}, "train": fast}},
            {
                "prune": {
                    "layers": 1,
                    "heads": 2,
                    "ffn": 0.5,
                    "hidden": 16,
                    "importance": "minitron",
                    "calibration": 16,
                }
            },
            {"distill": {"top_k": 16, "window": 16, "train": fast}},
            {"export": {"check_texts": 4, "tolerance": 0.1}},
        ],
    }
    path = tmp_path / "lm-derive.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return tmp_path, path


def test_lm_recipe_runs_every_stage_into_the_registry(setup) -> None:
    tmp_path, path = setup
    recipe = load_derive_recipe(path)
    registry = Registry.open(tmp_path / "home")
    [result] = run_any_derive(recipe, registry)
    chain = [registry.get_model(i) for i in result["models"]]
    assert [m.name for m in chain] == ["sport.finetune", "sport.prune", "sport.distill", "sport.export"]
    assert [m.relation for m in chain] == ["finetune", "pruned", "distilled", "quantized"]
    for parent, child in itertools.pairwise(chain):
        assert child.parents == (parent.id,)
    assert chain[0].parents == ("teacher:v0",) and registry.get_model("teacher:v0").kind == "causal_lm"
    assert chain[1].metadata["params"] < chain[0].metadata["params"]
    assert {e.split for e in registry.evaluations(result["final"])} == {"validation", "test"}
    assert result["test"]["ppl"] > 1.0
    final = chain[-1].path
    reloaded = AutoModelForCausalLM.from_pretrained(final)  # a plain Hugging Face causal LM
    assert reloaded.config.num_hidden_layers == 1
    assert (tmp_path / "home").exists() and any(
        p.name == "model.bin" for p in __import__("pathlib").Path(final).rglob("*")
    )


def test_lm_recipe_on_a_classification_domain_is_refused(setup) -> None:
    tmp_path, path = setup
    write_texts(tmp_path / "topics.jsonl", label=True)
    raw = yaml.safe_load(path.read_text())
    raw["data"]["files"] = [{"name": "topics", "train": str(tmp_path / "topics.jsonl")}]
    path.write_text(yaml.safe_dump(raw))
    recipe = load_derive_recipe(path)
    with pytest.raises(DomainError, match="is a classification task, but this recipe has task: causal_lm"):
        run_any_derive(recipe, Registry.open(tmp_path / "home"))


def test_classification_recipe_refuses_lm_settings_and_lm_stages_are_checked(setup) -> None:
    _tmp_path, path = setup
    with pytest.raises(ValueError, match="task: causal_lm is an LM derive recipe"):
        DeriveRecipe.model_validate({"task": "causal_lm"})
    raw = yaml.safe_load(path.read_text())
    raw["stages"] = [{"quantize": {}}]
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="quantize"):
        load_derive_recipe(path)
