"""Federations whose clients are the same, run in one Flower simulation: the attack grid's rules, the
FedAvg runs that differ in their server learning rate.

A cell of the attack grid is one federation (FedAvg family) of the Dirichlet split under one attack and
one aggregation rule. Run as a simulation of its own, each cell pays Flower's start-up (Ray, and two
worker processes importing torch, transformers and fanbu: about 40 s on a busy 2-core machine), so the
bench runs each attack's cells, one per rule, in ONE simulation instead (and the per-domain FedAvg runs
with server learning rate 1 and 2 in another):

* the clients are fanbu's ClientApp (:func:`fanbu.federated.client_app.client_app`) with the runs'
  recipe. The recipes may differ only in what the server alone reads (:data:`SERVER_SIDE`: the robust
  rule, the server's learning rate), checked here, so one ClientApp serves every run;
* the server runs the ServerApp's own loop (:func:`fanbu.federated.server_app.run_shared`: the same
  strategy stack, validation and history) once per run, each from large v0 with its own global model,
  so each run's dynamics are exactly those of a simulation of its own. Two runs go at once
  (:data:`SERVER_THREADS`), so that while one aggregates (robust rules over MiniLM's 15 replies take
  about 7 CPU-s a round, on one core) the other's clients train;
* :class:`ReplayGrid` answers a message identical to one answered before (the same node, message type
  and content: a sha256 of every record, arrays and config) with a copy of that answer instead
  of training the client again. In round 1 every run sends every client the same model (large v0) and
  config, so runs after the first reuse round 1's answers; later rounds send other models and train.
  This is exact because a grid client is a deterministic function of its node and the message (seeded
  training and attack draws, no client-side DP noise: checked here), and only round 1's answers are
  kept (a round's answers of MiniLM are about 1.4 GB).

The clients' ``acc-before`` (kept in the node's state at its first message) is the champion's score,
the same for every run, so sharing the nodes between runs changes no reported number.
"""

from __future__ import annotations

import copy
import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from flwr.app import Array, ArrayRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from fanbu.errors import ConfigError
from fanbu.federated.client_app import client_app
from fanbu.federated.data import slots_of
from fanbu.federated.privacy import dp_report
from fanbu.federated.recipe import FederatedRecipe, SimulationConfig
from fanbu.federated.result import FederatedResult
from fanbu.federated.run import collect, run_apps, save_inputs
from fanbu.federated.server_app import ServerRun, run_shared
from fanbu.federated.settings import RunSettings
from fanbu.io import safe_child
from fanbu.models.encoder import EncoderHandle

# runs the apps: (server_app, client_app, number of clients, the CPUs); Flower's simulation by default
Runner = Callable[[ServerApp, ClientApp, int, SimulationConfig], None]
# the recipe sections only the server reads: runs that differ in nothing else share their clients
SERVER_SIDE = ("robust", "server")
# federations the server runs at once: while one aggregates (one core, about 7 s a round for a robust
# rule over MiniLM's 15 replies), the other's clients train on the cores it leaves idle
SERVER_THREADS = 2
Key = tuple[int, str, str]  # a question: node, message type, content digest


def first_round(msg: Message) -> bool:
    """Whether ``msg`` is a round-1 message (the round in which every run sends large v0)."""
    configs = msg.content.config_records
    return any(int(c.get("server-round", 0)) == 1 for c in configs.values())


def content_digest(content: RecordDict) -> str:
    """sha256 of a message's content: every record's name and kind, every array's bytes, every config value.

    (Flower's ``RecordDict.object_id`` would do, but it leaves unpicklable chunk views on the arrays.)
    """
    digest = hashlib.sha256()
    for name, record in sorted(content.items()):
        digest.update(f"{name}\0{type(record).__name__}\0".encode())
        if isinstance(record, ArrayRecord):
            for key, array in record.items():
                digest.update(f"{key}\0{array.dtype}\0{tuple(array.shape)}\0{array.stype}\0".encode())
                digest.update(array.data)
        else:
            digest.update(json.dumps(dict(record), sort_keys=True, default=repr).encode())
    return digest.hexdigest()


