"""Single-contact changes emit their domain events in the same transaction: created, updated, opted out/in."""

from __future__ import annotations

import uuid

import probe_plugin
import pytest
from sqlalchemy import select

from kloyst.db import session_scope, tenancy
from kloyst.events import TOPIC
from kloyst.outbox import OutboxEvent
from kloyst_plugins.contacts.models import ContactSource
from kloyst_plugins.contacts.services import Actor, ContactService


@pytest.fixture
def vendor(vendor, enable_plugin):
    enable_plugin(vendor, "probe")  # subscribes to every event type and logs what it is delivered
    return vendor


def recorded(db, vendor_id) -> list[dict]:
    db.expire_all()
    with tenancy.unscoped(db):
        return [e.payload for e in db.scalars(select(OutboxEvent).where(
            OutboxEvent.vendor_id == vendor_id, OutboxEvent.topic == TOPIC).order_by(OutboxEvent.id))]


def test_the_api_emits_created_updated_and_opted_out_per_contact(testapp, db, vendor, add_contact, run_outbox):
    contact = add_contact(vendor, "+447400123001", name="Ann")
    testapp.patch_json(f"/v1/contacts/{contact['id']}", {"labels": ["vip"], "name": "Anne"}, headers=vendor.headers)
    testapp.patch_json(f"/v1/contacts/{contact['id']}", {"labels": ["vip"]}, headers=vendor.headers)  # no change
    testapp.post(f"/v1/contacts/{contact['id']}/opt-out", headers=vendor.headers)

    assert recorded(db, vendor.vendor_id) == [
        {"name": "ContactCreated", "payload": {"contact_id": contact["id"], "source": "api"}},
        {"name": "ContactUpdated", "payload": {"contact_id": contact["id"], "source": "api",
                                               "changed": ["labels", "name"]}},
        {"name": "ContactOptedOut", "payload": {"contact_id": contact["id"], "source": "api"}},
    ]
    run_outbox()
    assert [(e["name"], e["data"]) for e in probe_plugin.delivered_events(db, vendor.vendor_id)] == [
        ("ContactCreated", "ContactCreated"), ("ContactUpdated", "ContactUpdated"),
        ("ContactOptedOut", "ContactOptedOut")]


def test_a_refused_create_emits_nothing(db, vendor, add_contact):
    add_contact(vendor, "+447400123002")
    add_contact(vendor, "+447400123002", status=409)
    assert [e["name"] for e in recorded(db, vendor.vendor_id)] == ["ContactCreated"]


def test_a_stop_keyword_opts_out_with_the_webhook_as_source(db, registry, vendor, add_contact):
    contact = add_contact(vendor, "+447400123003")
    with session_scope(registry["kloyst.session_factory"], vendor_id=vendor.vendor_id) as session:
        service = ContactService(session, vendor_id=vendor.vendor_id, cipher=registry["kloyst.cipher"],
                                 hasher=registry["kloyst.mobile_hasher"])
        service.opt_out_by_phone("+447400123003", actor=Actor(ContactSource.WEBHOOK))
        service.opt_out_by_phone("+447400123003", actor=Actor(ContactSource.WEBHOOK))  # already out: nothing
    assert recorded(db, vendor.vendor_id)[1:] == [
        {"name": "ContactOptedOut", "payload": {"contact_id": contact["id"], "source": "webhook"}}]
    assert uuid.UUID(contact["id"])
