"""Contact and ContactAuditLog.

Numbers and names are never stored in plaintext: ``mobile_enc`` and ``name_enc`` are
AES-256-GCM ciphertexts bound to the vendor and field (:mod:`kloyst.crypto`), and
``mobile_hash`` (keyed HMAC of vendor + E.164) is what uniqueness, dedupe and phone lookup
use. ``enc_kid`` records which data key encrypted the row, so key rotation finds the rows
to re-encrypt with an index instead of decrypting everything.
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid

from sqlalchemy import JSON, ForeignKey, Index, LargeBinary, String, UniqueConstraint, event, text
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
    )

    # No index of its own: the unique (vendor_id, mobile_hash) and (vendor_id, created_at, id)
    # indexes lead with it, and every import row would pay for a third one.
    vendor_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("vendor.id", ondelete="CASCADE"), nullable=False)
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    mobile_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    mobile_enc: Mapped[bytes] = mapped_column(LargeBinary)
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
    __table_args__ = (Index("ix_contact_audit_log_contact", "vendor_id", "contact_id", "created_at"),)

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