def copy_content(content: RecordDict) -> RecordDict:
    """A deep copy of a message's content (its arrays' bytes included), which strategies may consume."""
    out = RecordDict()
    for name, record in content.items():
        if isinstance(record, ArrayRecord):
            out[name] = ArrayRecord(
                {
                    k: Array(dtype=a.dtype, shape=tuple(a.shape), stype=a.stype, data=bytes(a.data))
                    for k, a in record.items()
                }
            )
        else:
            out[name] = type(record)(copy.deepcopy(dict(record)))
    return out


class ReplayGrid(Grid):
    """A Grid that answers a message identical to one answered before with a copy of that answer.

    Identical: the same destination node, message type and content (:func:`content_digest`: every
    record, arrays and config included). Answers are kept only for messages ``keep`` accepts (the
    bench: round 1), since every kept answer holds a client's model. Error replies are never kept.
    Several server threads may ask at once: a question another thread is asking waits for its answer
    rather than training the client twice. Everything else is the wrapped grid's.
    """

    def __init__(self, grid: Grid, keep: Callable[[Message], bool] = first_round) -> None:
        self.grid = grid
        self.keep = keep
        self.answers: dict[Key, RecordDict] = {}
        self.asking: set[Key] = set()  # kept questions on their way to a client
        self.changed = threading.Condition()
        self.sent = 0
        self.replayed = 0

    @property
    def run(self) -> Any:
        return self.grid.run

    def set_run(self, run: Any) -> None:
        self.grid.set_run(run)

    def create_message(self, *args: Any, **kwargs: Any) -> Message:
        return self.grid.create_message(*args, **kwargs)

    def get_node_ids(self) -> Iterable[int]:
        return self.grid.get_node_ids()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self.grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self.grid.pull_messages(message_ids)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        messages = list(messages)
        digests: dict[int, str] = {}  # a strategy sends one content object to every node: hashed once
        keys = [
            (m.metadata.dst_node_id, m.metadata.message_type, digests.get(id(m.content)) or
             digests.setdefault(id(m.content), content_digest(m.content)))
            for m in messages
        ]
        if len({k[0] for k in keys}) != len(keys):  # answers are matched to questions by node
            return self._ask(messages, timeout)
        pairs = list(zip(messages, keys, strict=True))
        with self.changed:
            fresh = [(m, k) for m, k in pairs if k not in self.answers and k not in self.asking]
            kept = {k for m, k in fresh if self.keep(m)}
            self.asking |= kept
        replies: list[Message] = []
        try:
            replies = self._ask([m for m, _ in fresh], timeout)
        finally:
            by_node = {r.metadata.src_node_id: r for r in replies}
            with self.changed:
                for key in kept:
                    reply = by_node.get(key[0])
                    if reply is not None and not reply.has_error():
                        self.answers[key] = copy_content(reply.content)  # before a strategy consumes it
                self.asking -= kept
                self.changed.notify_all()
        answered = {id(m) for m, _ in fresh}
        others = [(m, k) for m, k in pairs if id(m) not in answered]
        again = []
        with self.changed:
            self.changed.wait_for(lambda: all(k not in self.asking for _, k in others))
            for msg, key in others:
                if key in self.answers:
                    replies.append(Message(copy_content(self.answers[key]), reply_to=msg))
                    self.replayed += 1
                else:  # the other thread's client failed: ask it here
                    again.append(msg)
        return replies + self._ask(again, timeout)

    def _ask(self, messages: list[Message], timeout: float | None) -> list[Message]:
        """Send ``messages`` to their clients and wait for the replies."""
        if not messages:
            return []
        with self.changed:
            self.sent += len(messages)
        return list(self.grid.send_and_receive(messages, timeout=timeout))


