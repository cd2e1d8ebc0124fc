"""Hugging Face sources: save_to_disk directories (Dataset and DatasetDict) and a patched hub."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import datasets
import pytest

from fanbu.data.loaders import DomainSource, load_domain, read_records
from fanbu.errors import DomainError

LABELS = datasets.ClassLabel(names=["sports", "world", "tech"])
FEATURES = datasets.Features({"text": datasets.Value("string"), "label": LABELS})


def dataset(n_per_label: int, prefix: str = "") -> datasets.Dataset:
    rows = {"text": [], "label": []}
    for label in (0, 1, 2):
        for i in range(n_per_label):
            rows["text"].append(f"{prefix}{LABELS.names[label]} story {i}")
            rows["label"].append(label)
    return datasets.Dataset.from_dict(rows, features=FEATURES)


def source(train: str, **fields: object) -> DomainSource:
    return DomainSource(name="news", train=train, **fields)  # type: ignore[arg-type]


@pytest.fixture
def saved_dict(tmp_path: Path) -> Path:
    path = tmp_path / "news"
    datasets.DatasetDict(
        {"train": dataset(10), "dev": dataset(2, "dev "), "test": dataset(3, "test ")}
    ).save_to_disk(str(path))
    return path


def test_dataset_dict_splits_and_class_label_names(saved_dict: Path) -> None:
    domain = load_domain(source(str(saved_dict), validation="dev"))
    assert domain.label_names == ("sports", "world", "tech")  # ClassLabel order, not sorted
    assert len(domain.train) == 30 and len(domain.validation) == 6 and len(domain.test) == 9
    assert all(t.startswith("test ") for t in domain.test.texts)
    for text, label in zip(domain.test.texts, domain.test.labels or ()):
        assert domain.label_names[label] in text
    assert "[dev]" in domain.source


def test_dataset_dict_without_validation_key_carves_it(saved_dict: Path) -> None:
    domain = load_domain(source(str(saved_dict)))
    assert len(domain.test) == 9  # the "test" key is used by default
    assert Counter(domain.validation.labels) == {0: 1, 1: 1, 2: 1}
    assert len(domain.train) == 27


def test_dataset_dict_missing_split_key(saved_dict: Path) -> None:
    with pytest.raises(DomainError) as err:
        load_domain(source(str(saved_dict), validation="valid"))
    message = str(err.value)
    assert (
        "no split 'valid' (splits: train, dev, test; set validation of domain 'news' to one of them"
        in message
    )


def test_plain_dataset_directory_is_train(tmp_path: Path) -> None:
    path = tmp_path / "plain"
    dataset(10).save_to_disk(str(path))
    domain = load_domain(source(str(path), format="hf_disk"))
    assert len(domain.train) + len(domain.validation) + len(domain.test) == 30
    assert read_records(path)[0] == ("sports story 0", "sports")


def test_not_a_saved_dataset(tmp_path: Path) -> None:
    (tmp_path / "junk").mkdir()
    with pytest.raises(DomainError, match="junk: not a dataset directory written by save_to_disk"):
        load_domain(source(str(tmp_path / "junk")))


def test_missing_class_label_value(tmp_path: Path) -> None:
    path = tmp_path / "holes"
    datasets.Dataset.from_dict({"text": ["a", "b"], "label": [0, -1]}, features=FEATURES).save_to_disk(
        str(path)
    )
    with pytest.raises(
        DomainError, match=r"holes row 1: the 'label' field is empty \(fields present: 'text'"
    ):
        load_domain(source(str(path)))


def test_hub_dataset_via_patched_load_dataset(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake_load_dataset(name: str, config: str | None = None) -> datasets.DatasetDict:
        calls.append((name, config))
        return datasets.DatasetDict({"train": dataset(10), "test": dataset(2, "test ")})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    domain = load_domain(source("someone/news", format="hf_hub", hf_config="small"))
    assert calls == [("someone/news", "small")]
    assert len(domain.test) == 6 and domain.label_names == ("sports", "world", "tech")


def test_hub_failure_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(name: str, config: str | None = None) -> None:
        raise ConnectionError("Couldn't reach 'someone/news' on the Hub")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DomainError) as err:
        load_domain(source("someone/news", format="hf_hub"))
    message = str(err.value)
    assert message.startswith("someone/news: could not load it from the Hugging Face hub")
    assert "could not be reached" in message
    assert "use a local file" in message and "hf_disk" in message
