"""Shared fixtures of the feedback tests: tiny large v0, tiny experts, toy public data, a poisoned expert.

Session-scoped models are built once and shared: a test that trains one must copy it first
(strategies themselves never modify ``ctx.large`` or the experts, and the tests check that).
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Iterator

import pytest
import torch
from feedback_helpers import DOMAINS, HELDOUT, PUBLIC_WORDS, labels_of, make_texts, one_thread, quick

from fanbu.feedback import FeedbackContext
from fanbu.models import EncoderHandle
from fanbu.train.classify import train_heads


@pytest.fixture(scope="session")
def toy_data() -> dict:
    """public / private / validation / test per domain, unlabeled texts, and the held-out task's data.

    ``heldout_train`` is what large v0 learned the held-out task from; ``heldout_test`` measures
    forgetting. Neither goes into a feedback context.
    """
    data: dict = {"public": {}, "private": {}, "validation": {}, "test": {}, "unlabeled": []}
    for domain in DOMAINS:
        data["public"][domain] = make_texts(domain, 24, 0, words=PUBLIC_WORDS)
        data["private"][domain] = make_texts(domain, 120, 1)
        data["validation"][domain] = make_texts(domain, 48, 2)
        data["test"][domain] = make_texts(domain, 60, 3)
        data["unlabeled"] += make_texts(domain, 48, 4)[0]
    random.Random(0).shuffle(data["unlabeled"])
    data["heldout_train"] = {task: make_texts(task, 48, 0) for task in HELDOUT}
    data["heldout_test"] = {task: make_texts(task, 60, 3) for task in HELDOUT}
    return data


@pytest.fixture(scope="session")
def large_v0(toy_data) -> EncoderHandle:
    """The champion: a tiny encoder with a head per domain and per held-out task, trained on public data."""
    handle = EncoderHandle.tiny(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, seed=0)
    torch.manual_seed(0)  # the heads' initialisation
    for task in (*DOMAINS, *HELDOUT):
        handle.add_head(task, labels_of(task))
    with one_thread():
        train_heads(handle, {**toy_data["public"], **toy_data["heldout_train"]}, quick(epochs=10))
    handle.model.eval()
    return handle


def _fine_tune(
    base: EncoderHandle, domain: str, pairs: tuple[list[str], list[int]], epochs: int
) -> EncoderHandle:
    expert = copy.deepcopy(base)
    torch.manual_seed(1)
    with one_thread():
        train_heads(expert, {domain: pairs}, quick(epochs=epochs))
    expert.model.eval()
    return expert


@pytest.fixture(scope="session")
def experts(large_v0, toy_data) -> dict[str, EncoderHandle]:
    """Full fine-tunes of large v0 on each domain's private slice (same architecture and heads as v0)."""
    return {d: _fine_tune(large_v0, d, toy_data["private"][d], epochs=4) for d in DOMAINS}


@pytest.fixture(scope="session")
def narrow_experts(toy_data) -> dict[str, EncoderHandle]:
    """Smaller experts (hidden 16, one layer, only their domain's head) trained on the private slices."""
    result = {}
    for index, domain in enumerate(DOMAINS):
        handle = EncoderHandle.tiny(
            hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32, seed=10 + index
        )
        torch.manual_seed(10 + index)
        handle.add_head(domain, labels_of(domain))
        with one_thread():
            train_heads(handle, {domain: toy_data["private"][domain]}, quick(epochs=12))
        handle.model.eval()
        result[domain] = handle
    return result


@pytest.fixture(scope="session")
def poisoned_expert(large_v0, toy_data) -> EncoderHandle:
    """An expert for ``tech`` fine-tuned on its private slice with shuffled labels."""
    texts, labels = toy_data["private"]["tech"]
    shuffled = list(labels)
    random.Random(7).shuffle(shuffled)
    return _fine_tune(large_v0, "tech", (texts, shuffled), epochs=6)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Every feedback test runs torch on one thread (restored afterwards)."""
    with one_thread():
        yield


@pytest.fixture
def make_context(large_v0, experts, toy_data, tmp_path) -> Callable[..., FeedbackContext]:
    """Build a :class:`FeedbackContext` over the toy data; ``experts`` and ``unlabeled`` can be swapped."""

    def make(
        swarm: dict[str, EncoderHandle] | None = None, unlabeled: bool = True, seed: int = 0
    ) -> FeedbackContext:
        return FeedbackContext(
            large=large_v0,
            experts=dict(experts if swarm is None else swarm),
            public=dict(toy_data["public"]),
            validation=dict(toy_data["validation"]),
            unlabeled=list(toy_data["unlabeled"]) if unlabeled else [],
            work_dir=tmp_path,
            seed=seed,
        )

    return make


@pytest.fixture
def weights_of() -> Callable[[EncoderHandle], dict[str, torch.Tensor]]:
    """A detached copy of a handle's weights (to check that a model was left untouched)."""
    return lambda handle: {k: v.detach().clone() for k, v in handle.model.state_dict().items()}
