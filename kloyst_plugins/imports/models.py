"""ContactImportJob, its chunks, and the rows it rejected.

The job row is the import's state machine, visible through the API:
``UPLOADED → HEADERS_EXTRACTED → AWAITING_MAPPING → MAPPING_CONFIRMED → QUEUED →
PROCESSING → COMPLETED | PARTIAL_SUCCESS | FAILED``, plus ``QUARANTINED`` (infected or
hostile file) and ``CANCELLED``. Each chunk of 5,000 rows is its own unit of work, run by an
outbox task whose writes commit together with the chunk's counts, so a chunk that crashes
is retried without counting anything twice.
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from kloyst.api import Base, TenantScoped, Timestamped, new_id, utcnow

BigId = BigInteger().with_variant(Integer, "sqlite")


class ImportStatus(str, enum.Enum):
    UPLOADED = "UPLOADED"
    HEADERS_EXTRACTED = "HEADERS_EXTRACTED"
    AWAITING_MAPPING = "AWAITING_MAPPING"
    MAPPING_CONFIRMED = "MAPPING_CONFIRMED"
    QUEUED = "QUEUED"
    PROCESSING = "PROCESSING"
    COMPLETED = "COMPLETED"
    PARTIAL_SUCCESS = "PARTIAL_SUCCESS"
    FAILED = "FAILED"
    QUARANTINED = "QUARANTINED"
    CANCELLED = "CANCELLED"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset({ImportStatus.COMPLETED, ImportStatus.PARTIAL_SUCCESS, ImportStatus.FAILED,
                            ImportStatus.QUARANTINED, ImportStatus.CANCELLED})


class ChunkStatus(str, enum.Enum):
    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


class ContactImportJob(TenantScoped, Timestamped, Base):
    __tablename__ = "contact_import_job"
    __api_name__ = "import"
    __table_args__ = (Index("ix_contact_import_job_sha256", "vendor_id", "sha256"),
                      Index("ix_contact_import_job_vendor_created", "vendor_id", "created_at", "id"))

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    created_by: Mapped[uuid.UUID | None]
    status: Mapped[str] = mapped_column(String(24), default=ImportStatus.UPLOADED.value)
    # The file: stored under a generated name; the client's name is for display only.
    original_filename: Mapped[str] = mapped_column(String(255))
    stored_name: Mapped[str] = mapped_column(String(255))
    file_type: Mapped[str] = mapped_column(String(8))  # csv | xlsx
    size_bytes: Mapped[int] = mapped_column(BigId)
    sha256: Mapped[str] = mapped_column(String(64))
    forced: Mapped[bool] = mapped_column(default=False)  # re-import of a file imported before
    scan_result: Mapped[str | None] = mapped_column(String(255))
    scan_attempts: Mapped[int] = mapped_column(default=0)
    # What header extraction found.
    encoding: Mapped[str | None] = mapped_column(String(32))
    delimiter: Mapped[str | None] = mapped_column(String(4))
    headers: Mapped[list | None] = mapped_column()
    sample_rows: Mapped[list | None] = mapped_column()
    row_count: Mapped[int | None]
    chunk_size: Mapped[int] = mapped_column(default=5000)
    chunk_count: Mapped[int | None]
    # What the vendor chose.
    mapping: Mapped[dict | None] = mapped_column()
    default_country: Mapped[str | None] = mapped_column(String(2))
    add_labels: Mapped[list | None] = mapped_column()
    merge_strategy: Mapped[str | None] = mapped_column(String(64))
    # Progress and outcome.
    chunks_done: Mapped[int] = mapped_column(default=0)
    rows_processed: Mapped[int] = mapped_column(default=0)
    created_count: Mapped[int] = mapped_column(default=0)
    updated_count: Mapped[int] = mapped_column(default=0)
    duplicate_count: Mapped[int] = mapped_column(default=0)
    rejected_count: Mapped[int] = mapped_column(default=0)
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[dt.datetime | None]
    finished_at: Mapped[dt.datetime | None]
    cancelled_at: Mapped[dt.datetime | None]
    # When retention deleted the file, its sample rows and its rejected rows (imports.file_retention_days).
    file_removed_at: Mapped[dt.datetime | None]


class ContactImportChunk(TenantScoped, Base):
    __tablename__ = "contact_import_chunk"
    __table_args__ = (UniqueConstraint("job_id", "index"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("contact_import_job.id", ondelete="CASCADE"))
    index: Mapped[int]
    first_row: Mapped[int]  # 1-based data row number of the chunk's first row (header excluded)
    row_count: Mapped[int]
    byte_offset: Mapped[int | None] = mapped_column(BigId)  # CSV: where the chunk starts in the decoded file
    status: Mapped[str] = mapped_column(String(16), default=ChunkStatus.PENDING.value)
    attempts: Mapped[int] = mapped_column(default=0)
    created_count: Mapped[int] = mapped_column(default=0)
    updated_count: Mapped[int] = mapped_column(default=0)
    duplicate_count: Mapped[int] = mapped_column(default=0)
    rejected_count: Mapped[int] = mapped_column(default=0)
    error: Mapped[str | None] = mapped_column(Text)
    finished_at: Mapped[dt.datetime | None]


class ContactImportRejection(TenantScoped, Base):
    """A row the import could not take, and why (the value masked: reports travel by email and chat)."""

    __tablename__ = "contact_import_rejection"
    __table_args__ = (Index("ix_contact_import_rejection_job_row", "job_id", "row_number"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("contact_import_job.id", ondelete="CASCADE"))
    row_number: Mapped[int]
    column: Mapped[str | None] = mapped_column(String(255))
    value_masked: Mapped[str | None] = mapped_column(String(255))
    reason: Mapped[str] = mapped_column(String(500))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
