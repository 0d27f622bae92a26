"""WhatsApp usernames and business-scoped user ids (BSUIDs) in messages, on PostgreSQL.

Webhooks are posted signed and applied by the drainer, shaped as Meta's BSUID rollout writes them
(``contacts[].user_id`` always, ``wa_id`` and ``from`` only when Meta shares the number,
``profile.username``, ``parent_user_id``; statuses with a ``contacts`` array). A user known only by
BSUID gets a contact, messages and opt-outs; a later message with both ids links them; sends go
to ``recipient`` when no number is known, and authentication templates to a BSUID are refused.
"""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path

import pytest
from sqlalchemy import func, select

from messaging_support import LANGUAGE, TEMPLATE
from kloyst.db import tenancy
from kloyst.webhooks.drainer import drain_once
from kloyst_plugins.campaigns.render import Renderer
from kloyst_plugins.contacts.models import AuditAction, Contact, ContactAuditLog
from kloyst_plugins.messages.content import open_content
from kloyst_plugins.messages.models import InboundMessage, MessageLog
from kloyst_plugins.messages.services import addressed
from kloyst_plugins.templates.parameters import build_payload

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "functional"))
from webhooks_support import Builder, envelope, post, status  # noqa: E402

BSUID = "US.13491208655302741918"
PARENT = "US.ENT.11815799212886844830"
NUMBER = "+12025550177"
T0 = 1_700_000_000


def user_message(line, text: str, *, phone: str | None = None, bsuid: str | None = BSUID,
                 username: str | None = "ann.sells", parent: str | None = None, wamid: str | None = None,
                 at: int = T0) -> bytes:
    """An inbound text as Meta sends it since the BSUID rollout (no ``wa_id``/``from`` when the number is withheld)."""
    entry: dict = {"profile": {"name": "Ann"}}
    message: dict = {"id": wamid or f"wamid.in.{uuid.uuid4().hex}", "timestamp": str(at), "type": "text",
                     "text": {"body": text}}
    if username:
        entry["profile"]["username"] = username
    if bsuid:
        entry["user_id"] = bsuid
        message["from_user_id"] = bsuid
    if parent:
        entry["parent_user_id"] = parent
    if phone:
        entry["wa_id"] = message["from"] = phone.lstrip("+")
    return envelope(line, {"contacts": [entry], "messages": [message]})


@pytest.fixture
def build(db, registry):
    return Builder(db, registry)


@pytest.fixture
def line(build):
    return build.line("Username Co")


@pytest.fixture
def deliver(testapp, registry):
    def deliver(*bodies: bytes) -> None:
        for body in bodies:
            post(testapp, body)
        drain_once(registry)
    return deliver


def contacts_of(db, vendor_id) -> list[Contact]:
    db.expire_all()
    with tenancy.unscoped(db):
        return list(db.scalars(select(Contact).where(Contact.vendor_id == vendor_id).order_by(Contact.created_at)))


def opened(registry, contact: Contact, field: str) -> str | None:
    token = getattr(contact, f"{field}_enc")
    return None if token is None else registry["kloyst.cipher"].decrypt(token, vendor_id=contact.vendor_id,
                                                                        field=field)


def inbound_rows(db, vendor_id) -> list[InboundMessage]:
    db.expire_all()
    with tenancy.unscoped(db):
        return list(db.scalars(select(InboundMessage).where(InboundMessage.vendor_id == vendor_id)
                               .order_by(InboundMessage.sent_at)))


