"""Which plugins each vendor has turned on."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import ForeignKey, String, UniqueConstraint, true
from sqlalchemy.orm import Mapped, mapped_column

from kloyst.db import Base, TenantScoped, new_id, utcnow


class VendorPlugin(TenantScoped, Base):
    """One row per (vendor, plugin) the vendor has enabled, or has settings for.

    A row rather than a comma-separated column (pretix's lesson): enabling is an insert
    that a unique constraint makes safe under concurrency, and ``settings`` holds the
    vendor's options for that plugin (:mod:`kloyst.plugins.settings`). Disabling clears
    ``enabled`` and keeps the row, so re-enabling restores the settings; only a purge deletes
    it. Every "is it on?" goes through :func:`kloyst.plugins.enablement.enabled_plugins`.
    """

    __tablename__ = "vendor_plugin"
    __table_args__ = (UniqueConstraint("vendor_id", "plugin"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    plugin: Mapped[str] = mapped_column(String(100))
    enabled_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    enabled_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("app_user.id", ondelete="SET NULL"))
    settings: Mapped[dict] = mapped_column(default=dict)
    enabled: Mapped[bool] = mapped_column(default=True, server_default=true())
    disabled_at: Mapped[dt.datetime | None]
