"""Quote and launch: the quote's total held exactly, the audience frozen, refusals that leave nothing behind."""

from __future__ import annotations

import datetime as dt
import uuid

from campaigns_support import assert_ledger_consistent, draft, holds, launch, messages, quote, recipients, wallet
from sqlalchemy import select, update

from kloyst.db import tenancy
from kloyst_plugins.campaigns.models import CampaignChunk
from kloyst_plugins.contacts.models import Contact
from kloyst_plugins.pricing.models import Quotation
from kloyst_plugins.pricing.tasks import GENERATE_PDF


def test_the_quote_prices_the_audience_by_country_and_shows_whether_the_wallet_covers_it(testapp, world, vendor):
    world.contacts(vendor.vendor_id, 6, country="US")
    world.contacts(vendor.vendor_id, 4, country="GB")
    world.contacts(vendor.vendor_id, 3, start=50, opted_out=True)
    campaign = draft(testapp, vendor)
    answer = quote(testapp, vendor, campaign)
    quotation = answer["quotation"]
    assert answer["campaign"]["quotation_id"] == quotation["id"]
    assert quotation["recipients"] == 10 and quotation["category"] == "MARKETING"
    assert {i["country"]: i["quantity"] for i in quotation["items"]} == {"US": 6, "GB": 4}
    assert quotation["wallet"]["available"] == "100.000000" and quotation["wallet"]["sufficient"] is True
    assert quotation["wallet"]["shortfall"] == "0.000000"


def test_the_campaigns_quotation_gets_its_pdf_like_every_quotation(testapp, world, vendor):
    world.contacts(vendor.vendor_id, 3)
    campaign = draft(testapp, vendor)

    quotation = quote(testapp, vendor, campaign)["quotation"]

    answer = testapp.get(f"/v1/quotations/{quotation['id']}", headers=vendor.headers).json["quotation"]
    assert (answer["pdf_status"], answer["pdf_error"]) == ("READY", None)
    document = testapp.get(f"/v1/quotations/{quotation['id']}/pdf", headers=vendor.headers)
    assert document.content_type == "application/pdf" and document.body.startswith(b"%PDF")


def test_launch_holds_exactly_the_quote_and_freezes_the_audience_with_its_prices(testapp, db, world, vendor,
                                                                                 task_recorder):
    world.contacts(vendor.vendor_id, 6, country="US")
    world.contacts(vendor.vendor_id, 4, country="GB")
    opted_out = world.contacts(vendor.vendor_id, 2, start=50, opted_out=True)
    campaign = draft(testapp, vendor)
    quotation = quote(testapp, vendor, campaign)["quotation"]
    launched = launch(testapp, vendor, campaign).json["campaign"]
    assert launched["status"] == "LAUNCHING" and launched["recipients"] == 10
    assert launched["held"] == quotation["total"]
    [hold] = holds(db, campaign["id"])
    assert hold.amount_micros == db.get(Quotation, uuid.UUID(quotation["id"])).total_micros
    state = wallet(db, vendor.vendor_id)
    assert state.held_micros == hold.amount_micros
    assert state.available_micros == 100 * 10**6 - hold.amount_micros
    frozen = recipients(db, campaign["id"])
    assert [r.seq for r in frozen] == list(range(10))
    assert not {r.contact_id for r in frozen} & set(opted_out)
    items = {i["country"]: i["unit_price"] for i in quotation["items"]}
    assert all(f"{r.price_micros / 10**6:.6f}" == items[r.country] for r in frozen)
    assert db.get(Quotation, uuid.UUID(quotation["id"])).status == "ACCEPTED"
    assert [name for name, _ in task_recorder] == [GENERATE_PDF, "campaigns.fan_out_chunk"]  # the quote's, the launch's
    assert_ledger_consistent(db, vendor.vendor_id)


def test_launch_without_enough_funds_is_402_and_holds_freezes_and_sends_nothing(testapp, db, world, task_recorder):
    poor = world.vendor("Poor Co")
    world.fund(poor.vendor_id, 1000)  # 0.001 USD
    world.contacts(poor.vendor_id, 5)
    campaign = draft(testapp, poor)
    quotation = quote(testapp, poor, campaign)["quotation"]
    assert quotation["wallet"]["sufficient"] is False
    error = launch(testapp, poor, campaign, status=402).json["error"]
    assert error["code"] == "insufficient_funds"
    assert error["details"]["needed"] == quotation["total"] and error["details"]["available"] == "0.001000"
    assert holds(db, campaign["id"]) == [] and recipients(db, campaign["id"]) == []
    # The quote's PDF only: the fan-out tasks went with the rolled-back transaction.
    assert [name for name, _ in task_recorder] == [GENERATE_PDF]
    assert testapp.get(f"/v1/campaigns/{campaign['id']}", headers=poor.headers).json["campaign"]["status"] == "DRAFT"
    assert db.get(Quotation, uuid.UUID(quotation["id"])).status == "ACTIVE"
    state = wallet(db, poor.vendor_id)
    assert (state.balance_micros, state.held_micros) == (1000, 0)


