"""The federated bench's attack grid: every rule of one attack in one simulation, round 1's answers
replayed, each rule's federation the same as in a simulation of its own; the quick sizes."""

from __future__ import annotations

import copy
import io
import json
import logging
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.serverapp import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity
from rich.console import Console

from fanbu.bench import federated as bench
from fanbu.bench.federated import grid as fgrid
from fanbu.bench.federated import parts as fparts
from fanbu.data.loaders import DomainSource
from fanbu.errors import ConfigError
from fanbu.federated import run as fed_run
from fanbu.federated.client_app import client_app
from fanbu.federated.data import slots_of
from fanbu.federated.recipe import FederatedRecipe
from fanbu.federated.run import collect, save_inputs
from fanbu.federated.server_app import server_app
from fanbu.federated.settings import RunSettings
from fanbu.models.encoder import EncoderHandle
from fanbu.train.classify import train_heads
from fanbu.train.config import TrainConfig

WORDS = {
    "tech": {"software": ["software", "program", "data", "code"], "hardware": ["hardware", "disk", "chip", "power"]},
    "health": {"disease": ["disease", "patient", "fever", "pain"], "treatment": ["drug", "doctor", "dose", "cure"]},
}
FILLER = ["the", "of", "and", "to", "in", "is", "was", "for", "on", "that"]


def _rows(domain: str, n: int, seed: int) -> list[dict[str, str]]:
    rng = random.Random(f"{domain}-{seed}")
    classes = WORDS[domain]
    rows = []
    for i in range(n):
        label = list(classes)[i % len(classes)]
        words = rng.sample(classes[label], 2) + rng.sample(FILLER, 3)
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": label})
    return rows


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two toy domains in JSONL files and a tiny large v0 with a head per domain."""
    root = tmp_path_factory.mktemp("grid-data")
    files = []
    for name, classes in WORDS.items():
        paths = {}
        for split, n, seed in (("train", 48, 0), ("validation", 12, 1), ("test", 12, 2)):
            path = root / f"{name}-{split}.jsonl"
            path.write_text("".join(json.dumps(r) + "\n" for r in _rows(name, n, seed)), encoding="utf-8")
            paths[split] = str(path)
        files.append(DomainSource(name=name, label_names=list(classes), **paths).model_dump(mode="json"))
    large = EncoderHandle.tiny(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32, seed=0)
    for name, classes in WORDS.items():
        large.add_head(name, list(classes))
    with _one_thread():
        train_heads(large, {n: ([r["text"] for r in _rows(n, 8, 5)], [i % 2 for i in range(8)]) for n in WORDS},
                    TrainConfig(epochs=1, batch_size=8, lr=3e-3, restore_best=False, progress=False))
    large.model.eval()
    return {"files": files, "large": large}


def _recipe(toy: dict[str, Any], rule: str, **overrides: Any) -> FederatedRecipe:
    """Six clients (two domains, three each), one of them flipping its update, ``rule`` aggregating."""
    raw: dict[str, Any] = {
        "data": {"source": "files", "files": toy["files"], "public_fraction": 0.25, "max_validation": 12},
        "rounds": 2,
        "local": {"epochs": 1, "batch_size": 8, "lr": 3e-3, "warmup_ratio": 0.0, "restore_best": False,
                  "progress": False},
        "partition": {"clients_per_domain": 3, "alpha": 0.5, "seed": 0},
        "attack": {"kind": "sign_flip", "fraction": 0.2, "scale": 4.0, "seed": 0},
        "robust": {"rule": rule, "num_malicious": 1},
        "save_clients": False,
    }
    raw.update(overrides)
    return FederatedRecipe.model_validate(raw)


class _one_thread:
    def __enter__(self) -> None:
        self.before = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc: object) -> None:
        torch.set_num_threads(self.before)


class InProcessGrid(Grid):
    """A Grid that runs the ClientApp in this process, node by node; each node keeps its Context, and each
    message is deep-copied on delivery, as the network would. ``delivered`` counts the client's work."""

    def __init__(self, client: Any, nodes: int) -> None:
        self.client = client
        self.contexts = {
            i + 1: Context(run_id=1, node_id=i + 1, node_config={"partition-id": i, "num-partitions": nodes},
                           state=RecordDict(), run_config={})
            for i in range(nodes)
        }
        self._run = Run.create_empty(run_id=1)
        self.replies: dict[str, Message] = {}
        self.delivered = 0
        self.lock = threading.RLock()

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(self, content: Any, message_type: str, dst_node_id: int, group_id: str,
                       ttl: float | None = None) -> Message:
        return Message(content=content, dst_node_id=dst_node_id, message_type=message_type, group_id=group_id)

    def get_node_ids(self) -> list[int]:
        return list(self.contexts)

    def push_messages(self, messages: Any) -> list[str]:
        ids = []
        for message in messages:
            delivered = copy.deepcopy(message)
            self.delivered += 1
            try:
                reply = self.client(delivered, self.contexts[message.metadata.dst_node_id])
            except Exception as exc:  # noqa: BLE001 - a failing ClientApp answers with an error, as under Flower
                reply = Message(Error(code=0, reason=f"{type(exc).__name__}: {exc}"), reply_to=delivered)
            ids.append(str(len(self.replies)))
            self.replies[ids[-1]] = reply
        return ids

    def pull_messages(self, message_ids: Any) -> list[Message]:
        return [self.replies.pop(i) for i in message_ids if i in self.replies]

    def send_and_receive(self, messages: Any, *, timeout: float | None = None) -> list[Message]:
        with self.lock:  # the server's threads take turns, as Flower's runtime queues their messages
            return self.pull_messages(self.push_messages(messages))


