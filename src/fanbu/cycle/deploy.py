"""Steps 2-4 of a generation: serve the small models, collect what they met, adapt them.

A real ``fanbu serve`` process (HTTP, token auth, the logging store in the registry's database) serves
each domain's new small model, behind a cascade to the champion for answers below ``escalate_below``.
Simulated traffic (:mod:`fanbu.cycle.traffic`) sends each domain a block of its private texts that no
model trained on (:func:`fanbu.data.slices.traffic_pairs`; each generation a fresh block), and a
``corrections`` share of the answers gets its true label, as users' corrections would. ``fanbu collect``
curates this generation's logs (its routes only) into a dataset, and ``fanbu adapt`` fine-tunes each
small model on it with replay of its own private slice. The adapted versions are the swarm the
generation feeds back from.

With ``traffic: logs`` nothing is simulated: the logs a deployment has already written are curated
(every route, unless ``routes`` names them).
"""

from __future__ import annotations

import secrets
import tempfile
from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from rich.console import Console

from fanbu.collect import CurateConfig, curate
from fanbu.config import Strict
from fanbu.cycle.traffic import connect, send_traffic
from fanbu.data.slices import SliceSpec, benchmark_of, traffic_pairs
from fanbu.derive.adapt import AdaptConfig, run_adapt
from fanbu.derive.adapt.config import Tier
from fanbu.errors import ConfigError
from fanbu.registry import Registry
from fanbu.serve.loadtest import start_server
from fanbu.train.config import TrainConfig


def _adapt_train() -> TrainConfig:
    return TrainConfig(epochs=2, batch_size=16, lr=1e-4, group_by_length=True, progress=False)


class CycleDeployment(Strict):
    """How a generation's small models serve, are corrected, and keep learning (steps 2-4)."""

    enabled: bool = Field(
        True, description="Serve, collect and adapt every generation; false: feed back from the derived models."
    )
    traffic: Literal["simulate", "logs"] = Field(
        "simulate",
        description="simulate: send each domain a block of its private texts no model trained on, through a "
        "real server; logs: curate what a deployment has already logged.",
    )
    traffic_size: int = Field(200, ge=1, description="Texts per domain per generation (simulate).")
    corrections: float = Field(
        0.1, ge=0, le=1, description="Share of answered texts whose true label users send to /v1/feedback."
    )
    escalate_below: float | None = Field(
        0.5,
        gt=0,
        le=1,
        description="A cascade passes answers below this confidence to the champion, whose label is logged "
        "(the 'hard' tier); null: the small model answers alone.",
    )
    min_confidence: float = Field(0.9, ge=0, le=1, description="Answers this confident become pseudo-labels.")
    routes: list[str] | None = Field(
        None, description="With traffic: logs, only these served routes' predictions (default: all)."
    )
    tiers: list[Tier] = Field(
        default_factory=lambda: ["human", "pseudo", "hard"], description="Collected tiers adapt learns from."
    )
    max_examples: int | None = Field(None, ge=1, description="Cap on collected examples per domain.")
    replay: float = Field(1.0, ge=0, description="Replay examples of each model's private slice per collected one.")
    train: TrainConfig = Field(default_factory=_adapt_train, description="The adapt loop's settings.")


