"""A domain shift: a labelled source and an unlabelled target whose labels are mapped onto each other by name.

The default is the issue's real shift: 20 Newsgroups posts of the comp, rec.sport and talk.politics
newsgroups are the labelled source, BBC News articles of tech, sports and politics the target. The
target's train split is the unlabelled pool (its labels are kept apart, read only by the
target-supervised upper bound); its validation split is kept labelled, and its test split is scored once.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

from pydantic import Field, field_validator

from fanbu.config import Strict
from fanbu.data.builtin import load_builtin
from fanbu.data.domain import Domain, Split
from fanbu.errors import ConfigError, DomainError

DEFAULT_MAPPING: dict[str, list[str]] = {
    "tech": ["comp.*"],
    "sports": ["rec.sport.*"],
    "politics": ["talk.politics.*"],
}


class ShiftConfig(Strict):
    """Which source and target, and how the source's labels map onto the target's."""

    source: str = Field("20newsgroups", description="Built-in source of the labelled domain (fanbu data list).")
    target: str = Field("bbc-news", description="Built-in source of the target domain; one classification domain.")
    mapping: dict[str, list[str]] = Field(
        default_factory=lambda: {k: list(v) for k, v in DEFAULT_MAPPING.items()},
        description="Target label name -> the source label names it takes (shell patterns allowed, e.g. "
        "'comp.*'). The classes are the target labels in this order; other labels of either side are dropped.",
    )
    max_source_per_class: int | None = Field(
        None, ge=1, description="Cap the source train split per mapped class (seeded); null: all of it."
    )
    max_validation_per_class: int | None = Field(
        None, ge=1, description="Cap the source validation split per mapped class (seeded); null: all of it."
    )
    max_unlabeled: int | None = Field(
        None, ge=1, description="Cap the unlabelled target pool (seeded, stratified); null: the whole train split."
    )

    @field_validator("mapping")
    @classmethod
    def _check_mapping(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        if len(value) < 2:
            raise ValueError(f"map at least 2 target labels, got {sorted(value)}")
        empty = [name for name, patterns in value.items() if not patterns]
        if empty:
            raise ValueError(f"target labels {empty} map to no source label; give each a source label name")
        return value


@dataclass(frozen=True)
class DomainShift:
    """The data of one shift, labels as indices into ``labels`` (the target's mapped names).

    ``pool`` is the target's unlabelled train split; ``target_train`` is the same texts with their labels,
    for the target-supervised upper bound only.
    """

    labels: tuple[str, ...]
    source_train: Split
    source_validation: Split
    pool: tuple[str, ...]
    target_train: Split
    target_validation: Split
    target_test: Split
    source_labels: dict[str, list[str]]  # target label -> the source labels it took


def _source_classes(config: ShiftConfig, names: list[str]) -> dict[str, int]:
    """Source label name -> class index, from the mapping's patterns."""
    classes: dict[str, int] = {}
    for index, (label, patterns) in enumerate(config.mapping.items()):
        for pattern in patterns:
            matched = [n for n in names if fnmatchcase(n, pattern)]
            if not matched:
                raise ConfigError(
                    f"shift.mapping[{label!r}]: {pattern!r} names no label of {config.source} (its labels: "
                    f"{', '.join(names)}); fix the mapping"
                )
            for name in matched:
                if classes.get(name, index) != index:
                    raise ConfigError(
                        f"shift.mapping: source label {name!r} is mapped to two target labels; map it to one"
                    )
                classes[name] = index
    return classes


def _mapped(domains: list[Domain], split: str, classes: dict[str, int]) -> Split:
    """The rows of ``split`` across ``domains`` whose label is mapped, relabelled to class indices."""
    texts, labels = [], []
    for domain in domains:
        part: Split = getattr(domain, split)
        for text, label in zip(part.texts, part.labels or (), strict=True):
            name = domain.label_names[label]
            if name in classes:
                texts.append(text)
                labels.append(classes[name])
    return Split(tuple(texts), tuple(labels))


def load_shift(config: ShiftConfig, seed: int = 0) -> DomainShift:
    """Load both sides, map the labels and carve the pool (``seed`` moves the train/validation carving).

    Raises:
        ConfigError: the mapping names a label that neither side has, or maps a source label twice.
        DomainError: the target is not one classification domain, or its pool comes out empty.
    """
    sources = load_builtin(config.source, seed=seed)
    targets = load_builtin(config.target, seed=seed)
    if len(targets) != 1 or targets[0].task != "classification":
        raise DomainError(
            f"shift.target {config.target!r} gives {len(targets)} domains; name a source with one classification "
            "domain (e.g. bbc-news)"
        )
    target = targets[0]
    unknown = [name for name in config.mapping if name not in target.label_names]
    if unknown:
        raise ConfigError(
            f"shift.mapping: target labels {unknown} do not exist in {config.target} (its labels: "
            f"{', '.join(target.label_names)}); fix the mapping's keys"
        )
    names = sorted({n for d in sources if d.task == "classification" for n in d.label_names})
    classes = _source_classes(config, names)
    target_classes = {name: index for index, name in enumerate(config.mapping)}
    source_train = _mapped(sources, "train", classes)
    if config.max_source_per_class is not None:
        source_train = source_train.cap_per_label(config.max_source_per_class, seed)
    source_validation = _mapped(sources, "validation", classes)
    if config.max_validation_per_class is not None:
        source_validation = source_validation.cap_per_label(config.max_validation_per_class, seed)
    target_train = _mapped(targets, "train", target_classes)
    if config.max_unlabeled is not None and len(target_train):
        target_train = target_train.subsample(config.max_unlabeled, seed)
    if len(target_train) == 0:
        raise DomainError(
            f"the unlabeled pool is empty: {config.target}'s train split has no text of the mapped labels "
            f"{list(config.mapping)}; check shift.target and shift.mapping"
        )
    return DomainShift(
        labels=tuple(config.mapping),
        source_train=source_train.shuffle(seed),
        source_validation=source_validation,
        pool=target_train.texts,
        target_train=target_train,
        target_validation=_mapped(targets, "validation", target_classes),
        target_test=_mapped(targets, "test", target_classes),
        source_labels={
            label: sorted(n for n, i in classes.items() if i == index) for index, label in enumerate(config.mapping)
        },
    )
