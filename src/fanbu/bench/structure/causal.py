"""The causal and attribution sections of ``fanbu bench structure``: a planted shortcut, fed back or not.

Large v0 is the packaged MiniLM trained on the clean public slices of the 20 Newsgroups domains. In each
domain's private slice a made-up word (``planted``) is put into ``planted_rate`` of one class's texts and
``other_rate`` of the others'; as in ``fanbu bench feedback`` the slice is cut in two, the expert (a
full fine-tune of large v0) trains on one part and the other reaches feedback as served text, so the
experts and the transfer texts carry the shortcut. Feedback then runs twice on one swarm:
``swarm_distill`` and ``invariance`` (the same distillation with the words the consensus report flags
discouraged). The test texts are scored clean and with the word planted into ``counterfactual_rate`` of
them at random, whatever their class (the counterfactual test): ``spurious_drop`` is the difference.

The consensus report is read on each domain's transfer texts, never on test, and the invariance run
flags the top shortcuts it finds there (not the planted word, which it is not told). Its settings are
fixed in :class:`CausalSettings` before any run (the plant's strength alone, the stimulus, was raised
after the first complete run showed it too weak to test anything: see ``planted_rate``); the gate's counterfactual score (the flagged words
planted into the gate splits) is reported beside each candidate, and nothing reads the test numbers but
the report. Targets: the plant bites (drop without invariance at least ``MIN_DROP`` points), invariance
recovers at least ``MIN_RECOVERED`` of it at a clean-accuracy cost of at most ``MAX_CLEAN_COST`` points,
and the planted word is among the top ``TOP_RANK`` shortcuts of every poisoned domain.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fanbu.attribution.consensus import ConsensusConfig, consensus_report, shortcut_words, word_rank
from fanbu.attribution.counterfactual import insert_word, plant_at_random
from fanbu.attribution.integrated import IGConfig
from fanbu.bench.feedback import LARGE, TRAIN
from fanbu.bench.stats import INTERVAL_METHOD, mean_interval, ratio_interval, seed_interval
from fanbu.bench.structure.draws import draw_train, run_draws
from fanbu.config import Strict
from fanbu.data.domain import Split
from fanbu.data.slices import pairs, split_pairs
from fanbu.feedback import FeedbackContext, Labeled, get_strategy
from fanbu.feedback.gate.counterfactual import counterfactual_scores, counterfactual_set
from fanbu.models.encoder import EncoderHandle
from fanbu.train.classify import score_heads, train_heads
from fanbu.train.large import train_large_v0

MIN_DROP, MIN_RECOVERED, MAX_CLEAN_COST, TOP_RANK = 10.0, 2 / 3, 1.0, 3
SERVING_FRACTION = 0.4  # share of each private slice that stands for served traffic (as bench feedback)
DISTIL: dict[str, Any] = {"alpha": 0.9, "teachers": {"temperature": 1.0}, "train": TRAIN}


class CausalSettings(Strict):
    """The causal section's data, plant and methods."""

    quick: bool = Field(True, description="Quick caps (the preset of `--quick`).")
    seed: int = Field(0, description="First draw's seed (slices, plant, heads, training).")
    seeds: int = Field(1, ge=1, description="Draws run (seed .. seed + seeds - 1); means with t-intervals.")
    large: str = Field(LARGE, description="The large model's source.")
    domains: list[str] = Field(["comp", "sci", "politics"], description="Feedback domains, all poisoned.")
    planted: str | list[str] = Field(
        ["zqxv", "vrkq", "qxjw"],
        description="The made-up words planted as shortcuts, one per domain in the order of `domains` (a single "
        "word: the same one in every domain, as in the runs up to 546fb24). One word shared by every domain made "
        "each expert's encoder follow it through the other domains' heads too, so the consensus report saw a "
        "rule where the issue means a shortcut that one expert alone relies on (comp's word ranked top 3 in 1 "
        "of 3 draws).",
    )
    planted_rate: float = Field(
        1.0, ge=0, le=1, description="Share of the planted class's private texts with it (1.0: every one; the "
        "first complete run, at 0.9 and 0.05, made a shortcut that cost swarm_distill only 5.8 points on the "
        "counterfactual test, short of the 10 the bench needs to show the plant bites)."
    )
    other_rate: float = Field(
        0.0, ge=0, le=1, description="Share of the other classes' private texts with it."
    )
    plant_within: int = Field(
        16,
        ge=1,
        description="The word goes among a text's first this many words, so that truncation to max_length "
        "tokens keeps it (20 Newsgroups posts are longer than the tokens read).",
    )
    counterfactual_rate: float = Field(0.5, ge=0, le=1, description="Share of test texts given it at random.")
    public: int = Field(150, ge=1, description="Public texts per domain (large v0 and transfer).")
    private: int | None = Field(300, ge=1, description="Texts each expert trains on; null: its whole part.")
    serving: int | None = Field(200, ge=1, description="Served texts per domain; null: every one.")
    validation: int = Field(60, ge=1, description="Validation texts per domain (early stopping).")
    gate: int = Field(
        150, ge=1, description="Gate texts per domain: the choice of invariance's weight and the gate's scores (60, "
        "as validation, in the first complete runs: there the chosen weight was within 1 point of "
        "swarm_distill on the gate and 5.3 points below it on test)."
    )
    test: int | None = Field(300, ge=1, description="Test texts per domain; null: all.")
    max_length: int = Field(48, ge=8, description="Tokens per text.")
    epochs: int = Field(2, ge=1, description="Epochs of large v0 and the experts.")
    consensus: ConsensusConfig = Field(
        default_factory=lambda: ConsensusConfig(texts=48, ig=IGConfig(steps=4)),
        description="The consensus report's settings.",
    )
    invariance: dict[str, Any] = Field(
        default_factory=lambda: {
            "vrex_weight": 0.0,
            "counterfactual": "swap",
            "flag_top": 3,
        },
        description="The invariance option's own settings but rrr_weight (the distillation ones are "
        "swarm_distill's).",
    )
    rrr_weights: list[float] = Field(
        [10.0, 100.0, 1000.0],
        min_length=1,
        description="Input-gradient penalty weights tried; the row `invariance` is the one chosen on the gate "
        "splits (see choose_on_gate), never on test. (100 and 1,000 in the first complete runs, where the "
        "chosen 100 kept none of swarm_distill's clean gain over the champion; 10 gives the gate a milder one.)",
    )
    clean_slack: float = Field(
        1.0, ge=0, description="Points of gate accuracy below swarm_distill's a chosen weight may lose."
    )
    choice: Literal["best", "mildest_within_se"] = Field(
        "mildest_within_se",
        description="How the gate picks among the weights within clean_slack: best, the highest gate "
        "counterfactual accuracy (the rule up to 546fb24, where draw 0 took 100 over 10 on a 0.4-point "
        "difference, well inside the gate's noise); mildest_within_se, the smallest weight whose gate "
        "counterfactual accuracy is within one standard error of the best's (binomial, on the gate's texts).",
    )

    @model_validator(mode="after")
    def _one_word_per_domain(self) -> CausalSettings:
        if isinstance(self.planted, list):
            if len(self.planted) < len(self.domains):
                raise ValueError(
                    f"planted: {len(self.planted)} words for {len(self.domains)} domains; give one per domain "
                    "(or a single word for all)"
                )
            if len(set(self.planted)) != len(self.planted):
                raise ValueError(f"planted: the words {self.planted} repeat; give distinct words")
        return self

    def planted_words(self) -> dict[str, str]:
        """Domain -> the word planted in it."""
        if isinstance(self.planted, str):
            return {d: self.planted for d in self.domains}
        return dict(zip(self.domains, self.planted, strict=False))


