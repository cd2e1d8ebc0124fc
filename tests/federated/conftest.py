"""Shared fixtures of the federated tests: toy domains in JSONL files, a tiny large v0, small clients.

Each class of a toy domain has six signal words; a text holds two of them among filler words. Large
v0 learns from a few public examples only, so federated training on the private shards (or the
clients' knowledge) has something to add. The files are what every client and the server read,
exactly as organisations would read their own data in a deployment.
"""

from __future__ import annotations

import os

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")  # before Flower is imported: no calls home

import copy
import json
import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
from flwr.app import Context, Error, Message, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.serverapp import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

from fanbu.data.loaders import DomainSource
from fanbu.federated.client_app import client_app
from fanbu.federated.data import slots_of
from fanbu.federated.recipe import FederatedRecipe
from fanbu.federated.run import FederatedResult, collect, save_inputs
from fanbu.federated.server_app import server_app
from fanbu.federated.settings import RunSettings
from fanbu.models.encoder import EncoderHandle
from fanbu.train.classify import train_heads
from fanbu.train.config import TrainConfig

DOMAINS: dict[str, dict[str, list[str]]] = {
    "tech": {
        "software": ["software", "program", "data", "model", "models", "learning"],
        "hardware": ["hardware", "computer", "system", "power", "light", "car"],
        "science": ["science", "space", "water", "air", "field", "study"],
    },
    "health": {
        "disease": ["disease", "patient", "patients", "death", "body", "life"],
        "treatment": ["treatment", "drug", "doctor", "medical", "health", "help"],
        "risk": ["risk", "problem", "problems", "question", "case", "matter"],
    },
}
HELDOUT = {
    "mood": {
        "positive": ["good", "great", "excellent", "happy"],
        "negative": ["bad", "poor", "terrible", "sad"],
    }
}
FILLER = ["the", "of", "and", "to", "in", "is", "was", "for", "on", "that", "with", "people", "time", "year"]


def make_rows(task: str, n: int, seed: int) -> list[dict[str, str]]:
    """``n`` JSONL rows of ``task``, labels balanced: two signal words among four filler words."""
    classes = {**DOMAINS, **HELDOUT}[task]
    rng = random.Random(f"{task}-{seed}")
    rows = []
    for i in range(n):
        label = list(classes)[i % len(classes)]
        words = rng.sample(classes[label], 2) + rng.sample(FILLER, 4)
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": label})
    return rows


def write_jsonl(path: Path, rows: list[dict[str, str]]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def quick(epochs: int, lr: float = 3e-3, batch_size: int = 8) -> TrainConfig:
    """Loop settings for tiny models: a high learning rate, no progress bar."""
    return TrainConfig(
        epochs=epochs, batch_size=batch_size, lr=lr, warmup_ratio=0.0, progress=False, restore_best=False
    )


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one thread (the machine's other core is the Ray worker's)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="session")
def toy_files(tmp_path_factory) -> dict[str, Any]:
    """JSONL files per domain (train / validation / test) and the held-out task; DomainSource lists."""
    root = tmp_path_factory.mktemp("fed-data")
    sources, heldout = [], []
    for name in (*DOMAINS, *HELDOUT):
        files = {
            split: write_jsonl(root / f"{name}-{split}.jsonl", make_rows(name, n, seed))
            for split, n, seed in (("train", 96, 0), ("validation", 36, 1), ("test", 36, 2))
        }
        labels = list({**DOMAINS, **HELDOUT}[name])
        source = DomainSource(
            name=name,
            train=files["train"],
            validation=files["validation"],
            test=files["test"],
            label_names=labels,
        )
        (heldout if name in HELDOUT else sources).append(source)
    return {"files": sources, "heldout_files": heldout, "root": root}


def data_section(toy_files: dict[str, Any]) -> dict[str, Any]:
    """The recipe's data section over the toy files (public: a quarter of train)."""
    return {
        "source": "files",
        "files": [s.model_dump(mode="json") for s in toy_files["files"]],
        "heldout_files": [s.model_dump(mode="json") for s in toy_files["heldout_files"]],
        "public_fraction": 0.25,
        "max_validation": 36,
    }


def make_recipe(toy_files: dict[str, Any], **settings: Any) -> FederatedRecipe:
    """A recipe over the toy files: tiny-model training settings, one Ray CPU per client."""
    base: dict[str, Any] = {
        "data": data_section(toy_files),
        "rounds": 2,
        "local": quick(2).model_dump(),
        "simulation": {"num_cpus": 2, "client_cpus": 1.0},
        "gate": {"tolerance": 0.5, "require_mean_not_worse": False},
    }
    base.update(settings)
    return FederatedRecipe.model_validate(base)


