"""The transactional outbox table: events written in the same transaction as the change they describe."""

from __future__ import annotations

import datetime as dt
import enum
import uuid

from sqlalchemy import BigInteger, Enum, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from kloyst.db import Base, utcnow

BigId = BigInteger().with_variant(Integer, "sqlite")


class OutboxStatus(str, enum.Enum):
    """pending → leased (a relay claimed it) → published (in the queue) → delivered (its handler committed).

    Failures go back to pending with a later ``available_at``; after ``max_attempts`` an
    event is ``dead`` (the dead-letter state) until an admin requeues it.
    """

    PENDING = "pending"
    LEASED = "leased"
    PUBLISHED = "published"
    DELIVERED = "delivered"
    DEAD = "dead"


class OutboxEvent(Base):
    """One event to deliver at least once, and the state of its delivery.

    ``id`` is a sequence and the event's identity (consumers dedupe on it). It is never used
    as a high-water mark, because ids commit out of order; the relay claims by ``status``.
    ``vendor_id`` is NULL for platform events (mail to a platform admin). The row is the
    unit of work: huey only carries its id, so whatever huey loses, this row still says what
    is left to do.
    """

    __tablename__ = "outbox_event"
    __table_args__ = (
        # The relay's claim: pending events per vendor in id order, and nothing else.
        Index("ix_outbox_event_pending", "vendor_id", "id", postgresql_where=text("status = 'pending'"),
              sqlite_where=text("status = 'pending'")),
        Index("ix_outbox_event_leased_until", "leased_until", postgresql_where=text("status = 'leased'"),
              sqlite_where=text("status = 'leased'")),
        # The reconciler: published events whose delivery may have been lost.
        Index("ix_outbox_event_published_at", "published_at", postgresql_where=text("status = 'published'"),
              sqlite_where=text("status = 'published'")),
        Index("ix_outbox_event_dead", "vendor_id", "id", postgresql_where=text("status = 'dead'"),
              sqlite_where=text("status = 'dead'")),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    vendor_id: Mapped[uuid.UUID | None]
    topic: Mapped[str] = mapped_column(String(100))
    payload: Mapped[dict] = mapped_column(default=dict)
    status: Mapped[OutboxStatus] = mapped_column(
        # A plain string column: the relay's hand-written SQL compares and sets it on every dialect.
        Enum(OutboxStatus, name="outbox_status", values_callable=lambda e: [m.value for m in e], native_enum=False,
             length=16),
        default=OutboxStatus.PENDING)
    attempts: Mapped[int] = mapped_column(default=0)
    available_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    leased_until: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    published_at: Mapped[dt.datetime | None]
    delivered_at: Mapped[dt.datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
