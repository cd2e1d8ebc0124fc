"""The feedback report's numbers: PGR per domain and forgetting on held-out tasks, from test scores.

The test split is scored here, for the report only, and after the gate decided on the gate splits
(:mod:`fanbu.feedback.gate.promotion`): :func:`score_report` gives both models' test metrics and per-text
outcomes, and no decision reads them.

PGR (performance gap recovered) of a domain is ``(acc_new - acc_v0) / (acc_expert - acc_v0)``: 1 when
the candidate matches the expert, 0 when it learned nothing. It is undefined (``None``) where the expert
is no better than the champion, since there is no gap to recover. Forgetting is the mean accuracy drop
on the held-out tasks, in points (negative: the candidate got better there).

A test split is one sample of texts: :func:`bootstrap_intervals` resamples each split's texts (paired:
the candidate, the champion and the expert are scored on the same draw) to show how far PGR and
forgetting move with that sample alone.
"""

from __future__ import annotations

import statistics
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fanbu.feedback.shared.context import Labeled
from fanbu.models.encoder import EncoderHandle
from fanbu.train.classify import score_heads

MIN_GAP = 1e-6  # an expert this close to the champion leaves no gap to recover
# the tables' legend of format_score's brackets (escaped for rich markup)
INTERVAL_LEGEND = "\\[brackets]: 90% paired-bootstrap interval over the test texts"


Scores = tuple[dict[str, dict[str, float]], dict[str, str]]  # per task: metrics, per-text outcomes


@dataclass(frozen=True)
class ReportScores:
    """A candidate's and the champion's metrics and per-text outcomes on the test splits.

    The report's numbers (PGR, forgetting, bootstrap intervals), scored after the gate decided; no
    decision reads them. A candidate the gate could not score (it lost a head) has none.
    """

    candidate_metrics: dict[str, dict[str, float]]
    champion_metrics: dict[str, dict[str, float]]
    candidate_outcomes: dict[str, str] = field(default_factory=dict)
    champion_outcomes: dict[str, str] = field(default_factory=dict)


def score_tests(model: EncoderHandle, tests: Mapping[str, Labeled], batch_size: int = 64) -> Scores:
    """A model's metrics and per-text outcomes on the test splits, for the report."""
    return score_heads(model, tests, batch_size=batch_size)


def score_report(
    candidate: EncoderHandle | None,
    tests: Mapping[str, Labeled],
    champion: Scores,
    batch_size: int = 64,
) -> ReportScores:
    """The report's test scores of ``candidate`` next to the champion's (:func:`score_tests`, scored once).

    ``candidate`` None: a candidate the gate could not score (it lost a head); the report has the
    champion's scores only.
    """
    champ_metrics, champ_outcomes = champion
    if candidate is None:
        return ReportScores({}, champ_metrics, {}, champ_outcomes)
    metrics, outcomes = score_tests(candidate, tests, batch_size)
    return ReportScores(metrics, champ_metrics, outcomes, champ_outcomes)


def pgr(acc_new: float, acc_v0: float, acc_expert: float) -> float | None:
    """Performance gap recovered, or ``None`` when the expert is not better than the champion."""
    gap = acc_expert - acc_v0
    return None if gap <= MIN_GAP else (acc_new - acc_v0) / gap


def expert_outcomes(
    experts: Mapping[str, EncoderHandle], tests: Mapping[str, Labeled]
) -> tuple[dict[str, float], dict[str, str]]:
    """Each expert's test accuracy on its own domain, and which of those texts it got right."""
    found = {d: score_heads(expert, {d: tests[d]}) for d, expert in sorted(experts.items())}
    return (
        {d: metrics[d]["accuracy"] for d, (metrics, _) in found.items()},
        {d: outcomes[d] for d, (_, outcomes) in found.items()},
    )


def score_candidate(
    candidate: Mapping[str, Mapping[str, float]],
    champion: Mapping[str, Mapping[str, float]],
    expert_acc: Mapping[str, float],
    domains: Sequence[str],
    heldout: Sequence[str],
) -> dict[str, Any]:
    """Per-domain accuracy and PGR, mean PGR and forgetting (points) from test metrics per head.

    A candidate without scores (it lost a head, so the gate did not score it) gets ``None`` throughout.
    """
    rows = []
    for domain in domains:
        acc = candidate.get(domain, {}).get("accuracy")
        v0 = champion[domain]["accuracy"]
        gain = None if acc is None else pgr(acc, v0, expert_acc[domain])
        rows.append({"name": domain, "acc": acc, "acc_v0": v0, "acc_expert": expert_acc[domain], "pgr": gain})
    defined = [r["pgr"] for r in rows if r["pgr"] is not None]
    drops = {t: 100 * (champion[t]["accuracy"] - candidate[t]["accuracy"]) for t in heldout if t in candidate}
    return {
        "domains": rows,
        "pgr_mean": statistics.fmean(defined) if defined else None,
        "forgetting": statistics.fmean(drops.values()) if drops and len(drops) == len(heldout) else None,
        "forgetting_per_task": drops,
    }


