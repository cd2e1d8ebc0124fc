"""Run a federation in Flower's simulation runtime: handles in, handles and metrics out.

:func:`federate` is what a benchmark calls: it saves the large model (and FedMKT's client models)
into a work directory, runs the same ServerApp and ClientApp a deployment runs under
``flwr.simulation.run_simulation`` (Ray, ``simulation.num_cpus`` CPUs), and reads back the final large
model, the clients' final models and the per-round history. :func:`run_federated` adds the registry
around it: the champion and the clients' starting models come from it, the new large version goes
through the same gate as every other feedback (on the gate splits; the test splits are scored after
the decision, for the report only), and the clients' new versions are registered too.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from flwr.clientapp import ClientApp
from flwr.serverapp import ServerApp

from fanbu.errors import ConfigError, FanbuError
from fanbu.federated.client_app import client_app, load_saved
from fanbu.federated.data import server_data, slots_of
from fanbu.federated.deploy import read_app_config, write_app
from fanbu.federated.preparation import Prepared, load_champion, prepare, register_clients, register_large
from fanbu.federated.recipe import FederatedRecipe, SimulationConfig
from fanbu.federated.result import FederatedResult
from fanbu.federated.server_app import read_history, server_app
from fanbu.federated.settings import RunSettings, parse_run_config
from fanbu.feedback.gate.promotion import apply_decision, gate
from fanbu.feedback.gate.scores import score_report, score_tests
from fanbu.io import atomic_write_json, safe_child
from fanbu.models.artefact import Provenance
from fanbu.models.encoder import EncoderHandle
from fanbu.registry import Registry
from fanbu.registry.workspace import UnknownModelError, Workspace

__all__ = [
    "PREPARED",
    "FederatedResult",
    "collect",
    "collect_deployment",
    "federate",
    "record_results",
    "run_apps",
    "run_federated",
    "save_inputs",
    "simulate",
    "write_deployment",
]

# Set (unless already set) before the simulation starts its workers: no telemetry calls to Flower's
# servers (fanbu makes no network calls), and a longer wait for Ray's agents on a loaded machine.
SIMULATION_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "RAY_agent_register_timeout_ms": "180000",
    "TOKENIZERS_PARALLELISM": "false",
}
PREPARED = "prepared.json"  # in a deployment's work directory: the registry ids the run started from


def save_inputs(
    large: EncoderHandle, client_models: Mapping[str, EncoderHandle] | None, work_dir: Path
) -> tuple[Path, dict[str, Path]]:
    """Save the large model and each domain's starting client model where the apps load them."""
    inputs = work_dir / "inputs"
    # every domain name is checked before anything is saved
    targets = {d: safe_child(inputs / "clients", d, what="domain name") for d in client_models or {}}
    large_path = large.save(inputs / "large", large.provenance or Provenance(name="large"), overwrite=True)
    paths = {}
    for domain, handle in sorted((client_models or {}).items()):
        provenance = handle.provenance or Provenance(name=f"{domain}.client")
        paths[domain] = handle.save(targets[domain], provenance, overwrite=True)
    return large_path, paths


def run_apps(
    server: ServerApp, client: ClientApp, clients: int, simulation: SimulationConfig, verbose: bool = False
) -> None:
    """Run ``server`` and ``clients`` SuperNodes of ``client`` under Flower's simulation runtime (Ray), with
    the CPUs of ``simulation``."""
    if importlib.util.find_spec("ray") is None:
        raise ConfigError("Flower's simulation runtime needs Ray: pip install 'fanbu[ray]' (or ray)")
    from flwr.simulation import run_simulation

    for key, value in SIMULATION_ENV.items():
        os.environ.setdefault(key, value)
    backend = {
        "init_args": {
            "num_cpus": simulation.num_cpus,
            "include_dashboard": False,
            "log_to_driver": verbose,
        },
        "client_resources": {"num_cpus": simulation.client_cpus, "num_gpus": 0.0},
    }
    if not verbose:
        logging.getLogger("flwr").setLevel(logging.WARNING)
    run_simulation(
        server_app=server,
        client_app=client,
        num_supernodes=clients,
        backend_config=backend,
        verbose_logging=verbose,
    )


