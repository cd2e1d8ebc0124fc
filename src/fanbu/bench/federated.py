"""``fanbu bench federated``: federated 反哺 on Flower against centralised training, attacks, and scale.

Large v0 is the packaged MiniLM trained on the public slices of the 20 Newsgroups domains. Every
federated run goes through Flower's simulation runtime (:func:`fanbu.federated.run.federate`, the
same ServerApp and ClientApp a deployment runs) and is scored on the domains' test splits:

* **central vs federated**: large v0 fine-tuned on the pooled private data of every client (one
  process, ``rounds`` epochs) against FedAvg with one client per domain and with a Dirichlet non-IID
  split into more clients (the same data, ``rounds`` rounds of one local epoch). Each side picks its
  step size on the validation slices (central: one of three learning rates; FedAvg: a server learning
  rate of 1 or 2 on the aggregate), and both end with the same head phase: the encoder frozen, each
  domain head trained on its private data (FedAvg: the recipe's head round). Plain FedAvg (no server
  step, no head round) and the Dirichlet split (the chosen server lr, no head round) are reported
  next to them.
* **mutual transfer (FedMKT)**: each domain's client holds a small student (large v0 pruned, then
  trained on that client's private data); only logits on the public texts travel. The clients' mean
  test accuracy before and after, next to the same clients trained as long on their own data only.
* **attacks**: 20% malicious clients on the Dirichlet split, for FedAvg and each robust rule, each
  against the same rule's clean run; garbage logits against FedMKT's mean and robust aggregation.
* **scale**: 100 simulated clients (LoRA sharing), seconds per round and peak memory (the summed
  resident memory of this process and the simulation's processes).

Finished runs are kept in the work directory (``--work``) and skipped on a rerun.
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

from rich.console import Console
from rich.table import Table

from fanbu.bench.work import WorkDir
from fanbu.data.builtin import default_benchmark
from fanbu.data.slices import split_pairs
from fanbu.derive.presets import CLIENT_PRUNE
from fanbu.federated.data import client_data, server_data, slots_of
from fanbu.federated.fedmkt import client_distil
from fanbu.federated.recipe import FederatedRecipe
from fanbu.federated.result import FederatedResult
from fanbu.federated.run import federate
from fanbu.io import atomic_write_json
from fanbu.models.encoder import EncoderHandle
from fanbu.train.classify import evaluate_heads, train_heads
from fanbu.train.config import TrainConfig
from fanbu.train.large import train_large_v0

LARGE = "package:all-MiniLM-L6-v2"
FRACTION = 0.2
ATTACKS = ["label_flip", "sign_flip", "scaled_replacement"]  # on shared parameters (FedAvg family)
RULES = ["fedavg", "trimmed_mean", "median", "krum", "multikrum", "bulyan"]
MKT_RULES = ["fedavg", "median"]  # aggregation of the clients' logits under garbage_logits
TARGET_RATIO, TARGET_ATTACK_POINTS = 0.97, 5.0
LR = 5e-5
# Each side gets three step sizes, chosen on the validation slices: the centralised run's learning
# rate, and FedAvg's server learning rate on the aggregate (FedAvgM without momentum), which undoes the
# dilution of each client's update by the number of clients. The same local learning rate LR throughout.
CENTRAL_LRS = [5e-5, 1e-4, 1.5e-4]
SERVER_LRS = [1.0, 2.0]
# Both sides end with the same head phase: the encoder frozen, each domain head trained on its private
# data (FedAvg: the recipe's head_round, one more round in which clients train only their heads).
HEAD: dict[str, Any] = {"epochs": 3, "batch_size": 16, "lr": 1e-3, "restore_best": False, "progress": False}

Labeled = tuple[list[str], list[int]]


def caps(quick: bool) -> dict[str, Any]:
    """Data and run sizes (quick: three domains and capped slices)."""
    if quick:
        return {
            "domains": ["comp", "sci", "politics"],
            "public": 200,
            "private": 200,
            "validation": 100,
            "test": 500,
            "max_length": 128,
            "rounds": 2,
            "v0_epochs": 2,
            "clients_per_domain": 5,
            "alpha": 0.5,
            # quick: FedAvg and the coordinate-wise rules; Krum, Multi-Krum and Bulyan in the full run
            "grid": {"private": 150, "validation": 50, "rounds": 1, "rules": ["fedavg", "trimmed_mean", "median"]},
            "scale": {"domains": ["comp", "rec", "sci", "politics", "religion"], "per_domain": 20,
                      "private": 200, "validation": 20, "public": 50, "rounds": 1},
        }
    return {
        "domains": None,
        "public": 250,
        "private": 600,
        "validation": 200,
        "test": None,
        "max_length": 128,
        "rounds": 3,
        "v0_epochs": 3,
        "clients_per_domain": 5,
        "alpha": 0.5,
        "grid": {"private": 300, "validation": 100, "rounds": 2, "rules": RULES},
        "scale": {"domains": None, "per_domain": 20, "private": 400, "validation": 40, "public": 100,
                  "rounds": 3},
    }


class Bench:
    """One run of the bench: its sizes, work directory (cache of finished parts) and console."""

    def __init__(self, quick: bool, work: Path, console: Console) -> None:
        self.quick = quick
        self.caps = caps(quick)
        self.work = work
        self.store = WorkDir(work, console)
        self.console = console
        self.data = default_benchmark(seed=0, public_fraction=0.1)
        names = [d.name for d in self.data.domains]
        self.domains = [n for n in names if self.caps["domains"] is None or n in self.caps["domains"]]
        self.tests = split_pairs(self.data, "test", self.domains, self.caps["test"], 0)

    # ------------------------------------------------------------------ caching
    def cached(self, name: str, make: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """The result of part ``name``: read from the work directory, or made now and written there."""
        result = self.store.result(name, make)
        shutil.rmtree(self.work / "runs", ignore_errors=True)  # the part's run directories: its models are read
        return result

    def run_dir(self, name: str) -> Path:
        """A fresh directory for one federated run (removed once its part is recorded)."""
        root = self.work / "runs"
        root.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=root))

    def model(self, name: str, make: Callable[[], EncoderHandle]) -> EncoderHandle:
        """A model kept in the work directory: loaded, or made now and saved there."""
        return self.store.model(name, make, self.caps["max_length"])

    # ------------------------------------------------------------------ models
    def large_v0(self) -> EncoderHandle:
        """MiniLM trained on the public slices of the bench's domains."""

        def make() -> EncoderHandle:
            self.console.print(f"[bold]large v0[/]: {LARGE} on the public slices of {', '.join(self.domains)}")
            large = EncoderHandle.from_source(LARGE, max_length=self.caps["max_length"])
            public = split_pairs(self.data, "public", self.domains, self.caps["public"], 0)
            validation = split_pairs(self.data, "validation", self.domains, self.caps["validation"], 0)
            train = TrainConfig(epochs=self.caps["v0_epochs"], batch_size=16, lr=1e-4, warmup_ratio=0.06)
            train_large_v0(large, self.data, public, train, validation)
            return large

        return self.model("large-v0", make)

    def recipe(self, **overrides: Any) -> FederatedRecipe:
        """The bench's federated recipe with ``overrides`` (nested dicts) applied."""
        c = self.caps
        raw: dict[str, Any] = {
            "champion": "large",
            "max_length": c["max_length"],
            "algorithm": "fedavg",
            "rounds": c["rounds"],
            "local": {"epochs": 1, "batch_size": 16, "lr": LR, "restore_best": False, "progress": False},
            "data": {
                "source": "default",
                "domains": self.domains,
                "max_public": c["public"],
                "max_private": c["private"],
                "max_validation": c["validation"],
            },
            "simulation": {"num_cpus": 2, "client_cpus": 1.0},
        }
        for key, value in overrides.items():
            if isinstance(value, dict) and isinstance(raw.get(key), dict):
                raw[key] = {**raw[key], **value}
            else:
                raw[key] = value
        return FederatedRecipe.model_validate(raw)

    def score(self, handle: EncoderHandle, domains: list[str] | None = None) -> dict[str, Any]:
        """Test accuracy per domain and its mean."""
        names = domains or self.domains
        results = evaluate_heads(handle, {n: self.tests[n] for n in names})
        per = {n: float(results[n]["accuracy"]) for n in names}
        return {"acc": sum(per.values()) / len(per), "domains": per}

    def federated(
        self, name: str, recipe: FederatedRecipe, clients: dict[str, EncoderHandle] | None = None
    ) -> tuple[FederatedResult, dict[str, Any]]:
        """Run ``recipe`` under Flower's simulation runtime from large v0; the result and its scores."""
        result = federate(recipe, self.large_v0(), self.run_dir(name), client_models=clients)
        scores = self.score(result.large)
        scores.update(
            {
                "seconds": result.seconds,
                "seconds_per_round": result.seconds_per_round(),
                "rounds": [{k: v for k, v in r.items() if k != "knowledge"} for r in result.rounds],
                "clients": len(slots_of(recipe)),
            }
        )
        return result, scores

    # ------------------------------------------------------------------ parts
    def private(self, recipe: FederatedRecipe) -> dict[str, Labeled]:
        """Every domain's private data as the run's clients hold it (the union of their shards)."""
        pooled: dict[str, Labeled] = {n: ([], []) for n in self.domains}
        for slot in slots_of(recipe):
            shard = client_data(recipe, slot)
            pooled[slot.domain][0].extend(shard.train[0])
            pooled[slot.domain][1].extend(shard.train[1])
        return pooled

    def central_run(self, lr: float) -> dict[str, Any]:
        """Large v0 fine-tuned on the pooled private data of every client, ``rounds`` epochs at ``lr``,
        then the head phase (:data:`HEAD`) on the same data."""
        recipe = self.recipe()

        def validation_acc(handle: EncoderHandle) -> float:
            scores = evaluate_heads(handle, server_data(recipe).validation)
            return sum(r["accuracy"] for r in scores.values()) / len(scores)

        def make() -> dict[str, Any]:
            handle = copy.deepcopy(self.large_v0())
            pooled = self.private(recipe)
            train = TrainConfig(
                epochs=recipe.rounds, batch_size=16, lr=lr, restore_best=False, progress=False, seed=recipe.seed
            )
            train_heads(handle, pooled, train, description=f"central lr {lr:g}")
            handle.model.eval()
            joint = {**self.score(handle), "val_mean_acc": validation_acc(handle)}
            for parameter in handle.model.encoder.parameters():
                parameter.requires_grad_(False)
            train_heads(handle, pooled, TrainConfig(**HEAD, seed=recipe.seed), description="central heads")
            handle.model.eval()
            out = {**self.score(handle), "val_mean_acc": validation_acc(handle), "before_head_phase": joint}
            out.update({"examples": sum(len(t) for t, _ in pooled.values()), "epochs": recipe.rounds, "lr": lr})
            return out

        return self.cached(f"central-heads-lr{lr:g}", make)

    def central(self) -> dict[str, Any]:
        """The centralised run whose learning rate scores best on validation; every run in ``runs``."""
        runs = [self.central_run(lr) for lr in CENTRAL_LRS]
        return {**max(runs, key=lambda r: r["val_mean_acc"]), "runs": runs}

    def fedavg_run(self, server_lr: float) -> dict[str, Any]:
        """FedAvg with one client per domain, the aggregate applied with ``server_lr``, then the head round."""

        def make() -> dict[str, Any]:
            recipe = self.recipe(server={"lr": server_lr}, head_round=HEAD)
            out = self.federated("per-domain", recipe)[1]
            out.update({"server_lr": server_lr, "val_mean_acc": out["rounds"][-1]["val.mean_acc"]})
            return out

        return self.cached(f"fedavg-heads-slr{server_lr:g}", make)

    def fedavg_runs(self) -> dict[str, dict[str, Any]]:
        """FedAvg with one client per domain (server lr chosen on validation), the chosen server lr on the
        Dirichlet split of the same data, and plain FedAvg (server lr 1, no head round) for reference."""
        runs = [self.fedavg_run(lr) for lr in SERVER_LRS]
        best = max(runs, key=lambda r: r["val_mean_acc"])
        lr = best["server_lr"]

        def dirichlet() -> dict[str, Any]:  # no head round: the split's run is the data-heterogeneity check
            recipe = self.recipe(partition=self.dirichlet(), server={"lr": lr})
            return {**self.federated("dirichlet", recipe)[1], "server_lr": lr, "head_round": False}

        def plain() -> dict[str, Any]:
            return self.federated("plain", self.recipe())[1]

        split = self.cached(f"fedavg-dirichlet-slr{lr:g}", dirichlet)
        return {"per_domain": {**best, "runs": runs}, "plain": self.cached("fedavg-per-domain", plain), "dirichlet": split}

    def dirichlet(self) -> dict[str, Any]:
        """The partition of the non-IID runs."""
        return {"clients_per_domain": self.caps["clients_per_domain"], "alpha": self.caps["alpha"]}

    def grid_recipe(self, **overrides: Any) -> FederatedRecipe:
        """A run of the attack grid: the Dirichlet split, the grid's data caps and rounds, no saved clients."""
        g = self.caps["grid"]
        return self.recipe(
            rounds=g["rounds"],
            data={"max_private": g["private"], "max_validation": g["validation"]},
            partition=self.dirichlet(),
            save_clients=False,
            **overrides,
        )

    def attack_run(self, attack: str, rule: str) -> dict[str, Any]:
        """FedAvg-family grid run with ``attack`` at 20% (``none``: clean) aggregated by ``rule``."""
        fraction = FRACTION if attack != "none" else 0.0

        def make() -> dict[str, Any]:
            recipe = self.grid_recipe(
                attack={"kind": attack, "fraction": fraction},
                robust={"rule": rule, "num_malicious": self.attackers()},
            )
            return self.federated(f"{attack}-{rule}", recipe)[1]

        return self.cached(f"grid-{attack}-{rule}", make)

    def attackers(self) -> int:
        """Malicious clients at 20% of the Dirichlet split (the f every robust rule is asked to tolerate)."""
        from fanbu.federated.attacks import num_malicious

        return num_malicious(len(self.domains) * self.caps["clients_per_domain"], FRACTION)

    def students(self) -> dict[str, EncoderHandle]:
        """Each domain's small client model: large v0 pruned, then trained on its client's private data."""
        from fanbu.derive.prune import Calibration, PruneConfig, prune_encoder

        recipe = self.recipe(algorithm="fedmkt")
        out = {}
        for slot in slots_of(recipe):
            data = client_data(recipe, slot)

            def make(domain: str = slot.domain, data: Any = data) -> EncoderHandle:
                calibration = Calibration(texts=data.train[0][:256], labels=data.train[1][:256], head=domain)
                student = prune_encoder(self.large_v0(), PruneConfig(**CLIENT_PRUNE), calibration)
                train = TrainConfig(epochs=4, batch_size=16, lr=5e-4, warmup_ratio=0.06)
                train_heads(student, {domain: data.train}, train, {domain: data.validation},
                            description=f"student {domain}")
                return student

            out[slot.domain] = self.model(f"student-{slot.domain}", make)
        return out

    def mkt(self) -> dict[str, Any]:
        """FedMKT, one client per domain: the clients' test accuracy before, after, and trained alone."""

        def make() -> dict[str, Any]:
            students = self.students()
            recipe = self.recipe(algorithm="fedmkt")
            result, scores = self.federated("fedmkt", recipe, students)
            before = {d: self.score(h, [d])["acc"] for d, h in students.items()}
            after, local = {}, {}
            for slot in slots_of(recipe):
                after[slot.domain] = self.score(result.clients[slot.id], [slot.domain])["acc"]
                alone = copy.deepcopy(students[slot.domain])
                data = client_data(recipe, slot)
                for rnd in range(1, recipe.rounds + 2):  # as many client rounds as FedMKT ran, no knowledge
                    train = recipe.mkt.client_train.model_copy(update={"seed": recipe.seed + rnd})
                    client_distil(alone, slot.domain, data.train, data.public[0], None, recipe.mkt, train)
                local[slot.domain] = self.score(alone, [slot.domain])["acc"]

            def mean(values: dict[str, float]) -> float:
                return sum(values.values()) / len(values)

            return {
                "large": scores,
                "clients_before": mean(before),
                "clients_after": mean(after),
                "clients_local_only": mean(local),
                "per_domain": {d: {"before": before[d], "after": after[d], "local_only": local[d]} for d in before},
            }

        return self.cached("fedmkt", make)

    def mkt_attack(self, attack: str, rule: str) -> dict[str, Any]:
        """FedMKT on the Dirichlet split with ``attack`` at 20% (``none``: clean), logits aggregated by ``rule``."""
        fraction = FRACTION if attack != "none" else 0.0

        def make() -> dict[str, Any]:
            recipe = self.grid_recipe(
                algorithm="fedmkt",
                attack={"kind": attack, "fraction": fraction},
                robust={"rule": rule, "num_malicious": 1 if rule != "fedavg" else None},
            )
            return self.federated(f"mkt-{attack}-{rule}", recipe, self.students())[1]

        return self.cached(f"grid-mkt-{attack}-{rule}", make)

    def scale(self) -> dict[str, Any]:
        """100 simulated clients with LoRA sharing: seconds per round and peak memory."""
        s = self.caps["scale"]

        def make() -> dict[str, Any]:
            names = [d.name for d in self.data.domains]
            domains = [n for n in names if s["domains"] is None or n in s["domains"]]
            per_domain = max(1, 100 // len(domains))
            large = EncoderHandle.from_source(LARGE, max_length=self.caps["max_length"])
            for name in domains:
                large.add_head(name, self.data.domain(name).label_names)
            recipe = self.recipe(
                rounds=s["rounds"],
                share={"mode": "lora"},
                data={"domains": domains, "max_private": s["private"], "max_validation": s["validation"],
                      "max_public": s["public"]},
                partition={"clients_per_domain": per_domain, "alpha": self.caps["alpha"]},
                save_clients=False,
            )
            with PeakMemory() as peak:
                result = federate(recipe, large, self.run_dir("scale"))
            return {
                "clients": len(slots_of(recipe)),
                "rounds": recipe.rounds,
                "seconds_per_round": result.seconds_per_round(),
                "peak_mb": peak.mb,
                "share": "lora",
                "val_mean_acc": result.rounds[-1].get("val.mean_acc") if result.rounds else None,
            }

        return self.cached("scale", make)


class PeakMemory:
    """The largest summed resident memory of this process and its descendants, sampled every 0.2 s."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def measure(self) -> None:
        """Take one sample now."""
        import psutil

        me = psutil.Process(os.getpid())
        total = 0
        for proc in [me, *me.children(recursive=True)]:
            try:
                total += proc.memory_info().rss
            except psutil.Error:  # a process that ended between the listing and the reading
                continue
        self.mb = max(self.mb, total / 2**20)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.measure()
            self._stop.wait(self.interval)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.measure()


def run_bench(quick: bool, out: Path, console: Console, work: Path | None = None) -> dict[str, Any]:
    """Every part of the bench (cached in ``work``), the JSON written to ``out``, the table printed."""
    started = time.perf_counter()
    work = work or Path(tempfile.mkdtemp(prefix="fanbu-bench-federated-"))
    bench = Bench(quick, work, console)
    v0 = bench.cached("large-v0", lambda: bench.score(bench.large_v0()))
    attacks = []
    for rule in bench.caps["grid"]["rules"]:
        clean = bench.attack_run("none", rule)
        for attack in ATTACKS:
            run = bench.attack_run(attack, rule)
            attacks.append(
                {"attack": attack, "rule": rule, "fraction": FRACTION, "acc": run["acc"], "clean_acc": clean["acc"]}
            )
    for rule in MKT_RULES:
        clean = bench.mkt_attack("none", rule)
        run = bench.mkt_attack("garbage_logits", rule)
        attacks.append(
            {"attack": "garbage_logits", "rule": f"fedmkt:{rule}", "fraction": FRACTION, "acc": run["acc"],
             "clean_acc": clean["acc"]}
        )
    scale = bench.scale()
    central = bench.central()
    fed = bench.fedavg_runs()
    mkt = bench.mkt()
    report = summarise(bench, quick, out, v0, central, fed, mkt, attacks, scale, time.perf_counter() - started)
    atomic_write_json(out, report)
    print_table(report, console)
    return report


def summarise(
    bench: Bench,
    quick: bool,
    out: Path,
    v0: dict[str, Any],
    central: dict[str, Any],
    fed: dict[str, dict[str, Any]],
    mkt: dict[str, Any],
    attacks: list[dict[str, Any]],
    scale: dict[str, Any],
    seconds: float,
) -> dict[str, Any]:
    """The JSON report and whether each target holds."""
    held: dict[str, bool] = {}
    for attack in sorted({a["attack"] for a in attacks}):
        rows = [a for a in attacks if a["attack"] == attack and a["rule"] not in ("fedavg", "fedmkt:fedavg")]
        held[attack] = any(a["clean_acc"] - a["acc"] <= TARGET_ATTACK_POINTS / 100 for a in rows)
    fed_acc = fed["per_domain"]["acc"]
    central_acc = central["acc"]
    return {
        "bench": "federated",
        "quick": quick,
        "command": f"fanbu bench federated{' --quick' if quick else ''} --out {out}",
        "domains": bench.domains,
        "v0_acc": v0["acc"],
        "central_acc": central["acc"],
        "fed_acc": fed_acc,
        "fed_dirichlet_acc": fed["dirichlet"]["acc"],
        "fed_plain_acc": fed["plain"]["acc"],
        "server_lr": fed["per_domain"]["server_lr"],
        "central_lr": central["lr"],
        "clients_before": mkt["clients_before"],
        "clients_after": mkt["clients_after"],
        "clients_local_only": mkt["clients_local_only"],
        "attacks": attacks,
        "scale": {k: scale[k] for k in ("clients", "seconds_per_round", "peak_mb", "rounds", "share")},
        "details": {
            "large_v0": v0,
            "central": central,
            "fedavg": fed,
            "fedmkt": mkt,
            "partition": bench.dirichlet(),
            "attackers": bench.attackers(),
            "caps": bench.caps,
            "central_lrs": CENTRAL_LRS,
            "server_lrs": SERVER_LRS,
            "head_phase": HEAD,
        },
        "target": {
            "fed_ratio": fed_acc / central_acc,
            "fed_ratio_met": fed_acc >= TARGET_RATIO * central_acc,
            "dirichlet_ratio": fed["dirichlet"]["acc"] / central_acc,
            "plain_ratio": fed["plain"]["acc"] / central_acc,
            "clients_improve": mkt["clients_after"] > mkt["clients_before"],
            "attacks_held": held,
            "attacks_met": all(held.values()),
            "scale_completed": scale["clients"] >= 100,
        },
        "seconds": seconds,
    }


def print_table(report: dict[str, Any], console: Console) -> None:
    """The headline numbers, then the attack grid."""
    t = report["target"]
    head = Table(title=f"fanbu bench federated{' --quick' if report['quick'] else ''} ({report['seconds']:.0f} s)")
    for column in ("measure", "value", "target"):
        head.add_column(column)
    head.add_row("large v0 acc", f"{report['v0_acc']:.3f}", "")
    head.add_row(f"central acc (lr {report['central_lr']:g}, + head phase)", f"{report['central_acc']:.3f}", "")
    head.add_row(f"fed acc (FedAvg + head round, a client per domain, server lr {report['server_lr']:g})",
                 f"{report['fed_acc']:.3f}",
                 f"ratio {t['fed_ratio']:.3f} >= {TARGET_RATIO} {'met' if t['fed_ratio_met'] else 'SHORT'}")
    head.add_row("fed acc (plain FedAvg, no head round, a client per domain)", f"{report['fed_plain_acc']:.3f}",
                 f"ratio {t['plain_ratio']:.3f}")
    head.add_row(f"fed acc (FedAvg, Dirichlet split, server lr {report['server_lr']:g}, no head round)",
                 f"{report['fed_dirichlet_acc']:.3f}", f"ratio {t['dirichlet_ratio']:.3f}")
    head.add_row("clients before -> after (FedMKT)",
                 f"{report['clients_before']:.3f} -> {report['clients_after']:.3f}",
                 "met" if t["clients_improve"] else "SHORT")
    head.add_row("clients trained alone as long", f"{report['clients_local_only']:.3f}", "")
    s = report["scale"]
    head.add_row(f"scale: {s['clients']} clients ({s['share']})",
                 f"{s['seconds_per_round']:.0f} s/round, peak {s['peak_mb']:.0f} MB",
                 "completed" if t["scale_completed"] else "SHORT")
    console.print(head)
    grid = Table(title=f"attacks at {FRACTION:.0%} malicious clients (acc / clean acc of the same rule)")
    rules = list(dict.fromkeys(a["rule"] for a in report["attacks"]))
    grid.add_column("attack")
    for rule in rules:
        grid.add_column(rule, justify="right")
    grid.add_column("held (robust rule within 5 pts)")
    for attack in dict.fromkeys(a["attack"] for a in report["attacks"]):
        cells = {a["rule"]: a for a in report["attacks"] if a["attack"] == attack}
        grid.add_row(
            attack,
            *(f"{cells[r]['acc']:.3f} / {cells[r]['clean_acc']:.3f}" if r in cells else "-" for r in rules),
            "yes" if t["attacks_held"][attack] else "NO",
        )
    console.print(grid)