def deploy_and_adapt(
    settings: CycleDeployment,
    data: SliceSpec,
    max_train: int | None,
    registry: Registry,
    label: str,
    generation: int,
    champion: str,
    small: dict[str, str],
    seed: int,
    console: Console,
) -> dict[str, Any]:
    """Serve ``small`` (domain -> model id), collect, adapt; the summary, with ``adapted`` (domain -> id).

    ``label`` names this generation's routes and dataset (e.g. the cycle's id). A domain keeps its model
    (``skipped`` says why) when its collection has nothing to learn from, or when the adapted version
    scores below it on the domain's validation split.
    """
    routes = {domain: f"{label}-g{generation}-{domain}" for domain in sorted(small)}
    if settings.escalate_below is None:
        routes = dict(small)  # clients name the small models themselves
    summary: dict[str, Any] = {"routes": routes}
    if settings.traffic == "simulate":
        summary["traffic"] = _simulate(settings, data, max_train, registry, generation, champion, small, routes, seed)
        targets: list[str] | None = list(routes.values())
    else:
        targets = settings.routes
    collect = CurateConfig(
        name=f"{label}-g{generation}", domains=sorted(small), targets=targets, min_confidence=settings.min_confidence
    )
    record, counts = curate(registry, collect)
    summary["collected"] = {"dataset": record.id, "counts": counts}
    console.print(f"collected {record.id}: {_tier_counts(counts)}", highlight=False)
    adapted, skipped, runs = dict(small), {}, {}
    for domain, model in sorted(small.items()):
        config = AdaptConfig(
            model=model,
            collected=record.id,
            domain=domain,
            tiers=settings.tiers,
            max_examples=settings.max_examples,
            replay=settings.replay,
            train=settings.train.model_copy(update={"seed": seed}),
            seed=seed,
        )
        try:
            runs[domain] = run_adapt(config, registry)
        except ConfigError as exc:
            if "nothing to adapt on" not in str(exc):
                raise
            skipped[domain] = str(exc)
            console.print(f"[yellow]{domain}[/]: not adapted ({exc})", highlight=False)
            continue
        accuracy = runs[domain]["validation_accuracy"]
        if accuracy["after"] < accuracy["before"]:  # a validation-split choice: never serve a regression
            skipped[domain] = (
                f"{runs[domain]['model']} scored {accuracy['after']:.3f} on validation, below {model}'s "
                f"{accuracy['before']:.3f}; {model} stays the domain's model"
            )
            console.print(f"[yellow]{domain}[/]: {skipped[domain]}", highlight=False)
            continue
        adapted[domain] = runs[domain]["model"]
    summary.update(adapted=adapted, skipped=skipped, adapt=runs)
    return summary


def _simulate(
    settings: CycleDeployment,
    data: SliceSpec,
    max_train: int | None,
    registry: Registry,
    generation: int,
    champion: str,
    small: dict[str, str],
    routes: dict[str, str],
    seed: int,
) -> dict[str, Any]:
    if registry.home is None:
        raise ConfigError("deployment.traffic: simulate serves from the registry's home; open it with --home")
    bench = benchmark_of(data)
    traffic = {}
    for domain in small:
        texts, labels = traffic_pairs(bench.private(domain), max_train, data.seed, settings.traffic_size, generation)
        names = bench.domain(domain).label_names
        traffic[domain] = (texts, [names[label] for label in labels])
    if settings.escalate_below is None:
        served = [f"models=[{','.join(small.values())}]", "only_listed=true"]
    else:
        cascades = ", ".join(
            f"{routes[d]}: {{small: '{small[d]}', large: '{champion}', threshold: {settings.escalate_below}}}"
            for d in sorted(small)
        )
        served = [f"cascades={{{cascades}}}", "only_listed=true"]
    # The simulated clients send the domains' texts whole (a 20 Newsgroups post can run to 30,000
    # characters; the model reads its first max_length tokens), so the server's limits are set to fit
    # them: 8 texts a request, up to 6 bytes of JSON per character.
    longest = max((len(t) for texts, _ in traffic.values() for t in texts), default=1)
    served += [f"limits.max_text_chars={max(20_000, longest)}", f"limits.max_body_bytes={max(1 << 20, 48 * longest)}"]
    token = secrets.token_hex(16)
    log = Path(tempfile.mkdtemp(prefix="fanbu-cycle-serve-")) / "serve.log"
    server = start_server(Path(registry.home), served, token, log)
    try:
        with connect(server.url, token) as client:
            report = send_traffic(client, routes, traffic, settings.corrections, seed)
    finally:
        server.stop()
    return report.as_dict()


def _tier_counts(counts: dict[str, Any]) -> str:
    return "; ".join(
        f"{domain} " + ", ".join(f"{tier} {n}" for tier, n in tiers.items()) for domain, tiers in counts["domains"].items()
    )
