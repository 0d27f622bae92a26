"""What the imports API answers: an import job, with where it stands and what happens next.

The request side is elsewhere on purpose: the upload is multipart (:mod:`.upload`), and the
mapping body is :class:`kloyst_plugins.imports.mapping.MappingBody`, shared with the CLI.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from pydantic import Field

from kloyst.api import Answer, Listing
from kloyst_plugins.imports.models import ImportStatus


class ScanOut(Answer):
    result: str | None = Field(description="The virus scanner's verdict, or why the file waits for it.")
    attempts: int


class ProgressOut(Answer):
    chunks_done: int
    chunk_count: int | None
    rows_processed: int
    row_count: int | None


class CountsOut(Answer):
    total: int | None = Field(description="Data rows in the file.")
    created: int
    updated: int
    skipped_duplicate: int = Field(description="Rows whose number was already a contact and was left as it was.")
    rejected: int = Field(description="Rows refused, with their reason in rejected.csv.")


class ImportJobOut(Answer):
    """An import job: the file, its scan, the headers found, the mapping, and the outcome."""

    id: uuid.UUID
    status: ImportStatus
    original_filename: str = Field(description="As the client named it; shown, never used as a path.")
    file_type: str = Field(description="`csv` or `xlsx`.")
    size_bytes: int
    sha256: str
    forced: bool = Field(description="Imported again with `force=true` although the same bytes were imported.")
    scan: ScanOut
    encoding: str | None
    delimiter: str | None
    headers: list[str] | None = Field(description="The header row, once extracted.")
    sample_rows: list[list[Any]] | None = Field(description="The first data rows, to help map the columns.")
    row_count: int | None
    chunk_size: int
    chunk_count: int | None
    mapping: dict[str, Any] | None = Field(description="The confirmed mapping (PUT /imports/{id}/mapping).")
    default_country: str | None
    add_labels: list[str] | None
    merge_strategy: str | None
    progress: ProgressOut
    counts: CountsOut
    error: str | None
    next: str = Field(description="What happens next, for people.")
    created_at: dt.datetime
    updated_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    cancelled_at: dt.datetime | None
    file_removed_at: dt.datetime | None = Field(
        description="When the uploaded file, its sample rows and its rejected rows were deleted (retention: "
                    "imports.file_retention_days); the counts stay.")


class ImportAnswer(Answer):
    import_: ImportJobOut = Field(alias="import")


class ImportPage(Listing[ImportJobOut]):
    """Import jobs, newest first."""
