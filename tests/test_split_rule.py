"""The split rule: validation for training-time choices, gate for decisions, test for the report only.

On the tiny keyword workspace (two feedback domains, one held-out task as JSONL files): the three
splits of every task are disjoint and stratified; a feedback run whose test labels are permuted makes
exactly the same decisions (which candidate is promoted or rejected, on which gate scores) while its
reported test numbers move, so no decision reads the test split; the gate is never handed a test text;
the registry records which split each evaluation read; and a cycle counts how often it decided on the
same gate splits, warning past its limit.
"""

from __future__ import annotations

import io
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

import fanbu.cycle.run as cycle_run
from fanbu.cycle import CycleRecipe, run_cycle
from fanbu.data.domain import Benchmark
from fanbu.data.slices import benchmark_of
from fanbu.feedback.gate import promotion
from fanbu.feedback.pipeline import run_feedback
from fanbu.feedback.recipe import FeedbackData, FeedbackRecipe
from fanbu.registry import Registry
from tests.report.workspace import DOMAINS, HELDOUT, domain_files, large_v0, quick

TASKS = (*DOMAINS, *HELDOUT)
STRATEGIES = [
    {"merge": {"method": "average", "selection": {"enabled": False}}},
    {"merge": {"method": "ties", "selection": {"enabled": False}}},
    {"sequential": {"train": quick(epochs=2)}},
]

# lenient on the held-out task, so that some candidates pass and the best of them is chosen
GATE = {"task_tolerance": {"mood": 0.1}}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _bench(data: dict[str, Any]) -> Benchmark:
    return benchmark_of(FeedbackData.model_validate(data))


def _permute_test_labels(data: dict[str, Any]) -> None:
    """Rewrite every task's test file with its labels shuffled among its texts (same texts, same counts)."""
    for index, source in enumerate([*data["files"], *data["heldout_files"]]):
        path = Path(source["test"])
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        labels = [row["label"] for row in rows]
        random.Random(index).shuffle(labels)
        path.write_text("".join(json.dumps({**row, "label": y}) + "\n" for row, y in zip(rows, labels)))


