"""Fan-out: each recipient's message written once, sealed exactly as a single send would be."""

from __future__ import annotations

import json
import uuid

from campaigns_support import (MAPPING, assert_ledger_consistent, draft, holds, launch, messages, quote, recipients,
                               wallet)
from sqlalchemy import delete, select, update

from kloyst.db import tenancy
from kloyst_plugins.campaigns import fanout
from kloyst_plugins.campaigns.models import Campaign, CampaignChunk
from kloyst_plugins.campaigns.render import Renderer
from kloyst_plugins.contacts.models import Contact
from kloyst_plugins.messages.content import open_content, seal_content
from kloyst_plugins.templates import parameters


def launched(testapp, world, vendor, count: int = 5, **fields) -> dict:
    world.contacts(vendor.vendor_id, count)
    campaign = draft(testapp, vendor, **fields)
    quote(testapp, vendor, campaign)
    return launch(testapp, vendor, campaign).json["campaign"]


def run_chunk(db, registry, vendor, campaign, seq_from: int = 0):
    """Run one chunk as its task would: in a transaction scoped to the vendor."""
    tenancy.set_scope(db, vendor.vendor_id)
    try:
        result = fanout.write_chunk(db, registry, vendor_id=vendor.vendor_id, campaign_id=uuid.UUID(campaign["id"]),
                                    seq_from=seq_from)
        db.commit()
        return result
    finally:
        tenancy.set_scope(db, tenancy.ALL_VENDORS)


def test_the_sealed_payload_is_exactly_what_a_single_send_would_seal(registry, world, vendor):
    template = world.template(vendor.waba, name="named", body="Dear {{first_name}} from {{country}}: {{code}}",
                              parameter_format="NAMED", header={"type": "HEADER", "format": "TEXT",
                                                                "text": "Hi {{first_name}}"},
                              buttons=[{"type": "URL", "text": "Open", "url": "https://x.example/{{1}}"}])
    mapping = {"first_name": {"field": "name", "default": "friend"}, "country": {"field": "country", "default": "?"},
               "code": {"value": "Q \"1\""}, "header.first_name": {"field": "name", "default": "friend"}}
    buttons = [{"sub_type": "url", "index": 0, "parameters": ["promo/é"]}]
    cipher = registry["kloyst.cipher"]
    renderer = Renderer(template, mapping, buttons, cipher=cipher, vendor_id=vendor.vendor_id)
    message_id = uuid.uuid4()
    values = renderer.values(mobile="+12025550100", name="Zoë\n  O'Brien", country="US")
    sealed = renderer.seal("+12025550100", message_id, values)
    expected = parameters.build_payload(template, "+12025550100", header={"first_name": "Zoë O'Brien"},
                                        body={"first_name": "Zoë O'Brien", "country": "US", "code": 'Q "1"'},
                                        buttons=buttons, biz_opaque_callback_data=str(message_id))
    assert open_content(cipher, vendor.vendor_id, sealed) == expected
    assert renderer.text("+12025550100", message_id, values) == json.dumps(expected, separators=(",", ":"),
                                                                          ensure_ascii=False)
    reference, _ = seal_content(cipher, vendor.vendor_id, expected)
    assert open_content(cipher, vendor.vendor_id, reference) == open_content(cipher, vendor.vendor_id, sealed)
    assert renderer.needs_name and not renderer.needs_attributes


def test_a_missing_name_takes_the_default(registry, vendor):
    renderer = Renderer(vendor.template, MAPPING, [], cipher=registry["kloyst.cipher"], vendor_id=vendor.vendor_id)
    assert renderer.values(mobile="+12025550100", name=None) == ["there", "SALE10"]
    assert renderer.values(mobile="+12025550100", name="  ") == ["there", "SALE10"]


def test_a_chunk_delivered_twice_writes_its_messages_once(testapp, db, registry, world, vendor, task_recorder):
    campaign = launched(testapp, world, vendor)
    first = run_chunk(db, registry, vendor, campaign)
    second = run_chunk(db, registry, vendor, campaign)
    assert (first.written, first.already_done) == (5, False)
    assert (second.written, second.already_done) == (0, True)
    found = messages(db, campaign["id"])
    assert len(found) == 5 and len({m.contact_id for m in found}) == 5
    [chunk] = db.scalars(select(CampaignChunk).where(CampaignChunk.campaign_id == uuid.UUID(campaign["id"])))
    assert chunk.done_at is not None and (chunk.written, chunk.skipped) == (5, 0)


def test_a_contact_deleted_or_opted_out_after_the_launch_gets_no_message_and_its_price_goes_back(
        testapp, db, registry, world, vendor, task_recorder):
    campaign = launched(testapp, world, vendor)
    frozen = recipients(db, campaign["id"])
    gone, stopped = frozen[0], frozen[1]
    with tenancy.unscoped(db):
        db.execute(delete(Contact).where(Contact.id == gone.contact_id))
        db.execute(update(Contact).where(Contact.id == stopped.contact_id).values(opted_out=True))
    db.commit()
    [hold] = holds(db, campaign["id"])
    result = run_chunk(db, registry, vendor, campaign)
    assert (result.written, result.skipped) == (3, 2)
    assert result.skipped_micros == gone.price_micros + stopped.price_micros
    assert {m.contact_id for m in messages(db, campaign["id"])} == {r.contact_id for r in frozen[2:]}
    [after] = holds(db, campaign["id"])
    assert after.released_micros == hold.released_micros + gone.price_micros + stopped.price_micros
    reasons = {r.seq: r.skipped for r in recipients(db, campaign["id"])}
    assert reasons[gone.seq] == "contact deleted" and reasons[stopped.seq] == "contact opted out"
    assert_ledger_consistent(db, vendor.vendor_id)
    assert wallet(db, vendor.vendor_id).held_micros == after.amount_micros - after.released_micros


def test_a_paused_campaign_writes_its_messages_paused_and_a_cancelled_one_writes_none(
        testapp, db, registry, world, vendor, task_recorder):
    campaign = launched(testapp, world, vendor)
    with tenancy.unscoped(db):
        db.execute(update(Campaign).where(Campaign.id == uuid.UUID(campaign["id"])).values(status="PAUSED"))
    db.commit()
    run_chunk(db, registry, vendor, campaign)
    assert {m.status for m in messages(db, campaign["id"])} == {"PAUSED"}
    other = launched(testapp, world, vendor, count=0)  # the same five contacts
    with tenancy.unscoped(db):
        db.execute(update(Campaign).where(Campaign.id == uuid.UUID(other["id"])).values(status="CANCELLING"))
    db.commit()
    result = run_chunk(db, registry, vendor, other)
    assert (result.written, result.skipped) == (0, 5) and messages(db, other["id"]) == []
