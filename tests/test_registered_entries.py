"""Every registered entry, run on tiny models: derive stages, feedback strategies, robust rules, privacy modes.

The parameters are read from the catalogs (:mod:`fanbu.registration`) at import, so a new registration is
covered as soon as it exists: it must declare a summary and an http(s) reference, and pass its kind's
checks on tiny random-initialised models and toy data (the swarm of ``tests/feedback/_merge_fixtures``,
the Flower helpers of ``tests/federated``). Stages and strategies get tiny settings: a one-epoch quick
``train`` where their config has one, expert selection off, small targets for the pruning stages.
"""

from __future__ import annotations

import os

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")  # before Flower is imported: no calls home

import copy
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from pydantic import BaseModel

HERE = Path(__file__).resolve().parent
for helpers in (HERE / "feedback", HERE / "federated"):  # their helper modules import each other by name
    if str(helpers) not in sys.path:
        sys.path.insert(0, str(helpers))

from _merge_fixtures import TASKS, tiny_large, tiny_swarm, toy_task
from feedback_helpers import one_thread, quick, quick_dict
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from test_privacy import RecordingGrid, secagg_clients, secagg_error_bound, start_arrays
from test_robust import LoopbackGrid, reply, task_identity  # noqa: F401 - task_identity is autouse

from fanbu.config import validate
from fanbu.derive.data import DomainData
from fanbu.derive.prune import PruneConfig, prune_encoder
from fanbu.derive.stages import STAGES, StageContext, StageOutput
from fanbu.errors import ConfigError
from fanbu.evaluate.speed import param_count
from fanbu.federated.privacy import PRIVACY_MODES, DPConfig, DPSide, PrivacyConfig, client_mods
from fanbu.federated.robust import RULES, RobustConfig, aggregate_logits, make_strategy
from fanbu.feedback import STRATEGIES, FeedbackContext, StrategyOutput
from fanbu.feedback.recipe import FeedbackCore
from fanbu.models import EncoderHandle, load_handle
from fanbu.models.artefact import Provenance
from fanbu.registration import Catalog, Entry, NoSettings
from fanbu.registry import RELATIONS
from fanbu.train.classify import train_heads

CATALOGS: dict[str, Catalog[Any]] = {
    "stage": STAGES,
    "strategy": STRATEGIES,
    "rule": RULES,
    "privacy": PRIVACY_MODES,
}
EVERY_ENTRY = [(kind, name) for kind, catalog in CATALOGS.items() for name in catalog.names()]


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run several times faster on one thread on a shared, loaded CPU."""
    with one_thread():
        yield


def tiny_settings(config: type[BaseModel], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Settings that keep an entry tiny: a quick one-epoch loop, expert selection off, then ``extra``."""
    settings: dict[str, Any] = {}
    if "train" in config.model_fields:
        settings["train"] = quick_dict(epochs=1)
    if "selection" in config.model_fields:
        settings["selection"] = {"enabled": False}
    return {**settings, **(extra or {})}


# --------------------------------------------------------------------------- every catalog


@pytest.mark.parametrize(("kind", "name"), EVERY_ENTRY, ids=[f"{k}-{n}" for k, n in EVERY_ENTRY])
def test_every_entry_declares_a_summary_a_reference_and_a_config(kind: str, name: str) -> None:
    catalog = CATALOGS[kind]
    entry = catalog.get(name)
    assert isinstance(entry, Entry) and entry.name == name
    assert entry.summary.strip()
    assert entry.reference.startswith(("https://", "http://"))
    assert issubclass(entry.config, BaseModel)
    assert entry.capabilities <= set(catalog.capabilities)
    assert entry.impl is not None


