"""Meta's price decides what a message costs: free gives everything back, another category moves the difference.

Runs on PostgreSQL (the suite's database) and on the embedded default (SQLite built by the same migrations);
after each test every wallet equals its ledger and its holds (``kloyst wallet check``'s invariants).
"""

from __future__ import annotations

import logging

import pytest
import sqlalchemy as sa

from kloyst.accounts.models import Vendor
from kloyst.db import make_engine, migrate, new_id, utcnow
from kloyst.plugins import build_plugin_manager
from kloyst_plugins.wallet.audit import invariant_violations
from kloyst_plugins.wallet.ledger import Ledger
from kloyst_plugins.wallet.settlement import settle_messages
from wallet_support import entries, hold_row, low_balance_events, settled

PRICE = 100  # what the message was held and captured at


@pytest.fixture(scope="module")
def sqlite_engine(tmp_path_factory):
    engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp('meta-price') / 'kloyst.sqlite'}")
    migrate.upgrade(build_plugin_manager([]), engine)
    yield engine
    engine.dispose()


@pytest.fixture(params=["postgresql", "sqlite"])
def wallet(request):
    """``(conn, vendor_id)`` with 1000 topped up, on either database; invariants checked at the end."""
    if request.param == "postgresql":
        db, vendor = request.getfixturevalue("db"), request.getfixturevalue("vendor")
        conn = db.connection()
        Ledger(conn, vendor.vendor_id).topup(1000, idempotency_key="seed")
        yield conn, vendor.vendor_id
        assert invariant_violations(conn) == []
        return
    with request.getfixturevalue("sqlite_engine").connect() as conn, conn.begin() as outer:
        vendor_id = new_id()
        conn.execute(sa.insert(Vendor.__table__).values(id=vendor_id, name="Embedded", created_at=utcnow(),
                                                        updated_at=utcnow()))
        Ledger(conn, vendor_id).topup(1000, idempotency_key="seed")
        yield conn, vendor_id
        assert invariant_violations(conn) == []
        outer.rollback()


def _sent(conn, vendor_id, reference: str = "message:1"):
    """A message held and captured at PRICE, as a single send is once Meta accepted it."""
    hold = Ledger(conn, vendor_id).hold(PRICE, idempotency_key=f"{reference}:hold", reference=reference)
    message = settled(vendor_id, hold.id, PRICE, "sent")
    settle_messages(conn, [message])
    return hold, message


def _again(message, outcome: str, price: int = PRICE):
    return settled(message.vendor_id, message.hold_id, price, outcome, message.message_id)


def _money(conn, vendor_id) -> tuple[int, int]:
    state = Ledger(conn, vendor_id).wallet()
    return state.balance_micros, state.held_micros


def test_a_message_meta_says_is_free_gives_back_what_it_cost_once(wallet):
    conn, vendor_id = wallet
    hold, message = _sent(conn, vendor_id)
    assert _money(conn, vendor_id) == (900, 0)

    result = settle_messages(conn, [_again(message, "free")])
    settle_messages(conn, [_again(message, "free"), _again(message, "undelivered")])  # told again: nothing

    assert result.refunded == PRICE
    assert _money(conn, vendor_id) == (1000, 0)
    assert [(e.kind, e.amount_micros) for e in entries(conn, vendor_id)] == [
        ("TOPUP", 1000), ("HOLD", PRICE), ("CAPTURE", PRICE), ("REFUND", PRICE)]
    assert hold_row(conn, hold.id).refunded_micros == PRICE


def test_a_cheaper_category_refunds_the_difference_and_a_later_failure_the_rest(wallet):
    conn, vendor_id = wallet
    hold, message = _sent(conn, vendor_id)

    settle_messages(conn, [_again(message, "repriced", 30)])
    assert _money(conn, vendor_id) == (970, 0)  # it costs 30, not 100
    settle_messages(conn, [_again(message, "repriced", 10)])  # Meta's first word decided
    assert _money(conn, vendor_id) == (970, 0)

    settle_messages(conn, [_again(message, "undelivered")])
    assert _money(conn, vendor_id) == (1000, 0)
    row = hold_row(conn, hold.id)
    assert (row.captured_micros, row.refunded_micros) == (PRICE, PRICE)


