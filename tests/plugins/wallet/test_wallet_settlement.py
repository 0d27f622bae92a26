"""Settled messages move their money in bulk: capture on sent, release on failed, refund on undelivered."""

from __future__ import annotations

import logging
import uuid

import pytest
from sqlalchemy import event

from kloyst_plugins.wallet.ledger import Ledger
from kloyst_plugins.wallet.settlement import settle_messages
from wallet_support import entries, hold_row, settled


@pytest.fixture
def conn(db):
    return db.connection()


@pytest.fixture
def ledger(conn, vendor):
    ledger = Ledger(conn, vendor.vendor_id)
    ledger.topup(1000, idempotency_key="seed")
    return ledger


@pytest.fixture
def hold(ledger):
    return ledger.hold(500, idempotency_key="campaign:1", reference="campaign:1")


def state(ledger):
    wallet = ledger.wallet()
    return wallet.balance_micros, wallet.held_micros


def test_sent_captures_failed_releases_and_undelivered_refunds(ledger, hold, conn, vendor):
    v = vendor.vendor_id
    first, second, failed = (settled(v, hold.id, 100, "sent"), settled(v, hold.id, 100, "sent"),
                             settled(v, hold.id, 50, "failed"))

    result = settle_messages(conn, [first, second, failed])

    assert (result.captured, result.released, result.entries) == (200, 50, 3)
    assert state(ledger) == (800, 250)
    row = hold_row(conn, hold.id)
    assert (row.captured_micros, row.released_micros, row.refunded_micros) == (200, 50, 0)
    by_key = {e.idempotency_key: e for e in entries(conn, v)}
    capture = by_key[f"msg:{first.message_id}:capture:{first.hold_id}"]
    assert (capture.kind, capture.amount_micros, capture.message_id, capture.reference) == (
        "CAPTURE", 100, first.message_id, "campaign:1")
    assert by_key[f"msg:{failed.message_id}:release:{failed.hold_id}"].held_delta_micros == -50

    settle_messages(conn, [settled(v, hold.id, 100, "undelivered", first.message_id)])

    assert state(ledger) == (900, 250)
    assert hold_row(conn, hold.id).refunded_micros == 100


def test_settling_the_same_messages_twice_moves_money_once(ledger, hold, conn, vendor):
    batch = [settled(vendor.vendor_id, hold.id, 10, outcome) for outcome in ("sent", "sent", "failed")]
    batch.append(settled(vendor.vendor_id, hold.id, 10, "undelivered", batch[0].message_id))
    settle_messages(conn, batch)
    before, rows = state(ledger), len(entries(conn, vendor.vendor_id))

    again = settle_messages(conn, batch)

    assert again.entries == 0
    assert state(ledger) == before == (990, 470)
    assert len(entries(conn, vendor.vendor_id)) == rows


def test_an_undelivered_message_that_was_never_captured_refunds_nothing(ledger, hold, conn, vendor):
    assert settle_messages(conn, [settled(vendor.vendor_id, hold.id, 10, "undelivered")]).entries == 0
    assert state(ledger) == (1000, 500)


def test_a_capture_larger_than_the_hold_takes_what_is_outstanding_and_logs_it(ledger, conn, vendor, caplog):
    small = ledger.hold(100, idempotency_key="small", reference="campaign:2")
    fits, short = settled(vendor.vendor_id, small.id, 80, "sent"), settled(vendor.vendor_id, small.id, 80, "sent")
    nothing_left = settled(vendor.vendor_id, small.id, 80, "failed")

    with caplog.at_level(logging.ERROR, logger="kloyst_plugins.wallet.settlement"):
        result = settle_messages(conn, [fits, short, nothing_left])

    assert result.captured == 100 and result.released == 0
    amounts = {e.message_id: e.amount_micros for e in entries(conn, vendor.vendor_id) if e.kind == "CAPTURE"}
    assert amounts == {fits.message_id: 80, short.message_id: 20}
    assert state(ledger) == (900, 0)
    assert hold_row(conn, small.id).captured_micros == 100
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert str(short.message_id) in logged and str(nothing_left.message_id) in logged


def test_unknown_or_foreign_holds_are_skipped_without_failing_the_senders_transaction(ledger, hold, conn, vendor,
                                                                                     accounts, caplog):
    other = accounts.vendor("Other")
    lost = settled(vendor.vendor_id, uuid.uuid4(), 10, "sent")
    foreign = settled(other.vendor_id, hold.id, 10, "sent")  # names a hold that is not its vendor's
    no_hold = settled(vendor.vendor_id, None, 10, "sent")
    good = settled(vendor.vendor_id, hold.id, 10, "sent")

    with caplog.at_level(logging.ERROR, logger="kloyst_plugins.wallet.settlement"):
        result = settle_messages(conn, [lost, foreign, no_hold, good])

    assert result.entries == 1
    assert state(ledger) == (990, 490)
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert all(str(m.message_id) in logged for m in (lost, foreign, no_hold))


def test_a_release_re_arms_the_low_balance_alert(ledger, hold, conn, vendor):
    ledger.set_low_balance_threshold(600)
    assert ledger.wallet().low_balance
    settle_messages(conn, [settled(vendor.vendor_id, hold.id, 200, "failed")])
    assert not ledger.wallet().low_balance


def test_a_large_batch_costs_five_statements_whatever_its_size(ledger, conn, vendor):
    ledger.topup(100_000, idempotency_key="more")
    holds = [ledger.hold(10_000, idempotency_key=f"c{i}", reference=f"campaign:{i}") for i in range(3)]
    batch = [settled(vendor.vendor_id, holds[i % 3].id, 3, ("sent", "sent", "failed")[i % 3]) for i in range(3000)]
    batch += [settled(vendor.vendor_id, holds[0].id, 3, "undelivered", m.message_id) for m in batch[:30:3]]
    statements = []

    def count(conn_, cursor, statement, *args):
        statements.append(statement)

    event.listen(conn, "before_cursor_execute", count)
    try:
        result = settle_messages(conn, batch)
    finally:
        event.remove(conn, "before_cursor_execute", count)

    assert len(statements) == 5, statements
    assert (result.captured, result.released, result.refunded) == (6000, 3000, 30)
    assert state(ledger) == (101_000 - 6000 + 30, 30_000 - 6000 - 3000)


def test_the_plugin_settles_through_the_messages_hook(registry, ledger, hold, conn, vendor):
    message = settled(vendor.vendor_id, hold.id, 25, "sent")
    registry["kloyst.plugin_manager"].hook.kloyst_messages_settled(conn=conn, settled=[message])
    assert state(ledger) == (975, 475)


def test_a_message_paid_again_under_a_new_hold_settles_again(ledger, hold, conn, vendor):
    """retry-failed re-holds a failed message: its second round is a new capture or release, not a replay."""
    v = vendor.vendor_id
    first_round = settled(v, hold.id, 100, "failed")
    settle_messages(conn, [first_round])
    retry_hold = ledger.hold(100, idempotency_key="campaign:1:retry:1", reference="campaign:1")
    second_round = settled(v, retry_hold.id, 100, "sent", first_round.message_id)

    result = settle_messages(conn, [second_round])

    assert (result.captured, result.entries) == (100, 1)
    assert hold_row(conn, retry_hold.id).captured_micros == 100
    assert state(ledger) == (900, 400)
