"""The LM cascade: the small LM answers, escalating to the large one below a mean log-prob threshold
that is tuned from the logs to a target escalation rate."""

from __future__ import annotations

import math

from fastapi.testclient import TestClient

from fanbu.collect.store import LogStore
from fanbu.serve.cascade import tune_threshold
from tests.serve.helpers import TEXTS
from tests.serve.test_generate import sse

CASCADE = {"small": "lm-small", "large": "lm-large"}


def ask(client: TestClient, model: str, prompt: str, **extra: object) -> dict:
    body = {"model": model, "prompt": prompt, "max_tokens": 5, "temperature": 0, **extra}
    response = client.post("/v1/generate", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def test_escalates_below_the_threshold_and_logs_both(make_client, lms: list[str], store: LogStore) -> None:
    client = make_client(
        lm_cascades={"never": {**CASCADE, "threshold": -1e9}, "always": {**CASCADE, "threshold": 0.0}}
    )
    never = [ask(client, "never", t) for t in TEXTS[:3]]
    assert not any(g["escalated"] for g in never) and {g["model"] for g in never} == {"lm-small:v0"}
    always = [ask(client, "always", t) for t in TEXTS[:3]]
    assert all(g["escalated"] for g in always) and {g["model"] for g in always} == {"lm-large:v0"}
    logged = {g.id: g for g in store.generations()}
    for g in always:
        assert {a.role: a.model_id for a in logged[g["id"]].answers} == {
            "small": "lm-small:v0",
            "large": "lm-large:v0",
        }
        assert logged[g["id"]].escalated and logged[g["id"]].final.mean_logprob == g["mean_logprob"]
    small_alone = ask(client, "lm-small", TEXTS[0])
    assert small_alone["text"] == never[0]["text"]  # the cascade's small answer is the small LM's own


def test_threshold_splits_by_mean_logprob(make_client, lms: list[str]) -> None:
    probe = make_client(models=lms)
    means = sorted(ask(probe, "lm-small", t)["mean_logprob"] for t in TEXTS)
    threshold = (means[2] + means[3]) / 2
    client = make_client(lm_cascades={"mid": {**CASCADE, "threshold": threshold}})
    assert sum(ask(client, "mid", t)["escalated"] for t in TEXTS) == 3


def test_threshold_is_tuned_from_the_logs_to_the_target_rate(
    make_client, lms: list[str], store: LogStore
) -> None:
    probe = make_client(models=lms)
    prompts = [
        f"{a} {b}"
        for a in ("the", "a", "science", "game", "doctor")
        for b in ("team", "price", "world", "law")
    ]
    for prompt in prompts:
        ask(probe, "lm-small", prompt)
    seen = store.mean_logprobs("lm-small:v0")
    assert len(seen) == len(prompts)
    rate = 0.25
    cascade = {**CASCADE, "target_escalation_rate": rate, "min_samples": len(prompts)}
    client = make_client(lm_cascades={"tuned": cascade})
    threshold = client.get("/v1/models").json()["lm_routes"]["tuned"]["threshold"]
    assert threshold == tune_threshold(seen, rate)
    share = sum(v < threshold for v in seen) / len(seen)
    assert share <= rate and share >= rate - 1 / len(seen) - 1e-9  # the quantile, up to ties
    escalated = sum(ask(client, "tuned", p)["escalated"] for p in prompts)  # greedy: the same completions
    assert math.isclose(escalated / len(prompts), share)
    too_few = make_client(
        lm_cascades={"kept": {**cascade, "min_samples": len(prompts) + 1, "threshold": -3.0}}
    )
    assert too_few.get("/v1/models").json()["lm_routes"]["kept"]["threshold"] == -3.0


def test_an_escalated_stream_is_the_large_lm_answer(make_client, lms: list[str]) -> None:
    client = make_client(
        lm_cascades={"always": {**CASCADE, "threshold": 0.0}, "never": {**CASCADE, "threshold": -1e9}}
    )
    for name in ("always", "never"):
        whole = ask(client, name, "the doctor said")
        response = client.post(
            "/v1/generate",
            json={
                "model": name,
                "prompt": "the doctor said",
                "max_tokens": 5,
                "temperature": 0,
                "stream": True,
            },
        )
        events = sse(response.text)
        assert "".join(e["text"] for e in events[:-2] if isinstance(e, dict)) == whole["text"]
        assert events[-2]["escalated"] == whole["escalated"] == (name == "always")
