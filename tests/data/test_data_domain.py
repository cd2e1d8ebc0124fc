"""Split, Domain and Benchmark: determinism, stratification and the validation errors."""

from __future__ import annotations

from collections import Counter

import pytest

from fanbu.data.domain import Benchmark, Domain, Split
from fanbu.errors import DomainError


def labeled(counts: dict[int, int]) -> Split:
    texts, labels = [], []
    for label, count in counts.items():
        for i in range(count):
            texts.append(f"text {label}-{i}")
            labels.append(label)
    return Split(tuple(texts), tuple(labels))


def make_domain(name: str = "d", **overrides: object) -> Domain:
    fields: dict[str, object] = {
        "name": name,
        "task": "classification",
        "train": labeled({0: 30, 1: 20}),
        "validation": labeled({0: 3, 1: 3}),
        "test": labeled({0: 5, 1: 5}),
        "label_names": ("a", "b"),
    }
    fields.update(overrides)
    return Domain(**fields)  # type: ignore[arg-type]


def test_split_coerces_lists_and_reports_length() -> None:
    split = Split(["x", "y"], [1, 0])  # type: ignore[arg-type]
    assert split.texts == ("x", "y") and split.labels == (1, 0)
    assert len(split) == 2


def test_split_rejects_label_count_mismatch() -> None:
    with pytest.raises(DomainError, match=r"2 texts but 1 labels \(give one label per text"):
        Split(("a", "b"), (0,))


def test_split_rejects_non_string_text() -> None:
    with pytest.raises(DomainError, match="texts must be strings, got a int"):
        Split(("a", 3))  # type: ignore[arg-type]


def test_fingerprint_is_stable_cached_and_content_sensitive() -> None:
    split = Split(("a", "b"), (0, 1))
    assert split.fingerprint == Split(("a", "b"), (0, 1)).fingerprint
    assert split.fingerprint is split.fingerprint
    assert len(split.fingerprint) == 64
    assert split.fingerprint != Split(("b", "a"), (1, 0)).fingerprint
    assert split.fingerprint != Split(("a", "b"), (1, 1)).fingerprint
    assert split.fingerprint != Split(("a", "b")).fingerprint


def test_subsample_is_deterministic_stratified_and_a_subset() -> None:
    split = labeled({0: 60, 1: 30, 2: 10})
    sub = split.subsample(20, seed=3)
    assert len(sub) == 20
    assert sub == split.subsample(20, seed=3)
    assert sub != split.subsample(20, seed=4)
    assert Counter(sub.labels) == {0: 12, 1: 6, 2: 2}
    assert set(sub.texts) <= set(split.texts)
    positions = [split.texts.index(t) for t in sub.texts]
    assert positions == sorted(positions)  # order of the source is kept


def test_subsample_keeps_every_label_when_possible() -> None:
    split = labeled({0: 100, 1: 1, 2: 1})
    assert Counter(split.subsample(3, seed=0).labels) == {0: 1, 1: 1, 2: 1}


def test_subsample_large_n_returns_self_and_unlabeled_works() -> None:
    split = labeled({0: 4, 1: 4})
    assert split.subsample(8, seed=0) is split
    plain = Split(tuple(f"t{i}" for i in range(10)))
    sub = plain.subsample(4, seed=1)
    assert len(sub) == 4 and sub.labels is None and set(sub.texts) <= set(plain.texts)


def test_subsample_rejects_non_positive_size() -> None:
    with pytest.raises(DomainError, match="subsample size must be at least 1, got 0"):
        labeled({0: 2}).subsample(0, seed=0)


