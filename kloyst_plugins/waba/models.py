"""WhatsApp Business Accounts and their phone numbers.

A vendor either brings its own WABA (``waba``: its Meta id and an access token, encrypted at
rest and never returned by the API) or uses numbers of the platform's **shared WABA**
(``shared_waba``, owned by platform admins, no vendor). Every sending number is a
``phone_number`` row owned by exactly one vendor: the Meta phone-number id is unique across
the platform, so no vendor can register, or send from, a number another vendor holds.
Numbers of a shared WABA are listed in ``shared_phone_number`` and copied into the vendor's
``phone_number`` when an admin assigns them.
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid

from sqlalchemy import CheckConstraint, ForeignKey, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from kloyst.api import Base, TenantScoped, Timestamped, new_id

# The tiers Meta grants a number (messages per second): STANDARD and HIGH.
THROUGHPUT_STANDARD = 80
THROUGHPUT_HIGH = 1000


class SyncStatus(str, enum.Enum):
    """Where a WABA's phone-number sync stands; syncs run in the background, so a client polls this.

    ``queued`` from the request that asks for one (registration, a new token, ``/sync``) until it has
    run, including while a transient Meta failure is retried; ``synced`` once Meta's list is applied;
    ``failed`` when Meta refused for good (``last_sync_error`` says why; a new token queues another).
    """

    QUEUED = "queued"
    SYNCED = "synced"
    FAILED = "failed"


class QualityRating(str, enum.Enum):
    GREEN = "GREEN"
    YELLOW = "YELLOW"
    RED = "RED"
    UNKNOWN = "UNKNOWN"


class Waba(TenantScoped, Timestamped, Base):
    """A vendor's own WhatsApp Business Account."""

    __tablename__ = "waba"
    __api_name__ = "waba"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    meta_waba_id: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    business_id: Mapped[str | None] = mapped_column(String(32))
    access_token_enc: Mapped[bytes] = mapped_column(LargeBinary)
    enc_kid: Mapped[str] = mapped_column(String(64))
    last_synced_at: Mapped[dt.datetime | None]
    last_sync_error: Mapped[str | None] = mapped_column(String(500))
    sync_status: Mapped[str] = mapped_column(String(16), default=SyncStatus.QUEUED.value,
                                             server_default=SyncStatus.QUEUED.value)


class SharedWaba(Timestamped, Base):
    """The platform's WABA, whose numbers are assigned to vendors (platform admins only)."""

    __tablename__ = "shared_waba"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    meta_waba_id: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    access_token_enc: Mapped[bytes] = mapped_column(LargeBinary)
    enc_kid: Mapped[str] = mapped_column(String(64))
    last_synced_at: Mapped[dt.datetime | None]
    last_sync_error: Mapped[str | None] = mapped_column(String(500))
    sync_status: Mapped[str] = mapped_column(String(16), default=SyncStatus.QUEUED.value,
                                             server_default=SyncStatus.QUEUED.value)


class SharedPhoneNumber(Timestamped, Base):
    """A number of the shared WABA as Meta lists it, and the vendor it is assigned to (if any)."""

    __tablename__ = "shared_phone_number"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    shared_waba_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("shared_waba.id", ondelete="CASCADE"), index=True)
    meta_phone_number_id: Mapped[str] = mapped_column(String(32), unique=True)
    display_phone_number: Mapped[str] = mapped_column(String(32))
    verified_name: Mapped[str] = mapped_column(String(200), default="")
    quality_rating: Mapped[str] = mapped_column(String(16), default=QualityRating.UNKNOWN.value)
    throughput_mps: Mapped[int] = mapped_column(default=THROUGHPUT_STANDARD)
    status: Mapped[str] = mapped_column(String(32), default="CONNECTED")
    messaging_limit_tier: Mapped[str | None] = mapped_column(String(32))
    assigned_vendor_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("vendor.id", ondelete="SET NULL"),
                                                                 index=True)


class PhoneNumber(TenantScoped, Timestamped, Base):
    """A number a vendor sends from: from its own WABA (``waba_id``) or assigned from the shared one."""

    __tablename__ = "phone_number"
    __api_name__ = "phone_number"
    __table_args__ = (
        CheckConstraint("(waba_id IS NULL) <> (shared_waba_id IS NULL)", name="one_waba"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    meta_phone_number_id: Mapped[str] = mapped_column(String(32), unique=True)
    waba_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("waba.id", ondelete="CASCADE"), index=True)
    shared_waba_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("shared_waba.id", ondelete="CASCADE"),
                                                             index=True)
    display_phone_number: Mapped[str] = mapped_column(String(32))
    verified_name: Mapped[str] = mapped_column(String(200), default="")
    quality_rating: Mapped[str] = mapped_column(String(16), default=QualityRating.UNKNOWN.value)
    throughput_mps: Mapped[int] = mapped_column(default=THROUGHPUT_STANDARD)
    status: Mapped[str] = mapped_column(String(32), default="CONNECTED")
    messaging_limit_tier: Mapped[str | None] = mapped_column(String(32))
    last_synced_at: Mapped[dt.datetime | None]