@pytest.fixture
def identity(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The task identity Flower's runtime sets before a ServerApp creates messages."""
    for name, value in (("_task_id", 1), ("_run_id", 1), ("_node_id", SUPERLINK_NODE_ID)):
        monkeypatch.setattr(TaskIdentity, name, value)
    yield


def _server_context() -> Context:
    return Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={})


def _arrays(handle: EncoderHandle) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in handle.model.state_dict().items()}


def _alone(recipes: dict[str, FederatedRecipe], large: EncoderHandle, root: Path) -> tuple[dict[str, Any], int]:
    """Each recipe in a simulation of its own (fanbu's ServerApp and ClientApp, in this process); the
    results and the client messages trained."""
    results, trained = {}, 0
    for name, recipe in recipes.items():
        large_path, _ = save_inputs(large, None, root / name)
        settings = RunSettings(recipe, root / name, large_path)
        grid = InProcessGrid(client_app(settings.to_run_config()), len(slots_of(recipe)))
        server_app(settings.to_run_config())(grid, _server_context())
        results[name] = collect(settings)
        trained += grid.delivered
    return results, trained


def _assert_same_federations(shared: dict[str, Any], alone: dict[str, Any]) -> None:
    """Each run's final model (to the last bit), per-round validation history and client metrics."""
    for rule, own in alone.items():
        ours, theirs = _arrays(shared[rule].large), _arrays(own.large)
        assert ours.keys() == theirs.keys()
        for key in ours:  # to the last bit: the server aggregates the replies in client order
            np.testing.assert_array_equal(ours[key], theirs[key], err_msg=f"{rule}: {key}")
        strip = [{k: v for k, v in r.items() if k != "seconds"} for r in shared[rule].rounds]
        assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in own.rounds]
        assert shared[rule].client_metrics == own.client_metrics
    # the rules do differ: the attack is aggregated away by some and not by others
    assert not all(np.array_equal(a, b) for a, b in zip(_arrays(shared["fedavg"].large).values(),
                                                        _arrays(shared["median"].large).values(), strict=True))


