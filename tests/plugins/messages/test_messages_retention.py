"""The messages plugin's retention: finished messages, Meta's status reports and customers' messages expire;
nothing that may still be sent does (kloyst_plugins/messages/retention.py, docs/retention.md)."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select

from kloyst.db import utcnow
from kloyst.retention import Pruner, policies
from kloyst_plugins.messages.models import (DeadLetter, InboundMessage, MessageLog, MessageStatus,
                                            MessageStatusEvent)

DAY = dt.timedelta(days=1)


@pytest.fixture
def pruner(registry, monkeypatch):
    # Batches of 3: every test crosses batch boundaries, where a keyset that lost its place would stop early or
    # take a row twice.
    monkeypatch.setitem(registry.settings, "kloyst.retention.batch_size", 3)
    return Pruner(registry, policies(registry))


def _count(db, model, **where) -> int:
    return db.scalar(select(func.count()).select_from(model).filter_by(**where))


def test_finished_messages_older_than_the_retention_go_with_their_dead_letters(db, messaging, pruner):
    vendor = messaging.sending_vendor()
    old = utcnow() - 396 * DAY
    for _ in range(4):
        messaging.failed(vendor.number, created_at=old)
    for status in (MessageStatus.READ, MessageStatus.CANCELLED, MessageStatus.DELIVERED):
        messaging.message(vendor.number, status=status, created_at=old)
    young = messaging.message(vendor.number, status=MessageStatus.READ, created_at=utcnow() - 394 * DAY)

    [result] = pruner.run(only=["messages.messages"])

    assert result.removed == 7
    assert db.scalars(select(MessageLog.id).filter_by(vendor_id=vendor.vendor_id)).all() == [young.id]
    assert _count(db, DeadLetter, vendor_id=vendor.vendor_id) == 0


def test_a_message_that_may_still_be_sent_is_never_pruned(db, messaging, pruner):
    vendor = messaging.sending_vendor()
    ancient = utcnow() - 2000 * DAY
    waiting = {messaging.message(vendor.number, status=status, created_at=ancient).id
               for status in (MessageStatus.QUEUED, MessageStatus.SENDING, MessageStatus.PAUSED)}

    pruner.run(only=["messages.messages"])

    assert set(db.scalars(select(MessageLog.id).filter_by(vendor_id=vendor.vendor_id))) == waiting


def test_every_vendor_is_pruned_not_only_the_first(db, messaging, pruner):
    vendors = [messaging.sending_vendor(f"Vendor {n}") for n in range(3)]
    old = utcnow() - 400 * DAY
    for vendor in vendors:
        for _ in range(5):
            messaging.message(vendor.number, status=MessageStatus.READ, created_at=old)

    [result] = pruner.run(only=["messages.messages"])

    assert result.removed == 15
    assert all(_count(db, MessageLog, vendor_id=v.vendor_id) == 0 for v in vendors)


def test_status_reports_expire_before_their_message(db, messaging, pruner):
    vendor = messaging.sending_vendor()
    message = messaging.message(vendor.number, status=MessageStatus.READ, wamid="wamid.retention-1")
    for days, status in ((95, "sent"), (92, "delivered"), (10, "read")):
        db.add(MessageStatusEvent(vendor_id=vendor.vendor_id, message_id=message.id, wamid=message.wamid,
                                  status=status, occurred_at=utcnow() - days * DAY,
                                  received_at=utcnow() - days * DAY))
    db.flush()

    [result] = pruner.run(only=["messages.status_events"])

    assert result.removed == 2
    assert db.scalars(select(MessageStatusEvent.status).filter_by(message_id=message.id)).all() == ["read"]
    assert _count(db, MessageLog, id=message.id) == 1


def test_customers_messages_expire_like_sent_ones(db, messaging, pruner):
    vendor = messaging.sending_vendor()
    for n, days in enumerate((400, 396, 30)):
        db.add(InboundMessage(vendor_id=vendor.vendor_id, wamid=f"wamid.in-{n}-{vendor.vendor_id}",
                              phone_number_id=vendor.number.id, sender_hash=b"h" * 32, type="text",
                              content_enc=b"x", enc_kid="k", sent_at=utcnow() - days * DAY,
                              received_at=utcnow() - days * DAY))
    db.flush()

    [result] = pruner.run(only=["messages.inbound"])

    assert result.removed == 2
    assert _count(db, InboundMessage, vendor_id=vendor.vendor_id) == 1


def test_a_setting_of_zero_days_keeps_messages_forever(db, messaging, pruner, registry, monkeypatch):
    monkeypatch.setitem(registry.settings, "messages.retention_days", 0)
    vendor = messaging.sending_vendor()
    messaging.message(vendor.number, status=MessageStatus.READ, created_at=utcnow() - 5000 * DAY)

    [result] = pruner.run(only=["messages.messages"])

    assert (result.days, result.removed) == (0, 0)
    assert _count(db, MessageLog, vendor_id=vendor.vendor_id) == 1
