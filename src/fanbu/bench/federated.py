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
  test accuracy before and after, and the local-only control: the same clients trained alone with the
  same steps. The target is beating that control (``clients_beat_local``), not only their start.
* **attacks**: 20% malicious clients on the Dirichlet split over several rounds, every rule of the
  grid (FedAvg, trimmed mean, median, Krum, Multi-Krum, Bulyan) against every attack, each against the
  same rule's clean run; garbage logits against FedMKT's mean and median. The attacks' strengths are
  settings (``caps()["attacks"]``). An attack that costs undefended FedAvg under 5 points is reported
  as "no effect": it tests nothing, so no rule can be said to hold it. The target names ONE default
  rule (:data:`DEFAULT_RULE`), which must hold every attack within 5 points.
* **scale**: 100 simulated clients (LoRA sharing), seconds per round and peak memory (the summed
  resident memory of this process and the simulation's processes); seed 0 only.

``--seeds N`` runs the bench for seeds 0..N-1 (training, the Dirichlet split and the choice of the
attackers; the data slices and the test split stay those of seed 0) and reports the mean and a 90%
t-interval over seeds of each headline figure (:mod:`fanbu.bench.stats`); each target is judged on the
mean and reported as ``target.{name: {value, bar, met, interval, rule}}``.

Finished parts and models are kept in the work directory (``--work``) with a fingerprint of their
settings and of fanbu's code: a rerun reads a part back only when both are unchanged.
"""

from __future__ import annotations

import copy
import functools
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

from fanbu.bench.stats import INTERVAL_LEVEL, INTERVAL_METHOD, mean_interval
from fanbu.bench.work import WorkDir, fingerprint, source_fingerprint
from fanbu.data.builtin import default_benchmark
from fanbu.data.slices import split_pairs
from fanbu.derive.presets import CLIENT_PRUNE
from fanbu.federated.data import client_data, server_data, slots_of
from fanbu.federated.fedmkt import client_distil
from fanbu.federated.recipe import FederatedRecipe
from fanbu.federated.result import FederatedResult
from fanbu.federated.robust import min_clients
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
# The robust rule a deployment is told to switch on, and the one the target judges. RobustConfig's own
# default is fedavg (no defence), so the bench names its own: the coordinate-wise median needs only
# 2f + 1 clients and no setting of its own, and its breakdown point does not depend on the attack's scale.
DEFAULT_RULE = "median"
BASELINE_RULE = "fedavg"  # undefended: an attack that does not cost it 5 points tests nothing
TARGET_RATIO, TARGET_ATTACK_POINTS = 0.97, 5.0
NO_EFFECT, HELD, BROKEN = "no effect", "held", "broken"
# Attack strengths, on top of 20% attackers over the grid's rounds (settings of the recipe's ``attack``):
# * sign_flip: the flipped update boosted 10x. With 20% attackers FedAvg's step is
#   (0.8 - 0.2 * scale) times the honest one, reversed for any scale > 4; 10 makes it -1.2x every round.
# * scaled_replacement: scale null = the number of clients (Bagdasaryan et al.'s model replacement).
# * label_flip: every label of a malicious client changed, and its update boosted 10x (explicit
#   boosting, Bhagoji et al. 2019): unboosted, 3 flippers among 15 clients were averaged away (0.754 vs
#   clean 0.753 in the earlier quick run).
# * garbage_logits: random logits of standard deviation 100.
ATTACK_STRENGTHS: dict[str, dict[str, Any]] = {
    "label_flip": {"scale": 10.0},
    "sign_flip": {"scale": 10.0},
    "scaled_replacement": {"scale": None},
    "garbage_logits": {"logit_magnitude": 100.0},
}
LR = 5e-5
# Each side gets three step sizes, chosen on the validation slices: the centralised run's learning
# rate, and FedAvg's server learning rate on the aggregate (FedAvgM without momentum), which undoes the
# dilution of each client's update by the number of clients. The same local learning rate LR throughout.
CENTRAL_LRS = [5e-5, 1e-4, 1.5e-4]
SERVER_LRS = [1.0, 2.0]
# Both sides end with the same head phase: the encoder frozen, each domain head trained on its private
# data (FedAvg: the recipe's head_round, one more round in which clients train only their heads).
HEAD: dict[str, Any] = {"epochs": 3, "batch_size": 16, "lr": 1e-3, "restore_best": False, "progress": False}
# The code a kept part depends on: a change of it makes the part again. Large v0 and the students are
# data, models, training and the metrics (and, for the students, pruning); a result is any of fanbu.
MODEL_CODE = ("fanbu.data", "fanbu.evaluate", "fanbu.models", "fanbu.train")
STUDENT_CODE = (*MODEL_CODE, "fanbu.derive")
RESULT_CODE = ("fanbu",)

Labeled = tuple[list[str], list[int]]


def caps(quick: bool) -> dict[str, Any]:
    """Data and run sizes (quick: three domains and capped slices), and the attacks' strengths."""
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
            "clients_per_domain": 5,  # 15 clients: 3 attackers at 20%, and Bulyan's 4f + 3 = 15
            "alpha": 0.5,
            "grid": {"private": 150, "validation": 50, "rounds": 3, "rules": RULES},
            "attacks": copy.deepcopy(ATTACK_STRENGTHS),
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
        "grid": {"private": 300, "validation": 100, "rounds": 3, "rules": RULES},
        "attacks": copy.deepcopy(ATTACK_STRENGTHS),
        "scale": {"domains": None, "per_domain": 20, "private": 400, "validation": 40, "public": 100,
                  "rounds": 3},
    }


