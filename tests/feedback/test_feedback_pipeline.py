"""``fanbu feedback``: recipe validation, candidates registered and gated, a poisoned expert, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from feedback_helpers import DOMAINS, HELDOUT, labels_of, make_texts, quick_dict
from typer.testing import CliRunner

from fanbu.cli import app
from fanbu.collect.curation import CurateConfig, Curated, Example
from fanbu.collect.dataset import write_collected
from fanbu.config import validate
from fanbu.errors import ConfigError, RegistryError
from fanbu.feedback.gate import promotion as gate_module
from fanbu.feedback.gate.scores import pgr, score_candidate
from fanbu.feedback.pipeline import add_collected, load_slices, run_feedback
from fanbu.feedback.recipe import FeedbackRecipe
from fanbu.models.artefact import Provenance
from fanbu.registry import Registry

SELECTED_AVERAGE = {"merge": {"method": "average"}}


def _write(path: Path, pairs: tuple[list[str], list[int]], task: str) -> str:
    names = labels_of(task)
    with path.open("w") as handle:
        for text, label in zip(*pairs, strict=True):
            handle.write(json.dumps({"text": text, "label": names[label]}) + "\n")
    return str(path)


def _source(tmp: Path, task: str, train: tuple, validation: tuple, test: tuple) -> dict:
    return {
        "name": task,
        "train": _write(tmp / f"{task}.train.jsonl", train, task),
        "validation": _write(tmp / f"{task}.validation.jsonl", validation, task),
        "test": _write(tmp / f"{task}.test.jsonl", test, task),
        "label_names": labels_of(task),
    }


@pytest.fixture
def workspace(tmp_path, toy_data, large_v0):
    """Domain files, and a registry holding the tiny large v0 as the champion ``large``."""
    # each validation split is cut into a validation part and a gate split of 60 texts (as many as the
    # test split), the held-out task's included: the gate never reads a test text
    files = [
        _source(tmp_path, d, toy_data["private"][d], make_texts(d, 120, 2), toy_data["test"][d])
        for d in DOMAINS
    ]
    heldout = [
        _source(
            tmp_path,
            t,
            toy_data["heldout_train"][t],
            make_texts(t, 120, 2),
            toy_data["heldout_test"][t],
        )
        for t in HELDOUT
    ]
    registry = Registry.open(tmp_path / "home")
    path = registry.model_dir("large", 0)
    large_v0.save(path, Provenance(name="large:v0"))
    registry.register_model(name="large", path=path, kind="encoder", status="champion")
    data = {"source": "files", "files": files, "heldout_files": heldout, "max_public": 24}
    yield registry, data
    registry.close()


def _register_experts(registry: Registry, swarm: dict) -> dict[str, str]:
    ids = {}
    for domain, expert in swarm.items():
        path = registry.model_dir(f"{domain}.finetune", 0)
        expert.save(path, Provenance(name=f"{domain}.finetune:v0"))
        record = registry.register_model(
            name=f"{domain}.finetune", path=path, kind="encoder", parents=["large:v0"], relation="finetune"
        )
        ids[domain] = record.id
    return ids


def test_default_recipe_validates_and_bad_ones_name_the_field() -> None:
    recipe = FeedbackRecipe()
    assert [name for name, _ in recipe.parsed_strategies()] == ["merge"]
    with pytest.raises(ConfigError, match=r"strategies\.0\.merge\.method: "):
        validate(FeedbackRecipe, {"strategies": [{"merge": {"method": "nope"}}]})
    with pytest.raises(ConfigError, match=r"strategies\.0: unknown feedback strategy 'blend'"):
        validate(FeedbackRecipe, {"strategies": [{"blend": {}}]})
    with pytest.raises(ConfigError, match=r"experts\.derive\.stages: stage 'prune'"):
        validate(
            FeedbackRecipe,
            {
                "strategies": [{"moe": {}}],
                "experts": {"derive": {"stages": [{"finetune": {}}, {"prune": {}}]}},
            },
        )
    with pytest.raises(ConfigError, match="gate.tolerance"):
        validate(FeedbackRecipe, {"gate": {"tolerance": 2}})
    with pytest.raises(ConfigError, match="no models are listed"):
        validate(FeedbackRecipe, {"experts": {"source": "registry"}})


def test_pgr_and_forgetting() -> None:
    assert pgr(0.8, 0.6, 1.0) == pytest.approx(0.5)
    assert pgr(0.8, 0.6, 0.6) is None  # no gap to recover
    champion = {"a": {"accuracy": 0.6}, "h": {"accuracy": 0.9}}
    row = score_candidate(
        {"a": {"accuracy": 0.9}, "h": {"accuracy": 0.88}}, champion, {"a": 0.9}, ["a"], ["h"]
    )
    assert row["pgr_mean"] == pytest.approx(1.0)
    assert row["forgetting"] == pytest.approx(2.0)


def test_run_feedback_registers_gates_and_keeps_the_poisoned_expert_out(
    workspace, experts, poisoned_expert
) -> None:
    registry, data = workspace
    swarm = {**experts, "tech": poisoned_expert}
    ids = _register_experts(registry, swarm)
    blind_sequential = {"sequential": {"train": quick_dict(epochs=8)}}
    poison_only = {
        "merge": {
            "method": "task_arithmetic",
            "weights": {"tech": 1.0, "health": 0.0},
            "selection": {"enabled": False},
        }
    }
    recipe = FeedbackRecipe.model_validate(
        {
            "data": data,
            "experts": {"source": "registry", "models": ids},
            "strategies": [blind_sequential, poison_only, SELECTED_AVERAGE],
        }
    )
    summary = run_feedback(recipe, registry)
    report = json.dumps(summary, indent=1, default=str)
    blind, poisoned, selected = summary["strategies"]
    assert [r["model"] for r in (blind, poisoned, selected)] == ["large:v1", "large:v2", "large:v3"]
    for row in (blind, poisoned, selected):
        record = registry.get_model(row["model"])
        assert set(record.parents) == {"large:v0", *ids.values()}
        assert record.status in ("champion", "rejected") and record.reason
        assert {d["name"] for d in row["domains"]} == set(DOMAINS)
        assert set(row["forgetting_per_task"]) == set(HELDOUT)
    assert registry.get_model(blind["model"]).relation == "finetune"
    assert registry.get_model(selected["model"]).relation == "merge"
    # Every candidate built with the poisoned expert and no selection is rejected by the gate; where the
    # poison reaches its own domain (the poisoned weights and head taken whole), the reason names it.
    for row in (blind, poisoned):
        assert registry.get_model(row["model"]).status == "rejected", report
    assert "tech accuracy" in registry.get_model(poisoned["model"]).reason, report
    # Selection leaves the poisoned expert out.
    details = registry.get_model(selected["model"]).metadata["details"]
    assert "tech" in details["excluded"] and details["selected"] == ["health"]
    promoted = summary["promoted"]
    assert promoted in (None, selected["model"])
    assert registry.latest("large", status="champion").id == (promoted or "large:v0")
    # the decision read the gate splits; the test splits were scored for the report
    decided = {(e.model_id, e.domain) for e in registry.evaluations() if e.split == "gate"}
    evaluated = {(e.model_id, e.domain) for e in registry.evaluations() if e.split == "test"}
    assert {(blind["model"], t) for t in (*DOMAINS, *HELDOUT)} <= decided
    assert {(blind["model"], t) for t in (*DOMAINS, *HELDOUT)} <= evaluated
    assert summary["decision_split"] == "gate" and set(summary["gate_fingerprints"]) == {*DOMAINS, *HELDOUT}
    assert all(row["decision_split"] == "gate" and row["report_split"] == "test" for row in summary["strategies"])
    assert registry.list_runs()[-1].status == "succeeded"


def test_best_passing_candidate_is_promoted_and_the_rest_rejected(workspace, experts, monkeypatch) -> None:
    registry, data = workspace
    scored = []
    score_heads = gate_module.score_heads
    monkeypatch.setattr(
        gate_module,
        "score_heads",
        lambda handle, *a, **k: scored.append(handle) or score_heads(handle, *a, **k),
    )
    ids = _register_experts(registry, experts)
    recipe = FeedbackRecipe.model_validate(
        {
            "data": data,
            "experts": {"source": "registry", "models": ids},
            "strategies": [SELECTED_AVERAGE, {"merge": {"method": "task_arithmetic"}}],
            "gate": {
                "tolerance": 1.0,
                "require_mean_not_worse": False,
            },  # both pass: only the ranking decides
        }
    )
    summary = run_feedback(recipe, registry)
    rows = summary["strategies"]
    assert all(row["gate"]["passed"] for row in rows)
    assert len(scored) == 3  # the champion once for the run, then each of the two candidates
    for row in rows:  # paired-bootstrap intervals over the test texts, around the point estimates
        spread = row["interval"]
        assert set(spread["domains"]) == set(DOMAINS)
        low, high = spread["forgetting"]
        assert low - 1e-9 <= row["forgetting"] <= high + 1e-9
        assert spread["pgr_mean"] is None or len(spread["pgr_mean"]) == 2
    best = summary["promoted"]
    assert best in {row["model"] for row in rows}
    assert registry.latest("large", status="champion").id == best
    assert registry.get_model("large:v0").status == "archived"
    loser = next(row for row in rows if row["model"] != best)
    assert loser["gate"]["status"] == "rejected" and "passed the gate, but" in loser["gate"]["reason"]


def test_feedback_cli_derives_experts_and_prints_the_table(workspace, tmp_path) -> None:
    registry, data = workspace
    recipe = {
        "data": data,
        "experts": {"derive": {"stages": [{"finetune": {"train": quick_dict(epochs=2)}}]}},
        "strategies": [SELECTED_AVERAGE],
    }
    path = tmp_path / "feedback.yaml"
    path.write_text(yaml.safe_dump(recipe))
    result = CliRunner().invoke(app, ["feedback", str(path), "--home", str(registry.home)])
    assert result.exit_code == 0, result.output
    assert "large:v1" in result.output and "PGR mean" in result.output
    assert "[brackets]: 90% paired-bootstrap interval" in result.output
    assert {m.name for m in registry.list_models()} >= {"tech.finetune", "health.finetune"}
    candidate = registry.get_model("large:v1")
    assert set(candidate.parents) == {"large:v0", "tech.finetune:v0", "health.finetune:v0"}
    bad = tmp_path / "feedback-bad.yaml"
    bad.write_text(yaml.safe_dump({**recipe, "champion": "nobody"}))
    result = CliRunner().invoke(app, ["feedback", str(bad), "--home", str(registry.home)])
    assert result.exit_code == 2 and "no champion" in result.output


def test_collected_rows_join_public_data_in_the_champions_label_order(workspace, large_v0) -> None:
    registry, data = workspace
    names = list(reversed(labels_of("tech")))  # the dataset's own label order differs from the champion's
    examples = [Example("tech", f"served text {i}", names[i % 3], "human", f"p{i}") for i in range(6)]
    curated = Curated({"tech": examples}, {"tech": ["an unlabeled text"]}, {"tech": names})
    record, _ = write_collected(registry, CurateConfig(name="served"), curated)
    recipe = FeedbackRecipe.model_validate({"data": {**data, "collected": "served"}})
    slices = load_slices(recipe, large_v0)
    before = len(slices.public["tech"][0])
    assert add_collected(slices, registry, "served", large_v0) == record.id
    texts, labels = slices.public["tech"]
    assert texts[before:] == [e.text for e in examples]
    assert [large_v0.labels["tech"][y] for y in labels[before:]] == [e.label for e in examples]
    assert slices.collected == {"tech": ["an unlabeled text"]} and not slices.unlabeled  # served traffic
    assert slices.fingerprints["collected"] == record.fingerprint
    assert set(slices.tests) == {*DOMAINS, *HELDOUT} and slices.heldout == list(HELDOUT)


def test_set_statuses_is_all_or_nothing(workspace) -> None:
    registry, _ = workspace
    path = registry.model_dir("large", 1)
    registry.register_model(name="large", version=1, path=path, kind="encoder")
    with pytest.raises(RegistryError, match="large:v1 is 'candidate', expected 'champion'"):
        registry.set_statuses(
            [("large:v0", "archived", "x"), ("large:v1", "champion", "y")], expected={"large:v1": "champion"}
        )
    assert registry.get_model("large:v0").status == "champion"  # nothing was written
    changed = registry.set_statuses([("large:v1", "champion", "ok"), ("large:v0", "archived", "old")])
    assert [(m.id, m.status, m.reason) for m in changed] == [
        ("large:v1", "champion", "ok"),
        ("large:v0", "archived", "old"),
    ]


def test_a_swarm_model_from_another_large_model_s_line_is_refused(workspace) -> None:
    from fanbu.feedback.pipeline import check_lineage
    from fanbu.registry.workspace import Workspace

    registry, _ = workspace
    champion = registry.get_model("large:v0")
    path = champion.path
    registry.register_model(name="other", path=path, kind="encoder")
    registry.register_model(name="tech.quantize", path=path, kind="encoder", parents=["large:v0"], relation="quantized")
    registry.register_model(name="health.quantize", path=path, kind="encoder", parents=["other:v0"], relation="quantized")
    workspace_ = Workspace(registry)
    check_lineage(workspace_, champion, {"tech": "tech.quantize:v0"})  # derived from the champion: fine
    with pytest.raises(ConfigError, match=r"experts\.models\.health: health\.quantize:v0 does not descend") as caught:
        check_lineage(workspace_, champion, {"tech": "tech.quantize:v0", "health": "health.quantize:v0"})
    assert "experts.check_lineage: false" in str(caught.value)
    runs = len(registry.list_runs())
    recipe = validate(
        FeedbackRecipe,
        {"experts": {"source": "registry", "models": {"tech": "tech.quantize:v0", "health": "health.quantize:v0"}},
         "data": workspace[1], "strategies": [{"swarm_distill": {}}]},
    )
    models = {m.id for m in registry.list_models()}
    with pytest.raises(ConfigError, match="does not descend"):
        run_feedback(recipe, registry)
    assert {m.id for m in registry.list_models()} == models  # no partial registry entry
    assert len(registry.list_runs()) == runs + 1 and registry.list_runs()[-1].status == "failed"
