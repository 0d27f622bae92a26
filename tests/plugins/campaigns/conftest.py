"""Fixtures for the campaigns plugin's tests (the builders live in ``campaigns_support``)."""

from __future__ import annotations

import pytest
from campaigns_support import Vendor, World


@pytest.fixture(autouse=True)
def _ledger_checked_after_each_test(ledger_invariants):
    """Every campaign test ends with the wallet reconciled to its ledger (``ledger_invariants``)."""


@pytest.fixture
def world(db, registry) -> World:
    return World(db, registry)


@pytest.fixture
def vendor(world) -> Vendor:
    """A vendor ready to run campaigns (see :meth:`World.vendor`), with 100 USD in its wallet."""
    made = world.vendor()
    world.fund(made.vendor_id, 100 * 10**6)
    return made
