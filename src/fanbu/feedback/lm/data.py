"""The texts of an LM feedback run, kept apart by role: what methods may read, what decides, what reports.

- context (methods): each domain's public slice (transfer text) and validation part, general text to
  replay, corrections;
- experts only: each domain's private slice;
- decision: each domain's gate split and the held-out corpus's validation texts;
- report: each domain's test split and the held-out corpus's test texts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from fanbu.data.builtin import load_builtin
from fanbu.data.domain import Benchmark, Domain, Split
from fanbu.data.loaders import load_domain
from fanbu.errors import ConfigError, DomainError
from fanbu.feedback.lm.context import Correction
from fanbu.feedback.lm.recipe import LMData


@dataclass
class LMSlices:
    """Per-domain texts by role, the held-out corpus's gate and report texts, general text, corrections."""

    domains: list[str]
    public: dict[str, list[str]]
    private: dict[str, list[str]]
    validation: dict[str, list[str]]
    gate: dict[str, list[str]]
    test: dict[str, list[str]]
    heldout_name: str
    heldout_gate: list[str]
    heldout_test: list[str]
    general: list[str] = field(default_factory=list)
    corrections: list[Correction] = field(default_factory=list)
    fingerprints: dict[str, str] = field(default_factory=dict)


def lm_domains(data: LMData) -> list[Domain]:
    """The causal-LM domains ``data`` names (its files, else its built-in source), checked."""
    if data.files:
        found = [load_domain(source) for source in data.files]
    else:
        caps = {"max_docs": data.max_docs} if data.source == "bbc-news-lm" else {}
        found = load_builtin(data.source, seed=data.seed, **caps)
    not_lm = [d.name for d in found if d.task != "causal_lm"]
    if not_lm:
        raise ConfigError(
            f"lm.data: {not_lm} are {found[0].task} domains, but LM feedback methods need causal_lm domains "
            "(plain text); use bbc-news-lm or files with task: causal_lm, or a classification recipe"
        )
    names = [d.name for d in found]
    wanted = data.domains or names
    unknown = sorted(set(wanted) - set(names))
    if unknown:
        raise ConfigError(f"lm.data.domains: unknown {unknown}; available: {', '.join(names)}")
    return [d for d in found if d.name in wanted]


def corpus_texts(name: str, split: str, cap: int, seed: int) -> Split:
    """``cap`` texts of one split (``train``, ``validation``, ``test``) over all domains of a built-in corpus."""
    texts = [t for d in load_builtin(name, seed=seed) for t in getattr(d, split).texts]
    return Split(tuple(texts)).subsample(cap, seed)


def read_corrections(path: str | Path) -> list[Correction]:
    """(prompt, completion) pairs from a JSON-lines file of ``{"prompt": ..., "completion": ...}``."""
    pairs = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DomainError(
            f"lm.data.corrections: cannot read {path} ({exc.strerror}); check the path"
        ) from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            pairs.append((str(row["prompt"]), str(row["completion"])))
        except (ValueError, KeyError, TypeError):
            raise DomainError(
                f'{path} line {number}: not a {{"prompt": ..., "completion": ...}} object; fix or drop it'
            ) from None
    return pairs


def load_lm_slices(data: LMData) -> LMSlices:
    """Every text an LM feedback run reads, by role."""
    domains = lm_domains(data)
    bench = Benchmark(tuple(domains), (), data.public_fraction, data.seed, data.gate_fraction)
    slices = LMSlices([d.name for d in domains], {}, {}, {}, {}, {}, data.heldout, [], [])
    for domain in domains:
        name = domain.name
        test = domain.test if data.max_test is None else domain.test.subsample(data.max_test, 0)
        for role, split in (
            ("public", bench.public(name)),
            ("private", bench.private(name)),
            ("validation", bench.validation(name)),
            ("gate", bench.gate(name)),
            ("test", test),
        ):
            getattr(slices, role)[name] = list(split.texts)
            slices.fingerprints[f"{name}/{role}"] = split.fingerprint
    held_gate = corpus_texts(data.heldout, "validation", data.max_heldout, data.seed)
    held_test = corpus_texts(data.heldout, "test", data.max_heldout, data.seed)
    slices.heldout_gate, slices.heldout_test = list(held_gate.texts), list(held_test.texts)
    slices.fingerprints[f"{data.heldout}/gate"] = held_gate.fingerprint
    slices.fingerprints[f"{data.heldout}/test"] = held_test.fingerprint
    if data.general is not None:
        general = corpus_texts(data.general, "train", data.max_general, data.seed)
        slices.general = list(general.texts)
        slices.fingerprints[f"{data.general}/general"] = general.fingerprint
    if data.corrections is not None:
        slices.corrections = read_corrections(data.corrections)
    return slices
