"""Operating the outbox: backlog per vendor, the dead-letter list, and requeueing dead events.

Used by the admin endpoints (:mod:`kloyst.outbox.views`) and the ``kloyst outbox`` CLI, so
both always agree.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from sqlalchemy import case, func, select, update

from kloyst.db import utcnow
from kloyst.outbox.models import OutboxEvent, OutboxStatus

ACTIVE = (OutboxStatus.PENDING, OutboxStatus.LEASED, OutboxStatus.DEAD)


@dataclass(frozen=True)
class VendorBacklog:
    vendor_id: uuid.UUID | None
    pending: int
    in_flight: int  # leased by a relay: being published, in the queue, or being delivered
    dead: int
    oldest_pending_age_seconds: float | None

    def as_json(self) -> dict:
        return {"vendor_id": self.vendor_id, "pending": self.pending, "in_flight": self.in_flight, "dead": self.dead,
                "oldest_pending_age_seconds": self.oldest_pending_age_seconds}


def backlog(session) -> list[VendorBacklog]:
    """Undelivered events per vendor (platform events under ``vendor_id`` None), biggest backlog first."""
    def count(status):
        return func.count(case((OutboxEvent.status == status, 1)))

    rows = session.execute(
        select(OutboxEvent.vendor_id, count(OutboxStatus.PENDING), count(OutboxStatus.LEASED),
               count(OutboxStatus.DEAD),
               func.min(case((OutboxEvent.status == OutboxStatus.PENDING, OutboxEvent.created_at))))
        .where(OutboxEvent.status.in_(ACTIVE))
        .group_by(OutboxEvent.vendor_id)).all()
    now = utcnow()
    result = [
        VendorBacklog(vendor_id=vendor_id, pending=pending, in_flight=in_flight, dead=dead,
                      oldest_pending_age_seconds=round((now - _aware(oldest)).total_seconds(), 3) if oldest else None)
        for vendor_id, pending, in_flight, dead, oldest in rows
    ]
    return sorted(result, key=lambda b: (-(b.pending + b.in_flight), str(b.vendor_id)))


def _aware(value):
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def dead_letters(session, *, vendor_id: uuid.UUID | None = None, before_id: int | None = None,
                 limit: int = 50) -> list[OutboxEvent]:
    query = select(OutboxEvent).where(OutboxEvent.status == OutboxStatus.DEAD)
    if vendor_id is not None:
        query = query.where(OutboxEvent.vendor_id == vendor_id)
    if before_id is not None:
        query = query.where(OutboxEvent.id < before_id)
    return list(session.scalars(query.order_by(OutboxEvent.id.desc()).limit(limit)))


def requeue(session, *, ids: list[int] | None = None, vendor_id: uuid.UUID | None = None,
            all_dead: bool = False) -> int:
    """Give dead events a fresh start (failures reset, available now); returns how many."""
    if not ids and vendor_id is None and not all_dead:
        raise ValueError("say which dead events to requeue: ids, a vendor, or all")
    query = update(OutboxEvent).where(OutboxEvent.status == OutboxStatus.DEAD)
    if ids:
        query = query.where(OutboxEvent.id.in_(ids))
    if vendor_id is not None:
        query = query.where(OutboxEvent.vendor_id == vendor_id)
    result = session.execute(query.values(status=OutboxStatus.PENDING, failures=0, available_at=utcnow(),
                                          leased_until=None, batch_id=None))
    return result.rowcount


def dead_letter_json(event: OutboxEvent) -> dict:
    payload = event.payload or {}
    return {"id": event.id, "vendor_id": event.vendor_id, "topic": event.topic,
            "task": payload.get("task"), "failures": event.failures, "attempts": event.attempts,
            "last_error": event.last_error,
            "created_at": event.created_at}
