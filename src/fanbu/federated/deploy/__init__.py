"""Deploy the federation with Flower: a Flower app directory and a SuperLink connection.

The app directory holds only a ``pyproject.toml`` whose ``[tool.flwr.app]`` section points Flower at
fanbu's apps (``fanbu.federated.server_app:app``, ``fanbu.federated.client_app:app``) and whose
``[tool.flwr.app.config]`` carries the run config (:mod:`fanbu.federated.settings`): the recipe, the
work directory and the model directories. Every machine needs fanbu installed (the SuperLink must
not build a fresh environment for the app: start it with ``--disable-runtime-dependency-installation``)
and the data the recipe names; the models are read from the paths in the config (a SuperNode's node
config may name its own ``client-model`` and ``work-dir``). Then, on the machines::

    # the server's machine (one port serves Flower's Fleet, Control and Runtime APIs)
    flower-superlink --insecure --host 0.0.0.0 --port 9093 --disable-runtime-dependency-installation
    # each client's machine
    flower-supernode --insecure --superlink HOST:9093 --node-config "partition-id=0 num-partitions=2"
    # anywhere; my-link: a SuperLink connection in $FLWR_HOME/config.toml (see write_connection)
    flwr run APP_DIR my-link --stream
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path

import tomli_w

from fanbu.errors import ConfigError
from fanbu.io import atomic_write_text

APP_NAME = "fanbu-federated"
SERVER_APP = "fanbu.federated.server_app:app"
CLIENT_APP = "fanbu.federated.client_app:app"


def write_app(directory: str | Path, run_config: Mapping[str, str], version: str = "1.0.0") -> Path:
    """Write a Flower app directory (``pyproject.toml``) that runs fanbu's apps with ``run_config``."""
    app_dir = Path(directory)
    app_dir.mkdir(parents=True, exist_ok=True)
    project = {
        "build-system": {"requires": ["hatchling"], "build-backend": "hatchling.build"},
        "project": {
            "name": APP_NAME,
            "version": version,
            "description": "fanbu federated feedback: the large model and the domains' small models on Flower",
            "license": "Apache-2.0",
            "dependencies": [],  # fanbu is installed on every machine (see the module docstring)
        },
        "tool": {
            "flwr": {
                "app": {
                    "publisher": "fanbu",
                    "components": {"serverapp": SERVER_APP, "clientapp": CLIENT_APP},
                    "config": {k: str(v) for k, v in run_config.items()},
                }
            }
        },
    }
    atomic_write_text(app_dir / "pyproject.toml", tomli_w.dumps(project))
    return app_dir


def read_app_config(directory: str | Path) -> dict[str, str]:
    """The run config of a Flower app directory written by :func:`write_app`.

    Raises:
        ConfigError: no ``pyproject.toml`` there, or one without ``[tool.flwr.app.config]``.
    """
    path = Path(directory) / "pyproject.toml"
    if not path.is_file():
        raise ConfigError(f"{path}: missing; name the directory `fanbu federate RECIPE --app DIR` wrote")
    try:
        project = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    config = project.get("tool", {}).get("flwr", {}).get("app", {}).get("config")
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: no [tool.flwr.app.config] section; it is not a fanbu Flower app")
    return {str(k): str(v) for k, v in config.items()}


def write_connection(flwr_home: str | Path, name: str, address: str, insecure: bool = True) -> Path:
    """Write ``$FLWR_HOME/config.toml`` with one SuperLink connection ``name`` (the default)."""
    home = Path(flwr_home)
    home.mkdir(parents=True, exist_ok=True)
    config = {"superlink": {"default": name, name: {"address": address, "insecure": insecure}}}
    return atomic_write_text(home / "config.toml", tomli_w.dumps(config))