def test_each_rule_in_the_shared_simulation_is_its_own_federation(toy: dict, tmp_path: Path, identity: None) -> None:
    """Every rule's final model and history are those of a simulation of its own (fanbu's ServerApp and
    ClientApp, one rule each); round 1 is trained once for all the rules."""
    rules = ["fedavg", "median", "krum"]
    recipes = {rule: _recipe(toy, rule) for rule in rules}
    clients = len(slots_of(recipes["fedavg"]))
    with _one_thread():
        alone, trained_alone = _alone(recipes, toy["large"], tmp_path / "alone")
        seen: dict[str, Any] = {}

        def runner(server: Any, client: Any, nodes: int, simulation: Any) -> None:
            seen["grid"] = InProcessGrid(client, nodes)
            server(seen["grid"], _server_context())

        shared, stats = bench.federate_together(recipes, toy["large"], tmp_path / "shared", runner=runner)

    assert trained_alone == len(rules) * clients * recipes["fedavg"].rounds
    assert stats["replayed"] == (len(rules) - 1) * clients  # round 1 of every rule after the first
    assert seen["grid"].delivered == stats["sent"] == trained_alone - stats["replayed"]
    assert stats["runs"] == rules and stats["seconds"] > 0
    _assert_same_federations(shared, alone)


def test_the_shared_simulation_runs_under_flowers_runtime(toy: dict, tmp_path: Path, identity: None) -> None:
    """The same under Flower's simulation runtime: Ray's workers train the clients, the ServerApp's two
    threads share Flower's in-memory grid; each rule's federation is still the one it runs alone."""
    recipes = {rule: _recipe(toy, rule) for rule in ("fedavg", "median")}
    with _one_thread():
        shared, stats = bench.federate_together(recipes, toy["large"], tmp_path / "ray")
        alone, _ = _alone(recipes, toy["large"], tmp_path / "alone")
    clients = len(slots_of(recipes["fedavg"]))
    assert stats["replayed"] == clients and stats["sent"] == clients * (1 + 2 * (recipes["fedavg"].rounds - 1))
    _assert_same_federations(shared, alone)


def _question(node: int, content: RecordDict) -> Message:
    return Message(content=content, dst_node_id=node, message_type="train")


def _content(values: list[float], rnd: int) -> RecordDict:
    return RecordDict({"arrays": ArrayRecord({"w": Array(np.asarray(values, dtype=np.float32))}),
                       "config": ConfigRecord({"server-round": rnd})})


class CountingGrid(InProcessGrid):
    def __init__(self) -> None:
        def client(msg: Message, context: Context) -> Message:
            if "fail" in msg.content.config_records["config"]:
                raise RuntimeError("broken client")
            w = msg.content["arrays"]["w"].numpy() + context.node_id
            return Message(RecordDict({"arrays": ArrayRecord({"w": Array(w)}),
                                       "metrics": MetricRecord({"node": context.node_id})}), reply_to=msg)

        super().__init__(client, 3)


