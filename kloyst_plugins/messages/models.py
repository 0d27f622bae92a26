"""Messages to send, their history, inbound messages and the dead-letter list.

``message_log`` is both the record and the unit of work: a message is QUEUED until a sender
claims it (SENDING, with ``lease_until``), then SENT with Meta's ``wamid``, later DELIVERED and
READ from status webhooks, or FAILED (with a ``dead_letter`` row). Status only moves forward:
``status_rank`` orders QUEUED < SENDING < SENT < DELIVERED < READ, and FAILED is terminal for
a message Meta never delivered. The recipient and the template parameters are personal data,
so they are stored encrypted (``content_enc``: the Meta payload as JSON, AES-GCM bound to the
vendor); ``recipient_hash`` is the keyed hash contacts use, for lookups without plaintext.
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, LargeBinary, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from kloyst.api import Base, TenantScoped, Timestamped, new_id, utcnow

BigId = BigInteger().with_variant(Integer, "sqlite")


class MessageStatus(str, enum.Enum):
    QUEUED = "QUEUED"
    SENDING = "SENDING"
    SENT = "SENT"
    DELIVERED = "DELIVERED"
    READ = "READ"
    FAILED = "FAILED"
    PAUSED = "PAUSED"  # waits, unclaimed, until its owner (a paused campaign) puts it back to QUEUED
    CANCELLED = "CANCELLED"  # will never be sent (its campaign was cancelled before it was)


# The message state machine, defined here once (everything else — the sender's statements, the status webhooks,
# the campaigns plugin through messages.api — reads it from these names).
#
# ``status_rank`` orders a message's life: a status only ever moves to a higher rank, except the moves back to the
# queue listed in TRANSITIONS (a transient failure retried, a paused message resumed, a failed one requeued).
STATUS_RANK = {MessageStatus.QUEUED: 0, MessageStatus.PAUSED: 0, MessageStatus.SENDING: 1, MessageStatus.SENT: 2,
               MessageStatus.DELIVERED: 3, MessageStatus.READ: 4, MessageStatus.FAILED: 5,
               MessageStatus.CANCELLED: 5}
# Not sent yet and still to be: its owner (a campaign) is not finished while any of its messages is here.
UNFINISHED = frozenset({MessageStatus.QUEUED, MessageStatus.SENDING, MessageStatus.PAUSED})
# Waiting in the queue, unclaimed: what a pause, resume or cancel of its owner moves.
WAITING = frozenset({MessageStatus.QUEUED, MessageStatus.PAUSED})
# Meta accepted it (it has a wamid).
ACCEPTED = frozenset({MessageStatus.SENT, MessageStatus.DELIVERED, MessageStatus.READ})
# Nothing more happens to it by itself (a FAILED one may still be requeued by hand).
FINAL = frozenset({MessageStatus.READ, MessageStatus.FAILED, MessageStatus.CANCELLED})
# Kept for compatibility: no longer sent by us (SENT and later, or given up).
TERMINAL = frozenset({MessageStatus.SENT, MessageStatus.DELIVERED, MessageStatus.READ, MessageStatus.FAILED,
                      MessageStatus.CANCELLED})
# A FAILED message Meta never delivered: only below this rank may a ``failed`` status fail a message.
FAILABLE_BELOW = STATUS_RANK[MessageStatus.DELIVERED]

_S = MessageStatus
TRANSITIONS: dict[MessageStatus, frozenset[MessageStatus]] = {
    # claimed by a sender; paused or cancelled by its owner; a wamid adopted (Meta accepted a call we lost)
    _S.QUEUED: frozenset({_S.SENDING, _S.PAUSED, _S.CANCELLED, _S.SENT}),
    _S.PAUSED: frozenset({_S.QUEUED, _S.CANCELLED, _S.SENT}),
    # Meta's answer; a transient failure retried (or its sender gone); a permanent failure
    _S.SENDING: frozenset({_S.SENT, _S.QUEUED, _S.FAILED}),
    # status webhooks move forward only; Meta's ``failed`` before delivery
    _S.SENT: frozenset({_S.DELIVERED, _S.READ, _S.FAILED}),
    _S.DELIVERED: frozenset({_S.READ}),
    _S.READ: frozenset(),
    _S.FAILED: frozenset({_S.QUEUED}),  # a dead letter requeued, a campaign's retry-failed
    _S.CANCELLED: frozenset(),
}
del _S


def can_move(old: MessageStatus | str, new: MessageStatus | str) -> bool:
    """Whether the state machine lets a message go from ``old`` to ``new``."""
    return MessageStatus(new) in TRANSITIONS[MessageStatus(old)]


def values(statuses) -> tuple[str, ...]:
    """The stored (``status`` column) values of these statuses, sorted: for ``IN`` lists and bound parameters."""
    return tuple(sorted(MessageStatus(s).value for s in statuses))


def _in(statuses) -> str:
    return ", ".join(f"'{v}'" for v in values(statuses))


# The state machine's words as SQL literals, for statements written as text: ``{QUEUED}`` is ``'QUEUED'``,
# ``{SENT_RANK}`` is ``2``, ``{UNFINISHED}`` an IN list, ``{FAILABLE_BELOW}`` the rank a ``failed`` must be under.
SQL_WORDS: dict[str, str] = {
    **{s.name: f"'{s.value}'" for s in MessageStatus},
    **{f"{s.name}_RANK": str(STATUS_RANK[s]) for s in MessageStatus},
    "UNFINISHED": _in(UNFINISHED), "WAITING": _in(WAITING), "ACCEPTED": _in(ACCEPTED),
    "FAILABLE_BELOW": str(FAILABLE_BELOW),
}


def sql(statement: str) -> str:
    """``statement`` with the state machine's words (:data:`SQL_WORDS`, in braces) filled in."""
    return statement.format_map(SQL_WORDS)