def test_stratified_split_partitions_by_label() -> None:
    split = labeled({0: 50, 1: 10, 2: 2, 3: 1})
    taken, rest = split.stratified_split(0.2, seed=7)
    assert (taken, rest) == split.stratified_split(0.2, seed=7)
    assert sorted(taken.texts + rest.texts) == sorted(split.texts)
    assert not set(taken.texts) & set(rest.texts)
    counts_taken, counts_rest = Counter(taken.labels), Counter(rest.labels)
    assert counts_taken[0] == 10 and counts_rest[0] == 40
    assert counts_taken[1] == 2 and counts_rest[1] == 8
    assert counts_taken[2] == 1 and counts_rest[2] == 1  # >= 2 examples: one on each side
    assert counts_taken[3] + counts_rest[3] == 1


def test_stratified_split_seed_changes_membership() -> None:
    split = labeled({0: 50, 1: 50})
    assert split.stratified_split(0.3, 1)[0] != split.stratified_split(0.3, 2)[0]


def test_stratified_split_unlabeled_keeps_both_sides_non_empty() -> None:
    plain = Split(("a", "b", "c"))
    taken, rest = plain.stratified_split(0.01, seed=0)
    assert len(taken) == 1 and len(rest) == 2 and taken.labels is None


def test_stratified_split_rejects_bad_fraction() -> None:
    with pytest.raises(DomainError, match="strictly between 0 and 1, got 1.5"):
        labeled({0: 4}).stratified_split(1.5, seed=0)


def test_cap_per_label_and_shuffle() -> None:
    split = labeled({0: 10, 1: 3})
    capped = split.cap_per_label(4, seed=0)
    assert Counter(capped.labels) == {0: 4, 1: 3}
    shuffled = split.shuffle(5)
    assert sorted(shuffled.texts) == sorted(split.texts) and shuffled != split
    assert dict(zip(shuffled.texts, shuffled.labels or ())) == dict(zip(split.texts, split.labels or ()))
    with pytest.raises(DomainError, match="per-label cap must be at least 1, got 0"):
        split.cap_per_label(0, seed=0)


def test_domain_properties_and_fingerprints() -> None:
    pool = Split(("u1", "u2"))
    domain = make_domain(unlabeled=pool)
    assert domain.num_labels == 2
    prints = domain.fingerprints()
    assert set(prints) == {"train", "validation", "test", "unlabeled"}
    assert prints["unlabeled"] == pool.fingerprint
    assert set(make_domain().fingerprints()) == {"train", "validation", "test"}


def test_domain_public_private_is_stratified_and_deterministic() -> None:
    domain = make_domain()
    public, private = domain.public_private(0.1, seed=0)
    assert Counter(public.labels) == {0: 3, 1: 2}
    assert len(public) + len(private) == len(domain.train)
    assert (public, private) == domain.public_private(0.1, seed=0)


def test_domain_empty_split_error_names_domain_and_split() -> None:
    with pytest.raises(DomainError, match=r"domain 'med': the validation split is empty \(add examples"):
        make_domain("med", validation=Split((), ()))


def test_domain_classification_requires_labels() -> None:
    with pytest.raises(DomainError, match="domain 'd': the test split has no labels"):
        make_domain(test=Split(("x",)))


def test_domain_label_out_of_range() -> None:
    with pytest.raises(
        DomainError, match=r"the train split has label id 2 outside 0..1 \(label_names: a, b\)"
    ):
        make_domain(train=labeled({0: 1, 2: 1}))


def test_domain_label_names_checks() -> None:
    with pytest.raises(DomainError, match="classification needs at least 2 label_names"):
        make_domain(
            label_names=("a",), train=labeled({0: 2}), validation=labeled({0: 1}), test=labeled({0: 1})
        )
    with pytest.raises(DomainError, match="label_names has duplicates"):
        make_domain(label_names=("a", "a"))


def test_domain_metric_must_fit_task() -> None:
    with pytest.raises(DomainError, match="metric 'perplexity' does not apply to classification"):
        make_domain(metric="perplexity")
    assert make_domain(metric="macro_f1").metric == "macro_f1"


def test_domain_unknown_task() -> None:
    with pytest.raises(DomainError, match="unknown task 'regression'"):
        make_domain(task="regression")


