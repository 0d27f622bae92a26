"""The auto-replies plugin's tables: a vendor's rules and settings, the replies it made, its conversations.

* ``autoreply_rule``: a keyword (stored normalized: case-folded, spaces collapsed), how it matches
  (``exact`` or ``prefix``), an optional language, and what it does: answer with a text or a template,
  or opt the contact back in. Its counters (``hits``, ``failures``) are updated with ``SET n = n + 1``,
  so concurrent workers never lose a count. Unique per ``(vendor, keyword, match, language)``, with
  "no language" stored as ``""`` (NULLs would all be distinct).
* ``autoreply_settings``: one row per vendor (absent means the defaults).
* ``autoreply_reply``: one row per trigger that was answered, keyed by ``trigger`` — ``inbound:<id>``
  for a customer's message, ``event:<id>`` for an opt-out or opt-in event — unique per vendor. The row
  is written *before* the answer is queued, in the same transaction, so a redelivered event meets the
  key and sends nothing: one inbound message gets at most one auto-reply.
* ``autoreply_conversation``: per contact and number, when the away message last went out; a conditional
  UPDATE on it lets exactly one of two concurrent messages send the away message.

``vendor_id`` has no index of its own: each table's unique key leads with it.
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from kloyst.api import Base, TenantScoped, Timestamped, new_id, utcnow


class MatchKind(str, enum.Enum):
    EXACT = "exact"  # the whole message is the keyword
    PREFIX = "prefix"  # the message starts with the keyword, as whole words


class RuleAction(str, enum.Enum):
    REPLY = "reply"  # answer with the rule's text or template
    OPT_IN = "opt_in"  # opt the contact back in (contacts' opt-in); the opt-in confirmation answers


class ReplyKind(str, enum.Enum):
    KEYWORD = "keyword"
    AWAY = "away"
    OPT_OUT = "opt_out_confirmation"
    OPT_IN = "opt_in_confirmation"
    OPTED_IN = "opted_in"  # an opt-in rule opted the contact in: nothing is sent for the message itself


class ReplyStatus(str, enum.Enum):
    QUEUED = "queued"  # a message_log row was queued (the messages plugin sends it)
    DONE = "done"  # nothing to send (an opt-in rule's own trigger)
    FAILED = "failed"  # the answer could not be queued: ``error`` says why


class AutoReplyRule(TenantScoped, Timestamped, Base):
    __tablename__ = "autoreply_rule"
    __api_name__ = "rule"
    __table_args__ = (
        # Matching looks rules up by keyword: keyword IN (the message, its word prefixes).
        UniqueConstraint("vendor_id", "keyword", "match", "language"),
        Index("ix_autoreply_rule_vendor_created", "vendor_id", "created_at", "id"),
    )

    vendor_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("vendor.id", ondelete="CASCADE"), nullable=False)
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    keyword: Mapped[str] = mapped_column(String(64))
    match: Mapped[str] = mapped_column(String(8))
    language: Mapped[str] = mapped_column(String(16), default="")
    action: Mapped[str] = mapped_column(String(8), default=RuleAction.REPLY.value)
    reply_text: Mapped[str | None] = mapped_column(Text)
    template_name: Mapped[str | None] = mapped_column(String(512))
    template_language: Mapped[str | None] = mapped_column(String(16))
    enabled: Mapped[bool] = mapped_column(default=True)
    hits: Mapped[int] = mapped_column(default=0)
    failures: Mapped[int] = mapped_column(default=0)
    last_hit_at: Mapped[dt.datetime | None]
    last_failed_at: Mapped[dt.datetime | None]
    last_error: Mapped[str | None] = mapped_column(String(500))


class AutoReplySettings(TenantScoped, Timestamped, Base):
    """A vendor's business hours, away message and confirmations (the defaults until the vendor sets them)."""

    __tablename__ = "autoreply_settings"
    __table_args__ = (UniqueConstraint("vendor_id"),)

    vendor_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("vendor.id", ondelete="CASCADE"), nullable=False)
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    time_zone: Mapped[str] = mapped_column(String(64), default="UTC")
    # {"mon": [["09:00", "17:30"]], ...}: open intervals per weekday, local time; a day not listed is closed.
    business_hours: Mapped[dict] = mapped_column(default=dict)
    away_enabled: Mapped[bool] = mapped_column(default=False)
    away_text: Mapped[str] = mapped_column(Text, default="")
    away_interval_hours: Mapped[int] = mapped_column(Integer, default=24)
    opt_out_confirmation: Mapped[bool] = mapped_column(default=True)
    opt_out_text: Mapped[str] = mapped_column(Text, default="")
    opt_in_confirmation: Mapped[bool] = mapped_column(default=True)
    opt_in_text: Mapped[str] = mapped_column(Text, default="")


class AutoReply(TenantScoped, Base):
    """One answered trigger: what was decided and what became of it (the dedupe key is ``trigger``)."""

    __tablename__ = "autoreply_reply"
    __api_name__ = "auto_reply"
    __table_args__ = (
        UniqueConstraint("vendor_id", "trigger"),
        Index("ix_autoreply_reply_vendor_created", "vendor_id", "created_at", "id"),
    )

    vendor_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("vendor.id", ondelete="CASCADE"), nullable=False)
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    trigger: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(24))
    status: Mapped[str] = mapped_column(String(8))
    rule_id: Mapped[uuid.UUID | None]  # no foreign key: the record outlives a deleted rule
    contact_id: Mapped[uuid.UUID | None]
    phone_number_id: Mapped[uuid.UUID | None]
    inbound_id: Mapped[uuid.UUID | None]
    event_id: Mapped[int | None] = mapped_column(BigInteger)
    message_id: Mapped[uuid.UUID | None]  # the queued message_log row
    error: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class AutoReplyConversation(TenantScoped, Base):
    """A contact's conversation with one of the vendor's numbers, as far as the away message is concerned."""

    __tablename__ = "autoreply_conversation"
    __table_args__ = (UniqueConstraint("vendor_id", "contact_id", "phone_number_id"),)

    vendor_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("vendor.id", ondelete="CASCADE"), nullable=False)
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    contact_id: Mapped[uuid.UUID]
    phone_number_id: Mapped[uuid.UUID]
    away_sent_at: Mapped[dt.datetime | None]
