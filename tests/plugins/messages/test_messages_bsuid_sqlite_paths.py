"""BSUIDs on the embedded default (SQLite) and on PostgreSQL, through the same code on a migrated database.

Each test runs twice, on a SQLite file and on a PostgreSQL database, both built by the migrations
(so contacts_0003's partial indexes and check are the ones in force): inbound attribution by
BSUID, linking and merging, statuses linking a number's contact to its BSUID, and a campaign's
fan-out addressing a contact without a number by ``recipient`` — or skipping it, with the reason
and its price back, when the template is an authentication one.
"""

from __future__ import annotations

import datetime as dt
import os
import types
import uuid

import pytest
from alembic import command
from sqlalchemy import func, select

from kloyst import testing
from kloyst.accounts.models import Vendor
from kloyst.crypto import FieldCipher, MobileHasher
from kloyst.db import make_engine, make_session_factory, migrate, session_scope, tenancy
from kloyst.plugins import build_plugin_manager
from kloyst.webhooks import WebhookChange
from kloyst_plugins.campaigns import fanout, freeze
from kloyst_plugins.campaigns.models import Campaign, CampaignRecipient
from kloyst_plugins.contacts.audience import Audience
from kloyst_plugins.contacts.models import Contact
from kloyst_plugins.contacts.services import Actor, ContactService, Identity
from kloyst_plugins.contacts.models import ContactSource
from kloyst_plugins.contacts.phones import normalize
from kloyst_plugins.messages.content import open_content
from kloyst_plugins.messages.models import InboundMessage, MessageLog
from kloyst_plugins.messages.webhooks import link_status_contacts, receive_messages
from kloyst_plugins.templates.models import MessageTemplate
from kloyst_plugins.templates.services import set_components
from kloyst_plugins.waba.models import PhoneNumber, Waba

BSUID = "GB.8812345678901234"
NUMBER = "+447400123456"
META_NUMBER = "500000000000002"


@pytest.fixture(params=["sqlite", "postgresql"])
def migrated(request, tmp_path, kloyst_extra_plugins):
    """A database built by every migration, a vendor with a number, and a task-like context for it."""
    name = None
    if request.param == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'kloyst.sqlite'}")
    else:
        name = f"{testing.database_prefix()}_bsuidpaths_{os.getpid()}"
        engine = make_engine(testing.create_database(name))
    pm = build_plugin_manager(kloyst_extra_plugins)
    with engine.begin() as connection:
        command.upgrade(migrate.alembic_config(pm, str(engine.url), connection), "heads")
    factory = make_session_factory(engine)
    cipher, hasher = FieldCipher({"k": os.urandom(32)}), MobileHasher("bsuid-paths-hash-key")
    with session_scope(factory, vendor_id=tenancy.ALL_VENDORS) as db:
        vendor = Vendor(name="Embedded")
        db.add(vendor)
        db.flush()
        waba = Waba(vendor_id=vendor.id, meta_waba_id="500000000000001", name="W", access_token_enc=b"x", enc_kid="k")
        db.add(waba)
        db.flush()
        number = PhoneNumber(vendor_id=vendor.id, waba_id=waba.id, meta_phone_number_id=META_NUMBER,
                             display_phone_number="+1 555", throughput_mps=80)
        db.add(number)
        db.flush()
        ids = types.SimpleNamespace(vendor_id=vendor.id, waba=waba, number_id=number.id)
    registry = {"kloyst.cipher": cipher, "kloyst.mobile_hasher": hasher}
    yield factory, registry, ids
    engine.dispose()
    if name is not None:
        testing.drop_database(name)


def _ctx(db, registry, vendor_id):
    return types.SimpleNamespace(db=db, vendor_id=vendor_id, registry=registry)


def _change(value: dict) -> WebhookChange:
    return WebhookChange(field="messages", value={"messaging_product": "whatsapp", **value},
                         meta_waba_id="500000000000001", meta_phone_number_id=META_NUMBER, delivery_id=1,
                         received_at=dt.datetime.now(dt.timezone.utc))


def _message(text: str, *, phone: str | None = None, bsuid: str | None = BSUID, username: str | None = "ann") -> dict:
    entry: dict = {"profile": {"name": "Ann", **({"username": username} if username else {})}}
    message: dict = {"id": f"wamid.{uuid.uuid4().hex}", "timestamp": "1700000000", "type": "text",
                     "text": {"body": text}}
    if bsuid:
        entry["user_id"] = message["from_user_id"] = bsuid
    if phone:
        entry["wa_id"] = message["from"] = phone.lstrip("+")
    return {"contacts": [entry], "messages": [message]}


def _receive(factory, registry, vendor_id, value: dict) -> None:
    with session_scope(factory, vendor_id=vendor_id) as db:
        receive_messages(_ctx(db, registry, vendor_id), [_change(value)], frozenset({"STOP"}))