def test_a_message_from_a_username_user_without_a_number_creates_a_contact_known_by_bsuid(line, deliver, db,
                                                                                          registry):
    deliver(user_message(line, "hello", parent=PARENT))
    [contact] = contacts_of(db, line.vendor_id)
    hasher = registry["kloyst.mobile_hasher"]
    assert contact.mobile_hash is None and contact.mobile_enc is None
    assert contact.bsuid_hash == hasher(line.vendor_id, BSUID) and BSUID.encode() not in contact.bsuid_enc
    assert opened(registry, contact, "bsuid") == BSUID
    assert opened(registry, contact, "parent_bsuid") == PARENT
    assert contact.parent_bsuid_hash == hasher(line.vendor_id, PARENT)
    assert opened(registry, contact, "username") == "ann.sells"
    assert opened(registry, contact, "name") == "Ann"
    assert contact.country == "US" and contact.source == "webhook" and contact.last_inbound_at is not None
    [stored] = inbound_rows(db, line.vendor_id)
    assert stored.contact_id == contact.id and stored.sender_hash == contact.bsuid_hash


def test_stop_from_a_bsuid_only_user_opts_that_contact_out(line, deliver, db):
    deliver(user_message(line, "hi", at=T0), user_message(line, " stop ", at=T0 + 1))
    [contact] = contacts_of(db, line.vendor_id)
    assert contact.opted_out is True
    assert [m.opt_out for m in inbound_rows(db, line.vendor_id)] == [False, True]


def test_a_later_message_with_the_number_gives_the_bsuid_contact_its_number(line, deliver, db, registry):
    deliver(user_message(line, "no number yet", at=T0))
    deliver(user_message(line, "now with it", phone=NUMBER, username="ann.new", at=T0 + 60))
    [contact] = contacts_of(db, line.vendor_id)
    assert opened(registry, contact, "mobile") == NUMBER and opened(registry, contact, "bsuid") == BSUID
    assert opened(registry, contact, "username") == "ann.new"
    later = inbound_rows(db, line.vendor_id)[-1]
    assert later.contact_id == contact.id and later.sender_hash == contact.mobile_hash


def phone_contact(db, registry, vendor_id, e164: str = NUMBER, **fields) -> Contact:
    cipher = registry["kloyst.cipher"]
    with tenancy.unscoped(db):
        contact = Contact(vendor_id=vendor_id, mobile_hash=registry["kloyst.mobile_hasher"](vendor_id, e164),
                          mobile_enc=cipher.encrypt(e164, vendor_id=vendor_id, field="mobile"),
                          enc_kid=cipher.active_kid, country="US", calling_code=1, **{"labels": [], "attributes": {},
                                                                                      **fields})
        db.add(contact)
        db.commit()
    return contact


def test_a_phone_contact_gains_the_bsuid_when_the_user_writes_with_both(line, deliver, db, registry):
    created = phone_contact(db, registry, line.vendor_id, labels=["vip"])
    deliver(user_message(line, "hello", phone=NUMBER))
    [contact] = contacts_of(db, line.vendor_id)
    assert contact.id == created.id and opened(registry, contact, "bsuid") == BSUID
    assert contact.labels == ["vip"] and opened(registry, contact, "username") == "ann.sells"
    with tenancy.unscoped(db):
        [update] = db.scalars(select(ContactAuditLog.changes).where(ContactAuditLog.contact_id == contact.id,
                                                                    ContactAuditLog.action == "update")).all()
    assert update["bsuid"] == [None, "changed"] and BSUID not in json.dumps(update)


def test_two_contacts_of_one_user_are_merged_into_the_phone_contact(line, deliver, db, registry):
    deliver(user_message(line, "STOP", at=T0))  # a contact of the BSUID alone, opted out
    deliver(user_message(line, "hi", bsuid=None, phone=NUMBER, username=None, at=T0 + 10))  # one of the number
    bsuid_contact, phone_contact = contacts_of(db, line.vendor_id)
    assert bsuid_contact.mobile_hash is None and phone_contact.bsuid_hash is None
    assert bsuid_contact.opted_out is True and phone_contact.opted_out is False
    gone_id = bsuid_contact.id
    deliver(user_message(line, "both ids at last", phone=NUMBER, at=T0 + 20))
    [kept] = contacts_of(db, line.vendor_id)
    assert kept.id == phone_contact.id
    assert opened(registry, kept, "bsuid") == BSUID and opened(registry, kept, "mobile") == NUMBER
    assert kept.opted_out is True  # an opt-out is never lost in a merge
    assert {m.contact_id for m in inbound_rows(db, line.vendor_id)} == {kept.id}  # the first message followed
    with tenancy.unscoped(db):
        merges = db.scalars(select(ContactAuditLog).where(ContactAuditLog.action == AuditAction.MERGE.value,
                                                          ContactAuditLog.vendor_id == line.vendor_id)).all()
    by_contact = {row.contact_id: row.changes for row in merges}
    assert by_contact[gone_id]["merged_into"] == [None, str(kept.id)]
    assert by_contact[kept.id]["merged_from"] == [str(gone_id), None]
    assert "bsuid" in by_contact[kept.id]