def check_shared_clients(recipes: Mapping[str, FederatedRecipe]) -> FederatedRecipe:
    """The recipe the one ClientApp runs: the runs' recipes may differ in :data:`SERVER_SIDE` only.

    Raises:
        ConfigError: the recipes differ elsewhere, exchange logits, add client-side randomness (DP noise,
            SecAgg+ masks) that would make replayed answers differ from fresh ones, or save the clients'
            models (every run's clients would write the same directories, and no run would collect them).
    """
    if not recipes:
        raise ConfigError("one simulation needs at least one run")
    first = next(iter(recipes.values()))

    def clients_view(recipe: FederatedRecipe) -> dict[str, Any]:
        return {k: v for k, v in recipe.model_dump(mode="json").items() if k not in SERVER_SIDE}

    for name, recipe in recipes.items():
        if clients_view(recipe) != clients_view(first):
            raise ConfigError(f"the recipe of {name} differs from the others outside {', '.join(SERVER_SIDE)}")
    if first.algorithm == "fedmkt":
        raise ConfigError("FedMKT clients keep their model between rounds: one simulation per run")
    if first.privacy.dp.enabled or first.privacy.secagg.enabled:
        raise ConfigError("runs share one simulation only without DP or SecAgg+")
    if first.save_clients:
        raise ConfigError("runs that share one simulation share their clients: set save_clients: false")
    return first


def shared_server_app(
    settings: Mapping[str, RunSettings], stats: dict[str, Any], parallel: int = SERVER_THREADS
) -> ServerApp:
    """A ServerApp that runs each run's federation (:func:`run_shared`) over one :class:`ReplayGrid`,
    ``parallel`` at a time (in the order given), each in a thread of its own.

    Each run's server writes its final model and history under its own work directory, as the
    ServerApp does; ``stats`` receives the runs done, the messages sent to clients and the answers
    replayed. A failed run stops the others from starting and is raised once the running ones end.
    """
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        replay = ReplayGrid(grid)
        queue = list(settings.items())
        lock = threading.Lock()
        errors: list[BaseException] = []
        stats["done"] = []

        def serve() -> None:
            while True:
                with lock:
                    if errors or not queue:
                        return
                    name, run_settings = queue.pop(0)
                try:
                    run = ServerRun(run_settings)
                    large = run_shared(replay, context, run)
                    recipe = run.recipe
                    run.finish(large, dp_report(recipe.privacy, recipe.fraction_train, recipe.shared_rounds))
                except BaseException as exc:  # noqa: BLE001 - raised in the ServerApp's thread below
                    with lock:
                        errors.append(exc)
                    return
                with lock:
                    stats["done"].append(name)

        threads = [threading.Thread(target=serve, name=f"fanbu-server-{i}") for i in range(max(1, parallel))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        stats.update({"sent": replay.sent, "replayed": replay.replayed})
        if errors:
            raise errors[0]

    return app


def federate_together(
    recipes: Mapping[str, FederatedRecipe],
    large: EncoderHandle,
    work_dir: Path,
    runner: Runner | None = None,
    parallel: int = SERVER_THREADS,
) -> tuple[dict[str, FederatedResult], dict[str, Any]]:
    """Every federation of ``recipes`` (name -> recipe) from ``large``, in one simulation, started in that
    order, ``parallel`` at a time; ``runner`` runs the apps (default: Flower's simulation runtime,
    :func:`fanbu.federated.run.run_apps`, with the first recipe's CPUs).

    Returns each run's result (as :func:`fanbu.federated.run.federate` returns it) and the
    simulation's stats: ``runs``, ``seconds``, ``sent`` (client messages answered by training) and
    ``replayed`` (answered from round 1 of an earlier run).
    """
    first = check_shared_clients(recipes)
    large_path, _ = save_inputs(large, None, work_dir)
    settings = {
        name: RunSettings(recipe, safe_child(work_dir, name, what="run name"), large_path)
        for name, recipe in recipes.items()
    }
    stats: dict[str, Any] = {"runs": list(recipes)}
    started = time.perf_counter()
    client = client_app(RunSettings(first, work_dir / "clients", large_path).to_run_config())
    server = shared_server_app(settings, stats, parallel)
    (runner or run_apps)(server, client, len(slots_of(first)), first.simulation)
    stats["seconds"] = time.perf_counter() - started
    return {name: collect(s) for name, s in settings.items()}, stats