def simulate(settings: RunSettings, verbose: bool = False) -> None:
    """Run the ServerApp and one ClientApp per client under Flower's simulation runtime (Ray)."""
    recipe = settings.recipe
    defaults = settings.to_run_config()
    run_apps(server_app(defaults), client_app(defaults), len(slots_of(recipe)), recipe.simulation, verbose)


def collect(settings: RunSettings) -> FederatedResult:
    """The outputs a finished run left in its work directory."""
    history = read_history(settings.work_dir)
    large = load_saved(settings.work_dir / "server" / "large")
    clients = {}
    for slot in slots_of(settings.recipe):
        path = safe_child(settings.work_dir / "clients", slot.id, "model", what="client id")
        if path.is_dir():
            clients[slot.id] = load_saved(path)
    return FederatedResult(
        large,
        clients,
        list(history["rounds"]),
        dict(history["clients"]),
        dict(history.get("privacy") or {}),
        float(history.get("seconds", 0.0)),
        settings.work_dir,
    )


def federate(
    recipe: FederatedRecipe,
    large: EncoderHandle,
    work_dir: str | Path,
    client_models: Mapping[str, EncoderHandle] | None = None,
    verbose: bool = False,
) -> FederatedResult:
    """Run ``recipe`` in simulation from these models; no registry needed.

    Args:
        recipe: The federated recipe (its ``champion`` and ``clients`` sections are not read: the models
            are given here).
        large: The large model, with a head per federated domain.
        work_dir: Where inputs, client models and server outputs go.
        client_models: FedMKT: each domain's starting small model (all that domain's clients start from it).
        verbose: Show Flower's and Ray's logs.

    Raises:
        ConfigError: FedMKT without a model for some domain, or a bad recipe / data combination.
    """
    work = Path(work_dir)
    if recipe.algorithm == "fedmkt":
        missing = sorted({s.domain for s in slots_of(recipe)} - set(client_models or {}))
        if missing:
            raise ConfigError(f"fedmkt needs a starting client model for {missing}; pass client_models")
    large_path, client_paths = save_inputs(large, client_models, work)
    settings = RunSettings(recipe, work, large_path, client_paths)
    simulate(settings, verbose)
    return collect(settings)


def record_results(workspace: Workspace, prep: Prepared, run_id: str) -> dict[str, Any]:
    """Register a finished run's large model through the gate and its clients' models; the summary."""
    recipe = prep.settings.recipe
    result = collect(prep.settings)
    champion_id = prep.record.id
    start_ids = {d: prep.starts[d].id if d in prep.starts else champion_id for d in prep.data.domains}
    parents = [champion_id, *sorted({r.id for r in prep.starts.values()})]
    record = register_large(workspace, prep.record, parents, recipe, result, prep.data.fingerprints)
    # the decision reads the gate splits; the test splits are scored afterwards, for the report only
    decision = gate(result.large, prep.champion, prep.data.gate, recipe.gate)
    batch = recipe.gate.batch_size
    report = score_report(
        result.large if decision.candidate_metrics else None,
        prep.data.tests,
        score_tests(prep.champion, prep.data.tests, batch),
        batch,
    )
    gates = prep.data.split_fingerprints("gate")
    final = apply_decision(
        workspace.registry,
        record,
        prep.record,
        decision,
        split="gate",
        fingerprints=gates,
        run_id=run_id,
        report=report,
        report_fingerprints=prep.data.split_fingerprints("test"),
    )
    clients = register_clients(workspace, result, start_ids, record.id, run_id)
    honest = [c for c in result.client_metrics.values() if not c.get("malicious")]
    return {
        "run": run_id,
        "champion": champion_id,
        "candidate": record.id,
        "promoted": decision.promoted,
        "gate": {"status": final.status, "reason": final.reason},
        "decision_split": "gate",
        "decision": decision.summary(),
        "decision_fingerprints": gates,
        "report_split": "test",
        "test": report.candidate_metrics,
        "rounds": result.rounds,
        "clients": clients,
        "clients_before": result.clients_mean("acc-before") if honest else None,
        "clients_after": result.clients_mean("acc-after") if honest else None,
        "privacy": result.privacy,
    }


