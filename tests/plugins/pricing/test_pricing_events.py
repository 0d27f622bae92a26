"""A saved quotation emits QuotationReady in its own transaction: its id, total and currency."""

from __future__ import annotations

import probe_plugin
from sqlalchemy import select

from kloyst.db import tenancy
from kloyst.events import TOPIC
from kloyst.outbox import OutboxEvent


def recorded(db, vendor_id) -> list[dict]:
    db.expire_all()
    with tenancy.unscoped(db):
        return [e.payload for e in db.scalars(select(OutboxEvent).where(
            OutboxEvent.vendor_id == vendor_id, OutboxEvent.topic == TOPIC).order_by(OutboxEvent.id))]


def test_a_quotation_from_the_api_emits_quotation_ready(testapp, db, vendor, add_contacts, enable_plugin,
                                                        run_outbox):
    enable_plugin(vendor, "probe")  # subscribes to every event type and logs what it is delivered
    add_contacts(vendor, {"BR": 3})
    made = testapp.post_json("/v1/quotations", {"category": "MARKETING", "audience": {"all": True}},
                             headers=vendor.headers, status=201).json["quotation"]

    assert recorded(db, vendor.vendor_id) == [{"name": "QuotationReady", "payload": {
        "quotation_id": made["id"], "total_micros": 187_500, "currency": "USD"}}]
    run_outbox()
    assert [e["name"] for e in probe_plugin.delivered_events(db, vendor.vendor_id)] == ["QuotationReady"]


def test_a_quotation_rolled_back_emits_nothing(db, vendor, service, enable_plugin):
    enable_plugin(vendor, "probe")  # a plugin the vendor enabled wants the event (the probe wants every one)
    quotation = service(vendor).quote({"BR": 10}, "MARKETING")
    assert recorded(db, vendor.vendor_id)[-1]["payload"]["quotation_id"] == str(quotation.id)
    db.rollback()
    assert recorded(db, vendor.vendor_id) == []