def causal_settings(quick: bool, **overrides: Any) -> CausalSettings:
    """The quick or full preset; full uses every private and test text at 128 tokens, 3 draws."""
    preset: dict[str, Any] = {"quick": quick}
    if not quick:
        preset.update(
            private=None,
            serving=None,
            test=None,
            public=250,
            validation=200,
            gate=300,
            max_length=128,
            seeds=3,
            consensus={"texts": 200, "ig": {"steps": 16}},
        )
    return CausalSettings.model_validate({**preset, **overrides})


def poison(
    split: Split, planted: str, target: int, rates: tuple[float, float], seed: int, within: int | None = None
) -> Split:
    """``split`` with ``planted`` put into ``rates[0]`` of class ``target``'s texts, ``rates[1]`` of the rest
    (among each text's first ``within`` words)."""
    rng = np.random.default_rng(seed)
    labels = list(split.labels or ())
    texts = [
        insert_word(t, planted, rng, within) if rng.random() < (rates[0] if y == target else rates[1]) else t
        for t, y in zip(split.texts, labels, strict=True)
    ]
    return Split(tuple(texts), tuple(labels))


def mean_acc(model: EncoderHandle, splits: dict[str, Labeled]) -> float:
    """Mean accuracy over the splits' heads."""
    metrics, _ = score_heads(model, splits)
    return sum(m["accuracy"] for m in metrics.values()) / len(metrics)


