"""A real deployment on loopback: a SuperLink and two SuperNodes as processes, one round with ``flwr run``.

The processes are Flower's own executables from this virtual environment; ``FLWR_HOME`` points every
one of them (and ``flwr run``) at the test's directory, so nothing is written to ``~/.flwr``. Each
process runs in its own session and is killed, with its children, in a ``finally``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import yaml
from conftest import make_recipe, run_local
from typer.testing import CliRunner

from fanbu.cli import app as cli
from fanbu.federated.data import slots_of
from fanbu.federated.deploy import CLIENT_APP, SERVER_APP, write_app, write_connection
from fanbu.federated.run import save_inputs
from fanbu.federated.server_app import read_history
from fanbu.federated.settings import RunSettings, parse_run_config
from fanbu.models.artefact import Provenance
from fanbu.registry import Registry

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the SuperLink exited early with code {process.returncode}"
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def start(command: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    handle = log.open("w")
    return subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def stop(process: subprocess.Popen) -> None:
    """Kill the process's session (the process and the children it spawned), then reap it."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=30)


def registry_with_champion(toy_files, large_v0, tmp_path: Path, **settings) -> tuple[Path, Path, Path]:
    """A registry home whose champion is ``large:v0``, its model directory, and a recipe file over the toy data."""
    home = tmp_path / "home"
    registry = Registry.open(home)
    path = registry.model_dir("large", 0)
    large_v0.save(path, Provenance(name="large:v0"))
    registry.register_model(name="large", version=0, path=path, kind="encoder", status="champion")
    registry.close()
    recipe = tmp_path / "federated.yaml"
    recipe.write_text(yaml.safe_dump(make_recipe(toy_files, **settings).model_dump(mode="json")), encoding="utf-8")
    return home, path, recipe


def test_superlink_and_two_supernodes_complete_a_round(toy_files, large_v0, tmp_path):
    recipe = make_recipe(toy_files, rounds=1, save_clients=False)
    work = tmp_path / "work"
    large_path, _ = save_inputs(large_v0, None, work)
    settings = RunSettings(recipe, work, large_path)
    app = write_app(tmp_path / "app", settings.to_run_config())
    port = free_port()
    homes = {name: tmp_path / f"flwr-{name}" for name in ("link", "node0", "node1", "cli")}
    write_connection(homes["cli"], "loopback", f"127.0.0.1:{port}")
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "TOKENIZERS_PARALLELISM": "false",
        "FLWR_TELEMETRY_ENABLED": "0",
    }
    processes: list[subprocess.Popen] = []
    try:
        link = start(
            [
                str(BIN / "flower-superlink"),
                "--insecure",
                "--port",
                str(port),
                "--disable-runtime-dependency-installation",
            ],
            tmp_path / "superlink.log",
            {**env, "FLWR_HOME": str(homes["link"])},
        )
        processes.append(link)
        wait_for_port(port, link, timeout=120)
        for index in range(2):
            node = [
                str(BIN / "flower-supernode"),
                "--insecure",
                "--superlink",
                f"127.0.0.1:{port}",
                "--port",
                str(free_port()),
                "--node-config",
                f"partition-id={index} num-partitions=2",
            ]
            processes.append(
                start(
                    node, tmp_path / f"supernode{index}.log", {**env, "FLWR_HOME": str(homes[f"node{index}"])}
                )
            )
        run = subprocess.run(
            [str(BIN / "flwr"), "run", str(app), "loopback", "--stream"],
            check=False,
            env={**env, "FLWR_HOME": str(homes["cli"])},
            capture_output=True,
            text=True,
            timeout=420,
        )
        logs = "\n".join(p.read_text()[-3000:] for p in sorted(tmp_path.glob("*.log")))
        report = f"flwr run:\n{run.stdout[-4000:]}\n{run.stderr[-3000:]}\n{logs}"
        assert run.returncode == 0, report
        assert (work / "server" / "history.json").is_file(), report
        history = read_history(work)
    finally:
        for process in reversed(processes):
            stop(process)
    assert [r["round"] for r in history["rounds"]] == [0, 1]
    assert sorted(history["clients"]) == ["health-0", "tech-0"]
    assert (work / "server" / "large" / "fanbu.json").is_file()


def test_fanbu_federate_app_writes_a_deployable_flower_app(toy_files, large_v0, tmp_path):
    home, path, recipe = registry_with_champion(toy_files, large_v0, tmp_path)
    app_dir = tmp_path / "fed-app"
    result = CliRunner().invoke(
        cli, ["federate", str(recipe), "rounds=4", "--app", str(app_dir), "--home", str(home)]
    )
    assert result.exit_code == 0, result.output
    project = tomllib.loads((app_dir / "pyproject.toml").read_text(encoding="utf-8"))
    flwr = project["tool"]["flwr"]["app"]
    assert flwr["components"] == {"serverapp": SERVER_APP, "clientapp": CLIENT_APP}
    settings = parse_run_config(flwr["config"])
    assert settings.recipe.rounds == 4 and settings.large_model == path


def test_a_finished_deployment_is_registered_through_the_gate_once(toy_files, large_v0, tmp_path):
    """--app writes the app and the registry marker; after the run, --collect registers and gates it."""
    home, _, recipe = registry_with_champion(toy_files, large_v0, tmp_path, rounds=1)
    app_dir = tmp_path / "fed-app"
    runner = CliRunner()
    written = runner.invoke(cli, ["federate", str(recipe), "--app", str(app_dir), "--home", str(home)])
    assert written.exit_code == 0, written.output
    early = runner.invoke(cli, ["federate", "--collect", str(app_dir), "--home", str(home)])
    assert early.exit_code == 2 and "the server did not finish" in early.output

    # what flwr run does on the machines: the same apps with the app's run config
    settings = parse_run_config(tomllib.loads((app_dir / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"])
    run_local(settings, len(slots_of(settings.recipe)))

    collected = runner.invoke(cli, ["federate", "--collect", str(app_dir), "--home", str(home)])
    assert collected.exit_code == 0, collected.output
    registry = Registry.open(home)
    try:
        candidate = registry.get_model("large:v1")
        assert candidate is not None and candidate.relation == "federated"
        assert list(candidate.parents) == ["large:v0"]
        assert candidate.status in ("champion", "rejected")
        # the gate decided on the gate splits; the test splits were scored for the report only
        assert {e.split for e in registry.evaluations(model_id="large:v1")} == {"gate", "test"}
        clients = [m for m in registry.list_models() if m.name.endswith(".federated")]
        assert sorted(m.name for m in clients) == ["health-0.federated", "tech-0.federated"]
    finally:
        registry.close()
    again = runner.invoke(cli, ["federate", "--collect", str(app_dir), "--home", str(home)])
    assert again.exit_code == 2 and "registered already as large:v1" in again.output
    both = runner.invoke(cli, ["federate", str(recipe), "--collect", str(app_dir), "--home", str(home)])
    assert both.exit_code == 2 and "not both" in both.output