class Bench:
    """One seed's run of the bench: its sizes, work directory (cache of finished parts) and console."""

    def __init__(self, quick: bool, work: Path, console: Console, seed: int = 0) -> None:
        self.quick = quick
        self.seed = seed
        self.caps = caps(quick)
        self.work = work
        self.store = WorkDir(work, console)
        self.console = console
        self.data = default_benchmark(seed=0, public_fraction=0.1)
        names = [d.name for d in self.data.domains]
        self.domains = [n for n in names if self.caps["domains"] is None or n in self.caps["domains"]]
        self.tests = split_pairs(self.data, "test", self.domains, self.caps["test"], 0)

    # ------------------------------------------------------------------ caching
    def named(self, name: str) -> str:
        """A part's name in the work directory (seed 0: the name itself; else ``name-seedN``)."""
        return name if self.seed == 0 else f"{name}-seed{self.seed}"

    @functools.cached_property
    def code(self) -> str:
        """The fingerprint of the code every kept result depends on (:data:`RESULT_CODE`)."""
        return source_fingerprint(*RESULT_CODE)

    def part_settings(self, name: str, recipe: FederatedRecipe | None = None) -> dict[str, Any]:
        """What part ``name`` is made with: the bench's sizes and constants, the seed, large v0's
        settings, fanbu's code and the part's recipe; a kept part made with others is made again."""
        out: dict[str, Any] = {
            "part": name,
            "quick": self.quick,
            "seed": self.seed,
            "caps": self.caps,
            "domains": self.domains,
            "constants": {"large": LARGE, "fraction": FRACTION, "lr": LR, "central_lrs": CENTRAL_LRS,
                          "server_lrs": SERVER_LRS, "head": HEAD},
            "large_v0": fingerprint(self.v0_settings()),
            "code": self.code,
        }
        if recipe is not None:
            out["recipe"] = recipe.model_dump(mode="json")
        return out

    def cached(
        self, name: str, make: Callable[[], dict[str, Any]], recipe: FederatedRecipe | None = None
    ) -> dict[str, Any]:
        """The result of part ``name``: read from the work directory when made with the same settings
        and code (:meth:`part_settings`), or made now and written there."""
        result = self.store.result(self.named(name), make, self.part_settings(name, recipe))
        shutil.rmtree(self.work / "runs", ignore_errors=True)  # the part's run directories: its models are read
        return result

    def run_dir(self, name: str) -> Path:
        """A fresh directory for one federated run (removed once its part is recorded)."""
        root = self.work / "runs"
        root.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=root))

    def model(self, name: str, make: Callable[[], EncoderHandle], settings: dict[str, Any]) -> EncoderHandle:
        """A model kept in the work directory: loaded when made with ``settings``, or made now and saved."""
        return self.store.model(self.named(name), make, self.caps["max_length"], settings)

    # ------------------------------------------------------------------ models
    def v0_train(self) -> TrainConfig:
        """Large v0's training on the public slices."""
        return TrainConfig(epochs=self.caps["v0_epochs"], batch_size=16, lr=1e-4, warmup_ratio=0.06, seed=self.seed)

    def v0_settings(self) -> dict[str, Any]:
        """What large v0 is made with (its fingerprint is part of every other part's settings)."""
        c = self.caps
        return {
            "large": LARGE,
            "seed": self.seed,
            "domains": self.domains,
            "caps": {k: c[k] for k in ("public", "validation", "max_length", "v0_epochs")},
            "train": self.v0_train().model_dump(mode="json"),
            "code": source_fingerprint(*MODEL_CODE),
        }

    def large_v0(self) -> EncoderHandle:
        """MiniLM trained on the public slices of the bench's domains."""

        def make() -> EncoderHandle:
            self.console.print(f"[bold]large v0[/]: {LARGE} on the public slices of {', '.join(self.domains)}")
            large = EncoderHandle.from_source(LARGE, max_length=self.caps["max_length"])
            public = split_pairs(self.data, "public", self.domains, self.caps["public"], 0)
            validation = split_pairs(self.data, "validation", self.domains, self.caps["validation"], 0)
            train_large_v0(large, self.data, public, self.v0_train(), validation)
            return large

        return self.model("large-v0", make, self.v0_settings())

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
            "seed": self.seed,
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

        return self.cached(f"central-heads-lr{lr:g}", make, recipe)

    def central(self) -> dict[str, Any]:
        """The centralised run whose learning rate scores best on validation; every run in ``runs``."""
        runs = [self.central_run(lr) for lr in CENTRAL_LRS]
        return {**max(runs, key=lambda r: r["val_mean_acc"]), "runs": runs}

    def fedavg_run(self, server_lr: float) -> dict[str, Any]:
        """FedAvg with one client per domain, the aggregate applied with ``server_lr``, then the head round."""

        recipe = self.recipe(server={"lr": server_lr}, head_round=HEAD)

        def make() -> dict[str, Any]:
            out = self.federated("per-domain", recipe)[1]
            out.update({"server_lr": server_lr, "val_mean_acc": out["rounds"][-1]["val.mean_acc"]})
            return out

        return self.cached(f"fedavg-heads-slr{server_lr:g}", make, recipe)

    def fedavg_runs(self) -> dict[str, dict[str, Any]]:
        """FedAvg with one client per domain (server lr chosen on validation), the chosen server lr on the
        Dirichlet split of the same data, and plain FedAvg (server lr 1, no head round) for reference."""
        runs = [self.fedavg_run(lr) for lr in SERVER_LRS]
        best = max(runs, key=lambda r: r["val_mean_acc"])
        lr = best["server_lr"]

        split_recipe = self.recipe(partition=self.dirichlet(), server={"lr": lr})
        plain_recipe = self.recipe()

        def dirichlet() -> dict[str, Any]:  # no head round: the split's run is the data-heterogeneity check
            return {**self.federated("dirichlet", split_recipe)[1], "server_lr": lr, "head_round": False}

        def plain() -> dict[str, Any]:
            return self.federated("plain", plain_recipe)[1]

        split = self.cached(f"fedavg-dirichlet-slr{lr:g}", dirichlet, split_recipe)
        kept = self.cached("fedavg-per-domain", plain, plain_recipe)
        return {"per_domain": {**best, "runs": runs}, "plain": kept, "dirichlet": split}

    def dirichlet(self) -> dict[str, Any]:
        """The partition of the non-IID runs."""
        return {"clients_per_domain": self.caps["clients_per_domain"], "alpha": self.caps["alpha"], "seed": self.seed}

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

    def attack_settings(self, attack: str) -> dict[str, Any]:
        """The recipe's ``attack`` section for ``attack`` at 20% with its strength (``none``: clean)."""
        if attack == "none":
            return {"kind": "none", "fraction": 0.0, "seed": self.seed}
        return {"kind": attack, "fraction": FRACTION, "seed": self.seed, **self.caps["attacks"].get(attack, {})}

    def attack_run(self, attack: str, rule: str) -> dict[str, Any]:
        """FedAvg-family grid run with ``attack`` at 20% (``none``: clean) aggregated by ``rule``."""
        recipe = self.grid_recipe(
            attack=self.attack_settings(attack),
            robust={"rule": rule, "num_malicious": self.attackers()},
        )

        def make() -> dict[str, Any]:
            return self.federated(f"{attack}-{rule}", recipe)[1]

        return self.cached(f"grid-{attack}-{rule}", make, recipe)

    def grid(self) -> list[dict[str, Any]]:
        """Every rule of the grid against every attack (each next to the same rule's clean run), then
        garbage logits against FedMKT's logit aggregation."""
        rows = []
        for rule in self.caps["grid"]["rules"]:
            clean = self.attack_run("none", rule)
            for attack in ATTACKS:
                run = self.attack_run(attack, rule)
                rows.append({"attack": attack, "rule": rule, "fraction": FRACTION, "acc": run["acc"],
                             "clean_acc": clean["acc"]})
        for rule in MKT_RULES:
            clean = self.mkt_attack("none", rule)
            run = self.mkt_attack("garbage_logits", rule)
            rows.append({"attack": "garbage_logits", "rule": f"fedmkt:{rule}", "fraction": FRACTION,
                         "acc": run["acc"], "clean_acc": clean["acc"]})
        return rows

    def attackers(self) -> int:
        """Malicious clients at 20% of the Dirichlet split (the f every robust rule is asked to tolerate)."""
        from fanbu.federated.attacks import num_malicious

        return num_malicious(self.grid_clients(), FRACTION)

    def grid_clients(self) -> int:
        """Clients of the grid's runs: the Dirichlet split, each domain cut into ``clients_per_domain``."""
        return len(self.domains) * self.caps["clients_per_domain"]

    def check_grid(self) -> None:
        """Refuse a grid whose client count is below some rule's minimum for the attackers."""
        n, f, beta = self.grid_clients(), self.attackers(), self.recipe().robust.trim_beta
        short = {r: m for r in self.caps["grid"]["rules"] if (m := min_clients(r, f, beta)) > n}
        if short:
            raise ValueError(f"the grid's {n} clients are too few for {f} attackers under {short} (rule: minimum)")

    def students(self) -> dict[str, EncoderHandle]:
        """Each domain's small client model: large v0 pruned, then trained on its client's private data."""
        from fanbu.derive.prune import Calibration, PruneConfig, prune_encoder

        recipe = self.recipe(algorithm="fedmkt")
        train = TrainConfig(epochs=4, batch_size=16, lr=5e-4, warmup_ratio=0.06, seed=self.seed)
        settings = {
            "large_v0": fingerprint(self.v0_settings()),
            "prune": CLIENT_PRUNE,
            "train": train.model_dump(mode="json"),
            "data": recipe.data.model_dump(mode="json"),
            "partition": recipe.partition.model_dump(mode="json"),
            "code": source_fingerprint(*STUDENT_CODE),
        }
        out = {}
        for slot in slots_of(recipe):
            data = client_data(recipe, slot)

            def make(domain: str = slot.domain, data: Any = data) -> EncoderHandle:
                calibration = Calibration(texts=data.train[0][:256], labels=data.train[1][:256], head=domain)
                student = prune_encoder(self.large_v0(), PruneConfig(**CLIENT_PRUNE), calibration)
                train_heads(student, {domain: data.train}, train, {domain: data.validation},
                            description=f"student {domain}")
                return student

            out[slot.domain] = self.model(f"student-{slot.domain}", make, {**settings, "domain": slot.domain})
        return out

    def mkt(self) -> dict[str, Any]:
        """FedMKT, one client per domain: the clients' test accuracy before, after, and the local-only
        control (the same clients trained alone, as many client rounds with the same settings)."""
        recipe = self.recipe(algorithm="fedmkt")

        def make() -> dict[str, Any]:
            students = self.students()
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

        return self.cached("fedmkt", make, recipe)

    def mkt_attack(self, attack: str, rule: str) -> dict[str, Any]:
        """FedMKT on the Dirichlet split with ``attack`` at 20% (``none``: clean), logits aggregated by ``rule``."""
        recipe = self.grid_recipe(
            algorithm="fedmkt",
            attack=self.attack_settings(attack),
            robust={"rule": rule, "num_malicious": 1 if rule != "fedavg" else None},
        )

        def make() -> dict[str, Any]:
            return self.federated(f"mkt-{attack}-{rule}", recipe, self.students())[1]

        return self.cached(f"grid-mkt-{attack}-{rule}", make, recipe)

    def scale(self) -> dict[str, Any]:
        """100 simulated clients with LoRA sharing: seconds per round and peak memory."""
        s = self.caps["scale"]
        names = [d.name for d in self.data.domains]
        domains = [n for n in names if s["domains"] is None or n in s["domains"]]
        per_domain = max(1, 100 // len(domains))
        recipe = self.recipe(
            rounds=s["rounds"],
            share={"mode": "lora"},
            data={"domains": domains, "max_private": s["private"], "max_validation": s["validation"],
                  "max_public": s["public"]},
            partition={"clients_per_domain": per_domain, "alpha": self.caps["alpha"], "seed": self.seed},
            save_clients=False,
        )

        def make() -> dict[str, Any]:
            large = EncoderHandle.from_source(LARGE, max_length=self.caps["max_length"])
            for name in domains:
                large.add_head(name, self.data.domain(name).label_names)
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

        return self.cached("scale", make, recipe)


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


def run_seed(bench: Bench) -> dict[str, Any]:
    """Every per-seed part of the bench (cached in its work directory): the raw results of one seed."""
    bench.check_grid()
    v0 = bench.cached("large-v0", lambda: bench.score(bench.large_v0()))
    attacks = bench.grid()
    central = bench.central()
    fed = bench.fedavg_runs()
    mkt = bench.mkt()
    return {"seed": bench.seed, "v0": v0, "central": central, "fed": fed, "mkt": mkt, "attacks": attacks}


def run_bench(
    quick: bool, out: Path, console: Console, work: Path | None = None, seeds: int = 1
) -> dict[str, Any]:
    """Every part of the bench for seeds 0..``seeds``-1 (cached in ``work``), the JSON written to
    ``out``, the table printed. The scale part runs once (seed 0): it measures time and memory."""
    if seeds < 1:
        raise ValueError(f"seeds must be at least 1, got {seeds}")
    started = time.perf_counter()
    work = work or Path(tempfile.mkdtemp(prefix="fanbu-bench-federated-"))
    first = Bench(quick, work, console, seed=0)
    runs = [run_seed(first if seed == 0 else Bench(quick, work, console, seed=seed)) for seed in range(seeds)]
    scale = first.scale()
    report = summarise(first, quick, out, runs, scale, time.perf_counter() - started)
    atomic_write_json(out, report)
    print_table(report, console)
    return report


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
    grid = Table(title=f"attacks at {FRACTION:.0%} malicious clients: acc (drop vs the same rule's clean run), "
                 f"status; default rule: {report['default_rule']}")
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
