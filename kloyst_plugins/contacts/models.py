"""Contact and ContactAuditLog.

Numbers and names are never stored in plaintext: ``mobile_enc`` and ``name_enc`` are
AES-256-GCM ciphertexts bound to the vendor and field (:mod:`kloyst.crypto`), and
``mobile_hash`` (keyed HMAC of vendor + E.164) is what uniqueness, dedupe and phone lookup
use.

A contact is known by its phone number, by its WhatsApp business-scoped user id (BSUID,
Meta's ``user_id``, such as ``US.13491208655302741918``), or by both: a user with a WhatsApp
username may write with no number in the webhook at all. The BSUID and the parent BSUID
(``parent_user_id``, shared across the portfolios of a managed business) are kept exactly like
the number — ciphertext plus a keyed hash from the same hasher (a BSUID cannot collide with
an E.164 number: one starts with letters, the other with ``+``) — and the WhatsApp username
is encrypted like the name. The check ``ck_contact_identified`` holds that every contact has a
number or a BSUID; the BSUID is unique per vendor (a partial index: rows without one cost
nothing), the parent BSUID is only indexed (one parent may span several BSUIDs of a vendor
that owns several portfolios). ``enc_kid`` records which data key encrypted the row, so key rotation finds the rows
to re-encrypt with an index instead of decrypting everything.
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid

from sqlalchemy import JSON, CheckConstraint, ForeignKey, Index, LargeBinary, String, UniqueConstraint, event, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from kloyst.api import Base, TenantScoped, Timestamped, new_id, utcnow

# Labels: a JSON array (JSONB on PostgreSQL, with a GIN index for "has label" filters).
LabelsType = JSON().with_variant(JSONB(), "postgresql")


class ContactSource(str, enum.Enum):
    API = "api"
    IMPORT = "import"
    WEBHOOK = "webhook"


class Contact(TenantScoped, Timestamped, Base):
    __tablename__ = "contact"
    __api_name__ = "contact"
    __table_args__ = (
        UniqueConstraint("vendor_id", "mobile_hash"),
        Index("ix_contact_vendor_created", "vendor_id", "created_at", "id"),
        Index("ix_contact_labels", "labels", postgresql_using="gin", postgresql_ops={"labels": "jsonb_path_ops"}),
        Index("ix_contact_enc_kid", "enc_kid"),
        Index("ix_contact_vendor_bsuid", "vendor_id", "bsuid_hash", unique=True,
              postgresql_where=text("bsuid_hash IS NOT NULL"), sqlite_where=text("bsuid_hash IS NOT NULL")),
        Index("ix_contact_vendor_parent_bsuid", "vendor_id", "parent_bsuid_hash",
              postgresql_where=text("parent_bsuid_hash IS NOT NULL"),
              sqlite_where=text("parent_bsuid_hash IS NOT NULL")),
        CheckConstraint("mobile_hash IS NOT NULL OR bsuid_hash IS NOT NULL", name="identified"),
    )

    # No index of its own: the unique (vendor_id, mobile_hash) and (vendor_id, created_at, id)
    # indexes lead with it, and every import row would pay for a third one.
    vendor_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("vendor.id", ondelete="CASCADE"), nullable=False)
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    # NULL for a contact known only by its BSUID (see the module docstring).
    mobile_hash: Mapped[bytes | None] = mapped_column(LargeBinary(32))
    mobile_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    name_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    enc_kid: Mapped[str] = mapped_column(String(64))
    country: Mapped[str | None] = mapped_column(String(2))  # ISO 3166 region of the number
    calling_code: Mapped[int | None]
    labels: Mapped[list] = mapped_column(LabelsType, default=list)
    attributes: Mapped[dict] = mapped_column(default=dict)
    opted_out: Mapped[bool] = mapped_column(default=False, server_default=text("false"))
    opted_out_at: Mapped[dt.datetime | None]
    source: Mapped[str] = mapped_column(String(16), default=ContactSource.API.value)
    last_inbound_at: Mapped[dt.datetime | None]
    bsuid_hash: Mapped[bytes | None] = mapped_column(LargeBinary(32))
    bsuid_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    parent_bsuid_hash: Mapped[bytes | None] = mapped_column(LargeBinary(32))
    parent_bsuid_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    username_enc: Mapped[bytes | None] = mapped_column(LargeBinary)


class AuditAction(str, enum.Enum):
    CREATE = "create"
    UPDATE = "update"
    MERGE = "merge"
    DELETE = "delete"
    OPT_OUT = "opt_out"
    OPT_IN = "opt_in"


class ContactAuditLog(TenantScoped, Base):
    """One immutable row per change to a contact: who, from where, and what changed.

    ``changes`` maps each changed field to ``[before, after]``; the number itself never
    appears (a changed number is recorded as ``"mobile": ["changed", "changed"]``). The row
    outlives the contact (no foreign key), so a deletion keeps its trail.
    """

    __tablename__ = "contact_audit_log"
    __table_args__ = (Index("ix_contact_audit_log_contact", "vendor_id", "contact_id", "created_at"),
                      # Retention: each vendor's entries oldest first (kloyst_plugins.contacts.retention).
                      Index("ix_contact_audit_log_vendor_created", "vendor_id", "created_at", "id"))

    # Indexed by ix_contact_audit_log_contact, which leads with it.
    vendor_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("vendor.id", ondelete="CASCADE"), nullable=False)
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    contact_id: Mapped[uuid.UUID]
    action: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(String(16))
    actor_user_id: Mapped[uuid.UUID | None]
    import_job_id: Mapped[uuid.UUID | None]
    changes: Mapped[dict] = mapped_column(default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


@event.listens_for(ContactAuditLog, "before_update")
def _audit_rows_are_immutable(mapper, connection, target) -> None:
    raise RuntimeError("contact audit rows are immutable")
