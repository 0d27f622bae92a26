"""SQLite (the embedded default) takes the portable paths: freeze, fan-out by executemany, pause, resume, cancel."""

from __future__ import annotations

import datetime as dt
import os
import uuid

import pytest
from sqlalchemy import func, select

from kloyst.accounts.models import Vendor
from kloyst.crypto import FieldCipher, MobileHasher
from kloyst.db import Base, make_engine, make_session_factory, session_scope, tenancy
from kloyst_plugins.campaigns import control, fanout, freeze, stats
from kloyst_plugins.campaigns.models import Campaign
from kloyst_plugins.contacts.audience import Audience
from kloyst_plugins.contacts.models import Contact
from kloyst_plugins.messages.content import open_content
from kloyst_plugins.messages.models import MessageLog
from kloyst_plugins.templates.models import MessageTemplate
from kloyst_plugins.templates.services import set_components
from kloyst_plugins.waba.models import PhoneNumber, Waba

TABLES = ("vendor", "contact", "contact_audit_log", "waba", "shared_waba", "phone_number", "message_template",
          "message_log", "outbox_event", "campaign", "campaign_recipient", "campaign_chunk")


@pytest.fixture
def embedded(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'campaigns.sqlite'}")
    Base.metadata.create_all(engine, tables=[Base.metadata.tables[name] for name in TABLES])
    factory = make_session_factory(engine)
    cipher, hasher = FieldCipher({"k": os.urandom(32)}), MobileHasher("sqlite-test-hash-key")
    with session_scope(factory, vendor_id=tenancy.ALL_VENDORS) as db:
        vendor = Vendor(name="Embedded")
        db.add(vendor)
        db.flush()
        waba = Waba(vendor_id=vendor.id, meta_waba_id="500000000000001", name="W", access_token_enc=b"x",
                    enc_kid="k")
        db.add(waba)
        db.flush()
        number = PhoneNumber(vendor_id=vendor.id, waba_id=waba.id, meta_phone_number_id="500000000000002",
                             display_phone_number="+1 555", throughput_mps=80)
        template = MessageTemplate(vendor_id=vendor.id, meta_waba_id=waba.meta_waba_id, name="promo", language="en_US",
                                   category="MARKETING", status="APPROVED")
        set_components(template, [{"type": "BODY", "text": "Hi {{1}}"}])
        db.add_all([number, template])
        for index in range(4):
            e164 = f"+1202555{index:04d}"
            db.add(Contact(vendor_id=vendor.id, mobile_hash=hasher(vendor.id, e164),
                           mobile_enc=cipher.encrypt(e164, vendor_id=vendor.id, field="mobile"), enc_kid="k",
                           country="US", labels=[], attributes={}, opted_out=index == 3))
        db.flush()
        campaign = Campaign(vendor_id=vendor.id, name="c", template_id=template.id, phone_number_id=number.id,
                            audience={"all": True}, variable_mapping={"1": {"field": "mobile"}}, status="LAUNCHING")
        db.add(campaign)
        db.flush()
        ids = (vendor.id, campaign.id)
    yield factory, {"kloyst.cipher": cipher}, ids
    engine.dispose()


def test_freeze_fan_out_pause_resume_and_cancel_on_sqlite(embedded):
    factory, registry, (vendor_id, campaign_id) = embedded
    with session_scope(factory, vendor_id=vendor_id) as db:
        counts, total = freeze.freeze(db, vendor_id=vendor_id, campaign_id=campaign_id,
                                      audience=Audience(all=True), unit_prices={"US": [(2, 100), (1, 50)]})
        assert (counts, total) == ({"US": 3}, 250)
        starts = freeze.add_chunks(db, vendor_id=vendor_id, campaign_id=campaign_id, recipients=3, size=2)
    for start in starts:
        with session_scope(factory, vendor_id=vendor_id) as db:
            fanout.write_chunk(db, registry, vendor_id=vendor_id, campaign_id=campaign_id, seq_from=start)
    with session_scope(factory, vendor_id=vendor_id) as db:
        found = list(db.scalars(select(MessageLog)))
        assert sorted(m.price_micros for m in found) == [50, 100, 100]
        assert all(m.idempotency_key == f"campaign:{campaign_id}:{m.contact_id}" for m in found)
        assert {open_content(registry["kloyst.cipher"], vendor_id, m.content_enc)["to"] for m in found} == {
            "+12025550000", "+12025550001", "+12025550002"}
        assert isinstance(found[0].contact_id, uuid.UUID)
    with session_scope(factory, vendor_id=vendor_id) as db:
        assert control.pause(db, campaign_id).status == "PAUSED"
    with session_scope(factory, vendor_id=vendor_id) as db:
        assert db.scalar(select(func.count()).select_from(MessageLog).where(MessageLog.status == "PAUSED")) == 3
        assert control.resume(db, campaign_id).status == "LAUNCHING"
    with session_scope(factory, vendor_id=vendor_id) as db:
        assert control.cancel(db, campaign_id).status == "CANCELLING"
    with session_scope(factory, vendor_id=vendor_id) as db:
        assert {m.status for m in db.scalars(select(MessageLog))} == {"CANCELLED"}


def test_the_recipients_export_writes_canonical_ids_and_times_with_their_zone_on_sqlite(embedded):
    factory, registry, (vendor_id, campaign_id) = embedded
    with session_scope(factory, vendor_id=vendor_id) as db:
        freeze.freeze(db, vendor_id=vendor_id, campaign_id=campaign_id, audience=Audience(all=True),
                      unit_prices={"US": [(2, 100), (1, 50)]})
        starts = freeze.add_chunks(db, vendor_id=vendor_id, campaign_id=campaign_id, recipients=3, size=3)
    with session_scope(factory, vendor_id=vendor_id) as db:
        fanout.write_chunk(db, registry, vendor_id=vendor_id, campaign_id=campaign_id, seq_from=starts[0])
    sent = dt.datetime(2026, 12, 5, 9, 30, 0, 734000, tzinfo=dt.timezone.utc)
    with session_scope(factory, vendor_id=vendor_id) as db:
        message = db.scalars(select(MessageLog).order_by(MessageLog.contact_id)).first()
        message.status, message.wamid, message.sent_at = "SENT", "wamid.export", sent
        contact_of_sent = message.contact_id

    rows = [dict(zip(stats.EXPORT_COLUMNS, row)) for row in stats.export_rows(
        factory, vendor_id=vendor_id, campaign_id=campaign_id, cipher=registry["kloyst.cipher"])]

    assert len(rows) == 3
    assert all(row["contact_id"] == str(uuid.UUID(row["contact_id"])) for row in rows)  # with its dashes
    [row] = [r for r in rows if r["status"] == "SENT"]
    assert row["contact_id"] == str(contact_of_sent)
    assert row["sent_at"] == "2026-12-05T09:30:00.734000+00:00"
    assert dt.datetime.fromisoformat(row["sent_at"]) == sent
    assert {r["delivered_at"] for r in rows} == {""}
