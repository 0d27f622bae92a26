"""The embedded default (SQLite, built by the same migrations) keeps the same ledger rules."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from kloyst.accounts.models import Vendor
from kloyst.db import make_engine, migrate, new_id, utcnow
from kloyst.plugins import build_plugin_manager
from kloyst_plugins.wallet.audit import invariant_violations
from kloyst_plugins.wallet.ledger import IdempotencyConflict, InsufficientFunds, Ledger
from kloyst_plugins.wallet.settlement import settle_messages
from wallet_support import entries, settled


@pytest.fixture(scope="module")
def sqlite_engine(tmp_path_factory):
    engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp('wallet') / 'kloyst.sqlite'}")
    migrate.upgrade(build_plugin_manager([]), engine)
    yield engine
    engine.dispose()


@pytest.fixture
def sqlite(sqlite_engine):
    """A connection in a transaction rolled back afterwards, with a fresh vendor; invariants checked at the end."""
    with sqlite_engine.connect() as conn, conn.begin() as outer:
        vendor_id = new_id()
        conn.execute(sa.insert(Vendor.__table__).values(id=vendor_id, name="Embedded", created_at=utcnow(),
                                                        updated_at=utcnow()))
        yield conn, vendor_id
        assert invariant_violations(conn) == []
        outer.rollback()


def test_movements_refusals_and_replays_behave_as_on_postgresql(sqlite):
    conn, vendor_id = sqlite
    ledger = Ledger(conn, vendor_id)
    ledger.topup(29, idempotency_key="t")
    with pytest.raises(InsufficientFunds):
        ledger.hold(30, idempotency_key="h", reference="r")
    assert [e.kind for e in entries(conn, vendor_id)] == ["TOPUP"]
    ledger.topup(71, idempotency_key="t2")
    hold = ledger.hold(60, idempotency_key="h", reference="r")
    assert ledger.hold(60, idempotency_key="h", reference="r").id == hold.id
    with pytest.raises(IdempotencyConflict):
        ledger.hold(61, idempotency_key="h", reference="r")
    ledger.capture(hold.id, 25, idempotency_key="c")
    ledger.settle_hold(hold.id, idempotency_key="done")
    wallet = ledger.wallet()
    assert (wallet.balance_micros, wallet.held_micros, wallet.available_micros) == (75, 0, 75)


def test_settlement_is_bulk_and_idempotent_on_sqlite_too(sqlite):
    conn, vendor_id = sqlite
    ledger = Ledger(conn, vendor_id)
    ledger.topup(1000, idempotency_key="t")
    hold = ledger.hold(100, idempotency_key="h", reference="campaign:1")
    batch = [settled(vendor_id, hold.id, 40, "sent"), settled(vendor_id, hold.id, 40, "failed"),
             settled(vendor_id, hold.id, 40, "sent")]
    batch.append(settled(vendor_id, hold.id, 40, "undelivered", batch[0].message_id))

    first = settle_messages(conn, batch)
    again = settle_messages(conn, batch)

    # Captures come first: money Meta was paid for outranks money handed back when a hold runs short.
    assert (first.captured, first.released, first.refunded, again.entries) == (80, 20, 40, 0)
    wallet = ledger.wallet()
    assert (wallet.balance_micros, wallet.held_micros) == (960, 0)


def test_the_sqlite_ledger_refuses_updates_and_deletes(sqlite):
    conn, vendor_id = sqlite
    Ledger(conn, vendor_id).topup(10, idempotency_key="t")
    for statement in ("UPDATE ledger_entry SET amount_micros = 1", "DELETE FROM ledger_entry"):
        with pytest.raises(sa.exc.DBAPIError, match="append-only"), conn.begin_nested():
            conn.execute(sa.text(statement))
