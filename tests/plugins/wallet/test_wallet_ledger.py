"""The ledger's rules, one movement at a time: arithmetic, idempotency, refusals that write nothing."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

from kloyst_plugins.wallet.ledger import (HoldExceeded, IdempotencyConflict, InsufficientFunds, Ledger,
                                          UnknownHold)
from wallet_support import entries, hold_count, hold_row


@pytest.fixture
def conn(db):
    return db.connection()


@pytest.fixture
def ledger(conn, vendor):
    return Ledger(conn, vendor.vendor_id)


def state(ledger):
    wallet = ledger.wallet()
    return wallet.balance_micros, wallet.held_micros, wallet.available_micros


def test_a_wallet_opens_empty_in_the_configured_currency_on_first_use(ledger):
    first = ledger.wallet()
    assert (first.currency, first.balance_micros, first.held_micros, first.available_micros) == ("USD", 0, 0, 0)
    assert ledger.wallet().id == first.id


def test_an_explicit_default_currency_applies_only_to_a_new_wallet(conn, vendor, accounts):
    other = accounts.vendor("Euro Co")
    assert Ledger(conn, other.vendor_id, default_currency="eur").wallet().currency == "EUR"
    Ledger(conn, vendor.vendor_id).wallet()
    assert Ledger(conn, vendor.vendor_id, default_currency="EUR").wallet().currency == "USD"


def test_a_topup_credits_the_balance_with_one_entry(ledger, conn, vendor, owner):
    entry = ledger.topup(100, idempotency_key="t1", actor_user_id=owner.user.id, note="bank transfer 42")
    assert state(ledger) == (100, 0, 100)
    (row,) = entries(conn, vendor.vendor_id)
    assert (row.id, row.kind, row.amount_micros, row.balance_delta_micros, row.held_delta_micros) == (
        entry.id, "TOPUP", 100, 100, 0)
    assert (row.actor_user_id, row.note, entry.replayed) == (owner.user.id, "bank transfer 42", False)


def test_the_same_key_again_returns_the_first_entry_and_moves_nothing(ledger, conn, vendor):
    first = ledger.topup(100, idempotency_key="t1")
    again = ledger.topup(100, idempotency_key="t1")
    assert (again.id, again.seq, again.replayed) == (first.id, first.seq, True)
    assert state(ledger) == (100, 0, 100)
    assert len(entries(conn, vendor.vendor_id)) == 1


def test_the_same_key_with_another_amount_or_kind_is_a_conflict(ledger, conn, vendor):
    ledger.topup(100, idempotency_key="k")
    with pytest.raises(IdempotencyConflict) as refused:
        ledger.topup(101, idempotency_key="k")
    assert refused.value.status == 409
    with pytest.raises(IdempotencyConflict):
        ledger.hold(50, idempotency_key="k", reference="campaign:x")
    assert state(ledger) == (100, 0, 100)
    assert len(entries(conn, vendor.vendor_id)) == 1


def test_a_hold_the_available_money_cannot_cover_is_refused_and_writes_nothing(ledger, conn, vendor):
    ledger.topup(29, idempotency_key="t")
    with pytest.raises(InsufficientFunds) as refused:
        ledger.hold(30, idempotency_key="h", reference="campaign:x")
    assert refused.value.status == 402
    assert refused.value.details == {"needed": "0.000030", "available": "0.000029", "currency": "USD"}
    assert state(ledger) == (29, 0, 29)
    assert [row.kind for row in entries(conn, vendor.vendor_id)] == ["TOPUP"]
    assert hold_count(conn, vendor.vendor_id) == 0


def test_a_refused_key_can_be_used_again_once_the_money_is_there(ledger):
    with pytest.raises(InsufficientFunds):
        ledger.hold(30, idempotency_key="h", reference="r")
    ledger.topup(30, idempotency_key="t")
    assert ledger.hold(30, idempotency_key="h", reference="r").amount_micros == 30


def test_hold_capture_release_and_settle_move_balance_and_held_exactly(ledger, conn):
    ledger.topup(1000, idempotency_key="t")
    hold = ledger.hold(300, idempotency_key="h", reference="campaign:1")
    assert state(ledger) == (1000, 300, 700)
    capture = ledger.capture(hold.id, 100, idempotency_key="c", message_id=(message := uuid.uuid4()))
    assert (capture.balance_delta_micros, capture.held_delta_micros, capture.message_id) == (-100, -100, message)
    assert state(ledger) == (900, 200, 700)
    ledger.release(hold.id, 50, idempotency_key="r")
    assert state(ledger) == (900, 150, 750)
    settled = ledger.settle_hold(hold.id, idempotency_key="done")
    assert (settled.kind, settled.amount_micros) == ("RELEASE", 150)
    assert state(ledger) == (900, 0, 900)
    row = hold_row(conn, hold.id)
    assert (row.amount_micros, row.captured_micros, row.released_micros) == (300, 100, 200)
    assert ledger.settle_hold(hold.id, idempotency_key="done-again") is None
    assert ledger.settle_hold(hold.id, idempotency_key="done").id == settled.id  # a replay, not "nothing left"


def test_a_capture_or_release_beyond_the_hold_is_refused_and_changes_nothing(ledger):
    ledger.topup(1000, idempotency_key="t")
    hold = ledger.hold(100, idempotency_key="h", reference="r")
    ledger.capture(hold.id, 60, idempotency_key="c1")
    with pytest.raises(HoldExceeded) as refused:
        ledger.capture(hold.id, 41, idempotency_key="c2")
    assert refused.value.details["outstanding"] == "0.000040"
    with pytest.raises(HoldExceeded):
        ledger.release(hold.id, 41, idempotency_key="r1")
    assert state(ledger) == (940, 40, 900)
    assert ledger.get_hold(hold.id).outstanding_micros == 40


def test_another_vendors_hold_is_unknown(ledger, conn, accounts):
    other = Ledger(conn, accounts.vendor("Other").vendor_id)
    other.topup(100, idempotency_key="t")
    foreign = other.hold(50, idempotency_key="h", reference="r")
    ledger.topup(100, idempotency_key="t")
    for attempt in (lambda: ledger.capture(foreign.id, 10, idempotency_key="c"),
                    lambda: ledger.release(foreign.id, idempotency_key="r"),
                    lambda: ledger.capture(uuid.uuid4(), 10, idempotency_key="c2")):
        with pytest.raises(UnknownHold):
            attempt()
    assert other.get_hold(foreign.id).outstanding_micros == 50


def test_a_replayed_hold_returns_its_hold_even_when_the_money_is_now_spoken_for(ledger):
    ledger.topup(30, idempotency_key="t")
    hold = ledger.hold(30, idempotency_key="h", reference="r")
    assert ledger.hold(30, idempotency_key="h", reference="r").id == hold.id
    assert state(ledger) == (30, 30, 0)


def test_an_adjustment_debits_only_what_is_available_and_credits_freely(ledger, owner):
    ledger.topup(50, idempotency_key="t")
    ledger.hold(30, idempotency_key="h", reference="r")
    with pytest.raises(InsufficientFunds):
        ledger.adjust(-21, idempotency_key="a1", actor_user_id=owner.user.id, note="fee")
    debit = ledger.adjust(-20, idempotency_key="a2", actor_user_id=owner.user.id, note="fee")
    assert (debit.kind, debit.amount_micros, debit.balance_delta_micros) == ("ADJUSTMENT", 20, -20)
    ledger.adjust(5, idempotency_key="a3", actor_user_id=owner.user.id, note="goodwill")
    assert state(ledger) == (35, 30, 5)
    with pytest.raises(ValueError):
        ledger.adjust(0, idempotency_key="a4", actor_user_id=owner.user.id, note="nothing")


def test_holds_are_listed_by_reference(ledger):
    ledger.topup(100, idempotency_key="t")
    first = ledger.hold(10, idempotency_key="h1", reference="campaign:a")
    ledger.hold(20, idempotency_key="h2", reference="campaign:b")
    second = ledger.hold(30, idempotency_key="h3", reference="campaign:a")
    assert [h.id for h in ledger.holds("campaign:a")] == [first.id, second.id]
    assert [h.outstanding_micros for h in ledger.holds("campaign:a")] == [10, 30]


def test_the_ledger_refuses_updates_and_deletes(ledger, db, conn, vendor):
    ledger.topup(100, idempotency_key="t")
    for statement in ("UPDATE ledger_entry SET amount_micros = 1", "DELETE FROM ledger_entry"):
        with pytest.raises(sa.exc.DBAPIError, match="append-only"), conn.begin_nested():
            conn.execute(sa.text(statement))
    assert [row.amount_micros for row in entries(conn, vendor.vendor_id)] == [100]


@pytest.mark.parametrize("change", ["balance_micros = -1", "held_micros = -1", "held_micros = balance_micros + 1"])
def test_the_database_refuses_a_wallet_outside_its_invariants(ledger, db, conn, change):
    ledger.topup(100, idempotency_key="t")
    with pytest.raises(sa.exc.IntegrityError), conn.begin_nested():
        conn.execute(sa.text(f"UPDATE wallet SET {change}"))


def test_deleting_a_vendor_takes_its_ledger_with_it(ledger, db, conn, vendor):
    ledger.topup(100, idempotency_key="t")
    conn.execute(sa.text("DELETE FROM vendor WHERE id = :id"), {"id": vendor.vendor_id})
    assert entries(conn, vendor.vendor_id) == []
