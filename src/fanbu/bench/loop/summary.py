"""The loop bench's headline figures per draw, their means and t-intervals over draws, and the targets.

Every target is read off the measured figures (:func:`figures`), on the means over the draws when there
are several (:func:`over_draws`), never written in by hand. Choices read the gate splits only: a
generation's best mechanism is the one the gate promoted (or, when none passed, the one with the highest
mean gate accuracy); the test numbers are the report of that choice.
"""

from __future__ import annotations

import statistics
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from fanbu.bench.loop.generation import Outcomes
from fanbu.bench.loop.plan import DEFAULT
from fanbu.bench.stats import mean_interval
from fanbu.feedback.gate.scores import MIN_GAP

SMALL_GAIN, BEST_PGR, BEST_FORGETTING, TRANSPLANT_PGR = 0.02, 0.9, 1.0, 0.3
HELDOUT_DROP, BYTES_RATIO, QUICK_SECONDS = 1.0, 1 / 20, 1800.0


def _mean(values: Sequence[float | None]) -> float | None:
    defined = [float(v) for v in values if v is not None]
    return statistics.fmean(defined) if defined else None


def _rows(draw: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [r for g in draw["generations"] for r in g["mechanisms"] if r["name"] == name and "error" not in r]


def best_row(generation: dict[str, Any]) -> dict[str, Any] | None:
    """The generation's best mechanism, chosen on the gate splits: the promoted one, else the highest mean
    gate accuracy."""
    rows = [r for r in generation["mechanisms"] if "error" not in r]
    promoted = [r for r in rows if r.get("model") == generation["promoted"]]
    if promoted:
        return promoted[0]
    scored = [r for r in rows if (r.get("decision") or {}).get("mean") is not None]
    return max(scored, key=lambda r: r["decision"]["mean"], default=None)


def figures(draw: dict[str, Any], names: Sequence[str]) -> dict[str, float]:
    """One draw's headline figures (flat, numbers only; a figure that could not be measured is absent)."""
    gens = draw["generations"]
    out: dict[str, float | None] = {
        "small_adapt_gain": _mean(
            [s["after_adapt"] - s["before_adapt"] for g in gens for s in g["small"].values()]
        ),
        "seconds": draw["seconds"],
    }
    for g in gens:
        key = f"g{g['generation']}"
        domains = [d for d in g["large"] if d != "heldout"]
        out[f"{key}.large.domains_mean"] = _mean([g["large"][d] for d in domains])
        out[f"{key}.large_before.domains_mean"] = _mean([g["large_before"][d] for d in domains])
        for task, acc in g["large"]["heldout"].items():
            out[f"{key}.large.heldout.{task}"] = acc
        out[f"{key}.small.before_adapt"] = g["small_mean"]["before_adapt"]
        out[f"{key}.small.after_adapt"] = g["small_mean"]["after_adapt"]
    for name in names:
        rows = _rows(draw, name)
        out[f"{name}.pgr_small"] = _mean([r["pgr_small"] for r in rows])
        out[f"{name}.forgetting"] = _mean([r["forgetting"] for r in rows])
        out[f"{name}.seconds"] = _mean([r["seconds"] for r in rows])
        out[f"{name}.bytes_from_domains"] = _mean([r["bytes_from_domains"] for r in rows])
        out[f"{name}.params"] = _mean([r["params"] for r in rows])
        out[f"{name}.gate_passed"] = _mean([float(r["gate"]["passed"]) for r in rows]) if rows else 0.0
    best = [best_row(g) for g in gens]
    out["best.pgr_small"] = _mean([r["pgr_small"] if r else None for r in best])
    out["best.forgetting"] = _mean([r["forgetting"] if r else None for r in best])
    full = draw.get("full_size_swarm") or {}
    for key in ("pgr", "forgetting", "bytes_from_domains"):
        out[f"full_size.{key}"] = full.get(key)
    default_bytes, full_bytes = out.get(f"{DEFAULT}.bytes_from_domains"), full.get("bytes_from_domains")
    out["bytes_ratio"] = None if not (default_bytes and full_bytes) else default_bytes / full_bytes
    first, second = out.get("g1.large.domains_mean"), out.get("g2.large.domains_mean")
    out["compounding.large_delta"] = None if first is None or second is None else second - first
    first, second = out.get("g1.small.before_adapt"), out.get("g2.small.before_adapt")
    out["compounding.small_delta"] = None if first is None or second is None else second - first
    for name in ("layer_lr", "structure"):
        mine, theirs = out.get(f"{name}.pgr_small"), out.get(f"{DEFAULT}.pgr_small")
        out[f"{name}.pgr_delta"] = None if mine is None or theirs is None else mine - theirs
        params, default_params = out.get(f"{name}.params"), out.get(f"{DEFAULT}.params")
        out[f"{name}.params_ratio"] = None if not (params and default_params) else params / default_params
    return {k: float(v) for k, v in out.items() if v is not None}


def _bits(outcome: str) -> np.ndarray:
    return np.frombuffer(outcome.encode("ascii"), dtype=np.uint8) - ord("0")  # (n,) of 0/1


def pgr_delta_interval(
    outcomes: Sequence[Outcomes], a: str, b: str, draws: int = 2000, level: float = 0.9, seed: int = 0
) -> list[float] | None:
    """Paired-bootstrap interval of the mean over generations of ``pgr_small(a) - pgr_small(b)``.

    Each draw resamples every generation's test texts per domain, the same texts for both candidates,
    the champion and the small teacher; ``None`` where a candidate has no outcomes.
    """
    rng = np.random.default_rng(seed)
    per_generation = []
    for found in outcomes:
        if not found.candidates.get(a) or not found.candidates.get(b):
            return None
        per_domain = []
        for domain in found.domains:
            first, second = _bits(found.candidates[a][domain]), _bits(found.candidates[b][domain])
            old, teacher = _bits(found.champion[domain]), _bits(found.experts[domain])
            picks = rng.integers(0, len(old), size=(draws, len(old)))  # (draws, n)
            gap = teacher[picks].mean(1) - old[picks].mean(1)  # (draws,)
            with np.errstate(divide="ignore", invalid="ignore"):
                per_domain.append(
                    np.where(gap > MIN_GAP, (first[picks].mean(1) - second[picks].mean(1)) / gap, np.nan)
                )
        with warnings.catch_warnings():  # a draw with no gap on any domain has no PGR
            warnings.simplefilter("ignore", RuntimeWarning)
            per_generation.append(np.nanmean(np.stack(per_domain), axis=0))  # (draws,)
    values = np.mean(np.stack(per_generation), axis=0)
    values = values[np.isfinite(values)]
    if not len(values):
        return None
    return [float(v) for v in np.percentile(values, [100 * (1 - level) / 2, 100 * (1 + level) / 2])]


def over_draws(draws: list[dict[str, Any]]) -> tuple[dict[str, float], dict[str, list[float] | None]]:
    """The mean over the draws of every figure all of them measured, and its 90% t-interval (``None``
    with one draw)."""
    keys = [k for k in draws[0]["figures"] if all(k in d["figures"] for d in draws)]
    mean, interval = {}, {}
    for key in keys:
        mean[key], interval[key] = mean_interval([d["figures"][key] for d in draws])
    return mean, interval


def _part(
    value: float | None, bar: float | None, met: bool, rule: str, interval: Any = None, **extra: Any
) -> dict[str, Any]:
    return {"value": value, "bar": bar, "met": bool(met), "interval": interval, "rule": rule, **extra}


def targets(
    mean: dict[str, float], interval: dict[str, list[float] | None], draws: list[dict[str, Any]], quick: bool
) -> dict[str, Any]:
    """Every target read off ``mean`` (the figures' means over the draws; one draw: its own figures).

    ``interval``: each figure's t-interval over draws; with one draw, ``optimisation_helps`` carries the
    paired-bootstrap interval over that draw's test texts instead.
    """
    gain = mean.get("small_adapt_gain")
    pgr, forgetting = mean.get("best.pgr_small"), mean.get("best.forgetting")
    transplant, passed = mean.get("transplant.pgr_small"), mean.get("transplant.gate_passed", 0.0)
    layer, structure = mean.get("layer_lr.pgr_delta"), mean.get("structure.pgr_delta")
    structure_passed, structure_params = (
        mean.get("structure.gate_passed", 0.0),
        mean.get("structure.params_ratio"),
    )
    one = len(draws) == 1
    helps_interval = (
        (draws[0].get("optimisation") or {}).get("layer_lr_interval")
        if one
        else interval.get("layer_lr.pgr_delta")
    )
    cheaper = structure_passed == 1.0 and structure_params is not None and structure_params < 1.0
    compounding, small_delta = mean.get("compounding.large_delta"), mean.get("compounding.small_delta")
    drops = {
        key.removeprefix("g1.large.heldout."): 100 * (mean[key] - mean[key.replace("g1.", "g2.", 1)])
        for key in mean
        if key.startswith("g1.large.heldout.") and key.replace("g1.", "g2.", 1) in mean
    }
    ratio, seconds = mean.get("bytes_ratio"), mean.get("seconds")
    parts = {
        "small_adapt_gain": _part(
            gain,
            SMALL_GAIN,
            gain is not None and gain >= SMALL_GAIN,
            "mean over generations and domains of the small model's test accuracy after adapt minus before "
            "(the model served after adapt: a domain whose adapted version lost on validation keeps its model)",
            interval.get("small_adapt_gain"),
        ),
        "best_pgr_small": _part(
            pgr,
            BEST_PGR,
            pgr is not None and forgetting is not None and pgr >= BEST_PGR and forgetting <= BEST_FORGETTING,
            "pgr_small of each generation's best mechanism (chosen on the gate: the promoted one), mean over "
            f"generations, >= bar, with its forgetting <= {BEST_FORGETTING:g} point",
            interval.get("best.pgr_small"),
            forgetting=forgetting,
            forgetting_bar=BEST_FORGETTING,
            forgetting_interval=interval.get("best.forgetting"),
        ),
        "transplant_pgr": _part(
            transplant,
            TRANSPLANT_PGR,
            transplant is not None and transplant >= TRANSPLANT_PGR and passed == 1.0,
            "the transplant candidate's pgr_small, mean over generations, >= bar, and it passed the gate in "
            "every generation",
            interval.get("transplant.pgr_small"),
            gate_passed_share=passed,
        ),
        "optimisation_helps": _part(
            layer,
            0.0,
            (layer is not None and layer > 0) or (structure is not None and structure > 0) or cheaper,
            "layer_lr's pgr_small minus the combined default's (value, > bar), or swarm_structure's, or a "
            "structure candidate that passed the gate in every generation with fewer parameters than the "
            "default's (cost)",
            helps_interval,
            structure_pgr_delta=structure,
            structure_params_ratio=structure_params,
            structure_gate_passed_share=structure_passed,
        ),
        "compounding": _part(
            compounding,
            0.0,
            compounding is not None
            and compounding > 0
            and small_delta is not None
            and small_delta >= 0
            and all(drop <= HELDOUT_DROP + 1e-9 for drop in drops.values()),  # 1 - 0.99 is 1.0000000000000009 points
            "generation 2's champion (what it ends with) minus generation 1's on the mean of domains (test), "
            f"> bar; no held-out task lower by more than {HELDOUT_DROP:g} point; the small models re-derived "
            "in generation 2 start (before adapt) at least as high as generation 1's",
            interval.get("compounding.large_delta"),
            heldout_drop_points=drops,
            small_before_delta=small_delta,
        ),
        "bytes_ratio": _part(
            ratio,
            BYTES_RATIO,
            ratio is not None and ratio <= BYTES_RATIO,
            "bytes the combined default moves from the domains over the full-size swarm's (same strategy and "
            "data, full-size experts' weights), <= bar",
            interval.get("bytes_ratio"),
        ),
    }
    if quick:
        parts["quick_seconds"] = _part(
            seconds,
            QUICK_SECONDS,
            seconds is not None and seconds <= QUICK_SECONDS,
            "seconds of one quick draw end to end (large v0 included unless kept from an earlier run)",
            interval.get("seconds"),
        )
    return {**parts, "met": all(p["met"] for p in parts.values())}