def test_a_dearer_category_debits_the_difference_from_available_money_not_from_the_hold(wallet):
    conn, vendor_id = wallet
    campaign = Ledger(conn, vendor_id).hold(500, idempotency_key="campaign", reference="campaign:1")
    message = settled(vendor_id, campaign.id, PRICE, "sent")
    settle_messages(conn, [message])
    assert _money(conn, vendor_id) == (900, 400)

    result = settle_messages(conn, [_again(message, "repriced", 250)])

    assert result.adjusted == -150
    assert _money(conn, vendor_id) == (750, 400)  # the campaign's other messages keep their money held
    assert hold_row(conn, campaign.id).captured_micros == PRICE
    adjustment = entries(conn, vendor_id)[-1]
    assert (adjustment.kind, adjustment.amount_micros, adjustment.balance_delta_micros, adjustment.message_id,
            adjustment.idempotency_key) == ("ADJUSTMENT", 150, -150, message.message_id,
                                            f"msg:{message.message_id}:meta:{campaign.id}")


def test_a_dearer_category_then_a_failure_gives_back_the_capture_and_the_extra(wallet):
    conn, vendor_id = wallet
    _, message = _sent(conn, vendor_id)
    settle_messages(conn, [_again(message, "repriced", 250)])
    assert _money(conn, vendor_id) == (750, 0)

    settle_messages(conn, [_again(message, "undelivered")])
    settle_messages(conn, [_again(message, "undelivered"), _again(message, "free")])

    assert _money(conn, vendor_id) == (1000, 0)
    assert [(e.kind, e.balance_delta_micros) for e in entries(conn, vendor_id)][3:] == [
        ("ADJUSTMENT", -150), ("REFUND", PRICE), ("ADJUSTMENT", 150)]


def test_a_message_already_refunded_is_never_charged_meta_s_category_afterwards(wallet):
    conn, vendor_id = wallet
    _, message = _sent(conn, vendor_id)
    settle_messages(conn, [_again(message, "free")])
    settle_messages(conn, [_again(message, "repriced", 250)])
    assert _money(conn, vendor_id) == (1000, 0)


def test_sent_and_repriced_in_one_call_capture_first_then_move_the_difference(wallet):
    conn, vendor_id = wallet
    hold = Ledger(conn, vendor_id).hold(PRICE, idempotency_key="h", reference="message:2")
    message = settled(vendor_id, hold.id, PRICE, "sent")
    settle_messages(conn, [_again(message, "repriced", 40), message])
    assert _money(conn, vendor_id) == (960, 0)


def test_an_extra_charge_larger_than_available_takes_what_is_there_and_logs_the_shortfall(wallet, caplog):
    conn, vendor_id = wallet
    _, message = _sent(conn, vendor_id)
    Ledger(conn, vendor_id).hold(880, idempotency_key="other", reference="campaign:other")  # 20 left available
    with caplog.at_level(logging.ERROR, logger="kloyst_plugins.wallet.settlement"):
        result = settle_messages(conn, [_again(message, "repriced", 250)])
    assert result.adjusted == -20
    assert _money(conn, vendor_id) == (880, 880)  # never below what is held, never negative
    assert "not collected" in caplog.text and str(message.message_id) in caplog.text


def test_an_extra_charge_crossing_the_threshold_raises_the_low_balance_alert(db, vendor, enable_plugin):
    enable_plugin(vendor, "probe")  # a plugin the vendor enabled wants the event (the probe wants every one)
    conn = db.connection()
    Ledger(conn, vendor.vendor_id).topup(1000, idempotency_key="seed")
    _, message = _sent(conn, vendor.vendor_id)
    Ledger(conn, vendor.vendor_id).set_low_balance_threshold(800)
    assert low_balance_events(conn, vendor.vendor_id) == []
    settle_messages(conn, [_again(message, "repriced", 250)])
    assert [event["balance_micros"] for event in low_balance_events(conn, vendor.vendor_id)] == [750]


def test_a_message_meta_priced_before_it_was_captured_moves_nothing(wallet, caplog):
    conn, vendor_id = wallet
    hold = Ledger(conn, vendor_id).hold(PRICE, idempotency_key="h", reference="message:3")
    message = settled(vendor_id, hold.id, PRICE, "sent")
    with caplog.at_level(logging.WARNING, logger="kloyst_plugins.wallet.settlement"):
        settle_messages(conn, [_again(message, "repriced", 250)])
    assert _money(conn, vendor_id) == (1000, PRICE)
    assert "never captured" in caplog.text
