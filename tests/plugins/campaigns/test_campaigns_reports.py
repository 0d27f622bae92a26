"""Live counters, the per-recipient CSV export and the test send."""

from __future__ import annotations

import csv
import datetime as dt
import io
import uuid

import pytest
from campaigns_support import draft, launch, messages, quote, recipients
from sqlalchemy import update

from kloyst.db import tenancy, utcnow
from kloyst_plugins.contacts.models import Contact
from kloyst_plugins.messages import settlement
from kloyst_plugins.messages.content import open_content
from kloyst_plugins.messages.models import MessageLog


SENT_AT = dt.datetime(2026, 12, 5, 9, 30, 0, 734000, tzinfo=dt.timezone.utc)


@pytest.fixture
def running(testapp, world, vendor, task_recorder, run_outbox):
    world.contacts(vendor.vendor_id, 4)
    campaign = draft(testapp, vendor)
    quote(testapp, vendor, campaign)
    campaign = launch(testapp, vendor, campaign).json["campaign"]
    run_outbox()
    return campaign


def test_stats_count_the_messages_by_status_and_the_money_spent_so_far(testapp, db, registry, vendor, running):
    found = messages(db, running["id"])
    with tenancy.unscoped(db):
        db.execute(update(MessageLog).where(MessageLog.id == found[0].id).values(status="SENT", sent_at=utcnow()))
        db.execute(update(MessageLog).where(MessageLog.id == found[1].id).values(status="READ"))
    rows = [(m.id, m.vendor_id, m.campaign_id, m.hold_id, m.price_micros) for m in found[:2]]
    settlement.report(registry["kloyst.plugin_manager"], db.connection(),
                      settlement.settled_from_rows(rows, settlement.SENT))
    db.commit()
    stats = testapp.get(f"/v1/campaigns/{running['id']}/stats", headers=vendor.headers).json["stats"]
    assert stats["recipients"] == 4 and stats["fanned_out"] == 4 and stats["messages"] == 4
    assert stats["counts"]["queued"] == 2 and stats["counts"]["sent"] == 1 and stats["counts"]["read"] == 1
    assert stats["counts"]["failed"] == 0 and stats["counts"]["cancelled"] == 0
    spent = sum(m.price_micros for m in found[:2])
    assert stats["cost_so_far"] == f"{spent / 10**6:.6f}"
    held = sum(r.price_micros for r in recipients(db, running["id"]))
    assert stats["held_remaining"] == f"{(held - spent) / 10**6:.6f}"


def test_the_recipients_export_has_one_row_per_recipient_and_cannot_run_formulas(testapp, db, world, vendor,
                                                                                 running):
    frozen = recipients(db, running["id"])
    with tenancy.unscoped(db):
        db.execute(update(Contact).where(Contact.id == frozen[0].contact_id).values(
            name_enc=world.cipher.encrypt("=HYPERLINK(\"http://evil\")", vendor_id=vendor.vendor_id, field="name")))
        db.execute(update(MessageLog).where(MessageLog.contact_id == frozen[1].contact_id).values(
            status="FAILED", error_code=131026, error_message="Message undeliverable", sent_at=SENT_AT))
    db.commit()
    response = testapp.get(f"/v1/campaigns/{running['id']}/recipients.csv", headers=vendor.headers)
    assert response.content_type == "text/csv" and "attachment" in response.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.body.decode("utf-8-sig"))))
    assert [int(r["seq"]) for r in rows] == [0, 1, 2, 3]
    assert rows[0]["name"] == "'=HYPERLINK(\"http://evil\")"
    assert all(r["phone"].startswith("'+1202555") for r in rows)  # an E.164 number starts with +
    assert rows[1]["status"] == "FAILED" and rows[1]["error_code"] == "131026"
    assert rows[1]["sent_at"] == "2026-12-05T09:30:00.734000+00:00"  # ISO 8601 with its zone
    assert [r["contact_id"] for r in rows] == [str(r.contact_id) for r in frozen]  # canonical, with dashes
    assert {r["status"] for r in rows[2:]} == {"QUEUED"}
    assert rows[2]["price"] == f"{frozen[2].price_micros / 10**6:.6f}"


def test_a_test_send_queues_one_message_outside_the_campaign(testapp, db, world, vendor):
    world.contacts(vendor.vendor_id, 2)
    campaign = draft(testapp, vendor)
    sent = testapp.post_json(f"/v1/campaigns/{campaign['id']}/test-send", {"phone": "+12025550000"},
                             headers={**vendor.headers, "Idempotency-Key": "try-1"}, status=202).json["message"]
    assert sent["to"] == "+12025550000" and sent["campaign_id"] is None and sent["status"] == "QUEUED"
    message = db.get(MessageLog, uuid.UUID(sent["id"]))
    assert message.price_micros > 0 and message.hold_id is not None  # paid for like any send (test_send_billing)
    body = open_content(world.cipher, vendor.vendor_id, message.content_enc)["template"]["components"][0]
    assert [p["text"] for p in body["parameters"]] == ["Customer 0", "SALE10"]  # the contact with that number
    again = testapp.post_json(f"/v1/campaigns/{campaign['id']}/test-send", {"phone": "+12025550000"},
                              headers={**vendor.headers, "Idempotency-Key": "try-1"}, status=202)
    assert again.headers["Idempotent-Replayed"] == "true" and again.json["message"]["id"] == sent["id"]
    stranger = testapp.post_json(f"/v1/campaigns/{campaign['id']}/test-send", {"phone": "+12025550150"},
                                 headers=vendor.headers, status=202).json["message"]
    stranger_body = open_content(world.cipher, vendor.vendor_id, db.get(
        MessageLog, uuid.UUID(stranger["id"])).content_enc)["template"]["components"][0]
    assert [p["text"] for p in stranger_body["parameters"]] == ["there", "SALE10"]  # the mapping's default
    assert testapp.get(f"/v1/campaigns/{campaign['id']}", headers=vendor.headers).json["campaign"]["status"] == "DRAFT"


def test_a_test_send_to_an_opted_out_contact_is_refused(testapp, world, vendor):
    world.contacts(vendor.vendor_id, 1, opted_out=True)
    campaign = draft(testapp, vendor)
    error = testapp.post_json(f"/v1/campaigns/{campaign['id']}/test-send", {"phone": "+12025550000"},
                              headers=vendor.headers, status=409).json["error"]
    assert error["code"] == "contact_opted_out"