@pytest.fixture(scope="session")
def large_v0(toy_files) -> EncoderHandle:
    """The champion: a tiny encoder with a head per domain and the held-out task, trained on few examples."""
    handle = EncoderHandle.tiny(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, seed=0)
    torch.manual_seed(0)
    for task, classes in {**DOMAINS, **HELDOUT}.items():
        handle.add_head(task, list(classes))
    train = {}
    for task in (*DOMAINS, *HELDOUT):
        rows = make_rows(task, 12 if task in DOMAINS else 48, 9)
        train[task] = (
            [r["text"] for r in rows],
            [list({**DOMAINS, **HELDOUT}[task]).index(r["label"]) for r in rows],
        )
    with one_thread():
        train_heads(handle, train, quick(epochs=3))
    handle.model.eval()
    return handle


@pytest.fixture(scope="session")
def small_clients(toy_files) -> dict[str, EncoderHandle]:
    """Narrow students (hidden 16, one layer, their domain's head) each domain's clients start from."""
    result = {}
    for index, (domain, classes) in enumerate(DOMAINS.items()):
        handle = EncoderHandle.tiny(
            hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32, seed=10 + index
        )
        torch.manual_seed(10 + index)
        handle.add_head(domain, list(classes))
        rows = make_rows(domain, 12, 11)
        with one_thread():
            train_heads(
                handle,
                {domain: ([r["text"] for r in rows], [list(classes).index(r["label"]) for r in rows])},
                quick(epochs=2),
            )
        handle.model.eval()
        result[domain] = handle
    return result


class LocalGrid(Grid):
    """A Flower Grid that runs a ClientApp in this process, node by node (no Ray, no network).

    Every node keeps its own ``Context`` (node config and state) across rounds, as a SuperNode does;
    each message is deep-copied before delivery, as the network would. For fast tests of the apps'
    logic; the simulation and deployment tests run the same apps under Flower's real runtimes.
    """

    def __init__(self, client, node_configs: list[dict[str, Any]], run_config: dict[str, str] | None = None):
        self.client = client
        self.contexts = {
            index + 1: Context(
                run_id=1,
                node_id=index + 1,
                node_config=dict(config),
                state=RecordDict(),
                run_config=dict(run_config or {}),
            )
            for index, config in enumerate(node_configs)
        }
        self._run = Run.create_empty(run_id=1)
        self.replies: dict[str, Message] = {}

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None) -> Message:
        return Message(content=content, dst_node_id=dst_node_id, message_type=message_type, group_id=group_id)

    def get_node_ids(self) -> list[int]:
        return list(self.contexts)

    def push_messages(self, messages) -> list[str]:
        """Deliver each message now; its reply waits under the returned id."""
        ids = []
        for message in messages:
            delivered = copy.deepcopy(message)
            context = self.contexts[message.metadata.dst_node_id]
            try:
                reply = self.client(delivered, context)
            except Exception as exc:  # noqa: BLE001 - a failing ClientApp answers with an error, as under Flower
                reply = Message(Error(code=0, reason=f"{type(exc).__name__}: {exc}"), reply_to=delivered)
            ids.append(str(len(self.replies)))
            self.replies[ids[-1]] = reply
        return ids

    def pull_messages(self, message_ids) -> list[Message]:
        """The replies of ``message_ids`` (removed once pulled)."""
        return [self.replies.pop(i) for i in message_ids if i in self.replies]

    def send_and_receive(self, messages, *, timeout=None) -> list[Message]:
        return self.pull_messages(self.push_messages(messages))


def run_local(settings, node_count: int) -> None:
    """Run the ServerApp and ClientApp built from ``settings`` over a :class:`LocalGrid`."""
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, SUPERLINK_NODE_ID
    defaults = settings.to_run_config()
    grid = LocalGrid(
        client_app(defaults), [{"partition-id": i, "num-partitions": node_count} for i in range(node_count)]
    )
    context = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={})
    server_app(defaults)(grid, context)


def federate_local(
    recipe: FederatedRecipe,
    large: EncoderHandle,
    work: Path,
    client_models: dict[str, EncoderHandle] | None = None,
) -> FederatedResult:
    """:func:`fanbu.federated.run.federate`, with the apps run over a :class:`LocalGrid` instead of Ray."""
    large_path, client_paths = save_inputs(large, client_models, work)
    settings = RunSettings(recipe, work, large_path, client_paths)
    with one_thread():
        run_local(settings, len(slots_of(recipe)))
    return collect(settings)


def local_runner(settings: RunSettings) -> None:
    """A ``run_federated`` runner that uses the :class:`LocalGrid`."""
    with one_thread():
        run_local(settings, len(slots_of(settings.recipe)))
