"""Token authentication, on by default.

The token comes from the config, else ``FANBU_SERVE_TOKEN``, else it is generated at the first start,
shown once, and only its sha256 is kept (``<home>/serve/token.sha256``, mode 0600). Delete that file
to issue a new token. Requests send ``Authorization: Bearer <token>``; hashes are compared in
constant time.
"""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

from fanbu.collect.hashing import text_hash
from fanbu.io import atomic_write_text

TOKEN_ENV = "FANBU_SERVE_TOKEN"
TOKEN_FILE = Path("serve") / "token.sha256"


def resolve_token(configured: str | None, home: Path | None) -> tuple[str, str | None]:
    """``(sha256 of the accepted token, the new token if one was just generated)``.

    Raises:
        ValueError: no token is configured and there is no home directory to keep a generated one.
    """
    token = configured or os.environ.get(TOKEN_ENV) or None
    if token is not None:
        return text_hash(token), None
    if home is None:
        raise ValueError(f"no API token: set token in the serve config or {TOKEN_ENV}")
    path = home / TOKEN_FILE
    if path.is_file():
        return path.read_text(encoding="utf-8").strip(), None
    token = secrets.token_urlsafe(32)
    atomic_write_text(path, text_hash(token) + "\n")
    os.chmod(path, 0o600)
    return text_hash(token), token


def check_bearer(header: str | None, token_hash: str) -> bool:
    """Whether an ``Authorization`` header carries the token whose hash is ``token_hash``."""
    if not header:
        return False
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return False
    return hmac.compare_digest(text_hash(value.strip()), token_hash)
