"""Two workers at once on PostgreSQL (real commits, one session each): one event delivered twice is answered once,
and two messages of one chatty customer get one away message between them."""

from __future__ import annotations

import datetime as dt
import threading

from autoreplies_support import BERLIN_HOURS, Builder, CLOSED, inbound
from sqlalchemy import select

from kloyst.db import session_scope, tenancy, utcnow
from kloyst.events import DomainEvent, MessageReceived
from kloyst.outbox.models import OutboxEvent
from kloyst.queue import TaskContext
from kloyst.webhooks import deliveries as delivery_rows
from kloyst.webhooks.drainer import drain_once
from kloyst_plugins.autoreplies import plugin
from kloyst_plugins.autoreplies.models import AutoReplyRule, AutoReplySettings


def received_events(db, registry, shop, *texts: str) -> list[DomainEvent]:
    """The customer writes ``texts`` (stored by the drainer, committed); their MessageReceived events, undelivered."""
    bodies = [(inbound(shop, text, at=CLOSED - dt.timedelta(minutes=1)), utcnow()) for text in texts]
    delivery_rows.store(db, bodies, next_attempt_at=utcnow())
    db.commit()
    drain_once(registry)
    db.expire_all()
    with tenancy.unscoped(db):
        rows = db.scalars(select(OutboxEvent).where(OutboxEvent.vendor_id == shop.vendor_id,
                                                    OutboxEvent.topic == "vendor.event")).all()
    return [DomainEvent(id=row.id, name="MessageReceived", vendor_id=shop.vendor_id, payload=row.payload["payload"],
                        data=MessageReceived.from_payload(row.payload["payload"]))
            for row in rows if row.payload["name"] == "MessageReceived"]


def deliver_at_once(registry, vendor_id, events: list[DomainEvent]) -> None:
    start = threading.Barrier(len(events), timeout=10)
    errors: list[BaseException] = []

    def deliver(event: DomainEvent) -> None:
        try:
            with session_scope(registry["kloyst.session_factory"], vendor_id=vendor_id) as session:
                start.wait()
                plugin.kloyst_vendor_event(event, TaskContext(registry, session, None, vendor_id))
        except BaseException as exc:  # noqa: BLE001 - reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=deliver, args=(event,)) for event in events]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []


def test_one_event_delivered_by_two_workers_at_once_is_answered_once(registry, committed_db, monkeypatch):
    monkeypatch.setattr(plugin, "utcnow", lambda: CLOSED)
    build = Builder(committed_db, registry)
    shop = build.shop("Race Co")
    build.save(AutoReplyRule(vendor_id=shop.vendor_id, keyword="hours", match="exact", language="",
                              action="reply", reply_text="9 to 5"))
    [event] = received_events(committed_db, registry, shop, "hours")
    deliver_at_once(registry, shop.vendor_id, [event, event, event])
    assert build.texts(shop) == ["9 to 5"]
    build.db.expire_all()
    with tenancy.unscoped(build.db):
        assert build.db.scalars(select(AutoReplyRule.hits)).all() == [1]


def test_two_messages_handled_at_once_get_one_away_message(registry, committed_db, monkeypatch):
    monkeypatch.setattr(plugin, "utcnow", lambda: CLOSED)
    build = Builder(committed_db, registry)
    shop = build.shop("Chatty Co")
    build.save(AutoReplySettings(vendor_id=shop.vendor_id, **BERLIN_HOURS, away_enabled=True, away_text="Closed.",
                                  away_interval_hours=24, opt_out_confirmation=True, opt_out_text="out",
                                  opt_in_confirmation=True, opt_in_text="in"))
    build.contact(shop)  # both messages find the contact: none of them creates it
    events = received_events(committed_db, registry, shop, "hello", "anyone?", "hello??")
    assert len(events) == 3
    deliver_at_once(registry, shop.vendor_id, events)
    assert build.texts(shop) == ["Closed."]
