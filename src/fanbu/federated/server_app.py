"""The Flower ServerApp: the large model, the public data, and the rounds.

``app`` is what a SuperLink runs (``fanbu.federated.server_app:app``); :func:`server_app` builds the
same app with run-config defaults (the simulation). FedAvg / FedProx run Flower's strategy loop
(``Strategy.start``) with the robust rule of ``robust`` (:func:`~fanbu.federated.robust.make_strategy`),
per-domain head aggregation (:class:`~fanbu.federated.heads.OwnedHeads`) and the DP wrapper of
``privacy``, or the SecAgg+ workflow; FedMKT runs its own rounds of ``train.mkt`` messages. Each
round the large model is scored on every domain's validation slice. The server writes the final
large model to ``<work-dir>/server/large`` and the run's history to ``<work-dir>/server/history.json``.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid, ServerApp

from fanbu.errors import ConfigError
from fanbu.federated import fedmkt
from fanbu.federated.client_app import load_model
from fanbu.federated.data import ServerData, check_labels, server_data, slots_of, texts_fingerprint
from fanbu.federated.heads import OwnedHeads, in_client_order
from fanbu.federated.local import finish_shared, load_arrays, shared_model, trainable_arrays
from fanbu.federated.privacy import dp_report, run_secagg, wrap_strategy
from fanbu.federated.robust import make_strategy
from fanbu.federated.server_opt import ServerOptimizer
from fanbu.federated.settings import RunSettings, parse_run_config
from fanbu.io import atomic_write_json
from fanbu.models.artefact import Provenance
from fanbu.models.encoder import EncoderHandle
from fanbu.train.classify import evaluate_heads

HISTORY = "history.json"


def validation_scores(
    handle: EncoderHandle, validation: Mapping[str, tuple[list[str], list[int]]]
) -> dict[str, float]:
    """Validation accuracy per domain head and their mean (``val.mean_acc``)."""
    results = evaluate_heads(handle, validation)
    scores = {f"val.{head}.acc": r["accuracy"] for head, r in sorted(results.items())}
    scores["val.mean_acc"] = sum(r["accuracy"] for r in results.values()) / max(1, len(results))
    return scores


def wait_for_nodes(grid: Grid, count: int, timeout: float) -> list[int]:
    """The ids of ``count`` connected SuperNodes, waiting up to ``timeout`` seconds.

    Raises:
        ConfigError: fewer SuperNodes connected in time.
    """
    deadline = time.monotonic() + timeout
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= count or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    if len(nodes) < count:
        raise ConfigError(
            f"{len(nodes)} SuperNodes connected, the run has {count} clients; start one per client"
        )
    return nodes[:count]


class ServerRun:
    """One run on the server side: settings, data, the large model and the per-round history."""

    def __init__(self, settings: RunSettings) -> None:
        self.settings = settings
        self.recipe = settings.recipe
        self.champion = load_model(settings.large_model, self.recipe.max_length)
        check_labels(self.recipe, self.champion.labels, "the large model")
        self.data: ServerData = server_data(self.recipe)
        self.n_clients = len(slots_of(self.recipe))
        self.recipe.check_clients(len(self.data.domains))
        self.rounds: list[dict[str, Any]] = []
        self.clients: dict[str, dict[str, Any]] = {}
        self.started = time.perf_counter()

    def record(self, rnd: int, scores: Mapping[str, float], **extra: Any) -> None:
        """Append one round's scores and wall time to the history."""
        self.rounds.append({"round": rnd, "seconds": time.perf_counter() - self.started, **scores, **extra})

    def note_clients(self, replies: list[Message]) -> None:
        """Keep each client's latest metrics (from its reply's ``client`` and metric records)."""
        for msg in replies:
            if msg.has_error() or "client" not in msg.content:
                continue
            info = msg.content["client"]
            metrics = next(iter(msg.content.metric_records.values()))
            self.clients[str(info["id"])] = {
                "domain": str(info["domain"]),
                "malicious": bool(info["malicious"]),
                **{k: float(v) for k, v in metrics.items() if isinstance(v, int | float)},
            }

    def finish(self, large: EncoderHandle, privacy: dict[str, Any]) -> None:
        """Save the final large model and the history into ``<work-dir>/server``."""
        out = self.settings.work_dir / "server"
        provenance = Provenance(
            recipe={"federated": self.recipe.model_dump(mode="json")},
            data_fingerprints=dict(self.data.fingerprints),
            base_model=str(self.champion.provenance.name) if self.champion.provenance else None,
            base_model_relation="finetune",
            name="federated",
            metrics=dict(self.rounds[-1]) if self.rounds else {},
        )
        large.save(out / "large", provenance, overwrite=True)
        history = {
            "rounds": self.rounds,
            "clients": self.clients,
            "privacy": privacy,
            "seconds": time.perf_counter() - self.started,
        }
        atomic_write_json(out / HISTORY, json.loads(json.dumps(history, default=float)))


