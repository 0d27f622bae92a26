"""docs/wallet.md's promises on real PostgreSQL: concurrent movements released by a barrier, committed for real.

Each thread runs its movement in its own transaction on its own connection. Connections come
from a pool of 32 (the server is shared with other test runs; 101 connections would exhaust
it): the barrier releases all threads at once and they contend for the pool, the wallet row
and the unique key exactly as concurrent requests and senders do.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import create_engine

from kloyst import testing
from kloyst_plugins.wallet.ledger import InsufficientFunds, Ledger
from wallet_support import entries, low_balance_events

THREADS = 101


@pytest.fixture
def engine(registry):
    engine = create_engine(registry["kloyst.engine"].url, pool_size=32, max_overflow=0, pool_timeout=60)
    yield engine
    engine.dispose()


@pytest.fixture
def vendor_id(committed_db, registry):
    account = testing.AccountFactory(committed_db, registry["kloyst.access_tokens"]).vendor("Race Co")
    committed_db.commit()
    return account.vendor_id


def race(count: int, work) -> list:
    """Run ``work(i)`` in ``count`` threads released at once; returns each result or the exception it raised."""
    barrier = threading.Barrier(count)

    def run(i):
        barrier.wait()
        try:
            return work(i)
        except Exception as exc:  # noqa: BLE001 - the outcome is what the test examines
            return exc

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(run, range(count)))


def in_transaction(engine, vendor_id, action):
    with engine.begin() as conn:
        return action(Ledger(conn, vendor_id))


def wallet(engine, vendor_id):
    with engine.connect() as conn:
        return Ledger(conn, vendor_id).wallet()


def hold_and_capture(ledger: Ledger, i: int):
    hold = ledger.hold(30, idempotency_key=f"hold:{i}", reference=f"message:{i}")
    return ledger.capture(hold.id, 30, idempotency_key=f"capture:{i}")


DEBITS = {
    "hold": lambda ledger, i: ledger.hold(30, idempotency_key=f"hold:{i}", reference=f"message:{i}"),
    "hold then capture": hold_and_capture,
    "negative adjustment": lambda ledger, i: ledger.adjust(-30, idempotency_key=f"adjust:{i}", actor_user_id=None,
                                                           note="race"),
}


@pytest.mark.parametrize("debit", DEBITS)
def test_101_concurrent_debits_of_30_against_1000_exactly_33_succeed(engine, vendor_id, debit):
    in_transaction(engine, vendor_id, lambda ledger: ledger.topup(1000, idempotency_key="seed"))

    results = race(THREADS, lambda i: in_transaction(engine, vendor_id, lambda ledger: DEBITS[debit](ledger, i)))

    refused = [r for r in results if isinstance(r, InsufficientFunds)]
    unexpected = [r for r in results if isinstance(r, Exception) and not isinstance(r, InsufficientFunds)]
    assert unexpected == []
    assert (THREADS - len(refused), len(refused)) == (33, 68)
    state = wallet(engine, vendor_id)
    assert state.available_micros == 10
    if debit == "hold":
        assert (state.balance_micros, state.held_micros) == (1000, 990)
    else:
        assert (state.balance_micros, state.held_micros) == (10, 0)


def test_one_key_sent_20_times_at_once_moves_money_once(engine, vendor_id):
    in_transaction(engine, vendor_id, lambda ledger: ledger.topup(1000, idempotency_key="seed"))

    results = race(20, lambda i: in_transaction(
        engine, vendor_id, lambda ledger: ledger.hold(30, idempotency_key="same", reference="campaign:1")))

    assert [r for r in results if isinstance(r, Exception)] == []
    assert len({hold.id for hold in results}) == 1
    with engine.connect() as conn:
        assert [row.kind for row in entries(conn, vendor_id)] == ["TOPUP", "HOLD"]
    assert wallet(engine, vendor_id).available_micros == 970


def test_one_topup_key_sent_20_times_at_once_credits_once(engine, vendor_id):
    results = race(20, lambda i: in_transaction(
        engine, vendor_id, lambda ledger: ledger.topup(500, idempotency_key="bank-ref-1")))

    assert [r for r in results if isinstance(r, Exception)] == []
    assert len({entry.id for entry in results}) == 1
    assert sum(1 for entry in results if not entry.replayed) == 1
    assert wallet(engine, vendor_id).balance_micros == 500


def test_topups_and_holds_racing_keep_every_sum_consistent(engine, vendor_id):
    def work(i):
        if i % 2:
            return in_transaction(engine, vendor_id, lambda ledger: ledger.topup(20, idempotency_key=f"top:{i}"))
        return in_transaction(engine, vendor_id,
                              lambda ledger: ledger.hold(30, idempotency_key=f"hold:{i}", reference="r"))

    results = race(60, work)

    unexpected = [r for r in results if isinstance(r, Exception) and not isinstance(r, InsufficientFunds)]
    assert unexpected == []
    holds = [r for i, r in enumerate(results) if i % 2 == 0 and not isinstance(r, Exception)]
    state = wallet(engine, vendor_id)
    assert state.balance_micros == 30 * 20
    assert state.held_micros == 30 * len(holds)
    # The ledger invariants (balance == Σ entries, held == Σ holds outstanding) are checked by the autouse fixture.


def test_debits_racing_across_the_threshold_record_one_low_balance_event(engine, vendor_id):
    in_transaction(engine, vendor_id, lambda ledger: (ledger.topup(1000, idempotency_key="seed"),
                                                      ledger.set_low_balance_threshold(500)))

    race(30, lambda i: in_transaction(
        engine, vendor_id, lambda ledger: ledger.hold(30, idempotency_key=f"h:{i}", reference="r")))

    with engine.connect() as conn:
        assert len(low_balance_events(conn, vendor_id)) == 1
    assert wallet(engine, vendor_id).available_micros == 100
