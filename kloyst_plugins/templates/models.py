"""Message templates as Meta knows them, one row per (WABA, name, language) per vendor.

A template lives in a WABA. A vendor sees the templates of the WABAs it sends from: its own,
and the shared WABA when it has numbers assigned from it (each vendor keeps its own copy,
so tenancy stays a plain ``vendor_id`` filter). ``components`` is Meta's JSON as it was synced
or submitted; ``body_variables``/``header_variables`` are the placeholders parsed from it
(``["1", "2"]`` positional, ``["first_name"]`` named), which is what a send is validated
against before anything reaches Meta.
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid

from sqlalchemy import Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from kloyst.api import Base, TenantScoped, Timestamped, new_id


class TemplateCategory(str, enum.Enum):
    MARKETING = "MARKETING"
    UTILITY = "UTILITY"
    AUTHENTICATION = "AUTHENTICATION"


class TemplateStatus(str, enum.Enum):
    """Meta's review states (``message_template_status_update`` events move between them)."""

    DRAFT = "DRAFT"  # created in Kloyst, not yet accepted by Meta
    PENDING = "PENDING"
    APPROVED = "APPROVED"
    REJECTED = "REJECTED"
    PAUSED = "PAUSED"
    DISABLED = "DISABLED"
    IN_APPEAL = "IN_APPEAL"
    PENDING_DELETION = "PENDING_DELETION"
    DELETED = "DELETED"
    LIMIT_EXCEEDED = "LIMIT_EXCEEDED"
    ARCHIVED = "ARCHIVED"


class ParameterFormat(str, enum.Enum):
    POSITIONAL = "POSITIONAL"  # {{1}}, {{2}}
    NAMED = "NAMED"  # {{first_name}}


class MessageTemplate(TenantScoped, Timestamped, Base):
    __tablename__ = "message_template"
    __api_name__ = "template"
    __table_args__ = (
        UniqueConstraint("vendor_id", "meta_waba_id", "name", "language"),
        Index("ix_message_template_meta_id", "meta_template_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    meta_waba_id: Mapped[str] = mapped_column(String(32))
    meta_template_id: Mapped[str | None] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(512))
    language: Mapped[str] = mapped_column(String(16))
    category: Mapped[str] = mapped_column(String(32), default=TemplateCategory.UTILITY.value)
    status: Mapped[str] = mapped_column(String(32), default=TemplateStatus.DRAFT.value)
    quality_score: Mapped[str | None] = mapped_column(String(16))
    parameter_format: Mapped[str] = mapped_column(String(16), default=ParameterFormat.POSITIONAL.value)
    components: Mapped[list] = mapped_column(default=list)
    header_variables: Mapped[list] = mapped_column(default=list)
    body_variables: Mapped[list] = mapped_column(default=list)
    # Template variable → contact field with a default, e.g. {"1": {"field": "name", "default": "there"}}:
    # what a send or campaign uses when it gives no mapping of its own.
    variable_mapping: Mapped[dict] = mapped_column(default=dict)
    rejected_reason: Mapped[str | None] = mapped_column(String(500))
    last_synced_at: Mapped[dt.datetime | None]


class TemplateSync(TenantScoped, Base):
    """How the last template sync of one WABA went for one vendor.

    A sync that Meta refuses for good (a revoked token, a WABA that no longer exists) is not
    retried: the refusal is kept here, where ``GET /v1/templates/sync`` shows it, until a
    later sync succeeds. Per vendor, because vendors sharing the platform's WABA sync apart.

    ``queued_at`` is set by the request that queues a sync and cleared once it has run, so a
    sync is queued once however often it is asked for (:func:`.services.request_sync`); the row
    is created by that request, so ``last_attempt_at`` is null until the first attempt.
    """

    __tablename__ = "template_sync"
    __table_args__ = (UniqueConstraint("vendor_id", "meta_waba_id"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    meta_waba_id: Mapped[str] = mapped_column(String(32))
    last_attempt_at: Mapped[dt.datetime | None]
    queued_at: Mapped[dt.datetime | None]  # a sync is queued or running since then
    last_synced_at: Mapped[dt.datetime | None]  # the last sync that succeeded
    template_count: Mapped[int | None]  # how many templates Meta listed then
    last_error: Mapped[str | None] = mapped_column(String(500))  # None once a sync succeeds