def test_replay_answers_only_the_same_question_with_a_fresh_copy(identity: None) -> None:
    inner = CountingGrid()
    grid = fgrid.ReplayGrid(inner)
    first = _content([1.0, 2.0], 1)
    replies = list(grid.send_and_receive([_question(n, first) for n in (1, 2, 3)]))
    assert inner.delivered == 3 and grid.replayed == 0
    again = list(grid.send_and_receive([_question(n, _content([1.0, 2.0], 1)) for n in (1, 2, 3)]))
    assert inner.delivered == 3 and grid.replayed == 3  # the same content (a new object): answered from memory
    for old, new in zip(sorted(replies, key=lambda m: m.metadata.src_node_id),
                        sorted(again, key=lambda m: m.metadata.src_node_id), strict=True):
        np.testing.assert_array_equal(old.content["arrays"]["w"].numpy(), new.content["arrays"]["w"].numpy())
        assert new.metadata.src_node_id == old.metadata.src_node_id
    del replies[0].content["arrays"]  # a strategy may consume its replies (Bulyan empties them) ...
    del again[0].content["arrays"]
    node = replies[0].metadata.src_node_id
    third = list(grid.send_and_receive([_question(node, _content([1.0, 2.0], 1))]))
    assert "arrays" in third[0].content  # ... the kept answer is untouched
    other = list(grid.send_and_receive([_question(n, _content([1.0, 2.5], 1)) for n in (1, 2)]))
    assert inner.delivered == 5 and len(other) == 2  # other arrays: trained
    later = _content([1.0, 2.0], 2)
    grid.send_and_receive([_question(1, later)])
    grid.send_and_receive([_question(1, _content([1.0, 2.0], 2))])
    assert inner.delivered == 7  # round 2 is never kept (each kept answer holds a model)
    failing = RecordDict({"arrays": ArrayRecord({"w": Array(np.zeros(2, dtype=np.float32))}),
                          "config": ConfigRecord({"server-round": 1, "fail": True})})
    for _ in range(2):
        assert all(m.has_error() for m in grid.send_and_receive([_question(2, failing)]))
    assert inner.delivered == 9  # an error is asked again, not replayed
    assert grid.sent == inner.delivered


