"""Inbound messages: stored once, encrypted; the sender's contact found or created, its window opened, STOP honoured."""

import datetime as dt
import json

import pytest
from sqlalchemy import func, select
from webhooks_support import inbound

from kloyst.db import tenancy
from kloyst_plugins.contacts.models import AuditAction, Contact, ContactAuditLog
from kloyst_plugins.messages.models import InboundMessage
from kloyst_plugins.messages.webhooks import INBOUND_FIELD, parse_keywords

T0 = 1_700_000_000
CUSTOMER = "+12025550188"


def _contact(db, registry, vendor_id, e164: str = CUSTOMER) -> Contact | None:
    db.expire_all()
    mobile_hash = registry["kloyst.mobile_hasher"](vendor_id, e164)
    with tenancy.unscoped(db):
        return db.scalars(select(Contact).where(Contact.vendor_id == vendor_id,
                                                Contact.mobile_hash == mobile_hash)).first()


def _inbound(db, wamid: str) -> InboundMessage:
    db.expire_all()
    with tenancy.unscoped(db):
        return db.scalars(select(InboundMessage).where(InboundMessage.wamid == wamid)).one()


def test_a_message_from_a_new_number_is_stored_encrypted_and_creates_its_contact(line, deliver, db, registry):
    deliver(inbound(line, "Hello, is my order shipped?", sender=CUSTOMER, name="Ann Customer", wamid="wamid.in.1",
                    at=T0))
    stored = _inbound(db, "wamid.in.1")
    assert b"order shipped" not in stored.content_enc
    content = json.loads(registry["kloyst.cipher"].decrypt(stored.content_enc, vendor_id=line.vendor_id,
                                                           field=INBOUND_FIELD))
    assert content["text"]["body"] == "Hello, is my order shipped?"
    assert (stored.type, stored.phone_number_id, stored.opt_out) == ("text", line.number.id, False)
    contact = _contact(db, registry, line.vendor_id)
    assert stored.contact_id == contact.id
    assert stored.sender_hash == contact.mobile_hash
    assert contact.source == "webhook"
    assert registry["kloyst.cipher"].decrypt(contact.name_enc, vendor_id=line.vendor_id, field="name") == "Ann Customer"


def test_a_message_opens_the_contacts_customer_service_window(line, deliver, db, registry):
    deliver(inbound(line, "hi", sender=CUSTOMER, at=T0))
    deliver(inbound(line, "late replay of an older message", sender=CUSTOMER, at=T0 - 3600))
    assert _contact(db, registry, line.vendor_id).last_inbound_at == dt.datetime.fromtimestamp(T0, dt.timezone.utc)


def test_the_same_message_in_two_deliveries_is_stored_once(line, deliver, db):
    deliver(inbound(line, "hi", sender=CUSTOMER, wamid="wamid.in.twice", at=T0),
            inbound(line, "hi", sender=CUSTOMER, wamid="wamid.in.twice", at=T0 + 1))
    with tenancy.unscoped(db):
        assert db.scalar(select(func.count()).select_from(InboundMessage)
                         .where(InboundMessage.wamid == "wamid.in.twice")) == 1


@pytest.mark.parametrize("text", ["STOP", "  stop ", "Unsubscribe"])
def test_stop_opts_the_contact_out_once(line, deliver, db, registry, text):
    deliver(inbound(line, "hello", sender=CUSTOMER, at=T0))
    deliver(inbound(line, text, sender=CUSTOMER, wamid="wamid.in.stop", at=T0 + 1),
            inbound(line, "STOP", sender=CUSTOMER, at=T0 + 2))
    contact = _contact(db, registry, line.vendor_id)
    assert contact.opted_out is True
    assert _inbound(db, "wamid.in.stop").opt_out is True
    with tenancy.unscoped(db):
        actions = db.scalars(select(ContactAuditLog.action).where(ContactAuditLog.contact_id == contact.id)).all()
    assert sorted(actions) == sorted([AuditAction.CREATE.value, AuditAction.OPT_OUT.value])


def test_a_sentence_containing_stop_does_not_opt_out(line, deliver, db, registry):
    deliver(inbound(line, "please don't stop sending", sender=CUSTOMER, at=T0))
    assert _contact(db, registry, line.vendor_id).opted_out is False


def test_keywords_from_the_setting_opt_out_too(line, deliver, db, registry, monkeypatch):
    monkeypatch.setitem(registry.settings, "messages.opt_out_keywords", parse_keywords("BAJA, no more"))
    deliver(inbound(line, "No  More", sender=CUSTOMER, at=T0))
    assert _contact(db, registry, line.vendor_id).opted_out is True


def test_a_known_contact_is_reused_not_duplicated(build, line, deliver, db, registry):
    deliver(inbound(line, "first", sender=CUSTOMER, name="Ann", at=T0))
    deliver(inbound(line, "second", sender=CUSTOMER, name="Someone Else", at=T0 + 60))
    with tenancy.unscoped(db):
        assert db.scalar(select(func.count()).select_from(Contact).where(Contact.vendor_id == line.vendor_id)) == 1
    assert _contact(db, registry, line.vendor_id).last_inbound_at == dt.datetime.fromtimestamp(T0 + 60,
                                                                                                 dt.timezone.utc)


def test_parse_keywords_reads_a_comma_separated_list_upper_case():
    assert parse_keywords(" baja, no  more ,,Stop") == frozenset({"BAJA", "NO MORE", "STOP"})
    assert parse_keywords("") == frozenset()
