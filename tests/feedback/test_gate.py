"""The gate: promotion, rejection with a reason, a poisoned merge, registry statuses and rollback."""

from __future__ import annotations

from pathlib import Path

import pytest
from _merge_fixtures import TASKS, finetune_copy, tiny_swarm, toy_task
from typer.testing import CliRunner

from fanbu.cli import app
from fanbu.errors import ConfigError, RegistryError
from fanbu.feedback.gate.promotion import GateConfig, apply_decision, gate, rollback
from fanbu.feedback.gate.scores import score_report, score_tests
from fanbu.feedback.shared.weights import SelectionConfig
from fanbu.feedback.strategies.merge import MergeConfig, merge_strategy
from fanbu.registry import Registry


@pytest.fixture(scope="module")
def better():
    """The champion fine-tuned on fresh data of every task: better everywhere."""
    swarm = tiny_swarm()
    return finetune_copy(swarm.large, {t: toy_task(t, 128, seed=5) for t in TASKS}, epochs=3)


@pytest.fixture
def registry(tmp_path: Path):
    reg = Registry.open(tmp_path / "home")
    yield reg
    reg.close()


def test_gate_promotes_a_better_candidate(better) -> None:
    swarm = tiny_swarm()
    decision = gate(better, swarm.large, swarm.tests)
    assert decision.promoted, decision.reason
    assert decision.reason.startswith("promoted")
    assert set(decision.tasks) == set(TASKS) and not decision.failures
    assert decision.candidate_mean >= decision.champion_mean


def test_gate_rejects_a_worse_candidate_naming_the_task(better) -> None:
    swarm = tiny_swarm()
    decision = gate(swarm.poisoned, swarm.large, swarm.tests)
    assert not decision.promoted
    assert "sentiment" in decision.failures
    assert "sentiment accuracy" in decision.reason and "points" in decision.reason
    lenient = gate(
        swarm.poisoned,
        swarm.large,
        swarm.tests,
        GateConfig(task_tolerance={"sentiment": 1.0}, require_mean_not_worse=False),
    )
    assert "sentiment" not in lenient.failures


def test_gate_rejects_a_merge_that_includes_the_poisoned_expert(tmp_path: Path) -> None:
    swarm = tiny_swarm()
    experts = {"sentiment": swarm.poisoned, "topic": swarm.experts["topic"]}
    ctx = swarm.context(tmp_path, experts)
    blind = merge_strategy(ctx, MergeConfig(method="average", selection=SelectionConfig(enabled=False)))
    decision = gate(blind.handle, swarm.large, swarm.tests)
    assert not decision.promoted and "sentiment" in decision.failures
    selected = merge_strategy(ctx, MergeConfig(method="average"))
    assert "sentiment" in selected.details["excluded"]
    assert selected.details["selected"] == ["topic"]


def test_gate_needs_a_gate_split_for_every_head() -> None:
    swarm = tiny_swarm()
    partial = {k: v for k, v in swarm.tests.items() if k != "faith"}
    with pytest.raises(ConfigError, match="no gate split for \\['faith'\\]"):
        gate(swarm.large, swarm.large, partial)
    assert gate(swarm.large, swarm.large, partial, GateConfig(require_all_heads=False)).promoted
    with pytest.raises(ConfigError, match="no head for"):
        gate(swarm.large, swarm.large, {**swarm.tests, "nope": (["x"], [0])})


def _register(registry: Registry, version_status: str = "champion", parent: str | None = None):
    return registry.register_model(
        name="large",
        path="/m/large",
        kind="encoder",
        status=version_status,
        parents=[parent] if parent else [],
        relation="merge" if parent else None,
    )


def test_apply_and_rollback(registry: Registry, better) -> None:
    swarm = tiny_swarm()
    v0 = _register(registry)
    v1 = _register(registry, "candidate", v0.id)
    promoted = gate(better, swarm.large, swarm.tests)
    record = apply_decision(registry, v1, v0, promoted, fingerprints={"faith": "ab" * 32})
    assert record.status == "champion" and record.reason.startswith("promoted")
    assert registry.get_model(v0.id).status == "archived"
    evaluations = registry.evaluations(model_id=v1.id)
    # what the decision read is recorded as the gate split (the default), with its fingerprint
    assert {e.domain for e in evaluations} == set(TASKS) and {e.split for e in evaluations} == {"gate"}
    assert {e.dataset_fingerprint for e in evaluations if e.domain == "faith"} == {"ab" * 32}
    assert len(registry.evaluations(model_id=v0.id)) == len(evaluations)

    v2 = _register(registry, "candidate", v1.id)
    rejected = apply_decision(
        registry, v2, registry.get_model(v1.id), gate(swarm.poisoned, better, swarm.tests)
    )
    assert rejected.status == "rejected" and "sentiment accuracy" in rejected.reason
    assert registry.get_model(v1.id).status == "champion"

    result = rollback(registry)
    assert (result.restored.id, result.restored.status) == (v0.id, "champion")
    assert (result.retired.id, result.retired.status) == (v1.id, "rejected")
    assert registry.latest("large", status="champion").id == v0.id
    with pytest.raises(RegistryError, match="no previous champion"):
        rollback(registry)
    with pytest.raises(RegistryError, match="expected 'candidate'"):
        apply_decision(registry, registry.get_model(v2.id), registry.get_model(v0.id), promoted)
    assert registry.get_model(v0.id).status == "champion"  # nothing half-written