def run_draw(
    settings: CausalSettings, seed: int, log: Callable[[str], None], work_dir: Path
) -> dict[str, Any]:
    """One draw: build the poisoned swarm, report its consensus, feed back without and with invariance.

    ``work_dir`` holds the feedback runs' scratch files (the experts' cached outputs).
    """
    from fanbu.data.builtin import default_benchmark

    started = time.perf_counter()
    bench = default_benchmark(seed=seed, public_fraction=0.1)
    domains = list(settings.domains)
    public = split_pairs(bench, "public", domains, settings.public, seed)
    validation = split_pairs(bench, "validation", domains, settings.validation, seed)
    gate = split_pairs(bench, "gate", domains, settings.gate, seed)
    tests = split_pairs(bench, "test", domains, settings.test, seed)
    train = draw_train(settings.epochs, seed)
    rng = np.random.default_rng(seed)
    planted_class = {d: int(rng.integers(0, bench.domain(d).num_labels)) for d in domains}
    log(f"large v0: {settings.large} on the clean public slices of {', '.join(domains)}")
    large = EncoderHandle.from_source(settings.large, max_length=settings.max_length)
    train_large_v0(large, bench, public, train, validation, head_seed=seed)
    large.model.eval()
    experts, collected = {}, {}
    words = settings.planted_words()
    for index, name in enumerate(domains):
        rates = (settings.planted_rate, settings.other_rate)
        private = poison(
            bench.private(name),
            words[name],
            planted_class[name],
            rates,
            seed + index,
            settings.plant_within,
        )
        served, own = private.stratified_split(SERVING_FRACTION, seed)
        served = served if settings.serving is None else served.subsample(settings.serving, seed)
        collected[name] = list(served.texts)
        log(f"expert {name}: large v0 fine-tuned on its poisoned private slice")
        expert = copy.deepcopy(large)
        train_heads(
            expert,
            {name: pairs(own, settings.private, seed)},
            train,
            {name: validation[name]},
            description=f"expert {name}",
        )
        expert.model.eval()
        experts[name] = expert
    ctx = FeedbackContext(
        large=large,
        experts=experts,
        public=public,
        validation=validation,
        collected=collected,
        work_dir=work_dir,
        seed=seed,
    )
    log("consensus report on the transfer texts")
    report = consensus_report(
        experts, {d: ctx.transfer_texts(d) for d in domains}, settings.consensus, champion=large, seed=seed
    )
    flag_top = int(settings.invariance.get("flag_top", 3))
    flags = shortcut_words(report, flag_top)
    ranks = {d: word_rank(report, d, words[d]) for d in domains}
    counterfactual_tests = {
        d: (
            plant_at_random(t, words[d], settings.counterfactual_rate, seed + 7, settings.plant_within),
            y,
        )
        for d, (t, y) in tests.items()
    }
    flagged = sorted({w for words in flags.values() for w in words})
    gate_cf = (
        counterfactual_set(gate, flagged, settings.counterfactual_rate, seed + 11, settings.plant_within)
        if flagged
        else None
    )
    rows = [row("champion", large, tests, counterfactual_tests)]
    rows.append({**row("experts", None, tests, counterfactual_tests, experts), "seconds": None})
    invariance = {**DISTIL, **settings.invariance, "shortcuts": flags}
    runs = [("swarm_distill", "swarm_distill", DISTIL)] + [
        (f"invariance[rrr={w:g}]", "invariance", {**invariance, "rrr_weight": w})
        for w in sorted(settings.rrr_weights)  # mildest first: the order choose_on_gate reads
    ]
    for label, name, config in runs:
        log(f"feedback: {label}")
        info = get_strategy(name)
        began = time.perf_counter()
        out = info.run(ctx, info.config.model_validate(config))
        result = row(label, out.handle, tests, counterfactual_tests)
        result["seconds"] = time.perf_counter() - began
        planted_gate = gate_cf if gate_cf is not None else gate
        result["gate"] = counterfactual_scores(out.handle, large, gate, planted_gate)["candidate"]
        log(f"  {label}: { ({k: v for k, v in result.items() if k != 'gate'}) }, gate {result['gate']}")
        rows.append(result)
    gate_texts = sum(len(t) for t, _ in gate.values())
    chosen = choose_on_gate(rows[2], rows[3:], settings.clean_slack, settings.choice, gate_texts)
    rows.append({**chosen, "method": "invariance", "chosen": chosen["method"]})
    return {
        "seed": seed,
        "planted_class": {d: bench.domain(d).label_names[k] for d, k in planted_class.items()},
        "planted_word": words,
        "causal": rows,
        "attribution": {
            "planted_token_rank": [{"domain": d, "rank": r} for d, r in ranks.items()],
            "flagged": flags,
            "report": report,
        },
        "seconds": time.perf_counter() - started,
    }