def test_a_catalog_refuses_bad_registrations_and_names_what_it_knows() -> None:
    catalog: Catalog[Entry] = Catalog("widget", field="widgets", capabilities={"shiny": "it shines"})
    register = catalog.register

    @register("bolt", summary="A bolt.", reference="https://example.org/bolt", config=NoSettings)
    def bolt() -> str:
        return "bolt"

    register(
        "gear", summary="A gear.", reference="https://example.org", config=NoSettings, capabilities={"shiny"}
    )(object())
    assert bolt() == "bolt" and catalog.get("bolt").impl is bolt
    assert catalog.names() == ["bolt", "gear"] and list(catalog) == ["bolt", "gear"] and "gear" in catalog
    assert [e.name for e in catalog.with_capability("shiny")] == ["gear"]
    with pytest.raises(ValueError, match="registered twice"):
        register("bolt", summary="Again.", reference="https://example.org", config=NoSettings)
    with pytest.raises(ValueError, match="summary"):
        register("nut", summary=" ", reference="https://example.org", config=NoSettings)
    with pytest.raises(ValueError, match="reference"):
        register("nut", summary="A nut.", reference="", config=NoSettings)
    with pytest.raises(ValueError, match="unknown capabilities"):
        register(
            "nut", summary="A nut.", reference="https://example.org", config=NoSettings, capabilities={"dull"}
        )
    with pytest.raises(ValueError, match="unknown capability"):
        catalog.with_capability("shinny")
    with pytest.raises(ConfigError, match="unknown widget 'nut'; known: bolt, gear"):
        catalog.get("nut")
    assert catalog.parse(["bolt", {"gear": None}]) == [("bolt", NoSettings()), ("gear", NoSettings())]
    with pytest.raises(ConfigError, match=r"widgets\.1: unknown widget 'nut'"):
        catalog.parse(["bolt", {"nut": {}}])
    with pytest.raises(ConfigError, match=r"widgets\.0: write each widget as \{name: \{settings\}\}"):
        catalog.parse([{"bolt": {}, "gear": {}}])
    with pytest.raises(ConfigError, match=r"widgets\.0\.bolt\.size: unknown key"):
        catalog.parse([{"bolt": {"size": 3}}])


# --------------------------------------------------------------------------- derive stages

STAGE_DOMAIN = "topic"
TINY_STAGES: dict[str, dict[str, Any]] = {
    "ssl": {"steps": 4, "batch_size": 8},
    "prune": {"layers": 1, "heads": 2, "hidden": 16, "ffn": 0.5, "vocab": 200, "calibration": 32},
    "quantize": {"check_texts": 4},
    "search": {
        "trials": 2,
        "budget": {"max_param_ratio": 0.95},
        "trial_examples": 16,
        "trial_epochs": 1,
        "importance": "magnitude",
        "calibration": 32,
        "space": {"layers": [1], "heads": [2, 4], "ffn": [0.5], "vocab": [200]},
    },
}


@pytest.fixture(scope="module")
def stage_inputs() -> tuple[EncoderHandle, DomainData]:
    """A tiny encoder briefly trained on one toy domain (the model every stage starts from) and its data."""
    labels, _ = TASKS[STAGE_DOMAIN]
    data = DomainData(
        name=STAGE_DOMAIN,
        label_names=tuple(labels),
        train=toy_task(STAGE_DOMAIN, 64, seed=2),
        validation=toy_task(STAGE_DOMAIN, 32, seed=3),
        test=toy_task(STAGE_DOMAIN, 32, seed=4),
        transfer=(),
        fingerprints={},
    )
    handle = EncoderHandle.tiny(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64, seed=0)
    torch.manual_seed(0)
    handle.add_head(STAGE_DOMAIN, labels)
    with one_thread():
        train_heads(handle, {STAGE_DOMAIN: data.train}, quick(epochs=3))
    handle.model.eval()
    return handle, data


