"""Search that learns across domains (seed technique 19): a new domain's study starts from earlier ones.

Each finished study is a list of trials, (architecture, validation score) pairs on its own domain. Scores
of different domains are not on one scale, so each study's scores are divided by its own best
(*relative score*, 1.0 for that domain's best architecture). The surrogate ranks every architecture an
earlier study scored by its mean relative score over the studies that scored it (more studies first on
a tie). A warm search enqueues the surrogate's top ``enqueue`` architectures as its first trials, in
place of the first random start-up trials of a cold search; the TPE sampler then models them like any
other trial. Everything else, the trial budget and the per-trial training included, is the cold search's.

A study is saved as JSON (:func:`save_study`) beside the stage that ran it, and read back by path
(:func:`load_study`), so studies of earlier runs, other machines or other domains can seed a new one.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field

from fanbu.config import Strict
from fanbu.derive.search.config import SearchError, SearchSpace
from fanbu.derive.search.result import SearchResult, TrialRecord
from fanbu.io import atomic_write_json

STUDY_FORMAT = "fanbu.search-study/1"


class WarmStart(Strict):
    """Start a search from earlier domains' finished studies."""

    studies: list[str] = Field(
        default_factory=list,
        description="Study files (study.json, written by every search) of earlier domains to learn from.",
    )
    enqueue: int = Field(3, ge=1, description="Architectures the surrogate ranks best, tried first.")


@dataclass(frozen=True)
class Study:
    """One finished study: its domain and its trials."""

    domain: str
    trials: tuple[TrialRecord, ...]


@dataclass(frozen=True)
class Ranked:
    """An architecture (the searched fields only), its mean relative score and how many studies scored it."""

    params: dict[str, Any]
    relative: float
    studies: int


def save_study(path: str | Path, domain: str, result: SearchResult) -> Path:
    """Write ``result``'s trials as a study of ``domain`` (atomically)."""
    return atomic_write_json(path, {"format": STUDY_FORMAT, "domain": domain, "searched": list(result.searched),
                                    **result.to_dict()})


def load_study(path: str | Path) -> Study:
    """Read a study written by :func:`save_study`.

    Raises:
        SearchError: the file is missing, not JSON, or not a study (the message names the file and the fix).
    """
    file = Path(path)
    if not file.is_file():
        raise SearchError(f"warm_start.studies: {file} does not exist; give the study.json a finished "
                          "search wrote (its stage directory holds one)")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SearchError(f"warm_start.studies: {file} is not readable JSON ({exc}); rerun the search that "
                          "wrote it or drop it from the list") from exc
    if not isinstance(data, dict) or data.get("format") != STUDY_FORMAT or not isinstance(data.get("trials"), list):
        raise SearchError(f"warm_start.studies: {file} is not a search study (format {STUDY_FORMAT!r} with a "
                          "trials list); give a study.json written by fanbu's search")
    trials = []
    for index, raw in enumerate(data["trials"]):
        try:
            trials.append(TrialRecord(**raw))
        except TypeError as exc:
            raise SearchError(f"warm_start.studies: {file} trial {index} has unexpected fields ({exc}); "
                              "the file was edited or written by another version: rerun its search") from exc
    return Study(str(data.get("domain", file.parent.name)), tuple(trials))


def _key(params: Mapping[str, Any]) -> str:
    return json.dumps(dict(params), sort_keys=True)


def rank_architectures(studies: Sequence[Study], searched: Sequence[str]) -> list[Ranked]:
    """Every architecture a study scored, best mean relative score first (then most studies, then order).

    ``searched`` names the fields that make an architecture (the space's dimensions); other fields of
    a trial's params (importance, schedule...) are ignored. A study with no positive score is skipped.
    """
    relative: dict[str, list[float]] = defaultdict(list)
    params: dict[str, dict[str, Any]] = {}
    for study in studies:
        scored = [t for t in study.trials if t.state == "complete" and t.score is not None]
        best = max((t.score for t in scored), default=0.0)
        if best <= 0:
            continue
        for trial in scored:
            arch = {name: trial.params.get(name) for name in searched}
            key = _key(arch)
            params.setdefault(key, arch)
            relative[key].append(float(trial.score) / best)
    order = {key: i for i, key in enumerate(params)}
    ranked = [Ranked(params[key], statistics.fmean(values), len(values)) for key, values in relative.items()]
    return sorted(ranked, key=lambda r: (-r.relative, -r.studies, order[_key(r.params)]))


def warm_configs(studies: Sequence[Study], space: SearchSpace, enqueue: int) -> list[dict[str, Any]]:
    """The architectures a warm search tries first: the surrogate's top ``enqueue`` that ``space`` holds.

    Raises:
        SearchError: no study scored an architecture of this space (nothing to learn from).
    """
    choices = space.choices()
    ranked = [r for r in rank_architectures(studies, list(choices))
              if all(r.params[name] in values for name, values in choices.items())]
    if not ranked:
        names = ", ".join(s.domain for s in studies) or "none"
        raise SearchError(f"warm_start: the earlier studies ({names}) scored no architecture of this search "
                          "space; search the same space there, or drop warm_start")
    return [r.params for r in ranked[:enqueue]]
