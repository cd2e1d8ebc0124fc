"""The federated bench's report: headline figures over seeds, the rule x attack grid, targets, the table."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from fanbu.bench.federated.config import (
    ATTACKS,
    BASELINE_RULE,
    BROKEN,
    CENTRAL_LRS,
    DEFAULT_RULE,
    FRACTION,
    HEAD,
    HELD,
    NO_EFFECT,
    SERVER_LRS,
    TARGET_ATTACK_POINTS,
    TARGET_RATIO,
)
from fanbu.bench.stats import INTERVAL_LEVEL, INTERVAL_METHOD, mean_interval

if TYPE_CHECKING:
    from fanbu.bench.federated.parts import Bench


# the headline figures of one seed, each averaged over seeds with its t-interval
HEADLINE = (
    "v0_acc", "central_acc", "fed_acc", "fed_plain_acc", "fed_dirichlet_acc", "fed_ratio", "plain_ratio",
    "dirichlet_ratio", "clients_before", "clients_after", "clients_local_only", "clients_gain",
    "clients_minus_local",
)


def figures(run: dict[str, Any]) -> dict[str, float]:
    """One seed's headline figures (:data:`HEADLINE`)."""
    central, fed, mkt = run["central"]["acc"], run["fed"], run["mkt"]
    return {
        "v0_acc": run["v0"]["acc"],
        "central_acc": central,
        "fed_acc": fed["per_domain"]["acc"],
        "fed_plain_acc": fed["plain"]["acc"],
        "fed_dirichlet_acc": fed["dirichlet"]["acc"],
        "fed_ratio": fed["per_domain"]["acc"] / central,
        "plain_ratio": fed["plain"]["acc"] / central,
        "dirichlet_ratio": fed["dirichlet"]["acc"] / central,
        "clients_before": mkt["clients_before"],
        "clients_after": mkt["clients_after"],
        "clients_local_only": mkt["clients_local_only"],
        "clients_gain": mkt["clients_after"] - mkt["clients_before"],
        "clients_minus_local": mkt["clients_after"] - mkt["clients_local_only"],
    }


def baseline_of(rule: str) -> str:
    """The undefended rule of ``rule``'s exchange (FedAvg for shared parameters, FedMKT's plain mean for logits)."""
    return f"fedmkt:{BASELINE_RULE}" if rule.startswith("fedmkt:") else BASELINE_RULE


def is_default(rule: str) -> bool:
    """Whether ``rule`` is :data:`DEFAULT_RULE` (on shared parameters or on FedMKT's logits)."""
    return rule in (DEFAULT_RULE, f"fedmkt:{DEFAULT_RULE}")


