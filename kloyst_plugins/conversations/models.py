"""The ``conversation`` table: one row per (contact, phone number) a customer or a reply talked on.

A conversation is the inbox's summary of a thread, kept so that listing an inbox never reads
messages: when the last message was and which one it was (its preview is read from that one
row at listing time, so no message content is copied here in any form), when the customer
last wrote (the customer-service window is open for 24 hours after that), how many of their
messages nobody has read, who is assigned and its labels. The messages themselves stay in the
messages plugin's tables; a thread reads them through ``messages.api``.

Conversations are created by a customer's message (the ``MessageReceived`` event) or by a
reply or template sent from the inbox — never by a campaign: a million-recipient campaign
writes no row here (its messages still show in a thread).
"""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import JSON, ForeignKey, Index, String, UniqueConstraint, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from kloyst.api import Base, TenantScoped, Timestamped, new_id

# A JSON array (JSONB on PostgreSQL, with a GIN index for the label filter), as contacts' labels.
LabelsType = JSON().with_variant(JSONB(), "postgresql")

INBOUND = "inbound"
OUTBOUND = "outbound"


class Conversation(TenantScoped, Timestamped, Base):
    __tablename__ = "conversation"
    __api_name__ = "conversation"
    __table_args__ = (
        # A contact is one vendor's, so (contact, number) is unique; contact first, so that deleting a contact
        # finds its conversations (ON DELETE CASCADE) by this index.
        UniqueConstraint("contact_id", "phone_number_id"),
        # The inbox, most recent first; the open-window filter rides on it too (a conversation whose
        # window is open had a message in the last 24 hours).
        Index("ix_conversation_recent", "vendor_id", "last_message_at", "id"),
        # "Unread only": the conversations somebody has to look at, usually few.
        Index("ix_conversation_unread", "vendor_id", "last_message_at", "id",
              postgresql_where=text("unread_count > 0"), sqlite_where=text("unread_count > 0")),
        # "Assigned to me" / to someone: a user belongs to one vendor, so the user leads.
        Index("ix_conversation_assignee", "assignee_user_id", "last_message_at", "id",
              postgresql_where=text("assignee_user_id IS NOT NULL"),
              sqlite_where=text("assignee_user_id IS NOT NULL")),
        Index("ix_conversation_labels", "labels", postgresql_using="gin", postgresql_ops={"labels": "jsonb_path_ops"}),
    )

    # No index of its own: ix_conversation_recent leads with it.
    vendor_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("vendor.id", ondelete="CASCADE"), nullable=False)
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    contact_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("contact.id", ondelete="CASCADE"))
    phone_number_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("phone_number.id", ondelete="CASCADE"))
    last_message_at: Mapped[dt.datetime]
    last_message_id: Mapped[uuid.UUID | None]  # an inbound_message or message_log id, by direction
    last_message_direction: Mapped[str | None] = mapped_column(String(8))
    # When the customer last wrote on this number (Meta's timestamp): the window is open 24 h after it.
    last_inbound_at: Mapped[dt.datetime | None]
    # The customer's messages up to this time are read; unread_count counts the later ones (capped).
    last_read_at: Mapped[dt.datetime | None]
    unread_count: Mapped[int] = mapped_column(default=0, server_default="0")
    assignee_user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("app_user.id", ondelete="SET NULL"))
    labels: Mapped[list] = mapped_column(LabelsType, default=list)
