"""Domain events of campaigns: CampaignLaunched at launch, CampaignCancelled at cancel, CampaignCompleted at the end.

In Kloyst's own test run the ``probe`` plugin subscribes to every event type; enabled for the campaign's vendor
(an event no plugin the vendor enabled wants is not written), each event recorded is an outbox row (topic
``vendor.event``) of that vendor, written in the transaction that made the change.
"""

from __future__ import annotations

import uuid

from campaigns_support import messages
from sqlalchemy import select
from test_campaigns_control import action, launched, set_messages, tick  # noqa: F401 (launched is a fixture)

import pytest

from kloyst import events
from kloyst.outbox import OutboxEvent


@pytest.fixture(autouse=True)
def probe_listens(vendor, enable_plugin):
    enable_plugin(vendor, "probe")


def campaign_events(db, vendor_id, name: str | None = None) -> list[events.Event]:
    db.expire_all()
    rows = db.scalars(select(OutboxEvent).where(OutboxEvent.vendor_id == vendor_id, OutboxEvent.topic == events.TOPIC)
                      .order_by(OutboxEvent.id))
    found = [events.CATALOGUE[row.payload["name"]].from_payload(row.payload["payload"]) for row in rows
             if row.payload["name"].startswith("Campaign")]
    return [e for e in found if name is None or e.name == name]


def test_a_launch_records_campaign_launched_with_its_recipients_once(testapp, db, vendor, launched):  # noqa: F811
    campaign = launched(count=4)

    assert campaign_events(db, vendor.vendor_id) == [
        events.CampaignLaunched(campaign_id=uuid.UUID(campaign["id"]), recipients=4)]


def test_a_cancel_records_campaign_cancelled_and_no_completion(testapp, db, registry, vendor, launched):  # noqa: F811
    campaign = launched(count=3)

    action(testapp, vendor, campaign, "cancel")
    tick(registry)  # nothing in flight: the loop makes it CANCELLED

    assert campaign_events(db, vendor.vendor_id, "CampaignCancelled") == [
        events.CampaignCancelled(campaign_id=uuid.UUID(campaign["id"]))]
    assert campaign_events(db, vendor.vendor_id, "CampaignCompleted") == []


def test_a_completed_campaign_records_its_funnel_once(testapp, db, registry, vendor, launched):  # noqa: F811
    campaign = launched(count=6)
    found = messages(db, campaign["id"])
    set_messages(db, campaign, [found[0].id], status="SENT")
    set_messages(db, campaign, [found[1].id, found[2].id], status="DELIVERED")
    set_messages(db, campaign, [found[3].id], status="READ")
    set_messages(db, campaign, [found[4].id, found[5].id], status="FAILED")

    tick(registry)
    tick(registry)  # already COMPLETED: nothing more

    assert campaign_events(db, vendor.vendor_id, "CampaignCompleted") == [
        events.CampaignCompleted(campaign_id=uuid.UUID(campaign["id"]), sent=4, delivered=3, read=1, failed=2)]