def _bits(outcome: str) -> np.ndarray:
    return np.frombuffer(outcome.encode("ascii"), dtype=np.uint8) - ord("0")  # (n,) of 0/1


def bootstrap_intervals(
    candidate: Mapping[str, str],
    champion: Mapping[str, str],
    expert: Mapping[str, str],
    domains: Sequence[str],
    heldout: Sequence[str],
    draws: int = 2000,
    level: float = 0.9,
    seed: int = 0,
) -> dict[str, Any]:
    """Paired bootstrap intervals of each domain's PGR, the mean PGR and the forgetting.

    Each draw resamples every test split's texts with replacement, the same texts for the candidate,
    the champion and (on a domain) the expert, and recomputes the numbers; the central ``level`` share
    of the draws is the interval. A draw in which the expert is no better than the champion has no PGR
    for that domain; the mean PGR of a draw covers the domains the point estimate covers.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, got {level}")
    rng = np.random.default_rng(seed)
    tails = [100 * (1 - level) / 2, 100 * (1 + level) / 2]
    gains: dict[str, np.ndarray] = {}
    for domain in domains:
        new, old, best = _bits(candidate[domain]), _bits(champion[domain]), _bits(expert[domain])
        if not len(new) == len(old) == len(best) or not len(new):
            raise ValueError(f"{domain}: the outcomes must cover the same, non-empty test split")
        picks = rng.integers(0, len(new), size=(draws, len(new)))  # (draws, n)
        acc_new, acc_old, acc_best = new[picks].mean(1), old[picks].mean(1), best[picks].mean(1)  # (draws,)
        gap = acc_best - acc_old
        with np.errstate(divide="ignore", invalid="ignore"):
            gains[domain] = np.where(gap > MIN_GAP, (acc_new - acc_old) / gap, np.nan)  # (draws,)
    drops = []
    for task in heldout:
        new, old = _bits(candidate[task]), _bits(champion[task])
        picks = rng.integers(0, len(new), size=(draws, len(new)))
        drops.append(100 * (old[picks].mean(1) - new[picks].mean(1)))  # (draws,)
    point = {
        d: pgr(
            float(_bits(candidate[d]).mean()),
            float(_bits(champion[d]).mean()),
            float(_bits(expert[d]).mean()),
        )
        for d in domains
    }
    covered = [d for d in domains if point[d] is not None]

    def interval(values: np.ndarray) -> list[float] | None:
        values = values[np.isfinite(values)]
        return [float(v) for v in np.percentile(values, tails)] if len(values) else None

    out: dict[str, Any] = {
        "level": level,
        "draws": draws,
        "domains": {d: interval(gains[d]) for d in domains},
    }
    if covered:
        with warnings.catch_warnings():  # a draw with no PGR on any domain has none on average either
            warnings.simplefilter("ignore", RuntimeWarning)
            out["pgr_mean"] = interval(np.nanmean(np.stack([gains[d] for d in covered]), axis=0))
    else:
        out["pgr_mean"] = None
    out["forgetting"] = interval(np.mean(np.stack(drops), axis=0)) if drops else None
    return out


def format_score(row: Mapping[str, Any], key: str) -> str:
    """``row[key]`` (``pgr_mean`` or ``forgetting``) for a table, with its bootstrap interval if any.

    Forgetting is in signed points ("+1.2"), PGR a fraction ("0.753"); the interval follows in
    brackets ("0.753 [0.520, 1.020]", which rich prints as it is: markup tags start with a letter); a
    missing value is "-".
    """
    points = key == "forgetting"

    def number(value: float | None) -> str:
        if value is None:
            return "-"
        return f"{value:+.1f}" if points else f"{value:.3f}"

    bounds = (row.get("interval") or {}).get(key)
    span = f" [{number(bounds[0])}, {number(bounds[1])}]" if bounds else ""
    return number(row.get(key)) + span
