"""load_domain and read_records on small JSONL/CSV/Parquet files written into tmp_path."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from fanbu.config import validate
from fanbu.data.loaders import DomainSource, load_domain, read_records
from fanbu.errors import ConfigError, DomainError


def source(train: Path | str, **fields: object) -> DomainSource:
    return DomainSource(name="med", train=str(train), **fields)  # type: ignore[arg-type]


def test_jsonl_domain_carves_stratified_splits(labeled_jsonl: Path) -> None:
    domain = load_domain(source(labeled_jsonl))
    assert domain.label_names == ("neg", "neu", "pos")
    assert domain.task == "classification" and domain.metric == "accuracy"
    assert (len(domain.train), len(domain.validation), len(domain.test)) == (42, 6, 12)
    assert Counter(domain.test.labels) == {0: 4, 1: 4, 2: 4}
    assert Counter(domain.validation.labels) == {0: 2, 1: 2, 2: 2}
    all_texts = domain.train.texts + domain.validation.texts + domain.test.texts
    assert len(set(all_texts)) == 60
    assert domain.fingerprints() == load_domain(source(labeled_jsonl)).fingerprints()
    assert domain.fingerprints() != load_domain(source(labeled_jsonl, seed=1)).fingerprints()
    assert "10% of train" in domain.source and "20% of train" in domain.source


def test_texts_keep_their_labels(labeled_jsonl: Path) -> None:
    domain = load_domain(source(labeled_jsonl))
    for text, label in zip(domain.train.texts, domain.train.labels or ()):
        assert text.startswith(domain.label_names[label])


def test_given_splits_and_label_names(tmp_path: Path, write_jsonl, make_rows) -> None:
    train = write_jsonl(tmp_path / "tr.jsonl", make_rows(["a", "b"], 5))
    val = write_jsonl(tmp_path / "va.jsonl", make_rows(["b"], 2))
    test = write_jsonl(tmp_path / "te.jsonl", [{"text": "t0", "label": 2}, {"text": "t1", "label": "a"}])
    pool = write_jsonl(tmp_path / "pool.jsonl", [{"text": "u0"}, {"text": "u1"}])
    domain = load_domain(
        source(train, validation=str(val), test=str(test), unlabeled=str(pool), label_names=["a", "b", "c"])
    )
    assert len(domain.train) == 10 and domain.validation.labels == (1, 1)
    assert domain.test.labels == (2, 0)  # an int indexes label_names; a string is a name
    assert domain.unlabeled is not None and domain.unlabeled.texts == ("u0", "u1")
    assert domain.unlabeled.labels is None


def test_integer_labels_without_names(tmp_path: Path, write_jsonl) -> None:
    rows = [{"text": f"t{i}", "label": i % 3 * 5} for i in range(30)]
    domain = load_domain(source(write_jsonl(tmp_path / "d.jsonl", rows)))
    assert domain.label_names == ("0", "5", "10")
    assert set(domain.train.labels or ()) == {0, 1, 2}


def test_csv_and_parquet_match_jsonl(tmp_path: Path, write_csv, write_parquet, make_rows) -> None:
    rows = make_rows(["x", "y"], 10)
    from_csv = load_domain(source(write_csv(tmp_path / "d.csv", rows)))
    from_parquet = load_domain(source(write_parquet(tmp_path / "d.parquet", rows)))
    assert from_csv.fingerprints() == from_parquet.fingerprints()
    assert from_csv.label_names == ("x", "y")


def test_json_array_and_custom_fields(tmp_path: Path) -> None:
    rows = [{"body": f"doc {i}", "topic": "a" if i % 2 else "b"} for i in range(20)]
    path = tmp_path / "d.json"
    path.write_text(json.dumps(rows), encoding="utf-8")
    domain = load_domain(source(path, text_field="body", label_field="topic", metric="macro_f1"))
    assert domain.label_names == ("a", "b") and domain.metric == "macro_f1"


def test_causal_lm_domain(tmp_path: Path, write_jsonl) -> None:
    rows = [{"text": f"sentence {i}"} for i in range(20)]
    domain = load_domain(source(write_jsonl(tmp_path / "lm.jsonl", rows), task="causal_lm"))
    assert domain.metric == "perplexity" and domain.label_names == ()
    assert domain.train.labels is None
    assert len(domain.train) + len(domain.validation) + len(domain.test) == 20


def test_read_records(tmp_path: Path, write_jsonl) -> None:
    path = write_jsonl(tmp_path / "r.jsonl", [{"text": "a", "label": 1}, {"text": "b", "label": "x"}])
    assert read_records(path) == [("a", 1), ("b", "x")]
    assert read_records(path, label_field=None) == [("a", None), ("b", None)]


def test_blank_lines_are_skipped_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text('{"text": "a", "label": 0}\n\n{"text": "b"}\n', encoding="utf-8")
    with pytest.raises(DomainError, match=r"r.jsonl line 3: no 'label' field"):
        read_records(path)


# --- errors -----------------------------------------------------------------------------------


def test_missing_file_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DomainError) as err:
        load_domain(source("data/med.jsonl"))
    assert str(err.value) == "data/med.jsonl: file not found (set train of domain 'med' to an existing file)"


def test_missing_validation_file_names_the_setting(labeled_jsonl: Path) -> None:
    with pytest.raises(DomainError, match=r"nope.jsonl: file not found \(set validation of domain 'med'"):
        load_domain(source(labeled_jsonl, validation="nope.jsonl"))


def test_missing_text_field(tmp_path: Path, write_jsonl) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "a", "label": 0}, {"body": "b", "label": 1}])
    with pytest.raises(DomainError) as err:
        load_domain(source(path))
    message = str(err.value)
    assert f"{path} line 2: no 'text' field" in message
    assert "fields present: 'body', 'label'" in message
    assert "set text_field/label_field" in message


def test_missing_label_field_csv_data_line(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("text,label\nfirst,a\nsecond,\n", encoding="utf-8")
    with pytest.raises(
        DomainError, match=r"d.csv data line 2: the 'label' field is empty \(fields present: 'text'"
    ):
        load_domain(source(path))


def test_missing_column_parquet_row_index(tmp_path: Path, write_parquet) -> None:
    path = write_parquet(tmp_path / "d.parquet", [{"txt": "a", "label": "x"}])
    with pytest.raises(
        DomainError, match=r"d.parquet row 0: no 'text' field \(fields present: 'txt', 'label'"
    ):
        load_domain(source(path))


def test_invalid_json_line(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a", "label": 0}\n{"text": "b", label: 1}\n', encoding="utf-8")
    with pytest.raises(DomainError, match=r"d.jsonl line 2: not valid JSON"):
        read_records(path)


def test_json_line_not_an_object(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('["a", 0]\n', encoding="utf-8")
    with pytest.raises(DomainError, match=r"d.jsonl line 1: expected a JSON object .* got a list"):
        read_records(path)


def test_invalid_json_array(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text('[{"text": "a"},\n {"text": }]', encoding="utf-8")
    with pytest.raises(DomainError, match=r"d.json line 2: not valid JSON"):
        read_records(path)
    path.write_text('[{"text": "a", "label": 1}, 3]', encoding="utf-8")
    with pytest.raises(DomainError, match=r"d.json record 2: expected a JSON object, got a int"):
        read_records(path)


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"text": "\xa3 sign", "label": 0}\n')
    with pytest.raises(DomainError, match="d.jsonl: not UTF-8 text .*re-save it as UTF-8"):
        read_records(path)


def test_invalid_csv(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("text,label\na,b\nc,d,e,f\n", encoding="utf-8")
    with pytest.raises(DomainError, match="d.csv: not valid CSV with a header row"):
        read_records(path)


def test_invalid_parquet(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    path.write_bytes(b"not parquet at all")
    with pytest.raises(DomainError, match="d.parquet: not a readable Parquet file"):
        read_records(path)


def test_text_must_be_a_string(tmp_path: Path, write_jsonl) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": 12, "label": 0}])
    with pytest.raises(DomainError, match=r"line 1: the 'text' field is a int, not text \(set text_field"):
        read_records(path)


def test_empty_split_file(tmp_path: Path, labeled_jsonl: Path) -> None:
    empty = tmp_path / "val.jsonl"
    empty.write_text("\n", encoding="utf-8")
    with pytest.raises(DomainError) as err:
        load_domain(source(labeled_jsonl, validation=str(empty)))
    assert str(err.value).startswith(
        f"{empty}: no records for the validation split of domain 'med' (it is empty"
    )


def test_empty_train_file(tmp_path: Path) -> None:
    empty = tmp_path / "train.csv"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(DomainError, match="no records for the train split of domain 'med'"):
        load_domain(source(empty))


def test_unknown_label(tmp_path: Path, labeled_jsonl: Path, write_jsonl) -> None:
    test = write_jsonl(
        tmp_path / "te.jsonl", [{"text": "a", "label": "neg"}, {"text": "b", "label": "angry"}]
    )
    with pytest.raises(DomainError) as err:
        load_domain(source(labeled_jsonl, test=str(test)))
    assert str(err.value) == (
        f"{test} line 2: unknown label 'angry' (allowed: neg, neu, pos; add it to label_names of domain 'med')"
    )


def test_unknown_label_against_given_names(labeled_jsonl: Path) -> None:
    with pytest.raises(DomainError, match=r"line 41: unknown label 'pos' \(allowed: neg, neu;"):
        load_domain(source(labeled_jsonl, label_names=["neg", "neu"]))


def test_label_id_out_of_range(tmp_path: Path, write_jsonl) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "a", "label": 0}, {"text": "b", "label": 4}])
    with pytest.raises(
        DomainError, match=r"line 2: label id 4 is out of range for the 2 label_names \(a, b\)"
    ):
        load_domain(source(path, label_names=["a", "b"]))


def test_label_of_wrong_type(tmp_path: Path, write_jsonl) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "a", "label": [1, 2]}])
    with pytest.raises(
        DomainError, match="line 1: label \\[1, 2\\] is a list; labels must be strings or integers"
    ):
        load_domain(source(path))


def test_single_label_train(tmp_path: Path, write_jsonl, make_rows) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", make_rows(["only"], 5))
    with pytest.raises(
        DomainError, match="every train example has label 'only'; a classification domain needs"
    ):
        load_domain(source(path))


def test_unknown_extension_lists_formats(tmp_path: Path) -> None:
    path = tmp_path / "d.txt"
    path.write_text("hello", encoding="utf-8")
    with pytest.raises(DomainError) as err:
        load_domain(source(path))
    message = str(err.value)
    assert "cannot tell the format from the extension .txt" in message
    assert ".jsonl or .json (JSON lines), .csv, .parquet" in message and "hf_disk" in message


def test_unknown_format_argument(labeled_jsonl: Path) -> None:
    with pytest.raises(DomainError, match="unknown format 'xml' \\(use one of auto, jsonl, csv"):
        read_records(labeled_jsonl, fmt="xml")


def test_directory_with_file_format(tmp_path: Path) -> None:
    with pytest.raises(DomainError, match="is a directory, not a jsonl file"):
        read_records(tmp_path, fmt="jsonl")


def test_carved_split_too_small(tmp_path: Path, write_jsonl, make_rows) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", make_rows(["a", "b"], 1))
    with pytest.raises(
        DomainError, match="domain 'med': the validation split is empty .*validation_fraction/test_fraction"
    ):
        load_domain(source(path))


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (
            {"task": "causal_lm", "label_names": ["a", "b"]},
            "a causal_lm domain has no labels; remove label_names",
        ),
        ({"metric": "perplexity"}, "metric 'perplexity' does not apply to classification"),
        ({"validation_fraction": 0.5, "test_fraction": 0.5}, "must stay below 1"),
        ({"label_names": ["a", "a"]}, "label names must be distinct; repeated: a"),
        ({"label_names": ["a"]}, "give at least 2 label names"),
        ({"test_fraction": 1.5}, "test_fraction: Input should be less than 1"),
        ({"colour": "red"}, "colour: unknown key"),
    ],
)
def test_recipe_validation(fields: dict[str, object], expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        validate(DomainSource, {"name": "med", "train": "x.jsonl", **fields}, source="recipe.yaml")


def test_a_domain_name_with_a_dot_is_refused_by_name() -> None:
    # the domain's name is its head's name in every model, and a head name cannot hold a '.'
    with pytest.raises(ValueError, match="domain name 'comp.sw' contains '.'.*'comp_sw'"):
        DomainSource(name="comp.sw", train="comp.jsonl")
