"""Curation of logged predictions into a registered dataset, and reading it back."""

from __future__ import annotations

from pathlib import Path

import pytest

from fanbu.collect import CurateConfig, LogStore, collected_sources, curate, load_collected, read_collected
from fanbu.collect.hashing import stored_form
from fanbu.collect.store import Answer, Prediction
from fanbu.data import load_domain
from fanbu.errors import DomainError, RegistryError
from fanbu.registry import Registry
from tests.serve.helpers import LABELS, register_tiny


@pytest.fixture
def registry(tmp_path: Path):
    reg = Registry.open(tmp_path / "home")
    register_tiny(reg, "small", seed=0)
    register_tiny(reg, "large", seed=1, hidden=48)
    yield reg
    reg.close()


def _log(
    store: LogStore,
    pid: str,
    text: str,
    label: str,
    confidence: float,
    large: str | None = None,
    privacy: str = "text",
    head: str = "topic",
    target: str = "edge",
) -> None:
    stored, digest = stored_form(text, privacy)  # type: ignore[arg-type]
    probs = tuple(confidence if name == label else (1 - confidence) / 2 for name in LABELS)
    answers = [Answer("small" if large else "single", "small:v0", label, confidence, probs)]
    if large:
        answers.append(
            Answer("large", "large:v0", large, 0.95, tuple(0.95 if n == large else 0.025 for n in LABELS))
        )
    store.log_batch([Prediction(pid.ljust(32, "0"), target, head, stored, digest, privacy, tuple(answers))])


def _fill(store: LogStore) -> None:
    _log(store, "a1", "Rockets to Mars", "sci", 0.97)  # confident: pseudo-label
    _log(store, "a2", "rockets   to mars", "sci", 0.98)  # duplicate (case/space folded)
    _log(store, "b1", "church on sunday", "sci", 0.95)  # confident but corrected below: human
    _log(store, "c1", "hockey scores", "sci", 0.40, large="rec")  # escalated: hard, large label
    _log(store, "d1", "middling text", "talk", 0.60)  # middle: unlabeled
    _log(store, "e1", "rated wrong", "talk", 0.99)  # rated 1: unlabeled
    _log(store, "f1", "rated right", "talk", 0.55)  # rated 5: human-confirmed
    _log(store, "g1", "my secret", "talk", 0.99, privacy="hash")  # only a hash: skipped
    _log(store, "h1", "unsure text", "talk", 0.35)  # hard but nobody labelled it: unlabeled
    store.add_feedback("b1".ljust(32, "0"), label="talk")
    store.add_feedback("e1".ljust(32, "0"), rating=1)
    store.add_feedback("f1".ljust(32, "0"), rating=5)


def test_tiers_dedupe_and_round_trip(registry: Registry) -> None:
    with LogStore(registry.url) as store:
        _fill(store)
    record, counts = curate(registry, CurateConfig(name="logs"))
    assert counts["skipped_hash_only"] == 1
    assert counts["domains"]["topic"] == {"human": 2, "pseudo": 1, "hard": 1, "unlabeled": 3}
    assert record.id.startswith("logs@") and record.n_rows == 4 and record.domain == "topic"
    data = read_collected(registry, "logs")
    texts, labels = data.labeled["topic"]
    named = dict(zip(texts, (LABELS[i] for i in labels), strict=True))
    assert named == {
        "church on sunday": "talk",
        "rated right": "talk",
        "rockets   to mars": "sci",
        "hockey scores": "rec",
    }
    assert set(texts[:2]) == {"church on sunday", "rated right"}  # human first, then pseudo, then hard
    assert texts[2:] == ["rockets   to mars", "hockey scores"]
    assert sorted(data.unlabeled["topic"]) == ["middling text", "rated wrong", "unsure text"]
    assert load_collected(registry, record.id) == data.labeled
    again, _ = curate(registry, CurateConfig(name="logs"))
    assert again.id == record.id  # same logs, same fingerprint, same dataset


