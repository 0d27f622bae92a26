"""The upload side's task: scan a stored file with clamd, then extract its headers and chunks.

``imports.scan_upload(vendor_id, job_id)`` runs on a job in UPLOADED and leaves it in one of:

* **QUARANTINED** — clamd answered anything but ``stream: OK`` for the file or for one of an
  XLSX's decompressed members (members are scanned one by one because clamd does not see
  into every zip layout, RELIABILITY.md Part B), or the zip guard refused the archive.
  ``scan_result`` names the signature; the file is kept for inspection and never parsed.
* **UPLOADED, waiting** — clamd could not be asked (no address configured, down, hung up).
  The file is *not* clean: ``scan_attempts`` goes up, ``scan_result`` says the job is
  waiting for the virus scanner, and the same task is enqueued again with a backoff (at
  most 10 minutes). The retry is a delayed outbox event written in this task's
  transaction rather than :class:`~kloyst.queue.Reschedule`, because Reschedule rolls the
  task's writes back and the attempt would not be visible on the job.
* **AWAITING_MAPPING** — clean; extraction (:mod:`.extract`) ran in the same transaction
  and wrote headers, samples, counts and one ContactImportChunk per chunk, passing
  through HEADERS_EXTRACTED. Nothing is parsed before the scan said clean.
* **FAILED** — clean but unusable (empty, header only, not decodable, too many columns).

The job row is locked first, so a redelivered event, or a cancel racing the scan, finds
the job no longer UPLOADED and does nothing.
"""

from __future__ import annotations

import logging
import uuid

from sqlalchemy import select

from kloyst.clamav import Clamd, ScannerUnavailable, Verdict
from kloyst.outbox.delivery import backoff_seconds
from kloyst.queue import task
from kloyst_plugins.imports import extract, services, storage, zipguard
from kloyst_plugins.imports.models import ContactImportChunk, ContactImportJob, ImportStatus

log = logging.getLogger(__name__)

SCAN_UPLOAD = "imports.scan_upload"
CLEAN = "clean"
WAITING = "waiting for the virus scanner"
SCAN_RETRY_BASE_SECONDS = 10.0
SCAN_RETRY_CAP_SECONDS = 600.0


def scan_stored_file(client: Clamd, path, file_type: str,
                     limits: zipguard.ZipLimits = zipguard.DEFAULT_LIMITS) -> tuple[Verdict, str]:
    """clamd's verdict on the file and, for XLSX, on each decompressed member: ``(first bad verdict or OK, what)``."""
    verdict = client.scan_file(path)
    if not verdict.clean or file_type != "xlsx":
        return verdict, "file"
    for info in zipguard.check(path, limits):
        if info.is_dir():
            continue
        verdict = client.scan(zipguard.iter_member_blocks(path, info))
        if not verdict.clean:
            return verdict, info.filename
    return verdict, "file"


def extract_into(db, settings, job: ContactImportJob, path) -> None:
    """Run header extraction for a clean job and record it (AWAITING_MAPPING), or fail the job.

    Also the entry point for other callers of the upload pipeline (the operator CLI).
    """
    try:
        result = extract.extract(path, job.file_type, settings["imports.chunk_rows"])
    except extract.ExtractionError as exc:
        services.fail(job, str(exc))
        return
    job.encoding, job.delimiter = result.encoding, result.delimiter
    job.headers, job.sample_rows = result.headers, result.sample_rows
    job.row_count, job.chunk_count = result.row_count, len(result.chunks)
    job.chunk_size = int(settings["imports.chunk_rows"])
    db.add_all([ContactImportChunk(vendor_id=job.vendor_id, job_id=job.id, index=c.index, first_row=c.first_row,
                                       row_count=c.row_count, byte_offset=c.byte_offset) for c in result.chunks])
    services.transition(job, ImportStatus.HEADERS_EXTRACTED)
    services.transition(job, ImportStatus.AWAITING_MAPPING)


@task(SCAN_UPLOAD)
def scan_upload(ctx, *, vendor_id: uuid.UUID, job_id: uuid.UUID) -> str:
    """Scan the job's file; extract it when clean. Returns the job's status afterwards (for logs and tests)."""
    job = ctx.db.scalars(select(ContactImportJob).where(ContactImportJob.id == job_id).with_for_update()).one_or_none()
    if job is None or job.status != ImportStatus.UPLOADED.value:
        return job.status if job else "gone"
    path = storage.path_for(ctx.settings, job.vendor_id, job.stored_name)
    if not path.is_file():
        services.fail(job, "the uploaded file is no longer in storage; upload it again")
        return job.status
    try:
        verdict, what = scan_stored_file(Clamd(ctx.settings["imports.clamd_address"]), path, job.file_type,
                                         zipguard.limits_from_settings(ctx.settings))
    except ScannerUnavailable as exc:
        job.scan_attempts += 1
        delay = backoff_seconds(job.scan_attempts, base=SCAN_RETRY_BASE_SECONDS, cap=SCAN_RETRY_CAP_SECONDS)
        job.scan_result = f"{WAITING} (attempt {job.scan_attempts}, next in {delay:.0f}s): {exc}"[:255]
        log.warning("import %s of vendor %s waits for clamd: %s", job.id, vendor_id, exc)
        ctx.enqueue(SCAN_UPLOAD, delay=delay, vendor_id=vendor_id, job_id=job_id)
        return job.status
    except zipguard.ZipRefused as exc:  # the upload passed the guard; a file changed on disk is hostile
        services.quarantine(job, f"refused by the zip guard: {exc}")
        return job.status
    job.scan_attempts += 1
    if not verdict.clean:
        where = "" if what == "file" else f" (in {what})"
        services.quarantine(job, f"{verdict.reason}{where}")
        log.warning("import %s of vendor %s quarantined: %s", job.id, vendor_id, job.scan_result)
        return job.status
    job.scan_result = CLEAN
    extract_into(ctx.db, ctx.settings, job, path)
    return job.status


TASKS = [scan_upload]