def run_federated(
    recipe: FederatedRecipe,
    registry: Registry,
    verbose: bool = False,
    runner: Callable[[RunSettings], None] | None = None,
) -> dict[str, Any]:
    """Federate from the registry's champion, gate the new large version, register everything; a summary.

    Args:
        recipe: What to run.
        registry: Where the champion (and FedMKT's client models) come from and the results go.
        verbose: Show Flower's and Ray's logs.
        runner: Runs the apps on the prepared settings; default :func:`simulate` (Flower's simulation
            runtime). The run's outputs must land in ``settings.work_dir`` either way.
    """
    if registry.home is None:
        raise FanbuError(
            "federate needs a registry with a home directory for its artefacts (Registry.open(home))"
        )
    workspace = Workspace(registry)
    with workspace.run("federated", recipe) as run:
        prep = prepare(recipe, workspace, run.dir / "federated")
        if runner is None:
            simulate(prep.settings, verbose)
        else:
            runner(prep.settings)
        run.summary = record_results(workspace, prep, run.id)
    return run.summary


def write_deployment(recipe: FederatedRecipe, registry: Registry, app_dir: Path) -> RunSettings:
    """Prepare a run for Flower's deployment runtime: the app directory and the registry's marker.

    The marker (``<work-dir>/prepared.json``) names the champion and the clients' starting models, so
    that :func:`collect_deployment` can register the results once ``flwr run`` has finished.
    """
    if registry.home is None:
        raise FanbuError("a deployment needs a registry with a home directory (Registry.open(home))")
    workspace = Workspace(registry)
    work = workspace.home.resolve() / "federated" / app_dir.name
    prep = prepare(recipe, workspace, work)
    marker = {"champion": prep.record.id, "starts": {d: r.id for d, r in sorted(prep.starts.items())}}
    atomic_write_json(work / PREPARED, {**marker, "app": str(app_dir.resolve()), "collected": None})
    write_app(app_dir, prep.settings.to_run_config())
    return prep.settings


def collect_deployment(app_dir: Path, registry: Registry) -> dict[str, Any]:
    """Register the results of a deployment ``flwr run`` of ``app_dir``, through the gate; the summary.

    The server's outputs (``server/``) must be in the app's work directory; a client's final model is
    registered when its ``clients/<id>`` directory is there too (copy it over from the organisation's
    machine, or leave it with the organisation).

    Raises:
        ConfigError: the app was not written by ``fanbu federate --app`` with this registry, the
            server has not finished, the results were registered already, or the champion changed.
    """
    settings = parse_run_config(read_app_config(app_dir))
    path = settings.work_dir / PREPARED
    if not path.is_file():
        raise ConfigError(
            f"{path}: missing; write the app with `fanbu federate RECIPE --app {app_dir}` against this "
            "registry (--home) before flwr run, then collect"
        )
    marker = json.loads(path.read_text(encoding="utf-8"))
    if marker.get("collected"):
        raise ConfigError(
            f"{app_dir}: its results are registered already as {marker['collected']}; write a new app "
            "(fanbu federate RECIPE --app DIR) for another run"
        )
    read_history(settings.work_dir)  # a clear error when the server has not finished
    workspace = Workspace(registry)
    try:
        record = workspace.resolve(str(marker["champion"]))
    except UnknownModelError:
        record = None
    if record is None or record.status != "champion":
        raise ConfigError(
            f"{marker['champion']} is no longer the champion; the gate compares against the model the run "
            "started from, so write a new app from the current champion and run it again"
        )
    champion, record = load_champion(workspace, record, settings.recipe.max_length)
    starts = {}
    for domain, model_id in marker["starts"].items():
        try:
            starts[domain] = workspace.resolve(str(model_id))
        except UnknownModelError:
            raise ConfigError(f"the starting model {model_id} of {domain} is not in this registry") from None
    data = server_data(settings.recipe, heads=sorted(champion.labels))
    prep = Prepared(champion, record, data, starts, settings)
    recipe = {**settings.recipe.model_dump(mode="json"), "deployment": str(app_dir)}
    with workspace.run("federated", recipe) as run:
        run.summary = record_results(workspace, prep, run.id)
    atomic_write_json(path, {**marker, "collected": run.summary["candidate"]})
    return run.summary
