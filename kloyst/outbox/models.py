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
    """pending → leased (claimed by a relay in a batch) → delivered (its handler committed).

    A leased event is *published* once its :class:`OutboxBatch` records ``published_at``
    (the relay marks a whole batch at once rather than rewriting each row). A handler that
    raises sends the event back to pending with a later ``available_at`` and one more
    ``failure``; after ``max_attempts`` failures it is ``dead`` (the dead-letter state)
    until an admin requeues it. ``attempts`` counts claims, for the record only.
    """

    PENDING = "pending"
    LEASED = "leased"
    DELIVERED = "delivered"
    DEAD = "dead"


class OutboxBatch(Base):
    """One claim of a relay: the lease of its events, and whether they reached the queue.

    Marking 500 events published is one write here instead of 500 row updates, which is
    what lets one relay publish tens of thousands of events a second.
    """

    __tablename__ = "outbox_batch"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    claimed_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    leased_until: Mapped[dt.datetime]
    published_at: Mapped[dt.datetime | None]


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
        # The reconciler: leased events by batch (expired leases, lost deliveries).
        Index("ix_outbox_event_leased_batch", "batch_id", postgresql_where=text("status = 'leased'"),
              sqlite_where=text("status = 'leased'")),
        Index("ix_outbox_event_dead", "vendor_id", "id", postgresql_where=text("status = 'dead'"),
              sqlite_where=text("status = 'dead'")),
        # Every event is rewritten two or three times (leased, delivered); free room on each page keeps the
        # new versions beside the old ones. Measured: claims 13 → 8 ms per 500 events (docs/benchmarks.md).
        {"postgresql_with": {"fillfactor": 70}},
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
    attempts: Mapped[int] = mapped_column(default=0)  # claims by a relay (a crash-reclaim adds one)
    failures: Mapped[int] = mapped_column(default=0, server_default="0")  # handler failures: decides dead
    available_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    leased_until: Mapped[dt.datetime | None]
    # The relay batch that leased it; no foreign key, so claims stay cheap (batches are pruned).
    batch_id: Mapped[int | None] = mapped_column(BigId)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    published_at: Mapped[dt.datetime | None]
    delivered_at: Mapped[dt.datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
