"""The one slice spec: its validation, the benchmark it describes, its domains, and capped pairs."""

from __future__ import annotations

from pathlib import Path

import pytest

from fanbu.config import validate
from fanbu.data.slices import SliceCaps, SliceSpec, benchmark_of, domain_names, pairs, split_pairs
from fanbu.derive.data import DeriveData
from fanbu.errors import ConfigError
from fanbu.federated.recipe import FederatedData
from fanbu.feedback.recipe import FeedbackData


@pytest.fixture
def sources(tmp_path: Path, write_jsonl, make_rows) -> dict[str, dict[str, str]]:
    out = {}
    for name, labels in (("med", ["neg", "pos"]), ("law", ["a", "b", "c"]), ("news", ["x", "y"])):
        path = write_jsonl(tmp_path / f"{name}.jsonl", make_rows(labels, 20))
        out[name] = {"name": name, "train": str(path)}
    return out


@pytest.mark.parametrize("schema", [SliceSpec, DeriveData, FeedbackData, FederatedData])
def test_every_data_section_checks_its_source(schema, sources) -> None:
    with pytest.raises(ConfigError, match="source is 'files' but no files are listed"):
        validate(schema, {"source": "files"})
    with pytest.raises(ConfigError, match="files / heldout_files are given but source is 'default'"):
        validate(schema, {"files": [sources["med"]]})


def test_derive_refuses_held_out_files_and_keeps_them_out_of_its_dump(sources) -> None:
    with pytest.raises(ConfigError, match="heldout_files: derive"):
        validate(DeriveData, {"source": "files", "files": [sources["med"]], "heldout_files": [sources["news"]]})
    assert "heldout_files" not in DeriveData().model_dump()
    assert "heldout_files" in FeedbackData().model_dump()


def test_benchmark_of_files_and_held_out_files(sources) -> None:
    spec = SliceSpec(source="files", files=[sources["med"], sources["law"]], heldout_files=[sources["news"]])
    bench = benchmark_of(spec)
    assert [d.name for d in bench.domains] == ["med", "law"] and [d.name for d in bench.heldout] == ["news"]
    assert (bench.seed, bench.public_fraction) == (spec.seed, spec.public_fraction)


def test_domain_names_checks_the_source(sources) -> None:
    spec = SliceSpec(source="files", files=[sources["med"], sources["law"]])
    assert domain_names(spec) == ["med", "law"]
    assert domain_names(spec.model_copy(update={"domains": ["law"]})) == ["law"]
    with pytest.raises(ConfigError, match=r"data.domains: unknown \['tax', 'zoo'\]; available: med, law"):
        domain_names(spec.model_copy(update={"domains": ["zoo", "law", "tax"]}), benchmark_of(spec))


def test_pairs_cap_and_split_pairs(sources) -> None:
    bench = benchmark_of(SliceSpec(source="files", files=[sources["med"], sources["law"]]))
    public = bench.public("law")
    texts, labels = pairs(public, None, 0)
    assert texts == list(public.texts) and labels == list(public.labels or ())
    assert len(pairs(public, 2, 0)[0]) == 2 and pairs(public, 2, 0) == pairs(public, 2, 0)
    tests = split_pairs(bench, "test", ["law", "med"], 3, 1)
    assert list(tests) == ["law", "med"] and tests["med"] == pairs(bench.domain("med").test, 3, 1)
    # validation reads the training-time part of the validation split; gate the rest of it
    assert split_pairs(bench, "validation", ["med"], None, 0)["med"] == pairs(bench.validation("med"), None, 0)
    assert split_pairs(bench, "gate", ["med"], None, 0)["med"] == pairs(bench.gate("med"), None, 0)


def test_gate_fraction_and_gate_caps_are_new_optional_keys(sources) -> None:
    spec = SliceSpec(source="files", files=[sources["med"]], gate_fraction=0.3)
    bench = benchmark_of(spec)
    assert bench.gate_fraction == 0.3
    assert FeedbackData().max_gate is None and FederatedData().max_gate is None
    with pytest.raises(ConfigError, match="gate_fraction"):
        validate(SliceSpec, {"gate_fraction": 1})


def test_derive_data_of_another_spec_keeps_its_source_seed_and_caps(sources) -> None:
    feedback = FeedbackData(
        source="files", files=[sources["med"]], seed=3, max_validation=7, max_test=9, gate_fraction=0.3
    )
    derive = feedback.derive_data(["med"], 5, "public", 11)
    assert (derive.source, derive.files, derive.domains) == ("files", feedback.files, ["med"])
    assert (derive.seed, derive.max_validation, derive.max_test, derive.max_train) == (3, 7, 9, 5)
    assert derive.gate_fraction == 0.3  # the same validation part as the feedback step's
    assert (derive.transfer, derive.max_transfer) == ("public", 11)
    caps = SliceCaps(seed=2, max_validation=50, max_test=200)
    assert DeriveData.of(caps, None, 300).source == "default"