def test_threads_asking_the_same_question_train_the_client_once(identity: None) -> None:
    """Two server threads send the same round-1 question at once: one asks, the other waits and replays."""

    class SlowGrid(CountingGrid):
        def send_and_receive(self, messages: Any, *, timeout: float | None = None) -> list[Message]:
            time.sleep(0.2)  # the other thread registers its question meanwhile
            return super().send_and_receive(messages, timeout=timeout)

    inner = SlowGrid()
    grid = fgrid.ReplayGrid(inner)
    answers: list[list[Message]] = []

    def ask() -> None:
        answers.append(list(grid.send_and_receive([_question(n, _content([3.0], 1)) for n in (1, 2, 3)])))

    threads = [threading.Thread(target=ask) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert inner.delivered == 3 and grid.replayed == 3 and grid.sent == 3
    got = [sorted(float(m.content["arrays"]["w"].numpy()[0]) for m in a) for a in answers]
    assert got[0] == got[1] == [4.0, 5.0, 6.0]


def test_one_client_app_serves_runs_that_differ_only_server_side(toy: dict) -> None:
    recipes = {rule: _recipe(toy, rule) for rule in ("fedavg", "median")}
    assert fgrid.check_shared_clients(recipes) is recipes["fedavg"]
    assert fgrid.check_shared_clients({"a": recipes["fedavg"], "b": _recipe(toy, "fedavg", server={"lr": 2.0})})
    with pytest.raises(ConfigError, match="outside robust, server"):
        fgrid.check_shared_clients({**recipes, "krum": _recipe(toy, "krum", rounds=3)})
    with pytest.raises(ConfigError, match="DP"):
        dp = {"dp": {"enabled": True, "side": "client", "noise_multiplier": 0.1, "clipping_norm": 1.0}}
        fgrid.check_shared_clients({"fedavg": _recipe(toy, "fedavg", privacy=dp)})
    with pytest.raises(ConfigError, match="FedMKT"):
        mkt = _recipe(toy, "median", algorithm="fedmkt", attack={"kind": "garbage_logits", "fraction": 0.2})
        fgrid.check_shared_clients({"median": mkt})
    with pytest.raises(ConfigError, match="save_clients"):  # every run's clients would write the same models
        fgrid.check_shared_clients({"fedavg": _recipe(toy, "fedavg", save_clients=True)})
    with pytest.raises(ConfigError, match="at least one run"):
        fgrid.check_shared_clients({})


def _console() -> Console:
    return Console(file=io.StringIO(), width=200)


class FakeResult:
    def __init__(self, acc: float) -> None:
        self.acc = acc


def test_each_attack_runs_its_missing_rules_in_one_simulation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An attack's rules are simulated together, each kept as a part of its own; kept parts are read back."""
    calls: list[list[str]] = []

    def federate_together(recipes: dict[str, FederatedRecipe], large: Any, work: Path) -> tuple[dict, dict]:
        calls.append([r.robust.rule for r in recipes.values()])
        assert all(name.endswith(r.robust.rule) for name, r in recipes.items())
        stats = {"runs": list(recipes), "seconds": 1.0, "sent": 1, "replayed": 0}
        return {name: FakeResult(0.5 + 0.01 * len(name)) for name in recipes}, stats

    def scores(self: bench.Bench, result: FakeResult, recipe: FederatedRecipe, tests: Any = None) -> dict:
        assert tests is self.grid_tests  # cells are scored on the grid's test sample
        return {"acc": result.acc}

    monkeypatch.setattr(fparts, "federate_together", federate_together)
    monkeypatch.setattr(bench.Bench, "scores", scores)
    monkeypatch.setattr(bench.Bench, "large_v0", lambda self: None)
    first = bench.Bench(True, tmp_path, _console())
    runs = first.attack_runs("sign_flip")
    assert calls == [bench.RULES] and list(runs) == bench.RULES
    assert runs["krum"]["simulation"]["runs"] == [f"grid-sign_flip-{r}" for r in bench.RULES]
    again = bench.Bench(True, tmp_path, _console()).attack_runs("sign_flip")
    assert len(calls) == 1  # every rule read back
    assert {r: x["acc"] for r, x in again.items()} == {r: x["acc"] for r, x in runs.items()}
    (tmp_path / "results" / "grid-sign_flip-krum.json").unlink()
    bench.Bench(True, tmp_path, _console()).attack_runs("sign_flip")
    assert calls[-1] == ["krum"]  # only what is not kept
    stronger = bench.Bench(True, tmp_path, _console())
    stronger.caps["attacks"]["sign_flip"]["scale"] = 4.0
    stronger.attack_runs("sign_flip")
    assert calls[-1] == bench.RULES  # another strength: every rule again


def test_the_server_learning_rates_share_one_simulation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[dict[str, FederatedRecipe]] = []

    def federate_together(recipes: dict[str, FederatedRecipe], large: Any, work: Path) -> tuple[dict, dict]:
        seen.append(dict(recipes))
        return {name: FakeResult(0.7) for name in recipes}, {"runs": list(recipes)}

    def scores(self: bench.Bench, result: FakeResult, recipe: FederatedRecipe, tests: Any = None) -> dict:
        assert tests is None  # the headline parts are scored on the bench's own test texts
        return {"acc": result.acc, "rounds": [{"val.mean_acc": recipe.server.lr / 10}]}

    monkeypatch.setattr(fparts, "federate_together", federate_together)
    monkeypatch.setattr(bench.Bench, "scores", scores)
    monkeypatch.setattr(bench.Bench, "large_v0", lambda self: None)
    runs = bench.Bench(True, tmp_path, _console()).fedavg_lr_runs()
    assert len(seen) == 1 and [r.server.lr for r in seen[0].values()] == bench.SERVER_LRS
    fgrid.check_shared_clients(seen[0])  # the clients cannot tell the runs apart
    assert [r["server_lr"] for r in runs] == bench.SERVER_LRS
    assert [r["val_mean_acc"] for r in runs] == [lr / 10 for lr in bench.SERVER_LRS]
    assert (tmp_path / "results" / "fedavg-heads-slr2.json").is_file()


def test_the_grid_reports_every_rule_against_every_attack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    attacks: list[str] = []

    def runs(self: bench.Bench, attack: str) -> dict[str, dict]:
        attacks.append(attack)
        return {rule: {"acc": 0.8 if attack == "none" else 0.7} for rule in self.caps["grid"]["rules"]}

    monkeypatch.setattr(bench.Bench, "attack_runs", runs)
    monkeypatch.setattr(bench.Bench, "mkt_attack", lambda self, attack, rule: {"acc": 0.6})
    rows = bench.Bench(True, tmp_path, _console()).grid()
    assert attacks == ["none", *bench.ATTACKS]  # one simulation per attack, not per cell
    assert [(r["attack"], r["rule"]) for r in rows[: len(bench.RULES) * len(bench.ATTACKS)]] == [
        (a, r) for r in bench.RULES for a in bench.ATTACKS
    ]
    assert all(r["clean_acc"] == 0.8 and r["acc"] == 0.7 for r in rows if not r["rule"].startswith("fedmkt"))
    assert {r["rule"] for r in rows if r["attack"] == "garbage_logits"} == {"fedmkt:fedavg", "fedmkt:median"}


def test_quick_sizes_keep_what_the_grid_measures(tmp_path: Path) -> None:
    """Quick mode: 64 tokens, small shards and a capped test sample, but the full grid: every rule, 15
    clients with 3 attackers, full-parameter exchange, several rounds; the full bench scores cells on
    the whole test split."""
    quick, full = bench.caps(True), bench.caps(False)
    assert quick["max_length"] == 64 and full["max_length"] == 128
    assert quick["grid"]["rules"] == full["grid"]["rules"] == bench.RULES
    assert quick["grid"]["rounds"] >= 2 and full["grid"]["rounds"] >= 3 and full["grid"]["test"] is None
    assert quick["grid"]["test"] is not None and quick["grid"]["test"] >= 200
    b = bench.Bench(True, tmp_path, _console())
    assert b.grid_clients() == 15 and b.attackers() == 3
    assert {n: len(t[0]) for n, t in b.grid_tests.items()} == {n: quick["grid"]["test"] for n in b.domains}
    assert b.grid_tests != b.tests  # the headline parts keep their own test sample
    recipe = b.cell_recipe("sign_flip", "bulyan")
    assert recipe.max_length == 64 and recipe.rounds == quick["grid"]["rounds"]
    assert recipe.data.max_private == quick["grid"]["private"] and recipe.data.max_public == quick["grid"]["public"]
    assert recipe.robust.num_malicious == 3 and recipe.attack.fraction == bench.FRACTION
    assert recipe.share.mode == "full" and recipe.local.lr == bench.LR  # what the full bench exchanges


def _smoke_caps(quick: bool) -> dict[str, Any]:
    """The quick plan (three domains, 15 clients with 3 attackers, every rule, two rounds) on tiny slices."""
    caps = bench.caps(True)
    caps.update({"public": 8, "private": 40, "validation": 6, "test": 8, "max_length": 32, "v0_epochs": 1})
    caps["grid"].update({"private": 60, "validation": 4, "public": 6, "test": 6})
    caps["scale"].update({"validation": 2, "public": 4})
    return caps


@pytest.mark.integration  # the real 20 Newsgroups slices; about a minute on 2 cores
def test_the_whole_bench_runs_end_to_end_on_tiny_sizes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, identity: None
) -> None:
    """``run_bench`` through every part (large v0, the grid, central, FedAvg, FedMKT, scale) with fanbu's
    own ServerApp and ClientApp in this process (no Ray), a tiny encoder for MiniLM and the quick plan on
    tiny slices; then a rerun that reads every part back."""
    tiny = EncoderHandle.tiny(hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32, max_length=32)

    def from_source(source: str, max_length: int = 256) -> EncoderHandle:
        handle = copy.deepcopy(tiny)
        handle.max_length = max_length
        return handle

    simulations: list[tuple[int, InProcessGrid]] = []

    def in_process(server: Any, client: Any, nodes: int, simulation: Any, verbose: bool = False) -> None:
        simulations.append((nodes, InProcessGrid(client, nodes)))
        server(simulations[-1][1], _server_context())

    together: list[list[str]] = []
    shared = fparts.federate_together

    def federate_together(recipes: dict[str, FederatedRecipe], large: EncoderHandle, work: Path) -> Any:
        together.append(list(recipes))
        return shared(recipes, large, work)

    caplog.set_level(logging.WARNING, logger="flwr")  # as run_apps sets it; the strategies log every round
    monkeypatch.setattr(fparts, "caps", _smoke_caps)
    monkeypatch.setattr(fparts, "CLIENT_PRUNE", {"layers": 1, "heads": 2, "ffn": 16, "importance": "taylor"})
    monkeypatch.setattr(EncoderHandle, "from_source", from_source)
    monkeypatch.setattr(fed_run, "run_apps", in_process)  # federate(): one simulation per run
    monkeypatch.setattr(fgrid, "run_apps", in_process)  # federate_together(): one per group of runs
    monkeypatch.setattr(fparts, "federate_together", federate_together)
    out = tmp_path / "out.json"
    with _one_thread():
        report = bench.run_bench(True, out, _console(), work=tmp_path / "work")

    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    caps = _smoke_caps(True)
    rules, attacks = caps["grid"]["rules"], ["none", *bench.ATTACKS]
    # one simulation per attack (every rule in it) and one for the server learning rates
    assert together == [[f"grid-{a}-{r}" for r in rules] for a in attacks] + [
        [f"fedavg-heads-slr{lr:g}" for lr in bench.SERVER_LRS]
    ]
    # the grid's 4 + the learning rates' 1, then Dirichlet, plain, FedMKT, 2 x 2 garbage-logit runs, scale
    assert len(simulations) == len(attacks) + 1 + 3 + 2 * len(bench.MKT_RULES) + 1
    assert [n for n, _ in simulations[: len(attacks)]] == [15] * len(attacks)
    assert simulations[-1][0] == 100
    rounds = caps["grid"]["rounds"]
    for attack in attacks:
        cell = json.loads((tmp_path / "work" / "results" / f"grid-{attack}-bulyan.json").read_text())
        # round 1 trained once and replayed to the other five rules; every later round trained per rule
        assert cell["simulation"]["replayed"] == (len(rules) - 1) * 15
        assert cell["simulation"]["sent"] == 15 * (1 + len(rules) * (rounds - 1))
        assert [r["round"] for r in cell["rounds"]] == list(range(rounds + 1))
    assert {(r["attack"], r["rule"]) for r in report["attacks"]} == {
        *((a, r) for a in bench.ATTACKS for r in rules), *(("garbage_logits", f"fedmkt:{r}") for r in bench.MKT_RULES)
    }
    assert {r["status"] for r in report["attacks"]} <= {bench.HELD, bench.BROKEN, bench.NO_EFFECT}
    assert set(report["target"]) == {"fed_ratio", "clients_beat_local", "attacks_bite", "robust_default",
                                      "scale_completed"}
    for name, t in report["target"].items():
        assert {"value", "bar", "met", "interval", "rule"} <= set(t) and t["interval"] is None, name
    assert report["target"]["scale_completed"]["met"] and report["scale"]["clients"] == 100
    for key in ("v0_acc", "central_acc", "fed_acc", "fed_plain_acc", "fed_dirichlet_acc", "clients_before",
                "clients_after", "clients_local_only"):
        assert 0.0 <= report[key] <= 1.0, key
    assert report["server_lr"][0] in bench.SERVER_LRS and report["central_lr"][0] in bench.CENTRAL_LRS
    assert report["domains"] == caps["domains"] and report["grid_test_per_domain"] == caps["grid"]["test"]

    def no_simulation(*args: Any) -> None:
        raise AssertionError("a kept part was run again")

    monkeypatch.setattr(fed_run, "run_apps", no_simulation)
    monkeypatch.setattr(fgrid, "run_apps", no_simulation)
    with _one_thread():
        again = bench.run_bench(True, out, _console(), work=tmp_path / "work")
    first, second = (json.loads(json.dumps({k: v for k, v in r.items() if k != "seconds"})) for r in (report, again))
    assert second == first