def attack_grid(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every rule x attack cell: mean accuracy, clean accuracy and drop over seeds, and its status.

    A cell's status: ``no effect`` when the attack costs its exchange's undefended rule (FedAvg) under
    :data:`TARGET_ATTACK_POINTS` (or there is no FedAvg run to show that it bites): it tests nothing;
    otherwise ``held`` when the rule loses under that many points against its own clean run, else
    ``broken``. Judged on the means over seeds.
    """
    bar = TARGET_ATTACK_POINTS / 100
    keys = list(dict.fromkeys((a["attack"], a["rule"]) for a in runs[0]["attacks"]))
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for attack, rule in keys:
        per = [next(a for a in run["attacks"] if (a["attack"], a["rule"]) == (attack, rule)) for run in runs]
        acc, acc_interval = mean_interval([p["acc"] for p in per])
        clean, _ = mean_interval([p["clean_acc"] for p in per])
        drop, drop_interval = mean_interval([p["clean_acc"] - p["acc"] for p in per])
        rows[attack, rule] = {
            "name": f"{attack} / {rule}",  # a row of RESULTS.md's table of the grid
            "attack": attack, "rule": rule, "fraction": per[0]["fraction"], "acc": acc, "clean_acc": clean,
            "drop": drop, "acc_interval": acc_interval, "drop_interval": drop_interval,
            "default": is_default(rule), "drops": [p["clean_acc"] - p["acc"] for p in per],
        }
    for (attack, rule), row in rows.items():
        base = rows.get((attack, baseline_of(rule)))
        row["baseline_drop"] = None if base is None else base["drop"]
        if base is None or base["drop"] < bar:
            row["status"] = NO_EFFECT
        else:
            row["status"] = HELD if row["drop"] < bar else BROKEN
    return list(rows.values())


def target(value: float, bar: float, met: bool, interval: list[float] | None, rule: str, **extra: Any) -> dict[str, Any]:
    """One target as every bench reports it: ``{value, bar, met, interval, rule}`` (and ``extra``)."""
    return {"value": value, "bar": bar, "met": met, "interval": interval, "rule": rule, **extra}


def targets(
    mean: dict[str, float], interval: dict[str, list[float] | None], grid: list[dict[str, Any]], scale: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """The bench's targets, each met (or not) on the mean over seeds.

    * ``fed_ratio``: FedAvg (a client per domain, + head round) reaches 0.97 of centralised training.
    * ``clients_beat_local``: FedMKT's clients end above the same clients trained alone (local-only
      control, the same client rounds and settings); ``clients_improve`` (above their start) is reported
      beside it but is not the target.
    * ``attacks_bite``: every attack on shared parameters costs undefended FedAvg at least 5 points
      (an attack that does not is "no effect" and tests nothing).
    * ``robust_default``: :data:`DEFAULT_RULE` holds every attack on shared parameters within 5 points
      of its own clean run, and each of those attacks bites (a "no effect" attack is not held).
    * ``scale_completed``: the 100-client run finished.
    """
    bar = TARGET_ATTACK_POINTS / 100
    cells = {(r["attack"], r["rule"]): r for r in grid}
    fedavg = {a: cells.get((a, BASELINE_RULE)) for a in ATTACKS}
    bite = {a: (None if r is None else r["drop"]) for a, r in fedavg.items()}
    weakest = min(ATTACKS, key=lambda a: -1.0 if bite[a] is None else bite[a])
    default = {a: cells.get((a, DEFAULT_RULE)) for a in ATTACKS}
    status = {a: NO_EFFECT if r is None else r["status"] for a, r in default.items()}
    measured = [r for r in default.values() if r is not None]
    worst = max(measured, key=lambda r: r["drop"], default=None)
    return {
        "fed_ratio": target(mean["fed_ratio"], TARGET_RATIO, mean["fed_ratio"] >= TARGET_RATIO, interval["fed_ratio"],
                            "FedAvg (a client per domain, + head round) acc / central acc, >= bar"),
        "clients_beat_local": target(
            mean["clients_minus_local"], 0.0, mean["clients_minus_local"] > 0, interval["clients_minus_local"],
            "FedMKT clients' acc after - the same clients trained alone with the same steps, > bar",
        ),
        "attacks_bite": target(
            -1.0 if bite[weakest] is None else bite[weakest], bar,
            all(b is not None and b >= bar for b in bite.values()),
            None if fedavg[weakest] is None else fedavg[weakest]["drop_interval"],
            "the smallest drop of undefended FedAvg over the attacks on shared parameters (clean acc - "
            "attacked acc), >= bar; -1 where an attack has no FedAvg run",
            per_attack=bite,
        ),
        "robust_default": target(
            1.0 if worst is None else worst["drop"], bar,
            len(measured) == len(ATTACKS) and all(s == HELD for s in status.values()),
            None if worst is None else worst["drop_interval"],
            f"the largest drop of the default rule ({DEFAULT_RULE}) against its clean run over the attacks "
            "on shared parameters at 20% attackers, < bar, every attack biting FedAvg (>= bar)",
            default_rule=DEFAULT_RULE, per_attack=status,
        ),
        "scale_completed": target(float(scale["clients"]), 100.0, scale["clients"] >= 100, None,
                                  "simulated clients of the LoRA run that completed, >= bar"),
    }


def summarise(
    bench: Bench,
    quick: bool,
    out: Path,
    runs: list[dict[str, Any]],
    scale: dict[str, Any],
    seconds: float,
) -> dict[str, Any]:
    """The JSON report (means over the seeds' ``runs``, their 90% t-intervals) and the targets."""
    per_seed = [figures(run) for run in runs]
    mean: dict[str, float] = {}
    interval: dict[str, list[float] | None] = {}
    for key in HEADLINE:
        mean[key], interval[key] = mean_interval([f[key] for f in per_seed])
    grid = attack_grid(runs)
    held_by = {a: [r["rule"] for r in grid if r["attack"] == a and r["status"] == HELD]
               for a in dict.fromkeys(r["attack"] for r in grid)}
    status = {a: {r["rule"]: r["status"] for r in grid if r["attack"] == a} for a in held_by}
    seeds = [run["seed"] for run in runs]
    return {
        "bench": "federated",
        "quick": quick,
        "command": f"fanbu bench federated{' --quick' if quick else ''}"
        f"{f' --seeds {len(seeds)}' if len(seeds) != 1 else ''} --out {out}",
        "seeds": seeds,
        "domains": bench.domains,
        **mean,
        "interval": interval,
        "interval_method": f"{INTERVAL_METHOD} (null with one seed)",
        "server_lr": [run["fed"]["per_domain"]["server_lr"] for run in runs],
        "central_lr": [run["central"]["lr"] for run in runs],
        "clients_improve": mean["clients_after"] > mean["clients_before"],
        "default_rule": DEFAULT_RULE,
        "attack_strengths": bench.caps["attacks"],
        "attacks": grid,
        "attacks_status": status,
        "attacks_held_by": held_by,
        "grid_test_per_domain": bench.caps["grid"]["test"],
        "scale": {k: scale[k] for k in ("clients", "seconds_per_round", "peak_mb", "rounds", "share")},
        "details": {
            "runs": runs,
            "partition": bench.dirichlet(),
            "attackers": bench.attackers(),
            "caps": bench.caps,
            "central_lrs": CENTRAL_LRS,
            "server_lrs": SERVER_LRS,
            "head_phase": HEAD,
        },
        "target": targets(mean, interval, grid, scale),
        "seconds": seconds,
    }


def _interval(span: list[float] | None) -> str:
    return "" if span is None else f" \\[{span[0]:.3f}, {span[1]:.3f}]"


def print_table(report: dict[str, Any], console: Console) -> None:
    """The headline numbers (means over seeds), the rule x attack grid, then the targets."""
    t, i = report["target"], report["interval"]
    seeds = report.get("seeds", [0])
    head = Table(title=f"fanbu bench federated{' --quick' if report['quick'] else ''}"
                 f"{f' ({len(seeds)} seeds)' if len(seeds) != 1 else ''} ({report['seconds']:.0f} s)")
    for column in ("measure", "value", "target"):
        head.add_column(column)

    def row(label: str, key: str, note: str = "") -> None:
        head.add_row(label, f"{report[key]:.3f}{_interval(i.get(key))}", note)

    def met(name: str) -> str:
        return "met" if t[name]["met"] else "SHORT"

    lrs = ", ".join(f"{x:g}" for x in dict.fromkeys(report["server_lr"]))
    row("large v0 acc", "v0_acc")
    row(f"central acc (lr {', '.join(f'{x:g}' for x in dict.fromkeys(report['central_lr']))}, + head phase)",
        "central_acc")
    row(f"fed acc (FedAvg + head round, a client per domain, server lr {lrs})", "fed_acc",
        f"ratio {t['fed_ratio']['value']:.3f} >= {TARGET_RATIO} {met('fed_ratio')}")
    row("fed acc (plain FedAvg, no head round, a client per domain)", "fed_plain_acc",
        f"ratio {report['plain_ratio']:.3f}")
    row(f"fed acc (FedAvg, Dirichlet split, server lr {lrs}, no head round)", "fed_dirichlet_acc",
        f"ratio {report['dirichlet_ratio']:.3f}")
    row("FedMKT clients before", "clients_before")
    row("FedMKT clients after", "clients_after", "above before" if report["clients_improve"] else "not above before")
    row("the same clients trained alone (same steps)", "clients_local_only",
        f"after - alone {t['clients_beat_local']['value']:+.3f} > 0 {met('clients_beat_local')}")
    s = report["scale"]
    head.add_row(f"scale: {s['clients']} clients ({s['share']})",
                 f"{s['seconds_per_round']:.0f} s/round, peak {s['peak_mb']:.0f} MB", met("scale_completed"))
    console.print(head)
    sample = report.get("grid_test_per_domain")
    scored = "" if sample is None else f"; cells scored on {sample} test texts per domain"
    grid = Table(title=f"attacks at {FRACTION:.0%} malicious clients: acc (drop vs the same rule's clean run), "
                 f"status; default rule: {report['default_rule']}{scored}")
    rules = list(dict.fromkeys(a["rule"] for a in report["attacks"]))
    grid.add_column("attack")
    for rule in rules:
        grid.add_column(f"{rule} (default)" if is_default(rule) else rule, justify="right")
    grid.add_column("held by")
    for attack in dict.fromkeys(a["attack"] for a in report["attacks"]):
        cells = {a["rule"]: a for a in report["attacks"] if a["attack"] == attack}
        grid.add_row(
            attack,
            *(f"{cells[r]['acc']:.3f} ({-cells[r]['drop'] * 100:+.1f}) {cells[r]['status']}" if r in cells else "-"
              for r in rules),
            ", ".join(report["attacks_held_by"][attack]) or "none",
        )
    console.print(grid)
    lines = [f"target {name}: {x['value']:.3f}{_interval(x['interval'])} ({x['rule']}, bar {x['bar']:g}): "
             f"{'met' if x['met'] else 'SHORT'}" for name, x in t.items()]
    lines.append(f"attack strengths: {report['attack_strengths']}; \"no effect\": the attack costs undefended "
                 f"FedAvg under {TARGET_ATTACK_POINTS:g} points, so it tests nothing and is not held")
    if len(seeds) != 1:
        lines.append(f"\\[brackets]: {INTERVAL_LEVEL:.0%} t-interval over seeds; targets are judged on the mean")
    console.print("\n".join(lines), highlight=False)