def test_an_audience_that_changed_since_the_quote_is_409_quote_again(testapp, db, world, vendor):
    world.contacts(vendor.vendor_id, 5)
    campaign = draft(testapp, vendor)
    quote(testapp, vendor, campaign)
    world.contacts(vendor.vendor_id, 1, country="GB")
    error = launch(testapp, vendor, campaign, status=409).json["error"]
    assert error["code"] == "audience_changed"
    assert error["details"]["quoted"] == {"US": 5} and error["details"]["now"] == {"GB": 1, "US": 5}
    assert holds(db, campaign["id"]) == [] and recipients(db, campaign["id"]) == []
    quote(testapp, vendor, campaign)
    assert launch(testapp, vendor, campaign).json["campaign"]["recipients"] == 6


def test_launch_needs_a_quote_that_has_not_expired(testapp, db, world, vendor):
    world.contacts(vendor.vendor_id, 3)
    campaign = draft(testapp, vendor)
    assert launch(testapp, vendor, campaign, status=409).json["error"]["code"] == "quote_missing"
    quotation = quote(testapp, vendor, campaign)["quotation"]
    db.execute(update(Quotation).where(Quotation.id == uuid.UUID(quotation["id"]))
               .values(expires_at=dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)))
    db.commit()
    assert launch(testapp, vendor, campaign, status=409).json["error"]["code"] == "quote_expired"
    assert holds(db, campaign["id"]) == []


def test_a_retried_launch_with_its_key_answers_with_the_campaign_and_holds_once(testapp, db, world, vendor,
                                                                                 task_recorder):
    world.contacts(vendor.vendor_id, 3)
    campaign = draft(testapp, vendor)
    quote(testapp, vendor, campaign)
    first = launch(testapp, vendor, campaign, key="launch-1")
    again = launch(testapp, vendor, campaign, key="launch-1")
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json["campaign"]["id"] == first.json["campaign"]["id"]
    error = launch(testapp, vendor, campaign, status=409).json["error"]
    assert error["code"] == "campaign_not_draft" and error["details"]["status"] == "LAUNCHING"
    assert len(holds(db, campaign["id"])) == 1 and len(recipients(db, campaign["id"])) == 3
    assert [name for name, _ in task_recorder] == [GENERATE_PDF, "campaigns.fan_out_chunk"]


def test_the_audience_is_cut_into_chunks_of_the_configured_size(testapp, db, world, vendor, registry, monkeypatch,
                                                                task_recorder):
    monkeypatch.setitem(registry.settings, "campaigns.chunk_size", 4)
    world.contacts(vendor.vendor_id, 10)
    campaign = draft(testapp, vendor)
    quote(testapp, vendor, campaign)
    launch(testapp, vendor, campaign)
    with tenancy.unscoped(db):
        chunks = db.execute(select(CampaignChunk.seq_from, CampaignChunk.seq_to).where(
            CampaignChunk.campaign_id == uuid.UUID(campaign["id"])).order_by(CampaignChunk.seq_from)).all()
    assert chunks == [(0, 4), (4, 8), (8, 10)]
    assert sorted(kw["seq_from"] for name, kw in task_recorder if name == "campaigns.fan_out_chunk") == [0, 4, 8]


def test_a_launched_campaign_writes_one_message_per_recipient(testapp, db, world, vendor, task_recorder, run_outbox):
    world.contacts(vendor.vendor_id, 7)
    world.contacts(vendor.vendor_id, 2, start=50, opted_out=True)
    campaign = draft(testapp, vendor)
    quote(testapp, vendor, campaign)
    launch(testapp, vendor, campaign)
    run_outbox()
    found = messages(db, campaign["id"])
    assert len(found) == 7 and {m.status for m in found} == {"QUEUED"}
    frozen = {r.contact_id: r for r in recipients(db, campaign["id"])}
    [hold] = holds(db, campaign["id"])
    for message in found:
        assert message.idempotency_key == f"campaign:{campaign['id']}:{message.contact_id}"
        assert message.price_micros == frozen[message.contact_id].price_micros and message.hold_id == hold.id
        assert message.category == "MARKETING" and message.country == "US"
    with tenancy.unscoped(db):
        opted = set(db.scalars(select(Contact.id).where(Contact.opted_out.is_(True))))
    assert not opted & {m.contact_id for m in found}


def test_members_quote_but_only_owners_and_admins_spend_the_wallet(testapp, db, accounts, world, vendor):
    from kloyst.accounts.models import Role

    world.contacts(vendor.vendor_id, 2, country="US")
    member = accounts.user(vendor.account.vendor, role=Role.MEMBER)
    db.commit()
    campaign = draft(testapp, vendor)
    testapp.post(f"/v1/campaigns/{campaign['id']}/quote", headers=member.headers, status=200)
    for action in ("launch", "resume", "retry-failed"):
        testapp.post(f"/v1/campaigns/{campaign['id']}/{action}", headers=member.headers, status=403)
    assert holds(db, campaign["id"]) == []
    assert launch(testapp, vendor, campaign).json["campaign"]["status"] == "LAUNCHING"