class MessageLog(TenantScoped, Timestamped, Base):
    __tablename__ = "message_log"
    __api_name__ = "message"
    __table_args__ = (
        UniqueConstraint("vendor_id", "idempotency_key"),
        # The sender's claim: due messages of one number, oldest first.
        Index("ix_message_log_due", "phone_number_id", "next_attempt_at",
              postgresql_where=text("status = 'QUEUED'"), sqlite_where=text("status = 'QUEUED'")),
        # The reconciler: leases that ran out.
        Index("ix_message_log_sending", "lease_until",
              postgresql_where=text("status = 'SENDING'"), sqlite_where=text("status = 'SENDING'")),
        # Only sent messages have a wamid: queued ones (a campaign's million) cost this index nothing.
        Index("ix_message_log_wamid", "wamid", unique=True, postgresql_where=text("wamid IS NOT NULL"),
              sqlite_where=text("wamid IS NOT NULL")),
        Index("ix_message_log_vendor_created", "vendor_id", "created_at", "id"),
        # Campaign messages only: a message sent through the API costs no entry here.
        Index("ix_message_log_campaign", "campaign_id", "status",
              postgresql_where=text("campaign_id IS NOT NULL"), sqlite_where=text("campaign_id IS NOT NULL")),
        # A conversation's thread (conversations plugin): one contact's messages from one number, in order. The
        # one index a campaign's fan-out pays for that it does not use (measured: docs/conversations.md).
        Index("ix_message_log_thread", "contact_id", "phone_number_id", "created_at", "id",
              postgresql_where=text("contact_id IS NOT NULL"), sqlite_where=text("contact_id IS NOT NULL")),
    )

    # Only phone_number_id is a foreign key (it cascades, so deleting a vendor's WABA or the vendor still removes its
    # messages, and waba's history check reads it). vendor_id, contact_id and template_id are plain references:
    # a foreign key is checked row by row, and a campaign inserts a million rows naming one vendor and one template
    # (the three checks were a third of its fan-out's database time), while contact_id's ON DELETE SET NULL made
    # every contact deletion scan this unindexed column. Readers treat a contact that is gone as gone.
    # No index of its own on vendor_id: (vendor_id, created_at, id) and (vendor_id, idempotency_key) lead with it.
    vendor_id: Mapped[uuid.UUID] = mapped_column(nullable=False)
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    phone_number_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("phone_number.id", ondelete="CASCADE"))
    contact_id: Mapped[uuid.UUID | None]
    campaign_id: Mapped[uuid.UUID | None]
    template_id: Mapped[uuid.UUID | None]
    template_name: Mapped[str | None] = mapped_column(String(512))
    template_language: Mapped[str | None] = mapped_column(String(16))
    category: Mapped[str | None] = mapped_column(String(32))  # the template's category when queued
    recipient_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    country: Mapped[str | None] = mapped_column(String(2))
    content_enc: Mapped[bytes] = mapped_column(LargeBinary)
    enc_kid: Mapped[str] = mapped_column(String(64))
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_hash: Mapped[str | None] = mapped_column(String(64))

    status: Mapped[str] = mapped_column(String(16), default=MessageStatus.QUEUED.value)
    status_rank: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    lease_until: Mapped[dt.datetime | None]
    # The process whose sender holds the message while SENDING (kloyst.heartbeat): when that process stops
    # beating, the others take the message back in seconds instead of waiting out lease_until.
    claimed_by: Mapped[uuid.UUID | None]
    attempts: Mapped[int] = mapped_column(default=0)  # calls to Meta made (or maybe made) for this message
    retry_count: Mapped[int] = mapped_column(default=0)  # transient failures retried
    # A lease ran out while a call may have reached Meta: the next send may duplicate it. Counted,
    # and confirmed when a status webhook names this message with a wamid that is not ours.
    maybe_sent_before: Mapped[bool] = mapped_column(default=False, server_default=text("false"))
    duplicate_sends: Mapped[int] = mapped_column(default=0, server_default="0")

    wamid: Mapped[str | None] = mapped_column(String(128))
    error_code: Mapped[int | None]
    error_subcode: Mapped[int | None]
    error_message: Mapped[str | None] = mapped_column(String(500))
    # What the message costs the vendor and the wallet hold paying for it, set by whoever priced it (a campaign);
    # reported through ``kloyst_messages_settled`` (settlement.py). No foreign key: messages knows no wallet.
    price_micros: Mapped[int | None] = mapped_column(BigInteger)
    hold_id: Mapped[uuid.UUID | None]
    pricing_category: Mapped[str | None] = mapped_column(String(32))
    billable: Mapped[bool | None]
    sent_at: Mapped[dt.datetime | None]
    delivered_at: Mapped[dt.datetime | None]
    read_at: Mapped[dt.datetime | None]
    failed_at: Mapped[dt.datetime | None]


