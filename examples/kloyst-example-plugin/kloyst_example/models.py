"""The example plugin's tables; both are tenant-owned, so Kloyst scopes every query to the caller's vendor.

Deriving from :class:`kloyst.db.TenantScoped` is all it takes: no view or task here
filters by ``vendor_id``. The tables are created by the plugin's own migration branch
(``migrations/versions``), never by ``create_all``.
"""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import BigInteger, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from kloyst.api import Base, TenantScoped, Timestamped, new_id, utcnow


class Note(TenantScoped, Timestamped, Base):
    """A vendor's note; ``pinged_at`` is set by the ``example.ping_note`` task."""

    __tablename__ = "example_note"
    __api_name__ = "note"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    text: Mapped[str] = mapped_column(Text)
    pinged_at: Mapped[dt.datetime | None]


class ExampleEventLog(TenantScoped, Base):
    """One row per domain event delivered to the plugin.

    Events arrive at least once; the unique ``(vendor_id, event_id)`` turns a redelivery
    into a no-op instead of a second row.
    """

    __tablename__ = "example_event_log"
    __table_args__ = (UniqueConstraint("vendor_id", "event_id"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    event_id: Mapped[int] = mapped_column(BigInteger)
    name: Mapped[str] = mapped_column(String(100))
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
