"""Feed retention: events older than ``vendor_webhooks.retention_days`` go with their finished deliveries, never one
still being delivered, and a cursor into what was pruned answers 410 instead of silently skipping it
(kloyst_plugins/vendor_webhooks/retention.py, views.event_feed)."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from sqlalchemy import select, update

from kloyst.api import events, Outbox, utcnow
from kloyst.db import tenancy
from kloyst.retention import Pruner, policies
from kloyst_plugins.vendor_webhooks.models import DeliveryStatus, VendorEvent, WebhookDelivery

PLUGINS = ("contacts", "waba", "templates", "wallet", "pricing", "messages", "vendor_webhooks")
PUBLIC = "https://93.184.215.14/kloyst-events"


@pytest.fixture
def shop(accounts, enable_plugin):
    account = accounts.vendor("Retention Co")
    for name in PLUGINS:
        enable_plugin(account, name)
    return account


def _record(db, run_outbox, vendor_id, count: int) -> None:
    events.record_events(Outbox(db), vendor_id, [events.ContactCreated(contact_id=uuid.uuid4(), source="api")
                                                 for _ in range(count)])
    db.commit()
    run_outbox()


def _age(db, seqs, days: int) -> None:
    with tenancy.unscoped(db):
        db.execute(update(VendorEvent).where(VendorEvent.seq.in_(seqs))
                   .values(created_at=utcnow() - dt.timedelta(days=days)))


def _prune(registry) -> int:
    [result] = Pruner(registry, policies(registry)).run(only=["vendor_webhooks.events"])
    return result.removed


def test_old_events_go_with_their_deliveries_but_not_while_one_is_still_being_delivered(testapp, shop, db, registry,
                                                                                       run_outbox):
    testapp.post_json("/v1/webhook-endpoints", {"url": PUBLIC, "event_types": ["ContactCreated"]},
                      headers=shop.headers, status=201)
    _record(db, run_outbox, shop.vendor_id, 4)
    _age(db, [1, 2, 3], days=31)
    with tenancy.unscoped(db):
        rows = {seq: row for seq, row in db.execute(select(VendorEvent.seq, VendorEvent.id))}
        db.execute(update(WebhookDelivery).values(status=DeliveryStatus.DELIVERED.value))
        db.execute(update(WebhookDelivery).where(WebhookDelivery.event_row_id == rows[3])
                   .values(status=DeliveryStatus.PENDING.value))

    assert _prune(registry) == 2

    with tenancy.unscoped(db):
        assert sorted(db.scalars(select(VendorEvent.seq))) == [3, 4]
        assert sorted(db.scalars(select(WebhookDelivery.event_row_id))) == [rows[3], rows[4]]


def test_a_cursor_into_pruned_events_answers_410_and_a_fresh_poll_starts_at_the_oldest_kept(testapp, shop, db,
                                                                                           registry, run_outbox):
    _record(db, run_outbox, shop.vendor_id, 3)
    first = testapp.get("/v1/events?limit=1", headers=shop.headers).json
    _record(db, run_outbox, shop.vendor_id, 2)
    _age(db, [1, 2, 3], days=40)
    assert _prune(registry) == 3

    error = testapp.get(f"/v1/events?after={first['next_cursor']}", headers=shop.headers, status=410).json["error"]
    assert error["code"] == "cursor_expired" and "without `after`" in error["message"]
    fresh = testapp.get("/v1/events", headers=shop.headers).json
    assert len(fresh["items"]) == 2
    assert testapp.get(f"/v1/events?after={fresh['next_cursor']}", headers=shop.headers).json["items"] == []


def test_every_event_pruned_still_tells_a_poller_behind_it(testapp, shop, db, registry, run_outbox):
    _record(db, run_outbox, shop.vendor_id, 1)
    cursor = testapp.get("/v1/events", headers=shop.headers).json["next_cursor"]
    _record(db, run_outbox, shop.vendor_id, 2)
    _age(db, [1, 2, 3], days=40)
    assert _prune(registry) == 3

    testapp.get(f"/v1/events?after={cursor}", headers=shop.headers, status=410)
    testapp.get(f"/v1/events?after={cursor}&types=ContactOptedOut", headers=shop.headers, status=410)