def test_validation_gate_and_test_are_disjoint_and_stratified(tmp_path: Path) -> None:
    data = domain_files(tmp_path)
    bench = _bench(data)
    assert bench.gate_fraction == 0.5
    for task in TASKS:
        domain = bench.domain(task)
        validation, gate, test = bench.validation(task), bench.gate(task), domain.test
        named = {"validation": validation, "gate": gate, "test": test}
        for first, second in (("validation", "gate"), ("validation", "test"), ("gate", "test")):
            shared = set(named[first].texts) & set(named[second].texts)
            assert not shared, f"{task}: {first} and {second} share {sorted(shared)[:3]}"
        # the validation split is cut in two: nothing lost, each label shared half and half
        assert sorted(validation.texts + gate.texts) == sorted(domain.validation.texts)
        whole = domain.validation.label_counts()
        for label, count in whole.items():
            assert abs(gate.label_counts()[label] - count / 2) <= 0.5, (task, label)
            assert validation.label_counts()[label] + gate.label_counts()[label] == count
    # the cut is seeded: the same recipe reads the same splits; another seed cuts elsewhere
    again = _bench(data)
    assert all(again.gate(t) == bench.gate(t) for t in TASKS)
    moved = _bench({**data, "seed": 1})
    assert any(moved.gate(t) != bench.gate(t) for t in TASKS)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The same feedback run twice (same champion, data, seed), the second with permuted test labels;
    every text the gate scores is recorded."""
    runs: dict[str, Any] = {}
    with pytest.MonkeyPatch.context() as patch:
        scored: list[str] = []
        score_heads = promotion.score_heads

        def spy(handle: Any, splits: Any, *args: Any, **kwargs: Any) -> Any:
            scored.extend(t for texts, _ in splits.values() for t in texts)
            return score_heads(handle, splits, *args, **kwargs)

        patch.setattr(promotion, "score_heads", spy)
        for name in ("plain", "permuted"):
            root = tmp_path_factory.mktemp(name)
            data = domain_files(root)
            if name == "permuted":
                _permute_test_labels(data)
            registry = Registry.open(root / "home")
            large_v0(registry)
            recipe = FeedbackRecipe.model_validate(
                {
                    "max_length": 32,
                    "data": data,
                    "experts": {"derive": {"stages": [{"finetune": {"train": quick(epochs=2)}}]}},
                    "strategies": STRATEGIES,
                    "gate": GATE,
                }
            )
            scored.clear()
            summary = run_feedback(recipe, registry)
            runs[name] = {
                "registry": registry,
                "summary": summary,
                "bench": _bench(data),
                "scored": list(scored),
            }
    yield runs
    for run in runs.values():
        run["registry"].close()


def _decisions(summary: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {k: row[k] for k in ("name", "model", "gate", "decision", "decision_split", "decision_fingerprints")}
        for row in summary["strategies"]
    ]


def _report(summary: dict[str, Any]) -> list[Any]:
    return [summary["expert_acc"]] + [
        (row["domains"], row["forgetting_per_task"]) for row in summary["strategies"]
    ]


def test_permuting_the_test_labels_changes_the_report_and_no_decision(two_runs) -> None:
    plain, permuted = two_runs["plain"]["summary"], two_runs["permuted"]["summary"]
    # the test splits differ (same texts, other labels), the gate splits do not
    assert all(
        two_runs["plain"]["bench"].domain(t).test != two_runs["permuted"]["bench"].domain(t).test for t in TASKS
    )
    assert plain["gate_fingerprints"] == permuted["gate_fingerprints"] and set(plain["gate_fingerprints"]) == set(
        TASKS
    )
    # every decision is the same: each candidate's verdict, reason and gate scores, and the promotion
    assert _decisions(plain) == _decisions(permuted)
    assert plain["promoted"] == permuted["promoted"]
    statuses = {row["gate"]["status"] for row in plain["strategies"]}
    assert statuses == {"champion", "rejected"}, "the setup should promote one candidate and reject others"
    for registry in (two_runs["plain"]["registry"], two_runs["permuted"]["registry"]):
        assert registry.latest("large", status="champion").id == (plain["promoted"] or "large:v0")
    # while the report, scored on the test splits, moved
    assert _report(plain) != _report(permuted)
    assert plain["report_split"] == "test" and all(r["report_split"] == "test" for r in plain["strategies"])


def test_the_gate_is_never_handed_a_test_text(two_runs) -> None:
    for run in two_runs.values():
        bench, scored = run["bench"], set(run["scored"])
        assert scored, "the gate scored nothing"
        tests = {t for task in TASKS for t in bench.domain(task).test.texts}
        gates = {t for task in TASKS for t in bench.gate(task).texts}
        assert not scored & tests
        assert scored <= gates  # the gate reads the gate splits and nothing else


def test_the_registry_records_which_split_each_evaluation_read(two_runs) -> None:
    run = two_runs["plain"]
    registry, summary, bench = run["registry"], run["summary"], run["bench"]
    gate_prints = {t: bench.gate(t).fingerprint for t in TASKS}
    test_prints = {t: bench.domain(t).test.fingerprint for t in TASKS}
    assert summary["decision_split"] == "gate" and summary["gate_fingerprints"] == gate_prints
    for row in summary["strategies"]:
        assert row["decision_split"] == "gate" and row["decision_fingerprints"] == gate_prints
        evaluations = [e for e in registry.evaluations(model_id=row["model"]) if e.run_id == summary["run"]]
        gate = {(e.domain, e.dataset_fingerprint) for e in evaluations if e.split == "gate"}
        test = {(e.domain, e.dataset_fingerprint) for e in evaluations if e.split == "test"}
        assert gate == set(gate_prints.items())  # the decision: on the gate splits
        assert test == set(test_prints.items())  # the report: on the test splits
        assert {e.split for e in evaluations} == {"gate", "test"}
        # the decision's numbers are the gate evaluations, not the test ones
        recorded = {e.domain: e.value for e in evaluations if e.split == "gate" and e.metric == "accuracy"}
        assert recorded == pytest.approx({t: m["accuracy"] for t, m in row["decision"]["metrics"].items()})


def _fake_feedback(gates: dict[str, str]) -> Any:
    def run_feedback(recipe: FeedbackRecipe, registry: Registry) -> dict[str, Any]:
        return {
            "run": f"fb-{recipe.seed}",
            "champion": recipe.champion,
            "promoted": None,
            "experts": {d: f"{d}.finetune:v0" for d in DOMAINS},
            "gate_fingerprints": gates,
            "strategies": [],
        }

    return run_feedback


def test_a_cycle_counts_gate_reuse_and_warns_past_the_limit(tmp_path: Path, monkeypatch) -> None:
    registry = Registry.open(tmp_path / "home")
    try:
        large_v0(registry)
        gates = {t: f"{i}" * 64 for i, t in enumerate(TASKS)}
        monkeypatch.setattr(cycle_run, "run_feedback", _fake_feedback(gates))
        recipe = CycleRecipe.model_validate(
            {
                "data": domain_files(tmp_path),
                "derive": {"enabled": False},
                "experts": {"source": "finetune"},
                "on_no_promotion": "continue",
                "gate_reuse_limit": 1,
            }
        )
        assert CycleRecipe.model_fields["gate_reuse_limit"].default == 3
        text = io.StringIO()
        summaries = run_cycle(recipe, registry, 3, Console(file=text, width=400))
        assert [s["gate_reuse"] for s in summaries] == [0, 1, 2]
        assert all(s["gate_fingerprints"] == gates and s["decision_split"] == "gate" for s in summaries)
        output = text.getvalue()
        assert output.count("warning") == 1  # generation 2 only: two earlier decisions on these splits
        assert "generation 2 decided on the same gate splits as 2 earlier generation(s)" in output
        assert "gate_reuse_limit: 1" in output and "Add gate data" in output
        # the limit is no part of the cycle's identity: a rerun with another one redoes nothing
        relaxed = recipe.model_copy(update={"gate_reuse_limit": 5})
        assert cycle_run.cycle_id(relaxed) == cycle_run.cycle_id(recipe)
        assert all(s.get("skipped") for s in run_cycle(relaxed, registry, 3, Console(file=io.StringIO())))
        # a generation deciding on other gate splits starts the count again
        monkeypatch.setattr(cycle_run, "run_feedback", _fake_feedback({t: "f" * 64 for t in TASKS}))
        summary = run_cycle(relaxed, registry, 4, Console(file=io.StringIO()))[-1]
        assert summary["gate_reuse"] == 0
    finally:
        registry.close()


def test_the_feedback_bench_chooses_its_best_strategy_on_the_gate() -> None:
    from fanbu.bench import feedback as bench

    # a setup made without gate splits sets half of each validation slice aside, disjoint
    texts, labels = [f"text {i}" for i in range(12)], [i % 2 for i in range(12)]
    setup = bench.BenchSetup(None, {}, {}, {"a": (texts, labels)}, {}, [])  # type: ignore[arg-type]
    kept, gate = setup.validation["a"], setup.gate["a"]
    assert len(kept[0]) == len(gate[0]) == 6 and not set(kept[0]) & set(gate[0])
    assert sorted(gate[1]) == [0, 0, 0, 1, 1, 1]
    # the best: the highest gate PGR, whatever the test PGR says; then the gate accuracy
    rows = [
        {"name": "test-best", "pgr_mean": 0.9, "gate": {"pgr_mean": 0.2, "mean_acc": 0.9}},
        {"name": "gate-best", "pgr_mean": 0.1, "gate": {"pgr_mean": 0.5, "mean_acc": 0.6}},
        {"name": "no-gap", "pgr_mean": 0.5, "gate": {"pgr_mean": None, "mean_acc": 0.99}},
    ]
    assert max(rows, key=bench.gate_key)["name"] == "gate-best"
    assert max(rows[2:], key=bench.gate_key)["name"] == "no-gap"
    report = {"quick": True, "seconds": 1.0, "baselines": [], "best": "gate-best"}
    report["strategies"] = [{**r, "forgetting": 0.0, "seconds": 1.0, "domains": []} for r in rows]
    text = io.StringIO()
    bench.print_table(report, Console(file=text, width=300))
    assert "chosen on the gate splits" in text.getvalue() and "gate-best: gate PGR 0.500" in text.getvalue()
