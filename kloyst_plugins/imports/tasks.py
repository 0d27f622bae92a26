"""The upload side's task: scan a stored file with clamd, then extract its headers and chunks.

``imports.scan_upload(vendor_id, job_id)`` runs on a job in UPLOADED and leaves it in one of:

* **QUARANTINED** — clamd answered anything but ``stream: OK`` for the file or for one of an
  XLSX's decompressed members (members are scanned one by one because clamd does not see
  into every zip layout: a member behind a ZIP64 local header, for one), or the zip guard refused the archive.
  ``scan_result`` names the signature; the file is kept for inspection and never parsed.
* **UPLOADED, waiting** — clamd could not be asked (no address configured, down, hung up).
  The file is *not* clean: ``scan_attempts`` goes up, ``scan_result`` says the job is
  waiting for the virus scanner, and the same task is enqueued again a few seconds later
  (:func:`retry_delay`: at most :data:`SCAN_RETRY_CAP_SECONDS`). The interval stays short
  for good: a scanner that comes back (clamd restarted, or ``CLAMD_ADDRESS`` set and Kloyst
  restarted) scans every waiting upload within seconds, with no re-upload; a longer backoff
  would leave a vendor looking at "next in 552s" long after clamd answers. What it costs is
  one small transaction per waiting upload every few seconds while the scanner is down,
  which is a real outage in production and rare anyway. The retry is a delayed outbox event
  written in this task's transaction rather than :class:`~kloyst.queue.Reschedule`, because
  Reschedule rolls the task's writes back and the attempt would not be visible on the job.
* **not scanned** — with ``imports.scan = off`` (development on this machine only, see
  :mod:`.scanning`) clamd is not asked: ``scan_result`` says :data:`.scanning.NOT_SCANNED`
  and extraction runs as it would after a clean answer.
* **AWAITING_MAPPING** — clean; extraction (:mod:`.extract`) found headers, samples, counts
  and the chunks, recorded in one transaction with one ContactImportChunk per chunk, passing
  through HEADERS_EXTRACTED. Nothing is parsed before the scan said clean.
* **FAILED** — clean but unusable (empty, header only, not decodable, too many columns).

The scan and the extraction run first, reading the job through a read-only session, and the
job row is locked (``ctx.db``'s first statement) only to record what they found: on the
embedded default that statement takes SQLite's one write lock (:mod:`kloyst.db.sqlite`),
which scanning a 50 MB file must not hold. The locked row is checked again before anything
is written, so a redelivered event, or a cancel that came during the scan, finds the job no
longer UPLOADED and records nothing.
"""

from __future__ import annotations

import logging
import math
import uuid
from dataclasses import dataclass

from sqlalchemy import select

from kloyst.api import backoff_seconds, Clamd, Reschedule, ScannerUnavailable, session_scope, task, Verdict
from kloyst_plugins.imports import extract, scanning, services, storage, zipguard
from kloyst_plugins.imports.models import ContactImportChunk, ContactImportJob, ImportStatus

log = logging.getLogger(__name__)

SCAN_UPLOAD = "imports.scan_upload"
CLEAN = "clean"
WAITING = "waiting for the virus scanner"
SCAN_RETRY_BASE_SECONDS = 1.0
SCAN_RETRY_CAP_SECONDS = 4.0
# A scanner that stays down is logged when an upload starts waiting and then every this many attempts
# (~5 minutes), not on every retry.
LOG_EVERY_ATTEMPTS = 100


def retry_delay(attempts: int) -> float:
    """Seconds until a waiting upload asks clamd again: 0.5–1 s after the first miss, then never over 4 s.

    The attempt count passed on is bounded: it only grows the delay up to the cap, and 2 to the
    power of an hour's attempts (~1,000) is no longer a float.
    """
    return backoff_seconds(min(attempts, 16), base=SCAN_RETRY_BASE_SECONDS, cap=SCAN_RETRY_CAP_SECONDS)


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
    record_extraction(db, settings, job, _extract(settings, job.file_type, path))


def _extract(settings, file_type: str, path) -> extract.Extracted | str:
    """What header extraction found, or why the file cannot be imported."""
    try:
        return extract.extract(path, file_type, settings["imports.chunk_rows"])
    except extract.ExtractionError as exc:
        return str(exc)