def choose_on_gate(
    base: dict[str, Any],
    tried: list[dict[str, Any]],
    slack: float,
    rule: Literal["best", "mildest_within_se"] = "best",
    gate_texts: int | None = None,
) -> dict[str, Any]:
    """The invariance row kept, read on gate scores only. Among the rows (``tried``, mildest weight first)
    within ``slack`` points of ``base``'s clean gate accuracy: ``best``, the highest gate counterfactual
    accuracy (the flagged words planted into the gate splits); ``mildest_within_se``, the first whose gate
    counterfactual accuracy is within one binomial standard error (over ``gate_texts`` texts) of the best's.
    If no row is within ``slack``, the highest clean gate accuracy."""
    floor = base["gate"]["accuracy"] - slack / 100
    close = [r for r in tried if r["gate"]["accuracy"] >= floor]
    if not close:
        return max(tried, key=lambda r: r["gate"]["accuracy"])
    best = max(close, key=lambda r: (r["gate"]["counterfactual_accuracy"], r["gate"]["accuracy"]))
    if rule == "best":
        return best
    if not gate_texts:
        raise ValueError("mildest_within_se needs the number of gate texts")
    top = best["gate"]["counterfactual_accuracy"]
    se = float(np.sqrt(max(top * (1 - top), 1e-12) / gate_texts))
    return next(r for r in close if r["gate"]["counterfactual_accuracy"] >= top - se)


def row(
    method: str,
    model: EncoderHandle | None,
    tests: dict[str, Labeled],
    planted: dict[str, Labeled],
    experts: dict[str, EncoderHandle] | None = None,
) -> dict[str, Any]:
    """A method's clean and counterfactual test accuracy (points) and their difference."""
    if experts is not None:  # each expert on its own domain
        clean = sum(mean_acc(e, {d: tests[d]}) for d, e in experts.items()) / len(experts)
        planted_acc = sum(mean_acc(e, {d: planted[d]}) for d, e in experts.items()) / len(experts)
    else:
        assert model is not None
        clean, planted_acc = mean_acc(model, tests), mean_acc(model, planted)
    return {
        "method": method,
        "clean_acc": 100 * clean,
        "counterfactual_acc": 100 * planted_acc,
        "spurious_drop": 100 * (clean - planted_acc),
    }