def test_rollback_without_a_champion(registry: Registry) -> None:
    with pytest.raises(RegistryError, match="no champion named 'large'"):
        rollback(registry)


def test_rollback_command(tmp_path: Path, better) -> None:
    home = tmp_path / "home"
    runner = CliRunner()
    with Registry.open(home) as registry:
        v0 = _register(registry)
    result = runner.invoke(app, ["rollback", "--home", str(home)])
    assert result.exit_code == 2 and "no previous champion" in result.output
    swarm = tiny_swarm()
    with Registry.open(home) as registry:
        v1 = _register(registry, "candidate", v0.id)
        apply_decision(registry, v1, v0, gate(better, swarm.large, swarm.tests))
    result = runner.invoke(app, ["rollback", "--home", str(home)])
    assert result.exit_code == 0, result.output
    assert "large:v0 is champion again" in result.output


def test_apply_decision_records_the_report_apart_from_the_decision(registry: Registry, better) -> None:
    """The gate's evaluations carry split gate and the gate fingerprints; the report's carry split test."""
    swarm = tiny_swarm()
    v0 = _register(registry)
    v1 = _register(registry, "candidate", v0.id)
    decision = gate(better, swarm.large, swarm.tests)
    report = score_report(better, swarm.tests, score_tests(swarm.large, swarm.tests))
    gates = {t: "a" * 64 for t in TASKS}
    tests = {t: "b" * 64 for t in TASKS}
    apply_decision(
        registry, v1, v0, decision, fingerprints=gates, run_id=None, report=report, report_fingerprints=tests
    )
    for model_id in (v1.id, v0.id):
        evaluations = registry.evaluations(model_id=model_id)
        assert {e.split for e in evaluations} == {"gate", "test"}
        assert {e.dataset_fingerprint for e in evaluations if e.split == "gate"} == {"a" * 64}
        assert {e.dataset_fingerprint for e in evaluations if e.split == "test"} == {"b" * 64}
    lost = score_report(None, swarm.tests, score_tests(swarm.large, swarm.tests))
    assert lost.candidate_metrics == {} and set(lost.champion_metrics) == set(TASKS)


def test_paired_bound_needs_evidence_to_call_a_drop() -> None:
    from fanbu.feedback.gate.promotion import TaskResult, paired_upper_bound

    # 120 gate texts, the candidate loses 3 and gains 1: -1.7 points observed, within the noise
    champion = "1" * 100 + "0" * 20
    candidate = "0" * 3 + "1" * 97 + "1" + "0" * 19
    upper = paired_upper_bound(candidate, champion, 0.9)
    assert upper > -0.01
    assert TaskResult(97 / 120 + 1 / 120, 100 / 120, 0.01, upper).ok
    assert not TaskResult(98 / 120, 100 / 120, 0.01).ok  # the point rule rejects the same texts
    # 3,600 texts with the same proportions: now the drop is credible
    big = paired_upper_bound(candidate * 30, champion * 30, 0.9)
    assert big < -0.01
    assert paired_upper_bound("1" * 50, "1" * 50, 0.9) == 0.0


def test_paired_rule_needs_accuracy() -> None:
    with pytest.raises(ValueError, match="rule: point"):
        GateConfig(metric="macro_f1")
    assert GateConfig(metric="macro_f1", rule="point").rule == "point"


def test_point_rule_rejects_what_the_paired_rule_calls_noise(better) -> None:
    swarm = tiny_swarm()
    point = gate(swarm.large, better, swarm.tests, GateConfig(rule="point"))
    paired = gate(swarm.large, better, swarm.tests, GateConfig(rule="paired"))
    for task, result in paired.tasks.items():
        assert result.upper is not None and result.upper >= result.delta
        assert point.tasks[task].upper is None
        if not result.ok:
            assert not point.tasks[task].ok  # the paired rule never rejects what the point rule keeps