def record_extraction(db, settings, job: ContactImportJob, result: extract.Extracted | str) -> None:
    """Record an extraction on the job and its chunks (AWAITING_MAPPING), or fail the job with the reason given."""
    if isinstance(result, str):
        services.fail(job, result)
        return
    job.encoding, job.delimiter = result.encoding, result.delimiter
    job.headers, job.sample_rows = result.headers, result.sample_rows
    job.row_count, job.chunk_count = result.row_count, len(result.chunks)
    job.chunk_size = int(settings["imports.chunk_rows"])
    db.add_all([ContactImportChunk(vendor_id=job.vendor_id, job_id=job.id, index=c.index, first_row=c.first_row,
                                       row_count=c.row_count, byte_offset=c.byte_offset) for c in result.chunks])
    services.transition(job, ImportStatus.HEADERS_EXTRACTED)
    services.transition(job, ImportStatus.AWAITING_MAPPING)


@dataclass
class Findings:
    """What scanning (and, for a file that may be parsed, extracting) one upload found, before it is recorded."""

    scan_result: str | None = None  # for the job's scan_result
    asked_clamd: bool = False  # clamd answered: one more scan attempt
    unavailable: ScannerUnavailable | None = None
    quarantine: str | None = None  # why the file is quarantined
    failure: str | None = None  # why the job fails without a scan verdict
    extraction: extract.Extracted | str | None = None


def find(settings, job: ContactImportJob) -> Findings:
    """Scan the job's stored file (unless scanning is off) and extract it when it may be parsed; writes nothing."""
    path = storage.path_for(settings, job.vendor_id, job.stored_name)
    if not path.is_file():
        return Findings(failure="the uploaded file is no longer in storage; upload it again")
    if scanning.is_off(settings):
        return Findings(scan_result=scanning.NOT_SCANNED, extraction=_extract(settings, job.file_type, path))
    try:
        verdict, what = scan_stored_file(Clamd(settings["imports.clamd_address"]), path, job.file_type,
                                         zipguard.limits_from_settings(settings))
    except ScannerUnavailable as exc:
        return Findings(unavailable=exc)
    except zipguard.ZipRefused as exc:  # the upload passed the guard; a file changed on disk is hostile
        return Findings(quarantine=f"refused by the zip guard: {exc}")
    if not verdict.clean:
        where = "" if what == "file" else f" (in {what})"
        return Findings(asked_clamd=True, quarantine=f"{verdict.reason}{where}")
    return Findings(scan_result=CLEAN, asked_clamd=True, extraction=_extract(settings, job.file_type, path))


@task(SCAN_UPLOAD)
def scan_upload(ctx, *, vendor_id: uuid.UUID, job_id: uuid.UUID) -> str:
    """Scan the job's file; extract it when clean. Returns the job's status afterwards (for logs and tests)."""
    with session_scope(ctx.registry["kloyst.session_factory"], vendor_id=vendor_id, read_only=True) as look:
        seen = look.scalars(select(ContactImportJob).where(ContactImportJob.id == job_id)).one_or_none()
    findings = find(ctx.settings, seen) if seen is not None and seen.status == ImportStatus.UPLOADED.value else None
    job = ctx.db.scalars(select(ContactImportJob).where(ContactImportJob.id == job_id).with_for_update()).one_or_none()
    if job is None or job.status != ImportStatus.UPLOADED.value:
        return job.status if job else "gone"
    if findings is None:  # not UPLOADED when read, UPLOADED now: nothing goes back to UPLOADED, so look again
        raise Reschedule(0.1, f"import {job_id} changed while it was scanned")
    if findings.unavailable is not None:
        job.scan_attempts += 1
        delay = retry_delay(job.scan_attempts)
        job.scan_result = f"{WAITING} (attempt {job.scan_attempts}, next in {math.ceil(delay)}s): " \
                          f"{findings.unavailable}"[:255]
        if job.scan_attempts == 1 or job.scan_attempts % LOG_EVERY_ATTEMPTS == 0:
            log.warning("import %s of vendor %s waits for clamd (attempt %d, retried every few seconds): %s",
                        job.id, vendor_id, job.scan_attempts, findings.unavailable)
        ctx.enqueue(SCAN_UPLOAD, delay=delay, vendor_id=vendor_id, job_id=job_id)
        return job.status
    if findings.asked_clamd:
        job.scan_attempts += 1
    if findings.quarantine is not None:
        services.quarantine(job, findings.quarantine)
        log.warning("import %s of vendor %s quarantined: %s", job.id, vendor_id, job.scan_result)
        return job.status
    if findings.failure is not None:
        services.fail(job, findings.failure)
        return job.status
    job.scan_result = findings.scan_result
    record_extraction(ctx.db, ctx.settings, job, findings.extraction)
    return job.status


TASKS = [scan_upload]
