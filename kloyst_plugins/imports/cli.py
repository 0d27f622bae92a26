"""``kloyst import <ini> --vendor <uuid> FILE``: an operator imports a contact file for a vendor.

The same steps as the API, in one command: the file is sniffed (type from content, zip
guard), stored under a generated name, its headers and chunks extracted, the mapping
validated and confirmed by :func:`kloyst_plugins.imports.mapping.confirm_mapping` against
the strategies *that vendor* may use, and the chunks run by the same task function the
workers run, each in its own transaction. By default the chunks run in this process with a
progress line; ``--workers`` queues them for the running workers instead and follows the
job until it ends. The file is scanned by clamd (``imports.clamd_address``) exactly as an
upload is: anything but a clean answer quarantines it, and an unreachable scanner stops the
command. Only ``--no-scan`` — an operator's explicit word that the file is trusted — skips
the scan (recorded on the job); with ``imports.scan = off`` (development on this machine,
:mod:`.scanning`) nothing is scanned, as for uploads, and the command says so.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
import uuid
from pathlib import Path

import transaction
from sqlalchemy import select

from kloyst.api import Clamd, load, ScannerUnavailable, session_scope, TenantHooks
from kloyst_plugins.contacts.api import strategies_for
from kloyst_plugins.imports import mapping, processing, scanning, services, sniff, storage, tasks, zipguard
from kloyst_plugins.imports.models import ContactImportJob, ImportStatus

NOT_SCANNED_BY_OPERATOR = "not scanned: --no-scan (operator CLI)"


def _mapping_from_args(args) -> dict:
    if args.mapping:
        try:
            body = json.loads(args.mapping)
        except ValueError as exc:
            raise SystemExit(f"kloyst import: --mapping is not JSON: {exc}") from None
    else:
        columns: dict = {"phone": args.phone_column} if args.phone_column else {}
        for key in ("name", "country", "labels", "bsuid"):
            if getattr(args, f"{key}_column"):
                columns[key] = getattr(args, f"{key}_column")
        if args.attribute:
            columns["attributes"] = dict(item.split("=", 1) for item in args.attribute)
        body = {"columns": columns}
    body.setdefault("merge_strategy", args.merge_strategy)
    if args.default_country:
        body.setdefault("default_country", args.default_country)
    if args.label:
        body.setdefault("labels", args.label)
    return body


def _progress(done: int, total: int, rows: int, started: float, stream=sys.stderr) -> None:
    width = 30
    filled = int(width * done / total) if total else width
    rate = rows / max(time.monotonic() - started, 1e-6)
    stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} chunks, {rows:,} rows, "
                 f"{rate:,.0f} rows/s")
    stream.flush()


def _scan(settings, path: Path, file_type: str) -> str | None:
    """clamd's verdict as the upload gets it: None when clean, else what was found (quarantine)."""
    address = settings["imports.clamd_address"]
    if not address:
        raise SystemExit("kloyst import: no virus scanner is configured (imports.clamd_address / CLAMD_ADDRESS); "
                         "set one, or pass --no-scan for a file you trust")
    try:
        verdict, what = tasks.scan_stored_file(Clamd(address), path, file_type, zipguard.limits_from_settings(settings))
    except ScannerUnavailable as exc:
        raise SystemExit(f"kloyst import: the virus scanner did not answer ({exc}); nothing was imported") from None
    return None if verdict.clean else f"{verdict.reason} in {what}"


def create_job(registry, vendor_id: uuid.UUID, source: Path, *, actor: uuid.UUID | None = None, scan: bool = True):
    """Store ``source`` for the vendor, scan and extract it: the job's id, AWAITING_MAPPING (or FAILED/QUARANTINED).

    ``scan=False`` is ``--no-scan``; with ``imports.scan = off`` nothing is scanned either way.
    """
    settings = registry.settings
    size = source.stat().st_size
    if size > settings["imports.max_upload_bytes"]:
        raise SystemExit(f"kloyst import: {source} is {size:,} bytes, over imports.max_upload_bytes")
    try:
        sniffed = sniff.sniff(source, size, zipguard.limits_from_settings(settings))
    except sniff.FileRefused as exc:
        raise SystemExit(f"kloyst import: {exc.message}") from None
    stored_name, part = storage.new_part_file(settings, vendor_id)
    digest = hashlib.sha256()
    with open(source, "rb") as src, open(part, "wb") as dst:
        while block := src.read(1024 * 1024):
            digest.update(block)
            dst.write(block)
    path = storage.commit_part(part, stored_name)
    found = None
    if not scan:
        scan_result = NOT_SCANNED_BY_OPERATOR
    elif scanning.is_off(settings):
        scan_result = scanning.NOT_SCANNED
    else:
        found = _scan(settings, path, sniffed.file_type)
        scan_result = "clean (operator CLI)"
    with session_scope(registry["kloyst.session_factory"], vendor_id=vendor_id) as db:
        job = ContactImportJob(vendor_id=vendor_id, created_by=actor, original_filename=storage.display_name(
            source.name), stored_name=stored_name, file_type=sniffed.file_type, size_bytes=size,
            sha256=digest.hexdigest(), forced=True, scan_result=scan_result)
        db.add(job)
        db.flush()
        if found:
            services.quarantine(job, found)
        else:
            tasks.extract_into(db, settings, job, path)  # the upload pipeline's own extraction step
        return job.id