def test_quota_and_label_with_large_model(registry: Registry) -> None:
    with LogStore(registry.url) as store:
        _fill(store)
    record, counts = curate(registry, CurateConfig(name="q", quota=2, label_with="large"))
    assert record.n_rows == 2 and counts["domains"]["topic"]["human"] == 2
    full, counts = curate(registry, CurateConfig(name="lw", label_with="large"))
    assert counts["domains"]["topic"]["hard"] == 2  # "unsure text" now labelled by the large model
    assert "unsure text" in load_collected(registry, full.id)["topic"][0]


def test_the_same_logs_under_other_ids_give_the_same_rows(tmp_path: Path) -> None:
    rows = []
    for prefix in ("x", "y"):  # the server draws new prediction ids every run
        registry = Registry.open(tmp_path / prefix)
        register_tiny(registry, "small", seed=0)
        with LogStore(registry.url) as store:
            for i in range(8):
                _log(store, f"{prefix}{(7 - i) if prefix == 'x' else i}", f"text {i}", LABELS[i % 3], 0.99)
        record, _ = curate(registry, CurateConfig(name="c", quota=5))
        rows.append(load_collected(registry, record.id))
        registry.close()
    assert rows[0] == rows[1] and len(rows[0]["topic"][0]) == 5


def test_targets_keep_one_deployment_s_predictions(registry: Registry) -> None:
    with LogStore(registry.url) as store:
        _fill(store)
        _log(store, "z1", "another route's text", "sci", 0.99, target="cycle-g1-topic")
    _, everything = curate(registry, CurateConfig(name="all"))
    assert everything["domains"]["topic"]["pseudo"] == 2
    record, counts = curate(registry, CurateConfig(name="g1", targets=["cycle-g1-topic"]))
    assert counts["domains"]["topic"] == {"human": 0, "pseudo": 1, "hard": 0, "unlabeled": 0}
    assert load_collected(registry, record.id)["topic"][0] == ["another route's text"]


def test_collected_files_load_with_fanbu_data(registry: Registry) -> None:
    with LogStore(registry.url) as store:
        for i in range(12):
            _log(store, f"p{i:02d}x", f"text number {i}", LABELS[i % 3], 0.99)
    record, _ = curate(registry, CurateConfig(name="src"))
    (source,) = collected_sources(registry, record.id)
    domain = load_domain(source)
    assert domain.name == "topic" and list(domain.label_names) == LABELS
    assert len(domain.train) + len(domain.validation) + len(domain.test) == 12


def test_tampered_or_unknown_datasets_are_refused(registry: Registry) -> None:
    with LogStore(registry.url) as store:
        _log(store, "a1", "one text", "sci", 0.99)
    record, _ = curate(registry, CurateConfig(name="t"))
    with pytest.raises(RegistryError, match="no dataset named 'nope'"):
        load_collected(registry, "nope")
    other = registry.register_dataset(name="plain", fingerprint="f" * 64, n_rows=1)
    with pytest.raises(RegistryError, match="not made by `fanbu collect`"):
        load_collected(registry, other.id)
    path = Path(str(record.source)) / "topic.jsonl"
    path.write_text(path.read_text().replace("one text", "another text"))
    with pytest.raises(DomainError, match="files changed"):
        load_collected(registry, record.id)


def test_collect_command(registry: Registry) -> None:
    from typer.testing import CliRunner

    from fanbu.cli import app

    with LogStore(registry.url) as store:
        _fill(store)
    result = CliRunner().invoke(app, ["collect", "name=cli", "quota=3", "--home", str(registry.home)])
    assert result.exit_code == 0, result.output
    assert "dataset cli@" in result.output and "1 hash-only logs skipped" in result.output
    assert sum(len(t) for t, _ in load_collected(registry, "cli").values()) == 3
    bad = CliRunner().invoke(app, ["collect", "quota=0", "--home", str(registry.home)])
    assert bad.exit_code == 2 and "quota" in bad.output