class DeadLetter(TenantScoped, Base):
    """A message that failed for good, with why; requeueing it sends it again as a new attempt."""

    __tablename__ = "dead_letter"
    __api_name__ = "dead_letter"
    __table_args__ = (Index("ix_dead_letter_vendor_created", "vendor_id", "created_at", "id"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    message_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("message_log.id", ondelete="CASCADE"), index=True)
    error_code: Mapped[int | None]
    error_subcode: Mapped[int | None]
    error_kind: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(500))
    details: Mapped[dict] = mapped_column(default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    requeued_at: Mapped[dt.datetime | None]


class MessageStatusEvent(TenantScoped, Base):
    """Every status Meta reported, once: ``(wamid, status)`` is the webhook's dedupe key (docs/messaging.md)."""

    __tablename__ = "message_status_event"
    __table_args__ = (
        UniqueConstraint("wamid", "status"),
        # Statuses kept without a message (a wamid no message carried yet): the repair pass looks at recent ones.
        Index("ix_message_status_event_unlinked", "received_at", postgresql_where=text("message_id IS NULL"),
              sqlite_where=text("message_id IS NULL")),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    message_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("message_log.id", ondelete="CASCADE"),
                                                         index=True)
    wamid: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16))
    occurred_at: Mapped[dt.datetime]
    error_code: Mapped[int | None]
    pricing_category: Mapped[str | None] = mapped_column(String(32))
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class InboundMessage(TenantScoped, Base):
    """A message a customer sent to one of the vendor's numbers (dedupe key: its ``wamid``)."""

    __tablename__ = "inbound_message"
    __api_name__ = "inbound_message"
    __table_args__ = (Index("ix_inbound_message_vendor_received", "vendor_id", "received_at", "id"),
                      # A conversation's thread and its customer-service window: one contact's messages to one
                      # number by the time the customer sent them.
                      Index("ix_inbound_message_thread", "contact_id", "phone_number_id", "sent_at", "id"))

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    wamid: Mapped[str] = mapped_column(String(128), unique=True)
    phone_number_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("phone_number.id", ondelete="CASCADE"))
    contact_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("contact.id", ondelete="SET NULL"), index=True)
    sender_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    type: Mapped[str] = mapped_column(String(32))
    content_enc: Mapped[bytes] = mapped_column(LargeBinary)  # the message object as JSON, encrypted
    enc_kid: Mapped[str] = mapped_column(String(64))
    opt_out: Mapped[bool] = mapped_column(default=False)
    sent_at: Mapped[dt.datetime]
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class DuplicateSend(TenantScoped, Base):
    """A second ``wamid`` Meta gave for one message: the crash-after-accept window, detected and counted once.

    Found by the sender (its answer came for a message already SENT under another wamid) or by
    a status webhook (``biz_opaque_callback_data`` names a message whose wamid differs). The
    primary key makes both paths count a given wamid once; each insert adds one to the
    message's ``duplicate_sends``.
    """

    __tablename__ = "duplicate_send"

    wamid: Mapped[str] = mapped_column(String(128), primary_key=True)
    message_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("message_log.id", ondelete="CASCADE"), index=True)
    detected_by: Mapped[str] = mapped_column(String(16))  # "sender" or "webhook"
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