def test_a_bsuid_only_user_is_attributed_opted_out_and_later_merged_into_the_number_contact(migrated):
    factory, registry, ids = migrated
    vendor_id, hasher = ids.vendor_id, registry["kloyst.mobile_hasher"]
    _receive(factory, registry, vendor_id, _message("STOP"))
    _receive(factory, registry, vendor_id, _message("hello", phone=NUMBER, bsuid=None))
    with session_scope(factory, vendor_id=vendor_id) as db:
        contacts = list(db.scalars(select(Contact).order_by(Contact.created_at)))
        assert [(c.mobile_hash is None, c.bsuid_hash is None, c.opted_out) for c in contacts] == [
            (True, False, True), (False, True, False)]
        assert contacts[0].country == "GB"  # from the BSUID's prefix
        kept_id = contacts[1].id
        [first] = db.scalars(select(InboundMessage).where(InboundMessage.contact_id == contacts[0].id)).all()
        assert first.sender_hash == hasher(vendor_id, BSUID) and first.opt_out is True
    _receive(factory, registry, vendor_id, _message("both now", phone=NUMBER))
    with session_scope(factory, vendor_id=vendor_id) as db:
        [kept] = db.scalars(select(Contact)).all()
        assert kept.id == kept_id and kept.opted_out is True
        assert kept.bsuid_hash == hasher(vendor_id, BSUID) and kept.mobile_hash == hasher(vendor_id, NUMBER)
        assert set(db.scalars(select(InboundMessage.contact_id))) == {kept_id}
        assert db.scalar(select(func.count()).select_from(InboundMessage)) == 3


def test_a_status_links_the_number_contact_to_its_bsuid_and_creates_nothing(migrated):
    factory, registry, ids = migrated
    vendor_id = ids.vendor_id
    with session_scope(factory, vendor_id=vendor_id) as db:
        service = ContactService(db, vendor_id=vendor_id, cipher=registry["kloyst.cipher"],
                                 hasher=registry["kloyst.mobile_hasher"])
        service.create(normalize(NUMBER), actor=Actor(ContactSource.API))
    with session_scope(factory, vendor_id=vendor_id) as db:
        link_status_contacts(_ctx(db, registry, vendor_id), [
            {"wa_id": NUMBER.lstrip("+"), "user_id": BSUID, "username": "ann"},
            {"wa_id": "12025550100", "user_id": "US.777"},  # no contact of that number: nothing is created
            {"user_id": "US.888"}])
    with session_scope(factory, vendor_id=vendor_id) as db:
        service = ContactService(db, vendor_id=vendor_id, cipher=registry["kloyst.cipher"],
                                 hasher=registry["kloyst.mobile_hasher"])
        [contact] = db.scalars(select(Contact)).all()
        assert service.decrypt_bsuid(contact) == BSUID and service.decrypt_username(contact) == "ann"
        assert service.decrypt_mobile(contact) == NUMBER


@pytest.mark.parametrize("category", ["MARKETING", "AUTHENTICATION"])
def test_the_fan_out_addresses_a_contact_without_a_number_by_recipient_and_skips_it_for_authentication(
        migrated, category):
    factory, registry, ids = migrated
    vendor_id, cipher = ids.vendor_id, registry["kloyst.cipher"]
    with session_scope(factory, vendor_id=vendor_id) as db:
        service = ContactService(db, vendor_id=vendor_id, cipher=cipher, hasher=registry["kloyst.mobile_hasher"])
        by_number = service.create(normalize(NUMBER), actor=Actor(ContactSource.API), name="Bo")
        by_bsuid = service.identify(Identity(bsuid=BSUID, username="ann", name="Ann"),
                                    actor=Actor(ContactSource.WEBHOOK))[0]
        template = MessageTemplate(vendor_id=vendor_id, meta_waba_id=ids.waba.meta_waba_id, name="promo",
                                   language="en_US", category=category, status="APPROVED")
        set_components(template, [{"type": "BODY", "text": "Hi {{1}}"}])
        db.add(template)
        db.flush()
        campaign = Campaign(vendor_id=vendor_id, name="c", template_id=template.id, phone_number_id=ids.number_id,
                            audience={"all": True}, variable_mapping={"1": {"field": "name"}}, status="LAUNCHING")
        db.add(campaign)
        db.flush()
        counts, _ = freeze.freeze(db, vendor_id=vendor_id, campaign_id=campaign.id, audience=Audience(all=True),
                                  unit_prices={"GB": [(2, 100)]})
        assert counts == {"GB": 2}  # the BSUID's prefix prices the contact without a number
        starts = freeze.add_chunks(db, vendor_id=vendor_id, campaign_id=campaign.id, recipients=2, size=2)
        campaign_id, ids_of = campaign.id, {by_number.id: NUMBER, by_bsuid.id: BSUID}
    with session_scope(factory, vendor_id=vendor_id) as db:
        result = fanout.write_chunk(db, registry, vendor_id=vendor_id, campaign_id=campaign_id, seq_from=starts[0])
    with session_scope(factory, vendor_id=vendor_id) as db:
        sent = {m.contact_id: open_content(cipher, vendor_id, m.content_enc) for m in db.scalars(select(MessageLog))}
        skipped = dict(db.execute(select(CampaignRecipient.contact_id, CampaignRecipient.skipped)
                                  .where(CampaignRecipient.skipped.is_not(None))).all())
        hashes = {m.contact_id: m.recipient_hash for m in db.scalars(select(MessageLog))}
    assert sent[by_number.id]["to"] == NUMBER and "recipient" not in sent[by_number.id]
    if category == "MARKETING":
        assert (result.written, result.skipped) == (2, 0)
        assert sent[by_bsuid.id]["recipient"] == BSUID and "to" not in sent[by_bsuid.id]
        assert sent[by_bsuid.id]["template"]["components"][0]["parameters"][0]["text"] == "Ann"
        assert hashes[by_bsuid.id] == registry["kloyst.mobile_hasher"](vendor_id, BSUID)
    else:
        assert (result.written, result.skipped, result.skipped_micros) == (1, 1, 100)
        assert skipped == {by_bsuid.id: fanout.SKIP_NO_NUMBER}
    assert set(ids_of) >= set(sent)
