"""The Flower ClientApp: one organisation, its domain's private shard and its model.

``app`` is what a SuperNode runs (``fanbu.federated.client_app:app``); :func:`client_app` builds the
same app with run-config defaults, which the simulation uses because Flower's ``run_simulation``
passes no run config. Two message types:

* ``train`` (FedAvg / FedProx): load the global shared weights into a copy of the champion, train on
  the private shard (plus FedProx's proximal term when the server sends ``proximal-mu``), send the
  weights back; in the optional head round after the last one, only the client's domain head trains. Privacy mods (client-side DP clipping, SecAgg+) wrap this handler.
* ``train.mkt`` (FedMKT): distil the server's knowledge into the client's own model, kept in the
  node's ``Context.state`` between rounds, and send log-probabilities on the public texts.

A malicious client (``attack``) flips its labels, poisons its weights or sends garbage logits.
Every reply carries ``num-examples``, the client's validation accuracy before the first round
(``acc-before``) and after this one (``acc-after``), and a ``client`` ConfigRecord naming it. Its
``malicious`` flag is the simulator's bookkeeping, so that reports can average over honest clients;
no aggregation reads it.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.client.mod.utils import make_ffn
from flwr.clientapp import ClientApp

from fanbu.errors import ModelError
from fanbu.federated import fedmkt
from fanbu.federated.attacks import attack_arrays, attack_logits, boosts_update, flip_labels, malicious_ids
from fanbu.federated.data import ClientData, client_data, slots_of, texts_fingerprint
from fanbu.federated.local import ProximalTerm, finish_shared, load_arrays, shared_model, trainable_arrays
from fanbu.federated.partition import ClientSlot, resolve_slot
from fanbu.federated.privacy import client_mods, noisy_logits
from fanbu.federated.settings import RunSettings, parse_run_config
from fanbu.io import atomic_write_json
from fanbu.models.artefact import Provenance
from fanbu.models.encoder import EncoderHandle
from fanbu.models.loading import handle_kind, load_handle
from fanbu.train.classify import evaluate_heads, train_heads
from fanbu.train.terms import TaskLoss

STATE_MODEL = "fanbu.model"  # Context.state key of a FedMKT client's own model
STATE_BEFORE = "fanbu.before"  # Context.state key of the accuracy before the first round


def load_saved(path: str | Path) -> EncoderHandle:
    """The classifier saved at ``path`` (an encoder or MoE encoder with heads), through ``load_handle``.

    Raises:
        ModelError: not a saved model, or a model of another kind (a causal LM, a plain module).
    """
    handle = load_handle(path)
    if not isinstance(handle, EncoderHandle):
        raise ModelError(
            f"{path}: a {handle_kind(path)!r} model; federated runs need an encoder classifier with heads"
        )
    return handle


@lru_cache(maxsize=4)
def cached_model(path: str, max_length: int | None) -> EncoderHandle:
    """The model saved at ``path``, loaded once per process: shared, so never train it (copy it)."""
    handle = load_saved(path)
    if max_length is not None:
        handle.max_length = max_length
    handle.model.eval()
    return handle


def load_model(path: Path, max_length: int | None) -> EncoderHandle:
    """A fresh copy of the model saved at ``path`` (read from disk once per process)."""
    return copy.deepcopy(cached_model(str(path), max_length))


def accuracy(handle: EncoderHandle, head: str, pairs: tuple[list[str], list[int]]) -> float:
    """Accuracy of ``head`` on ``pairs``."""
    return float(evaluate_heads(handle, {head: pairs})[head]["accuracy"])


class ClientRun:
    """What one message needs: the run settings, this node's client, its data and attack role."""

    def __init__(self, settings: RunSettings, context: Context) -> None:
        self.settings = settings
        self.recipe = settings.recipe
        self.context = context
        slots = slots_of(self.recipe)
        self.slot: ClientSlot = resolve_slot(context.node_config, slots)
        self.data: ClientData = client_data(self.recipe, self.slot)
        self.n_clients = len(slots)
        self.malicious = self.slot.id in malicious_ids([s.id for s in slots], self.recipe.attack)

    def train_labels(self) -> list[int]:
        """The private labels, flipped when this client runs the label-flip attack."""
        labels = list(self.data.train[1])
        if self.malicious and self.recipe.attack.kind == "label_flip":
            labels = flip_labels(labels, len(self.data.label_names), self.recipe.attack.rng(self.slot.id))
        return labels

    def before(self, handle: EncoderHandle) -> float:
        """The validation accuracy the client started from (measured at its first message)."""
        state = self.context.state
        if STATE_BEFORE not in state:
            state[STATE_BEFORE] = MetricRecord(
                {"acc": accuracy(handle, self.slot.domain, self.data.validation)}
            )
        return float(state[STATE_BEFORE]["acc"])

    def reply(self, msg: Message, arrays: dict[str, np.ndarray], metrics: dict[str, float]) -> Message:
        """The reply: arrays, metrics (``num-examples`` first) and the ``client`` record."""
        info = ConfigRecord(
            {
                "id": self.slot.id,
                "domain": self.slot.domain,
                "malicious": self.malicious,
                "public-sha256": texts_fingerprint(self.data.public[0]),
            }
        )
        content = RecordDict(
            {
                "arrays": ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in arrays.items()}),
                "metrics": MetricRecord({"num-examples": len(self.data.train[0]), **metrics}),
                "client": info,
            }
        )
        return Message(content=content, reply_to=msg)

    def save(self, handle: EncoderHandle, metrics: dict[str, float]) -> Path:
        """Save the client's final model and metrics in its directory."""
        path = self.settings.client_dir(self.slot.id, self.context.node_config)
        provenance = Provenance(
            recipe={"federated": self.recipe.model_dump(mode="json"), "client": self.slot.id},
            name=self.slot.id,
            metrics=dict(metrics),
            extra={"domain": self.slot.domain, "shard": self.slot.shard, "malicious": self.malicious},
        )
        handle.save(path / "model", provenance, overwrite=True)
        atomic_write_json(path / "metrics.json", {"client": self.slot.id, **metrics})
        return path


