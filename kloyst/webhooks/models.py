"""``webhook_delivery``: every signed webhook POST Meta made, stored raw until it is applied.

A platform table (no vendor: the vendor is known only once the body is read). The row is
the unit of work of the drainer: ``processed_at`` is NULL until every change in it was
applied, and ``next_attempt_at`` says when a drainer may take it (a claim pushes it a
lease into the future; a failure, a backoff). ``dedupe_key`` is the SHA-256 of the raw
body, so a POST Meta retries byte for byte is stored, and applied, once.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, Index, Integer, LargeBinary, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from kloyst.db import Base, utcnow

BigId = BigInteger().with_variant(Integer, "sqlite")


class WebhookDelivery(Base):
    __tablename__ = "webhook_delivery"
    __table_args__ = (
        # The drainer's claim of retries and of rows a dead drainer left behind.
        Index("ix_webhook_delivery_due", "next_attempt_at", postgresql_where=text("processed_at IS NULL"),
              sqlite_where=text("processed_at IS NULL")),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    dedupe_key: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    body: Mapped[bytes] = mapped_column(LargeBinary)
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    attempts: Mapped[int] = mapped_column(default=0, server_default="0")  # failed applications so far
    processed_at: Mapped[dt.datetime | None]
    error: Mapped[str | None] = mapped_column(Text)  # the last failure, kept when the drainer gives up
