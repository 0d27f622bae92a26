"""The import job's state machine and its JSON, shared by the upload and the processing side.

Every status change goes through :func:`transition`, which refuses a move the table below
does not allow (409 through the API) and stamps the timestamps that go with it. Final
states (COMPLETED, PARTIAL_SUCCESS, FAILED, QUARANTINED, CANCELLED) have no way out.

    UPLOADED ──scan clean──▶ HEADERS_EXTRACTED ──▶ AWAITING_MAPPING ──mapping──▶ MAPPING_CONFIRMED
        │ infected/hostile → QUARANTINED                       ▲──── re-map ─────────┘   │
        │ unreadable → FAILED                                                            ▼
        └─────────────── any non-final state → CANCELLED ◀─── QUEUED ──▶ PROCESSING ──▶ COMPLETED
                                                                                        | PARTIAL_SUCCESS | FAILED

Callers lock the job row (:func:`lock`) before deciding on its status, so a cancel and a
worker never both win.
"""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import object_session

from kloyst.api import Conflict, events, Outbox, utcnow
from kloyst_plugins.imports.models import (
    FINAL_STATUSES,
    ChunkStatus,
    ContactImportChunk,
    ContactImportJob,
    ImportStatus,
)

S = ImportStatus
ALLOWED: dict[ImportStatus, frozenset[ImportStatus]] = {
    S.UPLOADED: frozenset({S.HEADERS_EXTRACTED, S.QUARANTINED, S.FAILED, S.CANCELLED}),
    S.HEADERS_EXTRACTED: frozenset({S.AWAITING_MAPPING, S.FAILED, S.CANCELLED}),
    S.AWAITING_MAPPING: frozenset({S.MAPPING_CONFIRMED, S.FAILED, S.CANCELLED}),
    S.MAPPING_CONFIRMED: frozenset({S.AWAITING_MAPPING, S.MAPPING_CONFIRMED, S.QUEUED, S.FAILED, S.CANCELLED}),
    S.QUEUED: frozenset({S.PROCESSING, S.COMPLETED, S.PARTIAL_SUCCESS, S.FAILED, S.CANCELLED}),
    S.PROCESSING: frozenset({S.COMPLETED, S.PARTIAL_SUCCESS, S.FAILED, S.CANCELLED}),
}

NEXT_STEP = {
    S.UPLOADED: "The file is stored and waits for the virus scan; headers are extracted once it is clean (at once "
                "when scan.result says it is not scanned).",
    S.HEADERS_EXTRACTED: "Headers and sample rows are ready; the job moves to AWAITING_MAPPING.",
    S.AWAITING_MAPPING: "Map the columns (PUT /imports/{id}/mapping) to start the import.",
    S.MAPPING_CONFIRMED: "The mapping is saved; the chunks are being queued.",
    S.QUEUED: "The chunks wait for a worker.",
    S.PROCESSING: "Chunks are being imported; follow progress here.",
    S.COMPLETED: "Done: every row was imported.",
    S.PARTIAL_SUCCESS: "Done, with rejected rows: download them from /imports/{id}/rejected.csv.",
    S.FAILED: "The import failed; see error. Fix the file and upload it again.",
    S.QUARANTINED: "The file was quarantined by the virus scanner or the upload guard and will never be parsed.",
    S.CANCELLED: "The import was cancelled; rows already imported stay.",
}


class InvalidTransition(Conflict):
    code = "invalid_state"


def lock(db, job: ContactImportJob) -> ContactImportJob:
    """Reload ``job`` with its row locked (FOR UPDATE) until the transaction ends."""
    db.refresh(job, with_for_update=True)
    return job


def transition(job: ContactImportJob, to: ImportStatus, *, error: str | None = None) -> None:
    """Move ``job`` to ``to`` or raise :class:`InvalidTransition`; stamps started/finished/cancelled times."""
    current = ImportStatus(job.status)
    if to not in ALLOWED.get(current, frozenset()):
        raise InvalidTransition(f"the import is {current.value}; it cannot become {to.value}",
                                details={"status": current.value, "requested": to.value})
    now = utcnow()
    job.status = to.value
    if to is S.PROCESSING and job.started_at is None:
        job.started_at = now
    if to in FINAL_STATUSES:
        job.finished_at = now
    if to is S.CANCELLED:
        job.cancelled_at = now
    if error is not None:
        job.error = error
    if to in (S.COMPLETED, S.PARTIAL_SUCCESS, S.FAILED, S.QUARANTINED):
        _record_outcome(job, to)


