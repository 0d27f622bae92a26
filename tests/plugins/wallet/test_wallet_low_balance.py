"""WalletLowBalance: recorded once when available falls below the threshold, again only after it recovered."""

from __future__ import annotations

import pytest

from kloyst_plugins.wallet.ledger import Ledger
from wallet_support import low_balance_events


@pytest.fixture(autouse=True)
def probe_listens(vendor, enable_plugin):
    """A plugin the vendor enabled wants WalletLowBalance (the probe wants every event): else it is not written."""
    enable_plugin(vendor, "probe")


@pytest.fixture
def conn(db):
    return db.connection()


@pytest.fixture
def ledger(conn, vendor):
    ledger = Ledger(conn, vendor.vendor_id)
    ledger.topup(150, idempotency_key="seed")
    ledger.set_low_balance_threshold(100)
    return ledger


def test_one_event_per_downward_crossing_re_armed_when_available_recovers(ledger, conn, vendor):
    assert low_balance_events(conn, vendor.vendor_id) == []
    hold = ledger.hold(60, idempotency_key="h1", reference="r")  # available 90: crossed
    ledger.hold(10, idempotency_key="h2", reference="r")  # 80: still low, no second event
    assert low_balance_events(conn, vendor.vendor_id) == [
        {"wallet_id": str(ledger.wallet().id), "currency": "USD", "balance_micros": 90, "threshold_micros": 100}]
    assert ledger.wallet().low_balance

    ledger.release(hold.id, idempotency_key="r1")  # 140: recovered, re-armed
    assert not ledger.wallet().low_balance
    ledger.adjust(-80, idempotency_key="a1", actor_user_id=None, note="fee")  # 60: crossed again

    assert [e["balance_micros"] for e in low_balance_events(conn, vendor.vendor_id)] == [90, 60]


def test_raising_the_threshold_above_available_is_a_crossing_too(ledger, conn, vendor):
    ledger.set_low_balance_threshold(200)
    ledger.set_low_balance_threshold(300)
    assert [e["threshold_micros"] for e in low_balance_events(conn, vendor.vendor_id)] == [200]


def test_a_zero_threshold_never_alerts(ledger, conn, vendor):
    ledger.set_low_balance_threshold(0)
    ledger.hold(150, idempotency_key="all", reference="r")
    assert low_balance_events(conn, vendor.vendor_id) == []


def test_the_event_is_written_to_the_outbox_only_if_the_movement_commits(ledger, conn, vendor):
    with conn.begin_nested() as savepoint:
        ledger.hold(100, idempotency_key="h", reference="r")
        assert len(low_balance_events(conn, vendor.vendor_id)) == 1
        savepoint.rollback()
    assert low_balance_events(conn, vendor.vendor_id) == []
    assert not ledger.wallet().low_balance
