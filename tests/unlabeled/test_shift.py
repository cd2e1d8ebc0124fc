"""Loading a shift: labels mapped by name, and the errors that name the setting at fault."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from fanbu.errors import ConfigError, DomainError
from fanbu.unlabeled.shift import ShiftConfig, load_shift
from tests.unlabeled.helpers import toy_domains

MAPPING = {"tech": ["comp.*"], "sports": ["rec.sport.*"]}


def config(**changes) -> ShiftConfig:
    return ShiftConfig.model_validate({"source": "toy-source", "target": "toy-target", "mapping": MAPPING,
                                       **changes})


def test_labels_are_mapped_by_name_and_the_pool_has_no_labels(toy_sources):
    shift = load_shift(config())
    assert shift.labels == ("tech", "sports")
    assert shift.source_labels == {"tech": ["comp.graphics", "comp.windows.x"], "sports": ["rec.sport.hockey"]}
    assert shift.source_train.label_counts() == {0: 24, 1: 12}  # sci.med is not mapped: dropped
    assert len(shift.pool) == 20 and all(t.split()[0] in ("chip", "goal") for t in shift.pool)
    assert shift.target_train.texts == shift.pool  # the same texts; their labels serve the upper bound only
    assert shift.target_test.label_counts() == {0: 6, 1: 6}


def test_caps_apply_per_class_and_to_the_pool(toy_sources):
    shift = load_shift(config(max_source_per_class=5, max_validation_per_class=2, max_unlabeled=8))
    assert shift.source_train.label_counts() == {0: 5, 1: 5}
    assert shift.source_validation.label_counts() == {0: 2, 1: 2}
    assert len(shift.pool) == 8


def test_a_mapped_target_label_that_does_not_exist_is_an_error_naming_the_setting(toy_sources):
    with pytest.raises(ConfigError, match=r"shift.mapping: target labels \['sport'\] do not exist.*sports"):
        load_shift(config(mapping={"tech": ["comp.*"], "sport": ["rec.sport.*"]}))


def test_a_source_label_that_does_not_exist_is_an_error_naming_the_setting(toy_sources):
    with pytest.raises(ConfigError, match=r"shift.mapping\['sports'\]: 'rec.autos' names no label"):
        load_shift(config(mapping={"tech": ["comp.*"], "sports": ["rec.autos"]}))


def test_a_source_label_mapped_twice_is_an_error(toy_sources):
    with pytest.raises(ConfigError, match="mapped to two target labels"):
        load_shift(config(mapping={"tech": ["comp.*"], "sports": ["comp.graphics"]}))


def test_an_empty_unlabeled_pool_is_an_error_naming_the_setting(monkeypatch):
    monkeypatch.setattr("fanbu.unlabeled.shift.load_builtin",
                        lambda name, seed=0: toy_domains(name, seed, skip_target_train=("tech", "sports")))
    with pytest.raises(DomainError, match="unlabeled pool is empty.*shift.target and shift.mapping"):
        load_shift(config())


def test_the_mapping_is_validated_before_anything_loads():
    with pytest.raises(ValidationError, match="map to no source label"):
        ShiftConfig(mapping={"tech": ["comp.*"], "sports": []})
    with pytest.raises(ValidationError, match="at least 2"):
        ShiftConfig(mapping={"tech": ["comp.*"]})
