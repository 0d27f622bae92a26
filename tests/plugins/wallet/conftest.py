"""Fixtures for the wallet plugin's tests; the ledger invariant is checked after every one of them."""

from __future__ import annotations

import pytest



@pytest.fixture(autouse=True)
def _ledger_checked_after_each_test(ledger_invariants):
    """Every wallet test ends with the ledger invariant checked (``ledger_invariants``, tests/conftest.py)."""


@pytest.fixture
def vendor(accounts, enable_plugin):
    """A vendor (its owner signs requests) with the wallet plugin on."""
    account = accounts.vendor("Wallet Co")
    enable_plugin(account, "wallet")
    return account


@pytest.fixture
def admin(accounts, db):
    account = accounts.platform_admin()
    db.commit()
    return account
