"""Run the app under uvicorn: resolve the token (shown once when generated), open the store, listen."""

from __future__ import annotations

import gc

from rich.console import Console

from fanbu.collect.store import LogStore
from fanbu.errors import ConfigError
from fanbu.registry import Registry
from fanbu.registry.workspace import Workspace
from fanbu.serve.app import create_app
from fanbu.serve.config import ServeConfig
from fanbu.serve.lm_models import LM_KIND, check_lm
from fanbu.serve.models import read_labels
from fanbu.serve.security import TOKEN_ENV, TOKEN_FILE, resolve_token


def serve(config: ServeConfig, registry: Registry, console: Console) -> None:
    """Serve until interrupted (Ctrl-C or SIGTERM)."""
    import uvicorn

    workspace = Workspace(registry)
    for ref in [*config.models, *(r for c in config.cascades.values() for r in (c.small, c.large))]:
        record = workspace.resolve(ref)  # unknown or unservable models fail here, before listening
        if not (ref in config.models and record.kind == LM_KIND):
            read_labels(record)
    for ref in (r for c in config.lm_cascades.values() for r in (c.small, c.large)):
        check_lm(workspace.resolve(ref))
    token_hash: str | None = None
    if config.auth:
        try:
            token_hash, new_token = resolve_token(config.token, registry.home)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if new_token is not None:
            where = registry.home / TOKEN_FILE if registry.home else TOKEN_FILE
            console.print(
                f"API token (shown once; only its hash is kept in {where}):\n{new_token}",
                highlight=False,
                soft_wrap=True,
            )
            console.print(
                f"Send it as 'Authorization: Bearer <token>'; or set {TOKEN_ENV}. Delete {where} to "
                "issue a new one.",
                highlight=False,
            )
    else:
        console.print("[bold yellow]warning:[/] authentication is off (auth: false); loopback only")
    store = LogStore(registry.url, background_checkpoint=True)  # no request waits for a checkpoint
    try:
        app = create_app(config, registry, store, token_hash)
        console.print(
            f"fanbu serve on http://{config.host}:{config.port} (docs at /docs, privacy: {config.privacy})",
            highlight=False,
        )
        # What start-up made (imported modules, loaded tokenizers) lives as long as the server: out of
        # the collector's way, a full collection scans only what requests allocate and pauses less.
        gc.collect()
        gc.freeze()
        uvicorn.run(app, host=config.host, port=config.port, log_level=config.log_level, access_log=False)
    finally:
        store.close()
