"""``fanbu feedback`` with ``task: causal_lm`` end to end on a tiny Llama, and the recipe's errors."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from fanbu.errors import ConfigError
from fanbu.feedback.lm.data import lm_domains, read_corrections
from fanbu.feedback.lm.recipe import LMData
from fanbu.feedback.pipeline import run_feedback
from fanbu.feedback.recipe import FeedbackRecipe
from fanbu.models.artefact import Provenance
from fanbu.models.causal_lm import CausalLMHandle
from fanbu.registry import Registry
from fanbu.registry.workspace import Workspace

STEPS = {"epochs": 100, "max_steps": 2, "batch_size": 4, "lr": 0.01, "progress": False, "threads": 1}


def lm_recipe(corrections: str) -> dict:
    return {
        "task": "causal_lm",
        "champion": "tiny-lm",
        "max_length": 32,
        "strategies": [
            {"lm_merge": {"method": "task_arithmetic"}},
            {"lm_sequential": {"train": STEPS}},
            {"lm_corrections": {"train": STEPS}},
        ],
        "lm": {
            "data": {
                "domains": ["bbc-sports", "bbc-tech"],
                "max_docs": 20,
                "max_test": 4,
                "max_heldout": 4,
                "max_general": 8,
                "corrections": corrections,
            },
            "experts": {
                "finetune": {"mode": "lora", "lora": {"r": 2, "alpha": 4, "merge": False}, "train": STEPS},
                "max_train": 8,
            },
            "gate": {"tolerance": 0.5, "prompt_tolerance": 5.0},
        },
    }


def test_lm_feedback_end_to_end(tmp_path) -> None:
    registry = Registry.open(tmp_path / "home")
    champion = CausalLMHandle.tiny(seed=0, max_length=32)
    Workspace(registry).save_and_register(champion, Provenance(), name="tiny-lm", status="champion")
    corrections = tmp_path / "corrections.jsonl"
    corrections.write_text(
        "\n".join(json.dumps({"prompt": f"who won {i}", "completion": "the best team"}) for i in range(4))
    )
    summary = run_feedback(FeedbackRecipe.model_validate(lm_recipe(str(corrections))), registry)
    assert summary["task"] == "causal_lm" and summary["champion"] == "tiny-lm:v0"
    rows = {row["name"]: row for row in summary["strategies"]}
    assert set(rows) == {"lm_merge", "lm_sequential", "lm_corrections"}
    for row in rows.values():
        assert set(row["pgr"]) == {"bbc-sports", "bbc-tech"}
        assert "20newsgroups" in row["ppl"] and isinstance(row["heldout_ppl_change"], float)
        assert row["gate"]["status"] in ("champion", "rejected")
        assert row["decision_split"] == "gate" and row["report_split"] == "test"
    statuses = [row["gate"]["status"] for row in rows.values()]
    assert statuses.count("champion") == (summary["promoted"] is not None)
    promoted = summary["promoted"] or "tiny-lm:v0"
    assert registry.latest("tiny-lm", status="champion").id == promoted
    reloaded = Workspace(registry).load(rows["lm_merge"]["model"])
    assert isinstance(reloaded, CausalLMHandle)


def test_lm_methods_refuse_classification_domains() -> None:
    with pytest.raises(ConfigError, match="causal_lm domains"):
        lm_domains(LMData(source="bbc-news", heldout="20newsgroups", general="reuters-r8"))
    with pytest.raises(ValidationError, match="feed back causal LMs"):
        FeedbackRecipe.model_validate({"strategies": [{"lm_distill": {}}]})
    with pytest.raises(ValidationError, match="feed back classifiers"):
        FeedbackRecipe.model_validate({"task": "causal_lm", "strategies": [{"swarm_distill": {}}]})
    with pytest.raises(ValidationError, match="held-out corpus must never be used"):
        LMData(heldout="reuters-r8", general="reuters-r8")


def test_bad_corrections_file_names_the_line(tmp_path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "a"}\n')
    with pytest.raises(Exception, match="line 2"):
        read_corrections(path)