def run_shared(grid: Grid, context: Context, run: ServerRun) -> EncoderHandle:
    """FedAvg / FedProx over the shared weights with Flower's strategies; the final large model."""
    recipe = run.recipe
    model = shared_model(run.champion, recipe.share, recipe.seed)
    start = ArrayRecord({k: Array(v) for k, v in trainable_arrays(model.model).items()})
    sampled = max(1, round(recipe.fraction_train * run.n_clients))
    rounds = recipe.shared_rounds  # the head round, when on, is one more round of the same loop
    train_config = {"num-rounds": rounds}
    if recipe.privacy.secagg.enabled:  # the server sees only the masked sum: no per-client record
        run.record(0, validation_scores(model, run.data.validation))
        final = run_secagg(
            grid,
            context,
            start,
            num_rounds=rounds,
            num_clients=run.n_clients,
            config=recipe.privacy,
            train_config=train_config,
        )
        load_arrays(model.model, {k: a.numpy() for k, a in final.items()})
        run.record(rounds, validation_scores(model, run.data.validation))
        return finish_shared(model)
    mu = recipe.proximal_mu if recipe.algorithm == "fedprox" else 0.0
    strategy = make_strategy(
        recipe.robust,
        sampled,
        attack_fraction=recipe.attack.fraction,
        proximal_mu=mu,
        fraction_train=recipe.fraction_train,
        fraction_evaluate=0.0,
        min_available_nodes=run.n_clients,
    )
    f = recipe.robust.tolerated(sampled, recipe.attack.fraction)
    strategy = OwnedHeads(
        strategy,
        run.data.domains,
        recipe.robust.rule,
        f,
        recipe.robust.trim_beta,
        own_heads=not recipe.privacy.dp.enabled,
        on_replies=run.note_clients,
    )
    if not recipe.server.plain:  # heads owned per domain are not diluted: they keep their aggregate
        skip = ("heads.",) if not recipe.privacy.dp.enabled else ()
        strategy = ServerOptimizer(strategy, recipe.server, skip, last_round=recipe.rounds)
    strategy = wrap_strategy(strategy, recipe.privacy, sampled)
    evaluated = copy.deepcopy(model)

    def evaluate(rnd: int, arrays: ArrayRecord) -> MetricRecord:
        load_arrays(evaluated.model, {k: a.numpy() for k, a in arrays.items()})
        scores = validation_scores(evaluated, run.data.validation)
        run.record(rnd, scores)
        return MetricRecord(scores)

    result = strategy.start(
        grid=grid,
        initial_arrays=start,
        num_rounds=rounds,
        timeout=recipe.simulation.round_timeout,
        train_config=ConfigRecord(train_config),
        evaluate_fn=evaluate,
    )
    load_arrays(model.model, {k: a.numpy() for k, a in result.arrays.items()})
    return finish_shared(model)