@pytest.mark.parametrize("name", STAGES.names())
def test_every_stage_makes_a_model_that_predicts_and_reloads(name: str, stage_inputs, tmp_path: Path) -> None:
    base, data = stage_inputs
    info = STAGES.get(name)
    config = validate(info.config, tiny_settings(info.config, TINY_STAGES.get(name)), source=name)
    before = {k: v.clone() for k, v in base.model.state_dict().items()}
    ctx = StageContext(data=data, teacher=base, work_dir=tmp_path / "work", seed=0)
    out = info.run(copy.deepcopy(base), ctx, config)

    assert isinstance(out, StageOutput) and out.relation in RELATIONS
    texts = data.test[0]
    probs = out.handle.predict_proba(texts, STAGE_DOMAIN)
    assert probs.shape == (len(texts), len(data.label_names))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    if info.makes_student:  # a student is physically smaller than its teacher
        assert param_count(out.handle.model) < param_count(base.model)
    assert all(torch.equal(v, before[k]) for k, v in base.model.state_dict().items())  # the teacher is intact

    path = tmp_path / "saved"
    (out.save or out.handle.save)(
        path, Provenance(name=f"{STAGE_DOMAIN}.{name}", base_model_relation=out.hf_relation)
    )
    loaded = load_handle(path)
    np.testing.assert_allclose(loaded.predict_proba(texts, STAGE_DOMAIN), probs, atol=1e-5)


def test_a_derive_stage_list_is_parsed_by_the_catalog_with_field_paths() -> None:
    from fanbu.derive.stages import parse_stages

    assert [n for n, _ in parse_stages(["finetune", {"prune": {"layers": 1}}])] == ["finetune", "prune"]
    with pytest.raises(ConfigError, match=r"stages\.1: unknown stage 'shrink'; known: "):
        parse_stages([{"finetune": {}}, {"shrink": {}}])
    assert {e.name for e in STAGES.with_capability("makes_student")} == {"prune", "search"}


# --------------------------------------------------------------------------- feedback strategies


@pytest.mark.parametrize("name", STRATEGIES.names())
def test_every_strategy_makes_a_candidate_that_predicts_every_head_and_reloads(
    name: str, tmp_path: Path
) -> None:
    swarm = tiny_swarm()
    info = STRATEGIES.get(name)
    config = validate(info.config, tiny_settings(info.config), source=name)
    before = {k: v.clone() for k, v in swarm.large.model.state_dict().items()}
    experts = None
    if info.has("pruned_experts"):  # students cut from the champion, with their recorded sub-networks
        experts = {d: prune_encoder(e, PruneConfig(heads=2, hidden=16)) for d, e in swarm.experts.items()}
    ctx: FeedbackContext = swarm.context(tmp_path / "work", experts)
    out = info.run(ctx, config)

    assert isinstance(out, StrategyOutput) and out.relation in RELATIONS
    assert all(
        torch.equal(v, before[k]) for k, v in swarm.large.model.state_dict().items()
    )  # champion intact
    heads = sorted(swarm.large.labels)
    assert sorted(out.handle.labels) == heads
    probs = {}
    for head in heads:
        texts = swarm.tests[head][0][:24]
        probs[head] = out.handle.predict_proba(texts, head)
        assert probs[head].shape == (len(texts), len(swarm.large.labels[head]))
        np.testing.assert_allclose(probs[head].sum(axis=1), 1.0, atol=1e-5)

    path = out.handle.save(tmp_path / "candidate", Provenance(name=f"candidate.{name}"))
    loaded = load_handle(path)
    assert type(loaded) is type(out.handle)
    for head in heads:
        np.testing.assert_allclose(
            loaded.predict_proba(swarm.tests[head][0][:24], head), probs[head], atol=1e-5
        )


SAME_ARCHITECTURE = [e.name for e in STRATEGIES.with_capability("same_architecture")]


@pytest.mark.parametrize("name", SAME_ARCHITECTURE)
def test_same_architecture_strategies_refuse_an_expert_of_another_shape(name: str, tmp_path: Path) -> None:
    swarm = tiny_swarm()
    info = STRATEGIES.get(name)
    config = validate(info.config, tiny_settings(info.config), source=name)
    other = tiny_large(intermediate_size=48)
    with pytest.raises(ConfigError, match="architecture") as caught:
        info.run(swarm.context(tmp_path, {"sentiment": other}), config)
    assert "swarm_distill" in str(caught.value) and "transplant" in str(caught.value)  # what to use instead


