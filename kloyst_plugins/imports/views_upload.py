"""Upload-side views: POST /imports, GET /imports, GET /imports/{id}, POST /imports/{id}/cancel.

Thin on purpose: :mod:`.upload` receives the body, :mod:`.sniff` decides the type,
:mod:`.services` owns the job's states and JSON, :mod:`.tasks` scans and extracts. The
plugin gate, tenant scoping of ``{id}`` and the default ``vendor.member`` permission come
from the framework.
"""

from __future__ import annotations

import sqlalchemy as sa
from pyramid.view import view_config
from sqlalchemy import select

from kloyst.config import as_bool
from kloyst.errors import Conflict, UnsupportedMediaType, Unprocessable
from kloyst.http.pagination import Page, paginate
from kloyst.http import openapi
from kloyst_plugins.imports import scanning, services, sniff, storage, upload, zipguard
from kloyst_plugins.imports.models import ContactImportJob
from kloyst_plugins.imports.schemas import ImportAnswer, ImportPage
from kloyst_plugins.imports.tasks import SCAN_UPLOAD



def _lock_sha(db, vendor_id, sha256: str) -> None:
    """Serialise concurrent uploads of the same file by one vendor (PostgreSQL; SQLite runs one writer anyway)."""
    if db.get_bind().dialect.name == "postgresql":
        db.execute(sa.text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
                   {"key": f"imports.upload:{vendor_id}:{sha256}"})


@view_config(route_name="imports.collection", request_method="POST", renderer="json", status=201,
             response_schema=ImportAnswer, rate_cost=10,
             openapi=openapi.multipart({upload.FILE_FIELD: "file: the contact list (CSV, XLSX or a ZIP of one)"},
                                       {"force": "boolean: true to import a file already imported (same SHA-256)"}))
def create_import(request):
    settings = request.registry.settings
    received = upload.receive(request, settings, request.vendor_id, int(settings["imports.max_upload_bytes"]))
    try:
        job = _accept(request, received)
    except BaseException:
        storage.remove_quietly(received.path)
        raise
    request.enqueue(SCAN_UPLOAD, vendor_id=job.vendor_id, job_id=job.id)
    request.response.status_int = 201
    request.response.headers["Location"] = request.route_path("imports.item", id=job.id)
    return {"import": services.job_json(job)}


def _force(request, received: upload.Received) -> bool:
    """The ``force`` field (or query parameter): true or false, and anything else is refused, not read as false.

    A vendor who sends ``force=ture`` meant to import again; a silent false would answer with a
    409 about the duplicate and hide the typo.
    """
    raw = received.fields.get("force", request.GET.get("force", ""))
    try:
        return as_bool(raw)
    except ValueError:
        problem = {"field": "force", "problem": f"must be true or false, not {raw[:40]!r}"}
        raise Unprocessable(f"the request is invalid: force: {problem['problem']}",
                            details={"fields": [problem]}) from None


def _accept(request, received: upload.Received) -> ContactImportJob:
    """Sniff, deduplicate, store and record the received file (raises the API's refusal otherwise)."""
    settings = request.registry.settings
    try:
        sniffed = sniff.sniff(received.path, received.size, zipguard.limits_from_settings(settings))
    except sniff.FileRefused as exc:
        error = UnsupportedMediaType if exc.status == 415 else Unprocessable
        raise error(exc.message, code=exc.code) from None
    force = _force(request, received)
    _lock_sha(request.db, request.vendor_id, received.sha256)
    earlier = services.find_duplicate(request.db, received.sha256)
    if earlier is not None and not force:
        raise Conflict(f"this file was already imported as job {earlier.id} ({earlier.status}); send force=true to "
                       "import it again", code="duplicate_file",
                       details={"job_id": str(earlier.id), "status": earlier.status})
    job = ContactImportJob(created_by=request.identity.user_id, original_filename=received.filename,
                           stored_name=received.stored_name, file_type=sniffed.file_type, size_bytes=received.size,
                           sha256=received.sha256, forced=force and earlier is not None,
                           chunk_size=int(settings["imports.chunk_rows"]),
                           # The upload's own answer already says that no scanner will look at the file.
                           scan_result=scanning.NOT_SCANNED if scanning.is_off(settings) else None)
    request.db.add(job)
    request.db.flush()
    stored = storage.commit_part(received.path, received.stored_name)
    # The file exists only if the job does: a transaction that fails or aborts takes the file with it.
    txn = request.tm.get()
    txn.addAfterCommitHook(lambda ok: ok or storage.remove_quietly(stored))
    txn.addAfterAbortHook(lambda: storage.remove_quietly(stored))
    return job


@view_config(route_name="imports.collection", request_method="GET", renderer="json", query_schema=Page,
             response_schema=ImportPage)
def list_imports(request):
    page = paginate(request.db, select(ContactImportJob), ContactImportJob, request.validated_query())
    return {"items": [services.job_json(job) for job in page.items], "next_cursor": page.next_cursor}


@view_config(route_name="imports.item", request_method="GET", renderer="json", response_schema=ImportAnswer)
def get_import(request):
    return {"import": services.job_json(request.context)}


@view_config(route_name="imports.item.cancel", request_method="POST", renderer="json", response_schema=ImportAnswer)
def cancel_import(request):
    job = request.context
    services.cancel(request.db, job)
    return {"import": services.job_json(job)}