def _record_outcome(job: ContactImportJob, to: ImportStatus) -> None:
    """``ImportCompleted`` (COMPLETED, PARTIAL_SUCCESS) or ``ImportFailed`` (FAILED, QUARANTINED), in the job's
    transaction. The import's contacts get no ContactCreated/ContactUpdated each: this event's counts report them."""
    if to in (S.COMPLETED, S.PARTIAL_SUCCESS):
        event: events.Event = events.ImportCompleted(
            import_id=job.id, created=job.created_count or 0, updated=job.updated_count or 0,
            skipped=job.duplicate_count or 0, failed=job.rejected_count or 0)
    else:
        event = events.ImportFailed(import_id=job.id, reason=(job.error or to.value.lower())[:500])
    session = object_session(job)
    if session is None:
        raise RuntimeError(f"import {job.id} ended outside a session: its {event.name} could not be recorded")
    events.record_event(Outbox(session), job.vendor_id, event)


def fail(job: ContactImportJob, error: str) -> None:
    transition(job, S.FAILED, error=error)


def quarantine(job: ContactImportJob, reason: str) -> None:
    job.scan_result = reason[:255]
    transition(job, S.QUARANTINED, error=reason)


def cancel(db, job: ContactImportJob) -> None:
    """Cancel a job that is not final (409 otherwise); its pending chunks are marked cancelled.

    Locks in the order a running chunk does — its chunk row, then the job — so a cancel waits
    for a chunk in flight to finish instead of deadlocking with it.
    """
    db.execute(select(ContactImportChunk.id)
               .where(ContactImportChunk.job_id == job.id, ContactImportChunk.status == ChunkStatus.PENDING.value)
               .order_by(ContactImportChunk.index).with_for_update()).all()
    lock(db, job)
    if ImportStatus(job.status).is_final:
        raise InvalidTransition(f"the import is already {job.status}; only an unfinished import can be cancelled",
                                details={"status": job.status})
    transition(job, S.CANCELLED)
    db.execute(update(ContactImportChunk)
               .where(ContactImportChunk.job_id == job.id, ContactImportChunk.status == ChunkStatus.PENDING.value)
               .values(status=ChunkStatus.CANCELLED.value))


def find_duplicate(db, sha256: str) -> ContactImportJob | None:
    """The newest live job (not cancelled, failed or quarantined) of this vendor for the same file content."""
    dead = [S.CANCELLED.value, S.FAILED.value, S.QUARANTINED.value]
    return db.scalars(select(ContactImportJob)
                      .where(ContactImportJob.sha256 == sha256, ContactImportJob.status.not_in(dead))
                      .order_by(ContactImportJob.created_at.desc()).limit(1)).first()


def job_json(job: ContactImportJob) -> dict:
    """The job as the API shows it; both sides' views return this."""
    status = ImportStatus(job.status)
    return {
        "id": job.id,
        "status": status.value,
        "original_filename": job.original_filename,
        "file_type": job.file_type,
        "size_bytes": job.size_bytes,
        "sha256": job.sha256,
        "forced": job.forced,
        "scan": {"result": job.scan_result, "attempts": job.scan_attempts},
        "encoding": job.encoding,
        "delimiter": job.delimiter,
        "headers": job.headers,
        "sample_rows": job.sample_rows,
        "row_count": job.row_count,
        "chunk_size": job.chunk_size,
        "chunk_count": job.chunk_count,
        "mapping": job.mapping,
        "default_country": job.default_country,
        "add_labels": job.add_labels,
        "merge_strategy": job.merge_strategy,
        "progress": {
            "chunks_done": job.chunks_done,
            "chunk_count": job.chunk_count,
            "rows_processed": job.rows_processed,
            "row_count": job.row_count,
        },
        "counts": {
            "total": job.row_count,
            "created": job.created_count,
            "updated": job.updated_count,
            "skipped_duplicate": job.duplicate_count,
            "rejected": job.rejected_count,
        },
        "error": job.error,
        "next": NEXT_STEP[status],
        "created_at": job.created_at,
        "updated_at": job.updated_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "cancelled_at": job.cancelled_at,
        "file_removed_at": job.file_removed_at,
    }
