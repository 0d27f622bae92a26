"""A campaign's test send is a real message Meta bills: it holds its price like ``POST /v1/messages`` and
settles the same way, outside the campaign's own hold (the campaign's quote is not touched)."""

from __future__ import annotations

import uuid

from campaigns_support import draft, wallet
from sqlalchemy import select

from kloyst.db import tenancy
from kloyst_plugins.messages import settlement
from kloyst_plugins.messages.models import MessageLog
from kloyst_plugins.pricing.services import QuotationService
from kloyst_plugins.wallet.records import ENTRY, HOLD

USD = 10**6


def test_send(testapp, vendor, campaign, *, status=202, key=None):
    headers = {**vendor.headers, **({"Idempotency-Key": key} if key else {})}
    return testapp.post_json(f"/v1/campaigns/{campaign['id']}/test-send", {"phone": "+12025550000"},
                             headers=headers, status=status)


test_send.__test__ = False  # a helper, not a test


def marketing_price(db, registry, vendor_id) -> int:
    return QuotationService(db, vendor_id=vendor_id, registry=registry, enqueue=None).price(
        {"US": 1}, "MARKETING").items_micros


def kinds(db, vendor_id) -> list[str]:
    return list(db.scalars(select(ENTRY.c.kind).where(ENTRY.c.vendor_id == vendor_id).order_by(ENTRY.c.seq)))


def test_a_test_send_from_an_empty_wallet_is_402_and_queues_nothing(testapp, db, registry, world):
    broke = world.vendor("Broke Campaigns")
    world.contacts(broke.vendor_id, 1)
    campaign = draft(testapp, broke)
    error = test_send(testapp, broke, campaign, status=402).json["error"]
    assert error["code"] == "insufficient_funds"
    assert error["details"] == {"needed": f"{marketing_price(db, registry, broke.vendor_id) / USD:.6f}",
                                "available": "0.000000", "currency": "USD"}
    with tenancy.unscoped(db):
        assert db.scalars(select(MessageLog).where(MessageLog.vendor_id == broke.vendor_id)).all() == []
    assert kinds(db, broke.vendor_id) == []


def test_a_test_send_holds_its_price_and_a_capture_spends_it(testapp, db, registry, world, vendor):
    world.contacts(vendor.vendor_id, 1)
    campaign = draft(testapp, vendor)
    sent = test_send(testapp, vendor, campaign, key="proof").json["message"]
    message = db.get(MessageLog, uuid.UUID(sent["id"]))
    price = marketing_price(db, registry, vendor.vendor_id)
    assert message.price_micros == price and message.campaign_id is None
    hold = db.execute(select(HOLD).where(HOLD.c.id == message.hold_id)).one()
    assert hold.amount_micros == price and hold.reference == f"message:{message.id}"
    test_send(testapp, vendor, campaign, key="proof")  # replayed: no second hold
    assert kinds(db, vendor.vendor_id) == ["TOPUP", "HOLD"]
    settlement.report(registry["kloyst.plugin_manager"], db.connection(), settlement.settled_from_rows(
        [(message.id, message.vendor_id, None, message.hold_id, message.price_micros)], settlement.SENT))
    state = wallet(db, vendor.vendor_id)
    assert (state.balance_micros, state.held_micros) == (100 * USD - price, 0)
    assert kinds(db, vendor.vendor_id) == ["TOPUP", "HOLD", "CAPTURE"]


def test_a_test_send_that_fails_before_meta_gives_its_hold_back(testapp, db, registry, world, vendor):
    world.contacts(vendor.vendor_id, 1)
    campaign = draft(testapp, vendor)
    message = db.get(MessageLog, uuid.UUID(test_send(testapp, vendor, campaign).json["message"]["id"]))
    settlement.report(registry["kloyst.plugin_manager"], db.connection(), settlement.settled_from_rows(
        [(message.id, message.vendor_id, None, message.hold_id, message.price_micros)], settlement.FAILED))
    state = wallet(db, vendor.vendor_id)
    assert (state.balance_micros, state.held_micros) == (100 * USD, 0)
    assert kinds(db, vendor.vendor_id) == ["TOPUP", "HOLD", "RELEASE"]