def train_shared(msg: Message, context: Context, settings: RunSettings) -> Message:
    """FedAvg / FedProx: local training from the global shared weights."""
    run = ClientRun(settings, context)
    recipe, head = run.recipe, run.slot.domain
    champion = cached_model(str(settings.large_model), recipe.max_length)
    before = run.before(champion)  # the champion, whichever round first samples this client
    handle = shared_model(champion, recipe.share, recipe.seed)
    received = {k: a.numpy() for k, a in msg.content["arrays"].items()}
    load_arrays(handle.model, received)
    config = msg.content["config"]
    rnd, total = int(config.get("server-round", 1)), int(config.get("num-rounds", recipe.shared_rounds))
    strategies: list = [TaskLoss()]
    mu = float(config.get("proximal-mu", 0.0))
    heads_only = recipe.head_round is not None and rnd > recipe.rounds
    shared = {name: p.requires_grad for name, p in handle.model.named_parameters()}
    if heads_only:  # the head round: fit this domain's head to the final shared encoder
        for name, parameter in handle.model.named_parameters():
            parameter.requires_grad_(shared[name] and name.startswith(f"heads.{head}."))
        local = recipe.head_round.model_copy(update={"seed": recipe.seed + rnd})
    else:
        if mu > 0:
            strategies.append(ProximalTerm(handle.model, mu))
        local = recipe.local.model_copy(update={"seed": recipe.seed + rnd})
    train_heads(
        handle,
        {head: (run.data.train[0], run.train_labels())},
        local,
        terms=strategies,
        description=f"local-{run.slot.id}",
    )
    handle.model.eval()
    for name, parameter in handle.model.named_parameters():  # send every shared array, as in other rounds
        parameter.requires_grad_(shared[name])
    arrays = trainable_arrays(handle.model)
    after = accuracy(handle, head, run.data.validation)
    metrics = {"acc-before": before, "acc-after": after}
    if rnd >= total and recipe.save_clients:
        run.save(finish_shared(copy.deepcopy(handle)), metrics)
    if run.malicious and boosts_update(recipe.attack):
        keys = list(arrays)
        scale = recipe.attack.resolved_scale(run.n_clients)
        poisoned = attack_arrays(
            recipe.attack.kind, [received[k] for k in keys], [arrays[k] for k in keys], scale
        )
        arrays = dict(zip(keys, poisoned, strict=True))
    return run.reply(msg, arrays, metrics)


def train_mkt(msg: Message, context: Context, settings: RunSettings) -> Message:
    """FedMKT: distil the server's knowledge into the client's own model; send log-probabilities."""
    run = ClientRun(settings, context)
    recipe, head, state = run.recipe, run.slot.domain, context.state
    handle = load_model(settings.client_model(head, context.node_config), recipe.max_length)
    if STATE_MODEL in state:
        handle.model.load_state_dict(state[STATE_MODEL].to_torch_state_dict())
    before = run.before(handle)
    config = msg.content["config"]
    rnd, final = int(config["server-round"]), bool(config.get("final", False))
    knowledge = None
    if "server" in msg.content.array_records:
        record = msg.content["server"]
        knowledge = fedmkt.Knowledge(record["probs"].numpy(), record["weights"].numpy())
        if knowledge.probs.shape[0] != len(run.data.public[0]):
            raise ValueError(
                f"server knowledge covers {knowledge.probs.shape[0]} public texts of {head}, this client holds "
                f"{len(run.data.public[0])}: both sides must read the same data settings"
            )
    train = recipe.mkt.client_train.model_copy(update={"seed": recipe.seed + rnd})
    fedmkt.client_distil(
        handle,
        head,
        (run.data.train[0], run.train_labels()),
        run.data.public[0],
        knowledge,
        recipe.mkt,
        train,
    )
    state[STATE_MODEL] = ArrayRecord(handle.model.state_dict())
    metrics = {"acc-before": before, "acc-after": accuracy(handle, head, run.data.validation)}
    if final:
        if recipe.save_clients:
            run.save(handle, metrics)
        return run.reply(msg, {}, metrics)
    logits = fedmkt.log_probs(handle, head, run.data.public[0])  # (n, C)
    if run.malicious and recipe.attack.kind == "garbage_logits":
        logits = attack_logits(
            logits, recipe.attack.rng(f"{run.slot.id}/{rnd}"), recipe.attack.logit_magnitude
        )
    dp = recipe.privacy.dp
    if dp.enabled:  # fresh entropy: noise the server could regenerate from a seed would protect nothing
        logits = noisy_logits(logits, dp.logit_clip, dp.noise_multiplier, np.random.default_rng())
    return run.reply(msg, {"logits": logits}, metrics)


def client_app(defaults: Mapping[str, Any] | None = None) -> ClientApp:
    """The ClientApp; ``defaults`` fill run-config keys the run does not set (simulation)."""
    app = ClientApp()
    frozen = json.loads(json.dumps(dict(defaults or {})))

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        settings = parse_run_config(context.run_config, frozen)
        handler = make_ffn(lambda m, c: train_shared(m, c, settings), client_mods(settings.recipe.privacy))
        return handler(msg, context)

    @app.train("mkt")
    def mkt(msg: Message, context: Context) -> Message:
        return train_mkt(msg, context, parse_run_config(context.run_config, frozen))

    return app


app = client_app()