def confirm(registry, vendor_id: uuid.UUID, job_id: uuid.UUID, body: dict, *, queue: bool) -> list[int]:
    """Confirm the mapping; with ``queue`` the chunk tasks go to the workers, else their indexes are returned."""
    pm = registry["kloyst.plugin_manager"]
    manager = transaction.TransactionManager(explicit=True)
    indexes: list[int] = []
    with session_scope(registry["kloyst.session_factory"], vendor_id=vendor_id, manager=manager) as db:
        job = db.scalars(select(ContactImportJob).where(ContactImportJob.id == job_id)).one()
        if queue:
            def enqueue(name, **kwargs):
                registry["kloyst.queue"].enqueue(db, manager, name, **kwargs)
        else:
            def enqueue(name, **kwargs):
                indexes.append(kwargs["chunk_index"])
        hooks = TenantHooks.for_vendor(db, pm, vendor_id, registry.settings)
        if "imports" not in hooks.enabled:
            raise SystemExit(f"kloyst import: the imports plugin is not enabled for vendor {vendor_id}")
        mapping.confirm_mapping(db, enqueue, job, body, strategies_for(hooks))
    return indexes


def _job(registry, vendor_id, job_id):
    with session_scope(registry["kloyst.session_factory"], vendor_id=vendor_id) as db:
        job = db.scalars(select(ContactImportJob).where(ContactImportJob.id == job_id)).one()
        db.expunge(job)
        return job


def cmd_import(args) -> int:
    try:
        vendor_id = uuid.UUID(args.vendor)
    except ValueError:
        raise SystemExit(f"kloyst import: --vendor {args.vendor!r} is not a vendor id") from None
    source = Path(args.file)
    if not source.is_file():
        raise SystemExit(f"kloyst import: {source} is not a file")
    body = _mapping_from_args(args)
    _, registry = load(args.ini)
    job_id = create_job(registry, vendor_id, source, scan=not args.no_scan)
    job = _job(registry, vendor_id, job_id)
    if job.status != ImportStatus.AWAITING_MAPPING.value:
        print(f"kloyst import: job {job_id} {job.status}: {job.error}", file=sys.stderr)
        return 1
    print(f"job {job_id}: {job.row_count:,} rows in {job.chunk_count} chunks; columns {job.headers}; "
          f"scan: {job.scan_result}", file=sys.stderr)
    indexes = confirm(registry, vendor_id, job_id, body, queue=args.workers)
    started = time.monotonic()
    if args.workers:
        while not ImportStatus((job := _job(registry, vendor_id, job_id)).status).is_final:
            _progress(job.chunks_done, job.chunk_count or 0, job.rows_processed, started)
            time.sleep(0.5)
    else:
        rows = 0
        for done, index in enumerate(indexes, 1):
            processing.run_chunk_now(registry, vendor_id, job_id, index)
            rows += (job.row_count or 0) // max(job.chunk_count or 1, 1)
            _progress(done, len(indexes), min(rows, job.row_count or 0), started)
        job = _job(registry, vendor_id, job_id)
    _progress(job.chunks_done, job.chunk_count or 0, job.rows_processed, started)
    sys.stderr.write("\n")
    print(json.dumps({"job_id": str(job_id), "status": job.status, "rows": job.rows_processed,
                      "created": job.created_count, "updated": job.updated_count,
                      "duplicates": job.duplicate_count, "rejected": job.rejected_count, "scan": job.scan_result,
                      "error": job.error}))
    return 0 if job.status in (ImportStatus.COMPLETED.value, ImportStatus.PARTIAL_SUCCESS.value) else 1


def add_commands(subparsers) -> None:
    parser = subparsers.add_parser(
        "import", help="import a contact file (CSV/XLSX) for a vendor, with a progress bar",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Import FILE into VENDOR's contacts. Map columns with --phone-column etc., or give the API's "
                    "mapping body as --mapping JSON.")
    parser.add_argument("ini", help="the ini file, e.g. development.ini")
    parser.add_argument("file", metavar="FILE", help="the CSV or XLSX file")
    parser.add_argument("--vendor", required=True, help="the vendor's id")
    parser.add_argument("--mapping", help='the mapping as JSON: {"columns": {"phone": "Mobile", ...}, ...}')
    parser.add_argument("--phone-column", default="phone", help="header of the phone column (default: phone)")
    parser.add_argument("--bsuid-column", help="a column of WhatsApp business-scoped user ids (a row may have one "
                                               "instead of a number; --phone-column '' for a file without numbers)")
    parser.add_argument("--name-column")
    parser.add_argument("--country-column")
    parser.add_argument("--labels-column", help="a column of labels separated by , or ;")
    parser.add_argument("--attribute", action="append", metavar="KEY=COLUMN", help="a custom attribute (repeat)")
    parser.add_argument("--label", action="append", help="a label added to every row (repeat)")
    parser.add_argument("--merge-strategy", default="MERGE_LABELS")
    parser.add_argument("--no-scan", action="store_true",
                        help="skip the virus scan: only for a file you trust (recorded on the job; with "
                             "imports.scan = off nothing is scanned anyway)")
    parser.add_argument("--default-country", help="ISO country for numbers written without +country code")
    parser.add_argument("--workers", action="store_true", help="queue the chunks for the running workers and "
                                                               "follow the job, instead of running them here")
    parser.set_defaults(handler=cmd_import)

