"""The federated bench's parts: large v0, the centralised runs, FedAvg, FedMKT, the attack grid, scale.

One :class:`Bench` is one seed's run; every part is kept in the work directory with a fingerprint of
its settings and of fanbu's code (:meth:`Bench.cached`).
"""

from __future__ import annotations

import copy
import functools
import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from fanbu.bench.federated.config import (
    ATTACKS,
    CENTRAL_LRS,
    FRACTION,
    HEAD,
    LARGE,
    LR,
    MKT_RULES,
    MODEL_CODE,
    RESULT_CODE,
    SERVER_LRS,
    STUDENT_CODE,
    Labeled,
    caps,
)
from fanbu.bench.federated.grid import federate_together
from fanbu.bench.federated.memory import PeakMemory
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
from fanbu.models.encoder import EncoderHandle
from fanbu.train.classify import evaluate_heads, train_heads
from fanbu.train.config import TrainConfig
from fanbu.train.large import train_large_v0


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

    @functools.cached_property
    def grid_tests(self) -> dict[str, Labeled]:
        """The test texts each cell of the attack grid is scored on (``caps["grid"]["test"]`` per domain)."""
        return split_pairs(self.data, "test", self.domains, self.caps["grid"]["test"], 0)

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

    def kept(self, name: str, recipe: FederatedRecipe | None = None) -> bool:
        """Whether part ``name`` is kept in the work directory, made with the settings and code of now
        (what :meth:`cached` would read back rather than make)."""
        path = self.work / "results" / f"{self.named(name).replace(':', '-')}.json"
        try:
            kept = json.loads(path.read_text(encoding="utf-8")).get("fingerprint")
        except (OSError, ValueError, AttributeError):
            return False
        return kept == fingerprint(self.part_settings(name, recipe))

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

    def score(
        self, handle: EncoderHandle, domains: list[str] | None = None, tests: dict[str, Labeled] | None = None
    ) -> dict[str, Any]:
        """Test accuracy per domain and its mean (on ``tests``; default: the bench's test texts)."""
        names = domains or self.domains
        tests = self.tests if tests is None else tests
        results = evaluate_heads(handle, {n: tests[n] for n in names})
        per = {n: float(results[n]["accuracy"]) for n in names}
        return {"acc": sum(per.values()) / len(per), "domains": per}

    def federated(
        self, name: str, recipe: FederatedRecipe, clients: dict[str, EncoderHandle] | None = None
    ) -> tuple[FederatedResult, dict[str, Any]]:
        """Run ``recipe`` under Flower's simulation runtime from large v0; the result and its scores."""
        result = federate(recipe, self.large_v0(), self.run_dir(name), client_models=clients)
        return result, self.scores(result, recipe)

    def scores(
        self, result: FederatedResult, recipe: FederatedRecipe, tests: dict[str, Labeled] | None = None
    ) -> dict[str, Any]:
        """A run's large model scored on ``tests`` (default: the bench's), its time and rounds."""
        scores = self.score(result.large, tests=tests)
        scores.update(
            {
                "seconds": result.seconds,
                "seconds_per_round": result.seconds_per_round(),
                "rounds": [{k: v for k, v in r.items() if k != "knowledge"} for r in result.rounds],
                "clients": len(slots_of(recipe)),
            }
        )
        return scores

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

    def together(
        self, label: str, recipes: dict[str, FederatedRecipe], tests: dict[str, Labeled] | None = None
    ) -> dict[str, dict[str, Any]]:
        """Parts (name -> recipe) whose clients are the same (their recipes differ only server-side), each
        kept as a part of its own; those not kept yet run together in one simulation (:mod:`.grid`), each
        scored on ``tests`` (default: the bench's test texts) with the simulation's time and messages."""
        made: dict[str, dict[str, Any]] = {}

        def make(name: str) -> dict[str, Any]:
            if name not in made:
                missing = {n: r for n, r in recipes.items() if n == name or not self.kept(n, r)}
                results, stats = federate_together(missing, self.large_v0(), self.run_dir(label))
                shared = {k: stats[k] for k in ("runs", "seconds", "sent", "replayed") if k in stats}
                made.update({n: {**self.scores(result, missing[n], tests), "simulation": shared}
                             for n, result in results.items()})
            return made[name]

        return {name: self.cached(name, functools.partial(make, name), recipe) for name, recipe in recipes.items()}

    def fedavg_run_recipe(self, server_lr: float) -> FederatedRecipe:
        """FedAvg with one client per domain, the aggregate applied with ``server_lr``, then the head round
        (the clients' models are not kept: the runs share their clients, and only the large model is scored)."""
        return self.recipe(server={"lr": server_lr}, head_round=HEAD, save_clients=False)

    def fedavg_lr_runs(self) -> list[dict[str, Any]]:
        """FedAvg with one client per domain at each server learning rate (one simulation: only the server
        reads its learning rate), each with its validation score after the head round."""
        names = {f"fedavg-heads-slr{lr:g}": lr for lr in SERVER_LRS}
        runs = self.together("per-domain", {name: self.fedavg_run_recipe(lr) for name, lr in names.items()})
        return [{**runs[name], "server_lr": lr, "val_mean_acc": runs[name]["rounds"][-1]["val.mean_acc"]}
                for name, lr in names.items()]

    def fedavg_runs(self) -> dict[str, dict[str, Any]]:
        """FedAvg with one client per domain (server lr chosen on validation), the chosen server lr on the
        Dirichlet split of the same data, and plain FedAvg (server lr 1, no head round) for reference."""
        runs = self.fedavg_lr_runs()
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
            data={"max_private": g["private"], "max_validation": g["validation"], "max_public": g["public"]},
            partition=self.dirichlet(),
            save_clients=False,
            **overrides,
        )

    def attack_settings(self, attack: str) -> dict[str, Any]:
        """The recipe's ``attack`` section for ``attack`` at 20% with its strength (``none``: clean)."""
        if attack == "none":
            return {"kind": "none", "fraction": 0.0, "seed": self.seed}
        return {"kind": attack, "fraction": FRACTION, "seed": self.seed, **self.caps["attacks"].get(attack, {})}

    def cell_recipe(self, attack: str, rule: str) -> FederatedRecipe:
        """The grid's run with ``attack`` at 20% (``none``: clean) aggregated by ``rule``."""
        return self.grid_recipe(
            attack=self.attack_settings(attack),
            robust={"rule": rule, "num_malicious": self.attackers()},
        )

    def attack_runs(self, attack: str) -> dict[str, dict[str, Any]]:
        """Every rule of the grid under ``attack`` (``none``: clean), each a part of its own
        (``grid-{attack}-{rule}``), the rules not kept yet in one simulation; scored on the grid's test texts."""
        rules = list(self.caps["grid"]["rules"])
        runs = self.together(f"grid-{attack}", {f"grid-{attack}-{rule}": self.cell_recipe(attack, rule)
                                                 for rule in rules}, self.grid_tests)
        return {rule: runs[f"grid-{attack}-{rule}"] for rule in rules}

    def grid(self) -> list[dict[str, Any]]:
        """Every rule of the grid against every attack (each next to the same rule's clean run), then
        garbage logits against FedMKT's logit aggregation."""
        clean = self.attack_runs("none")
        attacked = {attack: self.attack_runs(attack) for attack in ATTACKS}
        rows = [
            {"attack": attack, "rule": rule, "fraction": FRACTION, "acc": attacked[attack][rule]["acc"],
             "clean_acc": clean[rule]["acc"]}
            for rule in self.caps["grid"]["rules"]
            for attack in ATTACKS
        ]
        for rule in MKT_RULES:
            clean_mkt = self.mkt_attack("none", rule)
            run = self.mkt_attack("garbage_logits", rule)
            rows.append({"attack": "garbage_logits", "rule": f"fedmkt:{rule}", "fraction": FRACTION,
                         "acc": run["acc"], "clean_acc": clean_mkt["acc"]})
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
            result = federate(recipe, self.large_v0(), self.run_dir(f"mkt-{attack}-{rule}"), self.students())
            return self.scores(result, recipe, self.grid_tests)

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
