"""``MessageStatusChanged``: one per message whose status a status webhook moved, recorded with the batch.

Runs on both databases (the ``target`` fixture of ``test_bulk_queue``): PostgreSQL reads each message's status
before and after from the update's own RETURNING, SQLite around its row-by-row update.
"""

from __future__ import annotations

import datetime as dt
import os
import types
import uuid

from sqlalchemy import select
from test_bulk_queue import target  # noqa: F401 (a fixture)

from kloyst import events, testing
from kloyst.db import tenancy, utcnow
from kloyst.outbox import OutboxEvent
from kloyst_plugins.messages import statuses
from kloyst_plugins.messages.models import MessageLog, MessageStatus, STATUS_RANK

T0 = 1_700_000_000


def _message(db, vendor_id, number_id, *, status=MessageStatus.SENT, wamid=None, campaign_id=None) -> MessageLog:
    message = MessageLog(vendor_id=vendor_id, phone_number_id=number_id, campaign_id=campaign_id,
                         recipient_hash=os.urandom(32), content_enc=b"sealed", enc_kid="k", status=status.value,
                         status_rank=STATUS_RANK[status], wamid=wamid,
                         sent_at=utcnow() - dt.timedelta(hours=1) if wamid else None)
    with tenancy.unscoped(db):
        db.add(message)
        db.flush()
    return message


def _listening(db, vendor_id) -> None:
    """On PostgreSQL (the application's plugins known), the probe plugin — it wants every event — is on for the
    vendor: an event no plugin the vendor enabled wants is not written. The SQLite target's outbox knows no plugins
    and writes every event."""
    if db.get_bind().dialect.name == "postgresql":
        testing.enable_plugin(db, vendor_id, "probe")


def _apply(db, vendor_id, *raws) -> None:
    ctx = types.SimpleNamespace(db=db, vendor_id=vendor_id, plugin_manager=None, registry=None)
    statuses.apply_statuses(ctx, [statuses.StatusUpdate.parse(raw, utcnow()) for raw in raws])
    db.flush()


def _status(wamid: str, word: str, at: int, **extra) -> dict:
    return {"id": wamid, "status": word, "timestamp": str(at), **extra}


def _changes(db, vendor_id) -> list[events.MessageStatusChanged]:
    with tenancy.unscoped(db):
        rows = db.scalars(select(OutboxEvent).where(OutboxEvent.vendor_id == vendor_id,
                                                    OutboxEvent.topic == events.TOPIC).order_by(OutboxEvent.id))
        return [events.MessageStatusChanged.from_payload(r.payload["payload"]) for r in rows
                if r.payload["name"] == "MessageStatusChanged"]


def _changed(message, old, new, wamid) -> events.MessageStatusChanged:
    return events.MessageStatusChanged(message_id=message.id, campaign_id=message.campaign_id, old_status=old,
                                       new_status=new, wamid=wamid)


def test_each_moved_message_gets_one_event_per_batch_and_a_replay_none(target):  # noqa: F811
    db, _, vendor_id, number_id = target
    _listening(db, vendor_id)
    campaign_id = uuid.uuid4()
    first = _message(db, vendor_id, number_id, wamid="wamid.first", campaign_id=campaign_id)
    second = _message(db, vendor_id, number_id, wamid="wamid.second")
    _message(db, vendor_id, number_id, wamid="wamid.third", status=MessageStatus.READ)

    _apply(db, vendor_id, _status("wamid.first", "delivered", T0 + 5), _status("wamid.first", "read", T0 + 9),
           _status("wamid.second", "delivered", T0 + 5), _status("wamid.third", "delivered", T0 + 5))
    _apply(db, vendor_id, _status("wamid.first", "delivered", T0 + 5))  # a replay: recorded already
    _apply(db, vendor_id, _status("wamid.second", "failed", T0 + 6, errors=[{"code": 131000, "title": "x"}]))

    assert sorted(_changes(db, vendor_id), key=lambda e: (str(e.message_id), e.new_status)) == sorted([
        _changed(first, "SENT", "READ", "wamid.first"),
        _changed(second, "SENT", "DELIVERED", "wamid.second"),
    ], key=lambda e: (str(e.message_id), e.new_status))  # third was READ already; failed after delivery is no move


def test_a_failed_status_and_an_adopted_wamid_are_changes_too(target):  # noqa: F811
    db, _, vendor_id, number_id = target
    _listening(db, vendor_id)
    sent = _message(db, vendor_id, number_id, wamid="wamid.sent")
    queued = _message(db, vendor_id, number_id, status=MessageStatus.QUEUED)

    _apply(db, vendor_id, _status("wamid.sent", "failed", T0 + 1, errors=[{"code": 131026, "title": "x"}]),
           _status("wamid.adopted", "delivered", T0 + 5, biz_opaque_callback_data=str(queued.id)))

    changes = _changes(db, vendor_id)
    assert _changed(sent, "SENT", "FAILED", "wamid.sent") in changes
    assert [c for c in changes if c.message_id == queued.id] == [
        _changed(queued, "QUEUED", "SENT", "wamid.adopted"), _changed(queued, "SENT", "DELIVERED", "wamid.adopted")]
