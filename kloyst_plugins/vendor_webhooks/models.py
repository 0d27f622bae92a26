"""The plugin's tables: endpoints, the per-vendor event feed, and one delivery per (endpoint, event).

Why a feed table of its own rather than the outbox: the outbox is a work queue (rows are
claimed, delivered, pruned) and has no per-vendor order; the feed is what a vendor reads,
numbered per vendor with no gaps (``seq``, assigned under the row lock of
``vendor_event_counter``), so a poller that passed ``seq = n`` can never miss a row that
commits later with a smaller number. Deliveries point at the feed row, so the body is
built when sent (one copy of each event however many endpoints want it) and decrypted
content never rests in a delivery.
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, LargeBinary, String, text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from kloyst.api import Base, new_id, TenantScoped, Timestamped, utcnow

BigId = BigInteger().with_variant(Integer(), "sqlite")  # SQLite autoincrements INTEGER PRIMARY KEY only


class DeliveryStatus(str, enum.Enum):
    PENDING = "PENDING"  # waiting for its next attempt (next_attempt_at)
    DELIVERING = "DELIVERING"  # claimed by a worker process (claimed_by, lease_until)
    DELIVERED = "DELIVERED"  # the endpoint answered 2xx
    DEAD = "DEAD"  # the retry window passed without a 2xx: redeliver to try again


class WebhookEndpoint(TenantScoped, Timestamped, Base):
    """A URL of the vendor's that receives the event types it names, signed with its secret."""

    __tablename__ = "vendor_webhook_endpoint"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    url: Mapped[str] = mapped_column(String(2048))
    event_types: Mapped[list] = mapped_column(default=list)  # catalogue names
    description: Mapped[str] = mapped_column(String(200), default="")
    enabled: Mapped[bool] = mapped_column(default=True)
    secret_enc: Mapped[bytes] = mapped_column(LargeBinary)
    # After a rotation the previous secret still signs (a second v1=) until it expires, so receivers can switch.
    previous_secret_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    previous_secret_expires_at: Mapped[dt.datetime | None]
    enc_kid: Mapped[str] = mapped_column(String(64))
    # The circuit breaker: consecutive failed attempts, and until when the endpoint gets no attempts at all.
    consecutive_failures: Mapped[int] = mapped_column(default=0)
    paused_until: Mapped[dt.datetime | None]


class VendorEventCounter(TenantScoped, Base):
    """The last ``seq`` given to one vendor's feed; its row lock orders the feed by commit."""

    __tablename__ = "vendor_event_counter"
    __table_args__ = (UniqueConstraint("vendor_id"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    last_seq: Mapped[int] = mapped_column(BigInteger, default=0)


class VendorEvent(TenantScoped, Base):
    """One domain event in a vendor's feed (``GET /v1/events``), numbered ``seq`` 1, 2, 3… per vendor."""

    __tablename__ = "vendor_event"
    # Not unique constraints: seq and event_id are unique per vendor by construction (feed.py records under the
    # counter's lock, after looking for the event), and the indexes serve the feed and that look-up.
    __table_args__ = (Index("ix_vendor_event_feed", "vendor_id", "seq"),
                      Index("ix_vendor_event_event_id", "vendor_id", "event_id"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    event_id: Mapped[int] = mapped_column(BigInteger)  # the outbox event's id: the at-least-once dedupe key
    type: Mapped[str] = mapped_column(String(64))
    occurred_at: Mapped[dt.datetime]
    payload: Mapped[dict] = mapped_column(default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class WebhookDelivery(TenantScoped, Timestamped, Base):
    """One event to one endpoint: its attempts, its last answer, and when it is tried next."""

    __tablename__ = "vendor_webhook_delivery"
    __table_args__ = (
        UniqueConstraint("endpoint_id", "event_row_id"),
        # The claim: an endpoint's due deliveries, oldest first (a partial index: finished ones cost nothing).
        Index("ix_vendor_webhook_delivery_due", "endpoint_id", "next_attempt_at",
              postgresql_where=text("status = 'PENDING'"), sqlite_where=text("status = 'PENDING'")),
        Index("ix_vendor_webhook_delivery_log", "endpoint_id", "created_at", "id"),
        Index("ix_vendor_webhook_delivery_claimed", "claimed_by",
              postgresql_where=text("status = 'DELIVERING'"), sqlite_where=text("status = 'DELIVERING'")),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    endpoint_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("vendor_webhook_endpoint.id", ondelete="CASCADE"))
    event_row_id: Mapped[int] = mapped_column(BigId, ForeignKey("vendor_event.id", ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.PENDING.value)
    attempts: Mapped[int] = mapped_column(default=0)
    # Retries go on until window_started_at + the retry horizon (set again by a redelivery).
    window_started_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(default=utcnow)
    claimed_by: Mapped[uuid.UUID | None]
    lease_until: Mapped[dt.datetime | None]
    last_attempt_at: Mapped[dt.datetime | None]
    last_status_code: Mapped[int | None]
    last_error: Mapped[str | None] = mapped_column(String(500))
    delivered_at: Mapped[dt.datetime | None]