def test_a_status_naming_the_number_and_the_bsuid_links_them_on_the_phone_contact(line, deliver, db, registry,
                                                                                    build):
    message = build.message(line)
    phone_contact(db, registry, line.vendor_id, "+12025550123")
    delivered = status(message.wamid, "delivered", at=T0)
    delivered["recipient_user_id"] = BSUID
    deliver(envelope(line, {"contacts": [{"wa_id": "12025550123", "user_id": BSUID, "username": "ann.sells"}],
                            "statuses": [delivered]}))
    [linked] = contacts_of(db, line.vendor_id)
    assert opened(registry, linked, "bsuid") == BSUID and opened(registry, linked, "username") == "ann.sells"
    with tenancy.unscoped(db):
        [audit] = db.scalars(select(ContactAuditLog.changes).where(ContactAuditLog.contact_id == linked.id)).all()
    assert audit == {"bsuid": [None, "changed"], "username": [None, "changed"]}
    renumbered = "US.24681357924681357"  # the number went to a new WhatsApp user: the contact follows the number
    deliver(envelope(line, {"contacts": [{"wa_id": "12025550123", "user_id": renumbered}],
                            "statuses": [status(message.wamid, "read", at=T0 + 1)]}))
    assert opened(registry, contacts_of(db, line.vendor_id)[0], "bsuid") == renumbered
    deliver(envelope(line, {"contacts": [{"user_id": "US.99999999"}],
                            "statuses": [status(message.wamid, "read", at=T0 + 5)]}))
    assert len(contacts_of(db, line.vendor_id)) == 1  # a status never creates a contact


# -- sends -------------------------------------------------------------------------------------------------------


def _bsuid_contact(messaging, registry, vendor_id) -> Contact:
    cipher, hasher = registry["kloyst.cipher"], registry["kloyst.mobile_hasher"]
    return messaging._save(Contact(vendor_id=vendor_id, bsuid_hash=hasher(vendor_id, BSUID),
                                   bsuid_enc=cipher.encrypt(BSUID, vendor_id=vendor_id, field="bsuid"),
                                   enc_kid=cipher.active_kid, country="US", labels=[], attributes={}))


def _send(testapp, vendor, status=202, **fields):
    body = {"phone_number_id": str(vendor.number.id), "template": {"name": TEMPLATE, "language": LANGUAGE},
            "parameters": {"body": ["Ann", "A-1"]}, **fields}
    return testapp.post_json("/v1/messages", body, headers=vendor.headers, status=status)


def test_a_template_to_a_contact_without_a_number_goes_to_its_bsuid_as_recipient(testapp, db, registry,
                                                                                   messaging, vendor):
    contact = _bsuid_contact(messaging, registry, vendor.vendor_id)
    answer = _send(testapp, vendor, contact_id=str(contact.id)).json["message"]
    assert answer["to"] == BSUID and answer["contact_id"] == str(contact.id) and answer["country"] == "US"
    db.expire_all()
    with tenancy.unscoped(db):
        message = db.scalars(select(MessageLog).where(MessageLog.vendor_id == vendor.vendor_id)).one()
    payload = open_content(registry["kloyst.cipher"], vendor.vendor_id, message.content_enc)
    assert "to" not in payload and payload["recipient"] == BSUID
    assert list(payload)[:3] == ["messaging_product", "recipient_type", "recipient"]
    assert message.recipient_hash == contact.bsuid_hash


