"""LM curation: generations, ratings and corrections become a registered prompt-completion dataset."""

from __future__ import annotations

from pathlib import Path

import pytest

from fanbu.collect import (
    Completion,
    Generation,
    LMCurateConfig,
    LogStore,
    collected_lm_source,
    curate_lm,
    read_collected_lm,
)
from fanbu.collect.hashing import stored_form
from fanbu.data import load_domain
from fanbu.errors import DomainError, RegistryError
from fanbu.registry import Registry


@pytest.fixture
def registry(tmp_path: Path):
    reg = Registry.open(tmp_path / "home")
    yield reg
    reg.close()


def _log(
    store: LogStore, gid: str, prompt: str, completion: str, privacy: str = "text", target: str = "lm"
) -> None:
    stored_prompt, prompt_hash = stored_form(prompt, privacy)  # type: ignore[arg-type]
    stored, digest = stored_form(completion, privacy)  # type: ignore[arg-type]
    answer = Completion("single", "lm:v0", stored, digest, -1.5, 4, "length")
    store.log_generation(
        Generation(gid, target, "completions", stored_prompt, prompt_hash, privacy, (answer,))
    )


def test_corrections_replace_and_low_ratings_drop(registry: Registry) -> None:
    with LogStore(registry.url) as store:
        _log(store, "g1", "q: sky colour? a:", " green")
        _log(store, "g2", "q: two plus two? a:", " four")
        _log(store, "g3", "q: capital of france? a:", " berlin")
        _log(store, "g4", "q: say hi a:", " hi")
        _log(store, "g5", "secret", " text", privacy="hash")
        _log(store, "g6", "other route", " x", target="elsewhere")
        _log(store, "g7", "q: sky colour? a:", " green")  # the corrected completion, asked again
        store.add_generation_feedback("g1", rating=1)
        store.add_generation_feedback("g1", completion=" blue")  # a correction wins over its low rating
        store.add_generation_feedback("g2", rating=5)
        store.add_generation_feedback("g3", rating=2)
        record, counts = curate_lm(registry, LMCurateConfig(name="lm-data", targets=["lm"]), store)
    assert counts["tiers"] == {"corrected": 1, "rated": 1, "unrated": 1}
    assert counts["dropped"] == {"hash_only": 1, "judged_wrong": 1, "low_rating": 1, "over_quota": 0}
    assert counts["logged"] == 6
    examples = read_collected_lm(registry, "lm-data")
    assert [(e.prompt, e.completion, e.tier) for e in examples] == [
        ("q: sky colour? a:", " blue", "corrected"),
        ("q: two plus two? a:", " four", "rated"),
        ("q: say hi a:", " hi", "unrated"),
    ]
    assert examples[0].text == "q: sky colour? a: blue"
    assert record.metadata["kind"] == "collected_lm" and record.metadata["parent"]["models"] == ["lm:v0"]
    assert record.n_rows == 3 and record.id == registry.get_dataset(record.id).id
    again, _ = curate_lm(registry, LMCurateConfig(name="lm-data", targets=["lm"]))
    assert again.id == record.id  # the same logs give the same dataset


def test_unrated_can_be_left_out_and_quota_keeps_the_best(registry: Registry) -> None:
    with LogStore(registry.url) as store:
        for i in range(4):
            _log(store, f"g{i}", f"prompt {i}", f" answer {i}")
        store.add_generation_feedback("g3", rating=4)
        store.add_generation_feedback("g2", completion=" fixed")
        _, counts = curate_lm(registry, LMCurateConfig(name="rated-only", keep_unrated=False), store)
        assert (
            counts["tiers"] == {"corrected": 1, "rated": 1, "unrated": 0}
            and counts["dropped"]["unrated"] == 2
        )
        _, counts = curate_lm(registry, LMCurateConfig(name="one", quota=1), store)
    assert [e.tier for e in read_collected_lm(registry, "one")] == ["corrected"] and counts["dropped"][
        "over_quota"
    ] == 3


def test_dataset_loads_as_a_causal_lm_domain_and_detects_edits(registry: Registry) -> None:
    with LogStore(registry.url) as store:
        for i in range(12):
            _log(store, f"g{i}", f"the prompt number {i}", f" and its completion {i}")
        record, _ = curate_lm(registry, LMCurateConfig(name="domain"), store)
    domain = load_domain(collected_lm_source(registry, "domain"))
    assert domain.task == "causal_lm"
    texts = [*domain.train.texts, *domain.validation.texts, *domain.test.texts]
    assert sorted(texts) == sorted(f"the prompt number {i} and its completion {i}" for i in range(12))
    path = Path(str(record.source)) / "generations.jsonl"
    path.write_text(path.read_text().replace("completion 3", "completion 333"))
    with pytest.raises(DomainError, match="changed since"):
        read_collected_lm(registry, "domain")
    with pytest.raises(RegistryError, match="collect --lm"):
        read_collected_lm(registry, "missing")


def test_collect_command_curates_generations(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from fanbu.cli import app

    home = tmp_path / "home"
    with Registry.open(home) as reg, LogStore(reg.url) as store:
        _log(store, "g1", "q: sky colour? a:", " green")
        _log(store, "g2", "q: two plus two? a:", " four")
        store.add_generation_feedback("g1", completion=" blue")
    result = CliRunner().invoke(app, ["collect", "--lm", "--home", str(home), "name=lm-data", "targets=[lm]"])
    assert result.exit_code == 0, result.output
    assert "prompt-completion pairs" in result.output
    with Registry.open(home) as reg:
        pairs = {(e.prompt, e.completion) for e in read_collected_lm(reg, "lm-data")}
    assert ("q: sky colour? a:", " blue") in pairs