def test_causal_lm_domain_rules() -> None:
    text = Split(("some text", "more text"))
    domain = Domain("lm", "causal_lm", text, text, text, metric="perplexity")
    assert domain.num_labels == 0
    with pytest.raises(DomainError, match="a causal_lm domain is plain text"):
        Domain("lm", "causal_lm", labeled({0: 2}), text, text, metric="perplexity")
    with pytest.raises(DomainError, match="causal_lm domain has no label_names"):
        Domain("lm", "causal_lm", text, text, text, label_names=("a", "b"), metric="perplexity")


def test_benchmark_public_private_and_heldout() -> None:
    bench = Benchmark((make_domain("a"), make_domain("b")), (make_domain("h"),), public_fraction=0.2, seed=1)
    assert bench.domain("h").name == "h"
    public, private = bench.public("a"), bench.private("a")
    assert (public, private) == bench.domain("a").public_private(0.2, 1)
    assert bench.public("a") is public  # cached
    assert bench.public("h") == bench.domain("h").train
    assert len(bench.private("h")) == 0 and bench.private("h").labels == ()
    prints = bench.fingerprints()
    assert list(prints) == ["a", "b", "h"]
    assert prints["a"]["public"] == public.fingerprint
    assert set(prints["h"]) == {"train", "validation", "gate", "test", "public", "private"}
    assert prints["a"]["validation"] == bench.validation("a").fingerprint  # the training-time part
    assert prints["a"]["gate"] == bench.gate("a").fingerprint


def test_benchmark_cuts_validation_into_a_validation_part_and_a_gate_split() -> None:
    domain = make_domain("a", validation=labeled({0: 10, 1: 6}))
    bench = Benchmark((domain,), (make_domain("h"),), public_fraction=0.2, seed=1, gate_fraction=0.25)
    validation, gate = bench.validation("a"), bench.gate("a")
    assert bench.validation("a") is validation and bench.gate("a") is gate  # cached
    assert not set(validation.texts) & set(gate.texts)  # disjoint
    assert sorted(validation.texts + gate.texts) == sorted(domain.validation.texts)  # together: all of it
    assert gate.label_counts() == {0: 3, 1: 2} and validation.label_counts() == {0: 7, 1: 4}  # stratified
    again = Benchmark((domain,), (), public_fraction=0.2, seed=1, gate_fraction=0.25)
    assert (again.validation("a"), again.gate("a")) == (validation, gate)  # seeded
    assert len(bench.gate("h")) and len(bench.validation("h"))  # held-out tasks too
    assert Benchmark((domain,), (), public_fraction=0.2, seed=1).gate_fraction == 0.5


def test_benchmark_gate_needs_a_validation_split_to_cut() -> None:
    with pytest.raises(DomainError, match="gate_fraction must be strictly between 0 and 1"):
        Benchmark((make_domain("a"),), (), public_fraction=0.2, seed=0, gate_fraction=1.0)
    tiny = make_domain("a", validation=labeled({0: 1}))
    with pytest.raises(DomainError, match="too few to cut into a validation part and a gate split"):
        Benchmark((tiny,), (), public_fraction=0.2, seed=0).gate("a")


def test_benchmark_unknown_domain_lists_names() -> None:
    bench = Benchmark((make_domain("a"),), (make_domain("h"),), public_fraction=0.2, seed=0)
    with pytest.raises(DomainError, match=r"no domain 'zz' in the benchmark \(domains: a, h\)"):
        bench.public("zz")


def test_benchmark_validation_errors() -> None:
    with pytest.raises(DomainError, match="names must be unique; repeated: a"):
        Benchmark((make_domain("a"),), (make_domain("a"),), public_fraction=0.2, seed=0)
    with pytest.raises(DomainError, match="public_fraction must be strictly between 0 and 1, got 0"):
        Benchmark((make_domain("a"),), (), public_fraction=0, seed=0)
