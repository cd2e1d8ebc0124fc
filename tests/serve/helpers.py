"""Tiny registries for the serving, collection and bench tests: random encoders saved and registered."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from fanbu.models import EncoderHandle, Provenance
from fanbu.registry import ModelRecord, Registry

PG_ENV = "FANBU_TEST_PG_URL"
LABELS = ["sci", "talk", "rec"]
TOKEN = "test-token-0123456789abcdef"
TEXTS = [
    "the patients were happy with the treatment",
    "computer hardware prices fell",
    "religion and politics, again!",
    "the team won the game in the second half",
    "space science needs better software and hardware",
    "the doctor said the drug risk was low but the patient was sad",
]


def register_tiny(
    registry: Registry, name: str, seed: int, hidden: int = 32, heads: dict | None = None
) -> ModelRecord:
    """Save a tiny random encoder with ``heads`` (default: ``topic`` with 3 labels) and register it."""
    handle = EncoderHandle.tiny(hidden_size=hidden, seed=seed)
    for head, labels in (heads or {"topic": LABELS}).items():
        handle.add_head(head, labels)
    version = registry.next_version(name)
    path = handle.save(registry.model_dir(name, version), Provenance(name=f"{name}:v{version}"))
    return registry.register_model(name=name, path=path, kind="encoder", version=version)


def store_urls() -> list[object]:
    """``sqlite`` always; ``postgresql`` when FANBU_TEST_PG_URL is set (else skipped with the reason)."""
    reason = f"{PG_ENV} is not set: run .ci/run (it starts a PostgreSQL server) or export it yourself"
    return [
        "sqlite",
        pytest.param("postgresql", marks=pytest.mark.skipif(not os.environ.get(PG_ENV), reason=reason)),
    ]


@contextmanager
def database_url(kind: str, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database: a SQLite file, or a new PostgreSQL database dropped afterwards."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path}/registry.db"
        return
    base = make_url(os.environ[PG_ENV])
    name = f"fanbu_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} . {% endfor %}"
    "{% if add_generation_prompt %}assistant :{% endif %}"
)


def register_tiny_lm(
    registry: Registry, name: str, seed: int, hidden: int = 32, max_length: int = 64, chat: bool = True
) -> ModelRecord:
    """Save a tiny random Llama (with a small chat template if ``chat``) and register it as a causal LM."""
    from fanbu.models import CausalLMHandle

    handle = CausalLMHandle.tiny(hidden_size=hidden, max_length=max_length, seed=seed)
    if chat:
        handle.tokenizer.chat_template = CHAT_TEMPLATE
    version = registry.next_version(name)
    path = handle.save(registry.model_dir(name, version), Provenance(name=f"{name}:v{version}"))
    return registry.register_model(name=name, path=path, kind="causal_lm", version=version)