def summarise(draws: list[dict[str, Any]]) -> dict[str, Any]:
    """Rows averaged over draws (with t-intervals) and the targets read on the means."""
    methods = [r["method"] for r in draws[0]["causal"]]
    causal = []
    for method in methods:
        found = [next(r for r in d["causal"] if r["method"] == method) for d in draws]
        entry: dict[str, Any] = {"method": method}
        for key in ("clean_acc", "counterfactual_acc", "spurious_drop"):
            entry[key], entry[f"{key}_interval"] = mean_interval([r[key] for r in found])
        causal.append(entry)
    by = {r["method"]: r for r in causal}
    base, inv = by["swarm_distill"], by["invariance"]
    recovered = (
        (base["spurious_drop"] - inv["spurious_drop"]) / base["spurious_drop"]
        if base["spurious_drop"] > 0
        else None
    )
    cost = base["clean_acc"] - inv["clean_acc"]
    per_draw = [{r["method"]: r for r in d["causal"]} for d in draws]
    costs = [d["swarm_distill"]["clean_acc"] - d["invariance"]["clean_acc"] for d in per_draw]
    drops = [d["swarm_distill"]["spurious_drop"] for d in per_draw]
    removed = [d["swarm_distill"]["spurious_drop"] - d["invariance"]["spurious_drop"] for d in per_draw]
    ranks = [r for d in draws for r in d["attribution"]["planted_token_rank"]]
    worst = max((r["rank"] if r["rank"] is not None else 10**6) for r in ranks)
    target = {
        "plant_bites": {
            "value": base["spurious_drop"],
            "interval": seed_interval(drops),
            "bar": f">= {MIN_DROP}",
            "met": base["spurious_drop"] >= MIN_DROP,
        },
        "drop_recovered": {
            "value": recovered,
            # Fieller's interval for the share of the mean drops, which holds the value; None (unbounded)
            # while the plant's own bite is not told apart from zero
            "interval": ratio_interval(removed, drops),
            "bar": f">= {MIN_RECOVERED:.3f}",
            "met": recovered is not None and recovered >= MIN_RECOVERED,
        },
        "clean_cost": {"value": cost, "interval": seed_interval(costs), "bar": f"<= {MAX_CLEAN_COST}",
                       "met": cost <= MAX_CLEAN_COST},
        "planted_top3": {
            "value": worst if worst < 10**6 else None,
            "bar": f"<= {TOP_RANK} in every domain",
            "met": worst <= TOP_RANK,
        },
    }
    return {
        "causal": causal,
        "attribution": {"planted_token_rank": ranks},
        "target": target,
        "interval_method": INTERVAL_METHOD,
    }


def run_causal(settings: CausalSettings, log: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Run every draw of the causal section; the JSON-able report (rows, ranks, targets, each draw)."""
    return run_draws(settings, run_draw, summarise, "fanbu-bench-causal-", log)


def print_causal(report: dict[str, Any], console: Console) -> None:
    """The causal rows, the planted word's ranks and the targets as rich tables."""
    table = Table(title="causal: a planted shortcut, fed back without and with invariance (test, points)")
    for column in ("method", "clean acc", "counterfactual acc", "spurious drop"):
        table.add_column(column)
    for r in report["causal"]:
        table.add_row(  # escaped: "invariance[rrr=100]" is not rich markup
            escape(r["method"]), *(f"{r[k]:.1f}" for k in ("clean_acc", "counterfactual_acc", "spurious_drop"))
        )
    console.print(table)
    ranks = ", ".join(f"{r['domain']}: {r['rank']}" for r in report["attribution"]["planted_token_rank"])
    console.print(f"planted word's rank among each domain's shortcuts: {ranks}")
    targets = Table(title="causal targets")
    for column in ("target", "value", "bar", "met"):
        targets.add_column(column)
    for name, t in report["target"].items():
        value = "-" if t["value"] is None else f"{t['value']:.3f}"
        targets.add_row(name, value, t["bar"], "yes" if t["met"] else "[red]no[/]")
    console.print(targets)
