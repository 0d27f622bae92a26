"""Campaigns, their frozen audience and the fan-out chunks that turn it into messages.

A **Campaign** is edited as a DRAFT (template, number, audience, variable mapping, schedule),
quoted, then launched: the launch freezes the audience into **CampaignRecipient** rows (one
per contact, numbered by ``seq``, each with the unit price the quote gave its country) and
splits them into **CampaignChunk** rows of consecutive ``seq``. Each chunk is one task that
writes its recipients' ``message_log`` rows in one transaction and marks itself done in the
same transaction, so a chunk is written once whatever happens to the task that carries it
(delivered twice, lost, killed midway). The messages then belong to the sender; the campaign
row keeps the money (``hold_id``: the wallet hold that pays for them) and the life cycle.

Recipient rows are written a million at a time, so they carry no index beyond their two
keys and no foreign key to the contact: a contact deleted after the launch leaves its row,
and the fan-out skips it.
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, text
from sqlalchemy.orm import Mapped, mapped_column

from kloyst.api import Base, TenantScoped, Timestamped, new_id


class CampaignStatus(str, enum.Enum):
    DRAFT = "DRAFT"  # editable; nothing frozen, nothing held
    SCHEDULED = "SCHEDULED"  # launched for a later start: messages wait for start_at
    LAUNCHING = "LAUNCHING"  # launched, messages being written (they send as they land)
    RUNNING = "RUNNING"  # every message written; the sender works through them
    PAUSED = "PAUSED"  # queued messages held back (PAUSED) until resumed
    CANCELLING = "CANCELLING"  # cancelled; waiting for messages in flight to finish
    COMPLETED = "COMPLETED"  # every message reached an end; the hold is settled
    CANCELLED = "CANCELLED"  # cancelled and settled


LAUNCHED = frozenset({CampaignStatus.SCHEDULED, CampaignStatus.LAUNCHING, CampaignStatus.RUNNING,
                      CampaignStatus.PAUSED, CampaignStatus.CANCELLING})
FINISHED = frozenset({CampaignStatus.COMPLETED, CampaignStatus.CANCELLED})


class Campaign(TenantScoped, Timestamped, Base):
    __tablename__ = "campaign"
    __api_name__ = "campaign"
    __table_args__ = (
        Index("ix_campaign_vendor_created", "vendor_id", "created_at", "id"),
        # The periodic loop: campaigns that are neither drafts nor finished.
        Index("ix_campaign_active", "status",
              postgresql_where=text("status NOT IN ('DRAFT', 'COMPLETED', 'CANCELLED')"),
              sqlite_where=text("status NOT IN ('DRAFT', 'COMPLETED', 'CANCELLED')")),
    )

    # Indexed by ix_campaign_vendor_created, which leads with it.
    vendor_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("vendor.id", ondelete="CASCADE"), nullable=False)
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default=CampaignStatus.DRAFT.value)
    template_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("message_template.id"))
    phone_number_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("phone_number.id"))
    audience: Mapped[dict] = mapped_column(default=dict)  # kloyst_plugins.contacts.audience.Audience as JSON
    # Template variable → {"field": "name"|"mobile"|"country"|"attributes.<x>", "default": "…"} or {"value": "…"}.
    variable_mapping: Mapped[dict] = mapped_column(default=dict)
    buttons: Mapped[list] = mapped_column(default=list)  # fixed button parameters, the same for every recipient
    # The schedule as given (a wall-clock time in an IANA zone) and the instant it names; None: at launch.
    start_at: Mapped[dt.datetime | None]
    timezone: Mapped[str | None] = mapped_column(String(64))
    created_by: Mapped[uuid.UUID | None]

    # Set by the quote and the launch.
    quotation_id: Mapped[uuid.UUID | None]
    category: Mapped[str | None] = mapped_column(String(32))  # the template's category when launched
    currency: Mapped[str | None] = mapped_column(String(3))
    hold_id: Mapped[uuid.UUID | None]  # the launch's hold (retries add holds with the same reference)
    held_micros: Mapped[int | None] = mapped_column(BigInteger)  # the quote total held at launch
    minimum_topup_micros: Mapped[int] = mapped_column(BigInteger, default=0)  # captured at the end if any sent
    recipients: Mapped[int] = mapped_column(default=0)
    launch_key: Mapped[str | None] = mapped_column(String(255))  # the launch's Idempotency-Key
    launched_at: Mapped[dt.datetime | None]
    started_at: Mapped[dt.datetime | None]
    paused_at: Mapped[dt.datetime | None]
    fanout_completed_at: Mapped[dt.datetime | None]
    completed_at: Mapped[dt.datetime | None]
    cancelled_at: Mapped[dt.datetime | None]


class CampaignRecipient(TenantScoped, Base):
    """One contact of a launched campaign's frozen audience, with what its message costs.

    Only the primary key is checked per row: a launch writes a million of these. A contact is here
    at most once because the freeze selects from ``contact`` (one row per contact), and the
    messages' unique ``(vendor_id, idempotency_key)`` = ``campaign:<id>:<contact>`` refuses a second
    message regardless; no foreign key to ``campaign`` either, since a launched campaign is never
    deleted (only drafts are, and they have no recipients).
    """

    __tablename__ = "campaign_recipient"

    campaign_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    seq: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    # No index and no foreign key: the campaign's keys cover every read, and this table takes a million rows a launch.
    vendor_id: Mapped[uuid.UUID] = mapped_column(nullable=False)
    contact_id: Mapped[uuid.UUID]
    country: Mapped[str | None] = mapped_column(String(2))
    price_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    skipped: Mapped[str | None] = mapped_column(String(64))  # why no message was written (contact deleted…)


class CampaignChunk(TenantScoped, Base):
    """Recipients ``seq_from <= seq < seq_to`` of a campaign, written as messages by one task, once."""

    __tablename__ = "campaign_chunk"

    campaign_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("campaign.id", ondelete="CASCADE"), primary_key=True)
    seq_from: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    vendor_id: Mapped[uuid.UUID] = mapped_column(nullable=False)
    seq_to: Mapped[int] = mapped_column(Integer)
    enqueued_at: Mapped[dt.datetime]  # when its task was last sent: a stale undone chunk is sent again
    done_at: Mapped[dt.datetime | None]
    written: Mapped[int] = mapped_column(default=0)  # messages written
    skipped: Mapped[int] = mapped_column(default=0)  # recipients without a message (their price released)