def test_the_feedback_recipe_reads_same_architecture_from_the_catalog() -> None:
    core = FeedbackCore(strategies=[{name: {}} for name in STRATEGIES.names()])
    assert core.same_architecture_strategies() == sorted(SAME_ARCHITECTURE)
    assert {"merge", "moe", "graft"} <= set(SAME_ARCHITECTURE)
    with pytest.raises(ConfigError, match=r"strategies\.0: unknown feedback strategy 'blend'"):
        from fanbu.feedback.recipe import parse_strategies

        parse_strategies([{"blend": {}}])


# --------------------------------------------------------------------------- robust rules

N_CLIENTS, F = 7, 1  # the fewest clients with which every rule (Bulyan: 4f + 3) tolerates one attacker


def client_stack(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(clients, samples, classes)`` honest values around a common one, the last client an outlier."""
    rng = np.random.default_rng(seed)
    centre = rng.normal(size=(5, 3))
    stack = np.stack([centre + 0.05 * rng.normal(size=centre.shape) for _ in range(N_CLIENTS)])
    stack[-1] = rng.normal(0.0, 100.0, size=centre.shape)
    return stack.astype(np.float32), stack[:-1].mean(axis=0)


def rel_error(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


@pytest.mark.parametrize("name", RULES.names())
def test_every_rule_aggregates_client_arrays_and_the_robust_ones_resist_an_outlier(name: str) -> None:
    stack, honest = client_stack()
    plain = stack.mean(axis=0)
    out = aggregate_logits(stack, name, F)  # the logit exchange
    assert out.shape == stack.shape[1:] and out.dtype == np.float32 and np.isfinite(out).all()

    config = validate(RobustConfig, {"rule": name, "num_malicious": F}, source="robust")
    assert isinstance(config.rule_settings(), RULES.get(name).config)
    strategy = make_strategy(config, N_CLIENTS, fraction_evaluate=0.0)  # the model-update exchange
    replies = [reply({"w": stack[i]}, node=i + 1) for i in range(N_CLIENTS)]
    arrays, _ = strategy.aggregate_train(1, replies)
    flower = arrays["w"].numpy()
    assert flower.shape == stack.shape[1:] and np.isfinite(flower).all()

    if RULES.get(name).has("byzantine_robust"):
        for got in (out, flower):
            assert rel_error(got, honest) < 0.2 < rel_error(plain, honest)
    else:
        np.testing.assert_allclose(out, plain, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(flower, plain, rtol=1e-5, atol=1e-4)


def test_the_rule_field_and_its_settings_follow_the_catalog() -> None:
    fields = RobustConfig.model_fields
    for entry in RULES.values():
        validate(RobustConfig, {"rule": entry.name}, source="robust")
        for key, field in entry.config.model_fields.items():  # a rule's own settings are robust.<key>
            assert key in fields and fields[key].default == field.default
    with pytest.raises(ConfigError, match="unknown rule 'geomedian'"):
        validate(RobustConfig, {"rule": "geomedian"}, source="robust")
    assert RobustConfig.model_json_schema()["properties"]["rule"]["enum"] == RULES.names()
    assert [e.name for e in RULES.with_capability("sum_only")] == ["fedavg"]


# --------------------------------------------------------------------------- privacy modes

CLIP = 1.0


def dp_settings(side: str = "server", noise: float = 1e-6) -> DPConfig:
    return DPConfig(enabled=True, side=side, noise_multiplier=noise, clipping_norm=CLIP)


def check_dp_server(entry: Entry) -> None:
    """The server clips each reply to clipping_norm before the (noised) mean."""
    n, d = 4, 400
    strategy = entry.impl(make_strategy(RobustConfig(), n, fraction_evaluate=0.0), dp_settings("server"), n)
    grid = LoopbackGrid({i: ClientApp() for i in range(1, n + 1)})
    g = np.zeros(d, dtype=np.float32)
    strategy.configure_train(1, ArrayRecord({"w": Array(g)}), ConfigRecord({}), grid)
    huge = np.full(d, 1.0, dtype=np.float32)  # norm 20
    out, _ = strategy.aggregate_train(1, [reply({"w": huge}, node=i) for i in range(1, n + 1)])
    assert np.linalg.norm(out["w"].numpy()) == pytest.approx(CLIP, rel=1e-3)


def check_dp_client(entry: Entry) -> None:
    """The server sends clipping_norm; the clients' mods clip their updates to it."""
    n = 3
    dp = dp_settings("client")
    strategy = entry.impl(make_strategy(RobustConfig(), n, fraction_evaluate=0.0), dp, n)
    app = ClientApp(mods=client_mods(PrivacyConfig(dp=dp)))

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        g = msg.content["arrays"]["w"].numpy()
        arrays = ArrayRecord({"w": Array(g + 10.0)})
        return Message(
            RecordDict({"arrays": arrays, "metrics": MetricRecord({"num-examples": 1})}), reply_to=msg
        )

    grid = LoopbackGrid({i: app for i in range(1, n + 1)})
    g = np.zeros(50, dtype=np.float32)
    messages = list(strategy.configure_train(1, ArrayRecord({"w": Array(g)}), ConfigRecord({}), grid))
    assert {m.content["config"]["clipping_norm"] for m in messages} == {CLIP}
    for answer in grid.send_and_receive(messages):
        assert np.linalg.norm(answer.content["arrays"]["w"].numpy() - g) == pytest.approx(CLIP, rel=1e-5)


def check_dp_logits(entry: Entry) -> None:
    """Each sample's logit vector is clipped, then noised with std noise_multiplier * clip."""
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 10, size=(4000, 3)).astype(np.float32)
    clipped = entry.impl(logits, CLIP, 0.0, rng)
    assert clipped.shape == logits.shape and np.linalg.norm(clipped, axis=1).max() <= CLIP + 1e-5
    small = np.full((4000, 3), 0.1, dtype=np.float32)
    noisy = entry.impl(small, CLIP, 0.5, rng)
    assert (noisy - small).std() == pytest.approx(0.5 * CLIP, rel=0.05)


