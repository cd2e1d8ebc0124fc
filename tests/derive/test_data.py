"""Derive data: the transfer text a student is distilled on, and its cap."""

from __future__ import annotations

import pytest

from fanbu.derive.data import DeriveData, load_domain_data

pytestmark = pytest.mark.integration  # reads the packaged 20 Newsgroups files


def test_transfer_cap_takes_the_domains_own_public_slice_first() -> None:
    everything = load_domain_data(DeriveData(max_train=10, transfer="public"), "sci")
    capped = load_domain_data(DeriveData(max_train=10, transfer="public", max_transfer=300), "sci")
    none = load_domain_data(DeriveData(max_train=10), "sci")
    assert none.transfer == ()
    assert len(capped.transfer) == 300 < len(everything.transfer)
    assert set(capped.transfer) <= set(everything.transfer)
    own = load_domain_data(DeriveData(max_train=10, transfer="public", max_transfer=1), "sci").transfer
    assert own[0] == capped.transfer[0]
    assert len(set(capped.transfer) & set(load_domain_data(
        DeriveData(max_train=10, transfer="public", max_transfer=300), "comp").transfer)) < 300
