"""Fixtures of the unlabeled tests."""

from __future__ import annotations

import pytest

from tests.unlabeled.helpers import toy_domains


@pytest.fixture
def toy_sources(monkeypatch):
    """``load_shift`` reads the toy domains (``toy-source``, ``toy-target``)."""
    monkeypatch.setattr("fanbu.unlabeled.shift.load_builtin", toy_domains)
