"""The feedback report's numbers: PGR per domain and forgetting on held-out tasks, from test scores.

PGR (performance gap recovered) of a domain is ``(acc_new - acc_v0) / (acc_expert - acc_v0)``: 1 when
the candidate matches the expert, 0 when it learned nothing. It is undefined (``None``) where the expert
is no better than the champion, since there is no gap to recover. Forgetting is the mean accuracy drop
on the held-out tasks, in points (negative: the candidate got better there).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from fanbu.feedback.base import Labeled
from fanbu.models.encoder import EncoderHandle
from fanbu.train.classify import evaluate_heads

MIN_GAP = 1e-6  # an expert this close to the champion leaves no gap to recover


def pgr(acc_new: float, acc_v0: float, acc_expert: float) -> float | None:
    """Performance gap recovered, or ``None`` when the expert is not better than the champion."""
    gap = acc_expert - acc_v0
    return None if gap <= MIN_GAP else (acc_new - acc_v0) / gap


def expert_accuracy(experts: Mapping[str, EncoderHandle], tests: Mapping[str, Labeled]) -> dict[str, float]:
    """Each expert's test accuracy on its own domain."""
    return {d: evaluate_heads(expert, {d: tests[d]})[d]["accuracy"] for d, expert in sorted(experts.items())}


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
