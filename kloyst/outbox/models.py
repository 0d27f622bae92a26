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
    PENDING = "pending"
    LEASED = "leased"
    PUBLISHED = "published"
    DEAD = "dead"


class OutboxEvent(Base):
    """One event to deliver at least once.

    ``id`` is a sequence: it orders a vendor's events but is never used as a high-water mark
    (ids commit out of order), the relay claims by status instead. ``vendor_id`` is NULL for
    platform events (mail to a platform admin).
    """

    __tablename__ = "outbox_event"
    __table_args__ = (
        # The relay's claim: pending events per vendor in id order, and nothing else.
        Index("ix_outbox_event_pending", "vendor_id", "id", postgresql_where=text("status = 'pending'"),
              sqlite_where=text("status = 'pending'")),
        Index("ix_outbox_event_leased_until", "leased_until", postgresql_where=text("status = 'leased'"),
              sqlite_where=text("status = 'leased'")),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    vendor_id: Mapped[uuid.UUID | None]
    topic: Mapped[str] = mapped_column(String(100))
    payload: Mapped[dict] = mapped_column(default=dict)
    status: Mapped[OutboxStatus] = mapped_column(
        Enum(OutboxStatus, name="outbox_status", values_callable=lambda e: [m.value for m in e]),
        default=OutboxStatus.PENDING)
    attempts: Mapped[int] = mapped_column(default=0)
    available_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    leased_until: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    published_at: Mapped[dt.datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
