"""The outbox relay: claim pending events with a lease, publish each to the queue, mark it published.

Claiming takes a lease (``status = leased``, ``leased_until``) in its own short
transaction with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so several relays never claim
the same event. Publishing happens after that commit; an event whose relay dies after
claiming is reclaimed when its lease expires, which is why delivery is at least once and
handlers dedupe on the event id.
"""

from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy import or_, select, update

from kloyst.db import session_scope, tenancy, utcnow
from kloyst.outbox.models import OutboxEvent, OutboxStatus

log = logging.getLogger(__name__)

DELIVER_TASK = "core.deliver_outbox_event"
MAX_ATTEMPTS = 10


def claim(session, *, limit: int = 500, lease_seconds: int = 60) -> list[int]:
    now = utcnow()
    query = (
        select(OutboxEvent.id)
        .where(or_(
            (OutboxEvent.status == OutboxStatus.PENDING) & (OutboxEvent.available_at <= now),
            (OutboxEvent.status == OutboxStatus.LEASED) & (OutboxEvent.leased_until < now),
        ))
        .order_by(OutboxEvent.id)
        .limit(limit)
    )
    if session.bind.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    ids = list(session.scalars(query))
    if ids:
        session.execute(
            update(OutboxEvent).where(OutboxEvent.id.in_(ids)).values(
                status=OutboxStatus.LEASED, leased_until=now + dt.timedelta(seconds=lease_seconds),
                attempts=OutboxEvent.attempts + 1))
    return ids


def relay_once(registry, *, limit: int = 500) -> int:
    """Claim one batch and publish it; return how many events were published."""
    factory = registry["kloyst.session_factory"]
    queue = registry["kloyst.queue"]
    with session_scope(factory, vendor_id=tenancy.ALL_VENDORS) as session:
        ids = claim(session, limit=limit)
    published, failed = [], {}
    for event_id in ids:
        try:
            queue.enqueue_now(DELIVER_TASK, event_id=event_id)
            published.append(event_id)
        except Exception as exc:  # the queue is down: keep the event for the next attempt
            log.warning("outbox event %s not published: %s", event_id, exc)
            failed[event_id] = f"{type(exc).__name__}: {exc}"
    with session_scope(factory, vendor_id=tenancy.ALL_VENDORS) as session:
        if published:
            session.execute(update(OutboxEvent).where(OutboxEvent.id.in_(published)).values(
                status=OutboxStatus.PUBLISHED, published_at=utcnow(), leased_until=None))
        for event_id, error in failed.items():
            event = session.get(OutboxEvent, event_id)
            event.last_error = error[:2000]
            event.leased_until = None
            event.status = OutboxStatus.DEAD if event.attempts >= MAX_ATTEMPTS else OutboxStatus.PENDING
            event.available_at = utcnow() + dt.timedelta(seconds=min(300, 2 ** event.attempts))
    return len(published)
