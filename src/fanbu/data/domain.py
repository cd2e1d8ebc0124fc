"""Domains: the unit of data fanbu derives models for and feeds knowledge back from.

A :class:`Split` is an immutable list of texts (with integer labels for classification); a
:class:`Domain` bundles train/validation/test splits with its task, label names and metric; a
:class:`Benchmark` fixes which domains take part in feedback, which are held out to measure
forgetting, how each feedback domain's train split is cut into a public and a private slice, and how
each task's validation split is cut into the validation part (training-time choices) and the gate
split (promotion and strategy choice). The test split is scored only for reporting.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal, get_args

from fanbu.data import sampling
from fanbu.errors import DomainError
from fanbu.io import sha256_json

TaskKind = Literal["classification", "causal_lm"]

METRICS: dict[str, tuple[str, ...]] = {
    "classification": ("accuracy", "macro_f1"),
    "causal_lm": ("perplexity",),
}
"""The metrics each task kind may be scored with."""

SPLIT_NAMES = ("train", "validation", "test")


@dataclass(frozen=True)
class Split:
    """Texts, and for labeled data one integer label per text.

    Attributes:
        texts: The examples.
        labels: Label ids (indices into the domain's ``label_names``); ``None`` for causal-LM text or
            unlabeled pools.
    """

    texts: tuple[str, ...]
    labels: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "texts", tuple(self.texts))
        bad = next((t for t in self.texts if not isinstance(t, str)), None)
        if bad is not None:
            raise DomainError(f"split texts must be strings, got a {type(bad).__name__}: {bad!r:.60}")
        if self.labels is not None:
            object.__setattr__(self, "labels", tuple(int(label) for label in self.labels))
            if len(self.labels) != len(self.texts):
                raise DomainError(
                    f"split has {len(self.texts)} texts but {len(self.labels)} labels "
                    "(give one label per text, or labels=None for unlabeled text)"
                )

    def __len__(self) -> int:
        return len(self.texts)

    @cached_property
    def fingerprint(self) -> str:
        """sha256 of the canonical JSON of texts and labels (order matters)."""
        labels = None if self.labels is None else list(self.labels)
        return sha256_json({"texts": list(self.texts), "labels": labels})

    def select(self, indices: Iterable[int]) -> Split:
        """The examples at ``indices``, in that order."""
        picked = [int(i) for i in indices]
        labels = None if self.labels is None else tuple(self.labels[i] for i in picked)
        return Split(tuple(self.texts[i] for i in picked), labels)

    def subsample(self, n: int, seed: int) -> Split:
        """A deterministic subset of ``n`` examples, stratified by label; ``n >= len`` returns ``self``."""
        if n < 1:
            raise DomainError(f"subsample size must be at least 1, got {n}")
        if n >= len(self):
            return self
        return self.select(sampling.sample_indices(self.labels, len(self), n, seed))

    def cap_per_label(self, cap: int, seed: int) -> Split:
        """A deterministic subset with at most ``cap`` examples per label (``cap`` in all when unlabeled)."""
        if cap < 1:
            raise DomainError(f"a per-label cap must be at least 1, got {cap}")
        return self.select(sampling.cap_indices(self.labels, len(self), cap, seed))

    def stratified_split(self, fraction: float, seed: int) -> tuple[Split, Split]:
        """Split into (``fraction`` of the examples, the rest), stratified by label, deterministically.

        Every label with at least two examples keeps at least one on each side; unlabeled data gets a
        plain shuffled split. Both parts keep this split's order.
        """
        if not 0.0 < fraction < 1.0:
            raise DomainError(f"split fraction must be strictly between 0 and 1, got {fraction}")
        taken, rest = sampling.split_indices(self.labels, len(self), fraction, seed)
        return self.select(taken), self.select(rest)

    def shuffle(self, seed: int) -> Split:
        """The same examples in a seeded random order."""
        return self.select(sampling.shuffle_indices(len(self), seed))

    def label_counts(self) -> dict[int, int]:
        """How many examples carry each label id (empty for unlabeled splits)."""
        counts: dict[int, int] = {}
        for label in self.labels or ():
            counts[label] = counts.get(label, 0) + 1
        return dict(sorted(counts.items()))


@dataclass(frozen=True)
class Domain:
    """One task's data: train/validation/test splits, label names and how it is scored.

    Attributes:
        name: Unique name, used in registries and reports.
        task: ``"classification"`` or ``"causal_lm"``.
        train: Training split.
        validation: Model-selection split.
        test: Final evaluation split.
        label_names: Names of label ids, in id order; empty for causal-LM.
        unlabeled: An optional pool of unlabeled texts (e.g. for distillation).
        metric: ``"accuracy"`` or ``"macro_f1"`` for classification, ``"perplexity"`` for causal-LM.
        source: Where the data came from, human readable.
    """

    name: str
    task: TaskKind
    train: Split
    validation: Split
    test: Split
    label_names: tuple[str, ...] = ()
    unlabeled: Split | None = None
    metric: str = "accuracy"
    source: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "label_names", tuple(self.label_names))
        if not self.name:
            raise DomainError("a domain needs a non-empty name")
        if self.task not in get_args(TaskKind):
            raise DomainError(
                f"domain '{self.name}': unknown task {self.task!r} (use one of {', '.join(get_args(TaskKind))})"
            )
        allowed = METRICS[self.task]
        if self.metric not in allowed:
            raise DomainError(
                f"domain '{self.name}': metric {self.metric!r} does not apply to {self.task} "
                f"(use one of {', '.join(allowed)})"
            )
        for split_name, split in self._named_splits():
            self._check_split(split_name, split)

    def _named_splits(self) -> list[tuple[str, Split]]:
        named = [(n, getattr(self, n)) for n in SPLIT_NAMES]
        return named + ([("unlabeled", self.unlabeled)] if self.unlabeled is not None else [])

    def _check_split(self, split_name: str, split: Split) -> None:
        if len(split) == 0:
            raise DomainError(
                f"domain '{self.name}': the {split_name} split is empty (add examples to it; a split "
                "carved from train needs more train examples or a larger validation_fraction/test_fraction)"
            )
        if self.task == "causal_lm":
            if self.label_names:
                raise DomainError(
                    f"domain '{self.name}': a causal_lm domain has no label_names (remove them)"
                )
            if split.labels is not None:
                raise DomainError(
                    f"domain '{self.name}': the {split_name} split has labels, but a causal_lm domain "
                    "is plain text (drop the labels or use task classification)"
                )
            return
        if len(self.label_names) < 2:
            raise DomainError(
                f"domain '{self.name}': classification needs at least 2 label_names, got {list(self.label_names)}"
            )
        if len(set(self.label_names)) != len(self.label_names):
            raise DomainError(f"domain '{self.name}': label_names has duplicates: {list(self.label_names)}")
        if split.labels is None:
            if split_name == "unlabeled":
                return
            raise DomainError(
                f"domain '{self.name}': the {split_name} split has no labels (a classification "
                "domain needs a label per example; set label_field or use task causal_lm)"
            )
        bad = [label for label in split.labels if not 0 <= label < len(self.label_names)]
        if bad:
            raise DomainError(
                f"domain '{self.name}': the {split_name} split has label id {bad[0]} outside "
                f"0..{len(self.label_names) - 1} (label_names: {', '.join(self.label_names)})"
            )

    @property
    def num_labels(self) -> int:
        """Number of classes (0 for causal-LM)."""
        return len(self.label_names)

    def fingerprints(self) -> dict[str, str]:
        """Split name -> sha256 of its content (``unlabeled`` included when present)."""
        return {split_name: split.fingerprint for split_name, split in self._named_splits()}

    def public_private(self, public_fraction: float, seed: int) -> tuple[Split, Split]:
        """The benchmark protocol: cut the train split into (public slice, private slice), stratified."""
        return self.train.stratified_split(public_fraction, seed)


@dataclass(frozen=True)
class Benchmark:
    """Feedback domains, held-out domains, the public/private protocol on their train splits, and the
    three kinds of evaluation split.

    The public slice of a feedback domain is what the large model may see directly; the private slice
    stays with the small domain model. Held-out domains never take part in feedback (they measure
    forgetting), so their whole train split counts as public and their private slice is empty.

    Every task (feedback domain or held-out task) has three evaluation splits, kept apart:
    :meth:`validation` for training-time choices (early stopping, expert selection, search), :meth:`gate`
    for promotion and strategy choice, and the domain's test split, scored only for reporting. The
    first two are the domain's validation split cut in two, disjoint, stratified by label and seeded;
    ``gate_fraction`` of it goes to the gate.
    """

    domains: tuple[Domain, ...]
    heldout: tuple[Domain, ...]
    public_fraction: float
    seed: int
    gate_fraction: float = 0.5
    _slices: dict[str, tuple[Split, Split]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _checks: dict[str, tuple[Split, Split]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "domains", tuple(self.domains))
        object.__setattr__(self, "heldout", tuple(self.heldout))
        if not 0.0 < self.public_fraction < 1.0:
            raise DomainError(f"public_fraction must be strictly between 0 and 1, got {self.public_fraction}")
        if not 0.0 < self.gate_fraction < 1.0:
            raise DomainError(f"gate_fraction must be strictly between 0 and 1, got {self.gate_fraction}")
        names = self.names()
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise DomainError(f"benchmark domain names must be unique; repeated: {', '.join(dupes)}")

    def names(self) -> list[str]:
        """Names of the feedback domains, then the held-out ones."""
        return [d.name for d in self.domains + self.heldout]

    def domain(self, name: str) -> Domain:
        """The feedback or held-out domain called ``name``."""
        for candidate in self.domains + self.heldout:
            if candidate.name == name:
                return candidate
        raise DomainError(f"no domain '{name}' in the benchmark (domains: {', '.join(self.names())})")

    def _public_private(self, name: str) -> tuple[Split, Split]:
        if name not in self._slices:
            domain = self.domain(name)
            if any(d.name == name for d in self.heldout):
                empty = Split((), None if domain.train.labels is None else ())
                self._slices[name] = (domain.train, empty)
            else:
                self._slices[name] = domain.public_private(self.public_fraction, self.seed)
        return self._slices[name]

    def public(self, name: str) -> Split:
        """Public slice of that domain's train split (a held-out domain's whole train split)."""
        return self._public_private(name)[0]

    def private(self, name: str) -> Split:
        """Private slice of that domain's train split (empty for a held-out domain)."""
        return self._public_private(name)[1]

    def _validation_gate(self, name: str) -> tuple[Split, Split]:
        if name not in self._checks:
            domain = self.domain(name)
            gate, validation = domain.validation.stratified_split(self.gate_fraction, self.seed)
            if len(gate) == 0 or len(validation) == 0:
                raise DomainError(
                    f"domain '{name}': its validation split has {len(domain.validation)} example(s), too few "
                    f"to cut into a validation part and a gate split (gate_fraction {self.gate_fraction}); "
                    "add validation examples (or a larger validation_fraction)"
                )
            self._checks[name] = (validation, gate)
        return self._checks[name]

    def validation(self, name: str) -> Split:
        """The validation part of that task's validation split: for training-time choices only.

        Early stopping, best-epoch choice, expert selection and search read it; promotion never does.
        """
        return self._validation_gate(name)[0]

    def gate(self, name: str) -> Split:
        """The gate split of that task: the rest of its validation split, disjoint from :meth:`validation`.

        Promotion and strategy choice read it; training never does, and the test split stays for the
        report.
        """
        return self._validation_gate(name)[1]

    def fingerprints(self) -> dict[str, dict[str, str]]:
        """Per domain: its split fingerprints, ``validation`` being the training-time part of its
        validation split, plus those of the ``gate`` split and the ``public`` and ``private`` slices."""
        return {
            name: {
                **self.domain(name).fingerprints(),
                "validation": self.validation(name).fingerprint,
                "gate": self.gate(name).fingerprint,
                "public": self.public(name).fingerprint,
                "private": self.private(name).fingerprint,
            }
            for name in self.names()
        }


def encode_labels(values: Sequence[str], label_names: Sequence[str]) -> tuple[int, ...]:
    """Map label names to ids; unknown names raise a :class:`DomainError` listing the allowed ones."""
    index = {n: i for i, n in enumerate(label_names)}
    unknown = sorted({v for v in values if v not in index})
    if unknown:
        raise DomainError(f"unknown labels {unknown} (allowed: {', '.join(label_names)})")
    return tuple(index[v] for v in values)