def check_secagg(entry: Entry) -> None:
    """The weighted mean of the updates comes out; the server never sees a plain update."""
    config = validate(PrivacyConfig, {"secagg": {"enabled": True}})
    shifts, weights = [0.1, 0.2, -0.1], [1, 2, 1]
    grid = RecordingGrid(secagg_clients(config, shifts, weights))
    out = entry.impl(
        grid, Context(0, 0, {}, RecordDict(), {}), start_arrays(), num_rounds=1, num_clients=3, config=config
    )
    # three clients of total weight 4 against max_weight 1000: quantization can move the mean up to ~2.9e-3
    bound = secagg_error_bound(config, weights)
    np.testing.assert_allclose(out["head.b"].numpy(), np.average(shifts, weights=weights), rtol=0, atol=bound)
    plain = [
        r
        for r in grid.seen
        if not r.has_error() and any(len(rec) for rec in r.content.array_records.values())
    ]
    assert grid.seen and plain == []


PRIVACY_CHECKS = {
    "dp_server": check_dp_server,
    "dp_client": check_dp_client,
    "dp_logits": check_dp_logits,
    "secagg": check_secagg,
}


@pytest.mark.parametrize("name", PRIVACY_MODES.names())
def test_every_privacy_mode_clips_noises_or_hides_as_it_says(name: str) -> None:
    if name not in PRIVACY_CHECKS:
        pytest.fail(f"privacy mode {name!r} is registered without a check: add one to PRIVACY_CHECKS")
    PRIVACY_CHECKS[name](PRIVACY_MODES.get(name))


def test_the_dp_sides_of_a_recipe_are_registered_modes() -> None:
    from typing import get_args

    from fanbu.federated.privacy import active_modes

    for side in get_args(DPSide):
        assert PRIVACY_MODES.get(f"dp_{side}").has("arrays")
        config = PrivacyConfig(dp=DPConfig(enabled=True, side=side))
        assert active_modes(config) == [f"dp_{side}"] and active_modes(config, "logits") == ["dp_logits"]
    assert active_modes(PrivacyConfig()) == []
