"""Steps 2-3 of an LM generation: serve the small LMs, send them traffic, collect what users said.

A real ``fanbu serve`` process (HTTP, token auth, the logging store in the registry's database) serves each
domain's new small LM, alone or behind an LM cascade to the champion for completions whose mean token
log-probability is below ``escalate_below``. Simulated users (:mod:`fanbu.cycle.lm_traffic`) send each
domain prompts cut from its private texts that no model trained on (a fresh block every generation),
rate some completions and correct others with the true continuation. ``fanbu collect --lm`` then curates
this generation's generations (its routes only) into a registered prompt/completion dataset. A small LM
reused by a later generation (``on_no_promotion: continue``) serves under the same name, so its earlier
logs are collected again with the new ones: they are its deployment's logs.
"""

from __future__ import annotations

import secrets
import tempfile
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from fanbu.collect import LMCurateConfig, curate_lm
from fanbu.config import Strict
from fanbu.cycle.lm_traffic import send_lm_traffic, split_text
from fanbu.cycle.traffic import connect
from fanbu.errors import ConfigError
from fanbu.registry import Registry
from fanbu.serve.loadtest import start_server


class LMCycleDeployment(Strict):
    """How a generation's small LMs serve, and what their simulated users send back."""

    enabled: bool = Field(
        True, description="Serve and collect every generation; false: feed back without traffic."
    )
    traffic_size: int = Field(10, ge=1, description="Prompts per domain per generation (a fresh block each).")
    prompt_words: int = Field(32, ge=1, description="Words of a traffic text sent as the prompt.")
    continuation_words: int = Field(
        16, ge=1, description="Words after the prompt that are the true continuation (the users' correction)."
    )
    max_tokens: int = Field(24, ge=1, description="New tokens per completion (greedy).")
    ratings: float = Field(0.3, ge=0, le=1, description="Share of the completions users rate 1-5.")
    corrections: float = Field(
        0.2, ge=0, le=1, description="Share of the completions users correct with the true continuation."
    )
    escalate_below: float | None = Field(
        None,
        le=0,
        description="An LM cascade passes completions whose mean token log-probability is below this to "
        "the champion; null: the small LM answers alone.",
    )
    min_rating: int = Field(3, ge=1, le=5, description="Collected completions rated below this are dropped.")
    keep_unrated: bool = Field(
        False, description="Also collect completions nobody rated or corrected (the model's own words)."
    )

    @model_validator(mode="after")
    def _shares(self) -> LMCycleDeployment:
        if self.ratings + self.corrections > 1:
            raise ValueError(
                f"ratings {self.ratings} + corrections {self.corrections} exceed 1: each completion gets "
                "at most one of them; lower one"
            )
        return self


def prompt_pairs(settings: LMCycleDeployment, texts: list[str], domain: str) -> list[tuple[str, str]]:
    """(prompt, true continuation) of every text long enough to have both; a ConfigError if none is."""
    pairs = [
        p for p in (split_text(t, settings.prompt_words, settings.continuation_words) for t in texts) if p
    ]
    if not pairs:
        raise ConfigError(
            f"deployment.prompt_words: no traffic text of {domain!r} is longer than {settings.prompt_words} "
            "words; lower prompt_words"
        )
    return pairs


def deploy_lm(
    settings: LMCycleDeployment,
    traffic: dict[str, list[str]],
    registry: Registry,
    label: str,
    generation: int,
    champion: str,
    small: dict[str, str],
    seed: int,
) -> dict[str, Any]:
    """Serve ``small`` (domain -> LM id) to ``traffic`` (domain -> texts), collect; the summary.

    ``label`` names this generation's routes and dataset (e.g. the cycle's id); the summary holds the
    routes, what the traffic did and the collected dataset (``collected.dataset``, its counts).
    """
    if registry.home is None:
        raise ConfigError("deployment: serving reads the registry's home; open it with --home")
    prompts = {domain: prompt_pairs(settings, traffic[domain], domain) for domain in sorted(small)}
    if settings.escalate_below is None:
        routes = dict(small)  # clients name the small LMs themselves
        served = [f"models=[{','.join(small.values())}]", "only_listed=true"]
    else:
        routes = {domain: f"{label}-g{generation}-{domain}" for domain in sorted(small)}
        cascades = ", ".join(
            f"{routes[d]}: {{small: '{small[d]}', large: '{champion}', threshold: {settings.escalate_below}}}"
            for d in sorted(small)
        )
        served = [f"lm_cascades={{{cascades}}}", "only_listed=true"]
    token = secrets.token_hex(16)
    log = Path(tempfile.mkdtemp(prefix="fanbu-lm-cycle-serve-")) / "serve.log"
    server = start_server(Path(registry.home), served, token, log)
    try:
        with connect(server.url, token) as client:
            report = send_lm_traffic(
                client, routes, prompts, settings.ratings, settings.corrections, settings.max_tokens, seed
            )
    finally:
        server.stop()
    collect = LMCurateConfig(
        name=f"{label}-g{generation}",
        targets=sorted(set(routes.values())),
        min_rating=settings.min_rating,
        keep_unrated=settings.keep_unrated,
    )
    record, counts = curate_lm(registry, collect)
    return {
        "routes": routes,
        "traffic": report.as_dict(),
        "collected": {"dataset": record.id, "counts": counts},
    }
