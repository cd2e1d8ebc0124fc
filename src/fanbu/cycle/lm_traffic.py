"""Simulated LM traffic: each domain's prompts through a real server's generation routes, rated and corrected.

The LM cycle needs what a deployment of small LMs would log: users sending the start of a text of their
domain and reading the completion, some rating it and some writing the completion they wanted.
:func:`send_lm_traffic` sends each domain's prompts to a running ``fanbu serve`` over HTTP (alternately
``/v1/generate`` and the OpenAI-compatible ``/v1/completions``, greedy), and posts to ``/v1/feedback``, for
a seeded share of the answers, the **true continuation** as the corrected completion (a user who knew
what they meant), and for another share a 1-5 rating from :func:`overlap_rating` (a user judging the
completion against what they meant). The server's logging store keeps all of it and
``fanbu collect --lm`` curates it.

The prompts must be traffic: cut from texts no model of the cycle trained, validated or is tested on.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

from fanbu.cycle.traffic import post
from fanbu.errors import FanbuError

#: Domain -> (prompt, true continuation) pairs its users send.
LMTraffic = dict[str, list[tuple[str, str]]]
ROUTES = ("/v1/generate", "/v1/completions")


def split_text(text: str, prompt_words: int, continuation_words: int) -> tuple[str, str] | None:
    """``text`` cut into a prompt (its first ``prompt_words`` words) and the true continuation (the next
    ``continuation_words``, with its leading space); None when the text is too short for both."""
    words = text.split()
    if len(words) <= prompt_words:
        return None
    return " ".join(words[:prompt_words]), " " + " ".join(
        words[prompt_words : prompt_words + continuation_words]
    )


def overlap_rating(completion: str, truth: str) -> int:
    """A simulated user's 1-5 rating: 1 + 4 x the unigram F1 of the completion against the continuation
    they meant (case folded), rounded."""
    got, want = Counter(completion.lower().split()), Counter(truth.lower().split())
    common = sum((got & want).values())
    if not common:
        return 1
    precision, recall = common / sum(got.values()), common / sum(want.values())
    return 1 + round(4 * 2 * precision * recall / (precision + recall))


@dataclass
class DomainLMTraffic:
    """What one domain's stream did."""

    sent: int = 0
    answered: int = 0
    rated: int = 0  # ratings posted to /v1/feedback
    corrected: int = 0  # true continuations posted to /v1/feedback
    escalated: int = 0
    judged: int = 0  # sum of the simulated rating over every answer (rated or not)
    models: dict[str, int] = field(default_factory=dict)  # answering version -> answers

    @property
    def mean_rating(self) -> float | None:
        """The simulated users' mean rating of every answer (the served LM's online quality), None before any."""
        return None if not self.answered else self.judged / self.answered


@dataclass
class LMTrafficReport:
    """Per domain, what the stream did, and how long it took."""

    domains: dict[str, DomainLMTraffic]
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: per domain its counts and mean simulated rating, and the seconds."""
        return {
            "domains": {d: {**asdict(t), "mean_rating": t.mean_rating} for d, t in self.domains.items()},
            "seconds": self.seconds,
        }


def _answer(client: httpx.Client, route: str, model: str, prompt: str, max_tokens: int) -> dict[str, Any]:
    """(generation id, text, answering model, escalated) of one greedy request on ``route``."""
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0}
    reply = post(client, route, body)
    text = reply["text"] if route == "/v1/generate" else reply["choices"][0]["text"]
    return {"id": reply["id"], "text": text, "model": reply["model"], "escalated": bool(reply["escalated"])}


def send_lm_traffic(
    client: httpx.Client,
    routes: dict[str, str],
    traffic: LMTraffic,
    ratings: float,
    corrections: float,
    max_tokens: int,
    seed: int,
) -> LMTrafficReport:
    """Send each domain's prompts to the LM ``routes[domain]`` names; rate and correct a share of answers.

    Args:
        client: A client of the server (:func:`fanbu.cycle.traffic.connect`, or a test client).
        routes: Domain -> the served LM or LM cascade its clients name.
        traffic: Domain -> (prompt, true continuation) pairs.
        ratings: Share of the answers rated (1-5, :func:`overlap_rating`) through ``/v1/feedback``.
        corrections: Share of the answers whose true continuation is posted as the corrected completion.
        max_tokens: New tokens per completion.
        seed: Seeds which answers are rated and corrected.

    Raises:
        FanbuError: a share outside 0..1, a domain without a route, or a request the server refused.
    """
    for name, share in (("ratings", ratings), ("corrections", corrections)):
        if not 0.0 <= share <= 1.0:
            raise FanbuError(f"{name} {share}: give a share between 0 and 1")
    missing = sorted(set(traffic) - set(routes))
    if missing:
        raise FanbuError(f"no served LM for the traffic of {missing}; add them to the routes")
    rng = random.Random(seed)
    report: dict[str, DomainLMTraffic] = {}
    started = time.perf_counter()
    for domain in sorted(traffic):
        stats = report[domain] = DomainLMTraffic()
        for index, (prompt, truth) in enumerate(traffic[domain]):
            answer = _answer(client, ROUTES[index % len(ROUTES)], routes[domain], prompt, max_tokens)
            stats.sent += 1
            stats.answered += 1
            stats.escalated += answer["escalated"]
            stats.models[answer["model"]] = stats.models.get(answer["model"], 0) + 1
            rating = overlap_rating(answer["text"], truth)
            stats.judged += rating
            draw = rng.random()
            if draw < corrections:
                post(client, "/v1/feedback", {"prediction_id": answer["id"], "completion": truth})
                stats.corrected += 1
            elif draw < corrections + ratings:
                post(client, "/v1/feedback", {"prediction_id": answer["id"], "rating": rating})
                stats.rated += 1
    return LMTrafficReport(report, time.perf_counter() - started)
