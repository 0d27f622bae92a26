"""Media: one file of a vendor's WhatsApp conversations, uploaded for a reply or received from a customer.

``status`` is where the file stands, and only ``stored`` files are ever served:

* ``pending`` — an inbound media Kloyst has not fetched from Meta yet (or is retrying);
* ``stored`` — scanned clean (or not scanned: ``media.scan = off``, development only),
  encrypted under the storage directory, ``size_bytes``/``sha256``/``mime_type`` set;
* ``quarantined`` — clamd found something (``scan_result`` names it): nothing was written to
  disk, the row says what happened, and the content is never served;
* ``expired`` — Meta no longer has the media (its ids from webhooks live 7 days);
* ``failed`` — given up, ``error`` says why (retries exhausted, a permanent Meta error, a file
  WhatsApp would not take);
* ``removed`` — its retention ran out (``media.retention_days``): the file and its key are gone,
  the row says what it was.

Uploaded media (``direction = outbound``) are only ever recorded ``stored``: a refused upload
leaves no row. Inbound media are linked to their message (``inbound_id``, unique per vendor:
a replayed ``MessageReceived`` finds the row and fetches nothing).
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from kloyst.api import Base, new_id, TenantScoped, Timestamped

BigId = BigInteger().with_variant(Integer(), "sqlite")


class MediaStatus(str, enum.Enum):
    PENDING = "pending"
    STORED = "stored"
    QUARANTINED = "quarantined"
    EXPIRED = "expired"
    FAILED = "failed"
    REMOVED = "removed"


class Direction(str, enum.Enum):
    OUTBOUND = "outbound"  # uploaded by the vendor, to send
    INBOUND = "inbound"  # sent by a customer, fetched from Meta


class Media(TenantScoped, Timestamped, Base):
    __tablename__ = "media"
    __api_name__ = "media"
    __table_args__ = (
        Index("ix_media_vendor_created", "vendor_id", "created_at", "id"),
        Index("ix_media_vendor_inbound", "vendor_id", "inbound_id", unique=True),
        Index("ix_media_enc_kid", "enc_kid"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    direction: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(16))  # image | video | audio | document | sticker
    status: Mapped[str] = mapped_column(String(16), default=MediaStatus.PENDING.value)
    phone_number_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("phone_number.id", ondelete="CASCADE"), index=True)
    inbound_id: Mapped[uuid.UUID | None]  # the inbound message (messages plugin) that carried it
    meta_media_id: Mapped[str | None] = mapped_column(String(128))
    mime_type: Mapped[str | None] = mapped_column(String(128))
    size_bytes: Mapped[int | None] = mapped_column(BigId)
    sha256: Mapped[str | None] = mapped_column(String(64))
    filename: Mapped[str | None] = mapped_column(String(255))  # for display and Content-Disposition only
    stored_name: Mapped[str | None] = mapped_column(String(64))  # the file under the vendor's folder (storage.py)
    file_key_enc: Mapped[bytes | None] = mapped_column(LargeBinary)  # the file's own key, sealed (storage.py)
    enc_kid: Mapped[str | None] = mapped_column(String(64))
    scan_result: Mapped[str | None] = mapped_column(String(255))
    attempts: Mapped[int] = mapped_column(default=0)
    error: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[uuid.UUID | None]
    stored_at: Mapped[dt.datetime | None]