def _mkt_message(node: int, rnd: int, final: bool, knowledge: fedmkt.Knowledge | None) -> Message:
    content = RecordDict({"config": ConfigRecord({"server-round": rnd, "final": final})})
    if knowledge is not None:
        content["server"] = ArrayRecord(
            {"probs": Array(knowledge.probs), "weights": Array(knowledge.weights)}
        )
    return Message(content=content, dst_node_id=node, message_type="train.mkt")


def run_mkt(grid: Grid, run: ServerRun) -> EncoderHandle:
    """FedMKT rounds (see :mod:`fanbu.federated.fedmkt`); the final large model."""
    recipe, data = run.recipe, run.data
    nodes = wait_for_nodes(grid, run.n_clients, recipe.simulation.round_timeout)
    large = copy.deepcopy(run.champion)
    run.record(0, validation_scores(large, data.validation))
    domain_of: dict[int, str] = {}
    sent: dict[str, fedmkt.Knowledge] = {}
    for rnd in range(1, recipe.rounds + 2):
        final = rnd == recipe.rounds + 1
        messages = [_mkt_message(n, rnd, final, sent.get(domain_of.get(n, ""))) for n in nodes]
        replies = in_client_order(grid.send_and_receive(messages, timeout=recipe.simulation.round_timeout))
        failed = [m for m in replies if m.has_error()]
        if failed or len(replies) < len(nodes):
            reason = failed[0].error.reason if failed else "no reply before simulation.round_timeout"
            raise ConfigError(
                f"round {rnd}: {len(nodes) - len(replies) + len(failed)} client(s) failed: {reason}"
            )
        run.note_clients(replies)
        if final:
            break
        knowledge, stats = {}, {}
        for domain in data.domains:
            mine = [m for m in replies if str(m.content["client"]["domain"]) == domain]
            domain_of.update({m.metadata.src_node_id: domain for m in mine})
            texts, labels = data.public[domain]
            for m in mine:
                if str(m.content["client"]["public-sha256"]) != texts_fingerprint(texts):
                    raise ConfigError(
                        f"client {m.content['client']['id']} holds other public texts of {domain} "
                        "than the server; both sides must read the same data settings"
                    )
            stack = np.stack([m.content["arrays"]["logits"].numpy() for m in mine])  # (clients, n, C)
            weights = np.array([float(m.content["metrics"]["num-examples"]) for m in mine])
            knowledge[domain] = fedmkt.aggregate_domain(stack, weights, labels, recipe)
            stats.update({f"{domain}.{k}": v for k, v in knowledge[domain].stats().items()})
        fedmkt.server_distil(
            large, run.champion, knowledge, data.public, data.validation, recipe.mkt, recipe.seed + rnd
        )
        run.record(rnd, validation_scores(large, data.validation), knowledge=stats)
        sent = fedmkt.server_knowledge(large, data.public, recipe.mkt.temperature)
    return large


def server_app(defaults: Mapping[str, Any] | None = None) -> ServerApp:
    """The ServerApp; ``defaults`` fill run-config keys the run does not set (simulation)."""
    app = ServerApp()
    frozen = json.loads(json.dumps(dict(defaults or {})))

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        run = ServerRun(parse_run_config(context.run_config, frozen))
        recipe = run.recipe
        large = run_mkt(grid, run) if recipe.algorithm == "fedmkt" else run_shared(grid, context, run)
        sampling = 1.0 if recipe.algorithm == "fedmkt" else recipe.fraction_train
        rounds = recipe.rounds if recipe.algorithm == "fedmkt" else recipe.shared_rounds
        run.finish(large, dp_report(recipe.privacy, sampling, rounds))

    return app


app = server_app()


def read_history(work_dir: Path) -> dict[str, Any]:
    """The history a finished run left in ``<work-dir>/server``."""
    path = Path(work_dir) / "server" / HISTORY
    if not path.is_file():
        raise ConfigError(f"{path}: missing; the server did not finish (see the Flower log above)")
    return json.loads(path.read_text(encoding="utf-8"))