def test_to_may_name_a_bsuid_and_finds_its_contact(testapp, db, registry, messaging, vendor):
    contact = _bsuid_contact(messaging, registry, vendor.vendor_id)
    answer = _send(testapp, vendor, to=BSUID).json["message"]
    assert answer["contact_id"] == str(contact.id) and answer["to"] == BSUID


def test_an_authentication_template_to_a_bsuid_is_refused_before_anything_is_queued(testapp, db, registry,
                                                                                    messaging, vendor):
    messaging.template(vendor.waba, name="login_code", body="Your code is {{1}}", category="AUTHENTICATION")
    contact = _bsuid_contact(messaging, registry, vendor.vendor_id)
    error = _send(testapp, vendor, status=422, contact_id=str(contact.id),
                  template={"name": "login_code", "language": LANGUAGE}, parameters={"body": ["123456"]}).json["error"]
    assert error["code"] == "bsuid_recipient_unsupported" and "131062" in json.dumps(error)
    with tenancy.unscoped(db):
        assert db.scalar(select(func.count()).select_from(MessageLog)
                         .where(MessageLog.vendor_id == vendor.vendor_id)) == 0


def test_an_opted_out_bsuid_contact_is_never_queued(testapp, db, registry, messaging, vendor):
    contact = _bsuid_contact(messaging, registry, vendor.vendor_id)
    with tenancy.unscoped(messaging.db):
        contact.opted_out = True
        messaging.db.commit()
    assert _send(testapp, vendor, status=409, to=BSUID).json["error"]["code"] == "contact_opted_out"



def test_a_campaign_payload_to_a_bsuid_is_byte_for_byte_the_single_sends(registry, vendor):
    renderer = Renderer(vendor.template, {"1": {"field": "name", "default": "there"}, "2": {"value": "A-1"}}, [],
                        cipher=registry["kloyst.cipher"], vendor_id=vendor.vendor_id)
    message_id = uuid.uuid4()
    values = renderer.values(mobile=None, name="Ann")
    expected = addressed(build_payload(vendor.template, BSUID, body=["Ann", "A-1"],
                                       biz_opaque_callback_data=str(message_id)), "recipient")
    assert renderer.text(BSUID, message_id, values, bsuid=True) == json.dumps(expected, separators=(",", ":"),
                                                                              ensure_ascii=False)
    assert open_content(registry["kloyst.cipher"], vendor.vendor_id,
                        renderer.seal(BSUID, message_id, values, bsuid=True)) == expected
    assert "to" not in expected and renderer.text("+12025550100", message_id, values).count('"to":') == 1


def test_one_batch_of_messages_from_a_new_sender_creates_one_contact_and_stores_every_message(db, line, deliver):
    """A batch is applied set-based: the sender's second and third messages find the contact its first created."""
    first = user_message(line, "hello", phone=NUMBER, bsuid=None, username=None, wamid="wamid.batch.1")
    second = user_message(line, "are you there?", phone=NUMBER, bsuid=BSUID, username=None, wamid="wamid.batch.2")
    third = user_message(line, "it's Ann", bsuid=BSUID, username="ann.sells", wamid="wamid.batch.3")
    deliver(first, second, third, first)  # the first again: a replay in the same batch is stored once

    (contact,) = contacts_of(db, line.vendor_id)
    assert contact.mobile_hash is not None and contact.bsuid_hash is not None and contact.username_enc is not None
    with tenancy.unscoped(db):
        stored = db.execute(select(InboundMessage.wamid, InboundMessage.contact_id)
                            .where(InboundMessage.vendor_id == line.vendor_id).order_by(InboundMessage.wamid)).all()
    assert stored == [("wamid.batch.1", contact.id), ("wamid.batch.2", contact.id), ("wamid.batch.3", contact.id)]
