"""The imports HTTP API, under ``/v1/imports``: upload, list, read, cancel, map, rejected rows.

Views are thin: each delegates to the module that owns the step. :mod:`.upload` receives the
body, :mod:`.sniff` decides the type, :mod:`.services` owns the job's states and JSON,
:mod:`.tasks` scans and extracts, :mod:`.mapping` confirms the column mapping (shared with the
CLI) and :mod:`.report` writes the rejected rows. The plugin gate, tenant scoping of ``{id}``
(``model=ContactImportJob`` makes ``request.context`` the job) and the default
``vendor.member`` permission come from the framework.
"""

from __future__ import annotations

import sqlalchemy as sa
from pyramid.response import Response
from sqlalchemy import select

from kloyst.api import as_bool, Conflict, Gone, openapi, Page, paginate, Unprocessable, UnsupportedMediaType
from kloyst_plugins.contacts.api import strategies_for
from kloyst_plugins.imports import mapping, report, scanning, services, sniff, storage, upload, zipguard
from kloyst_plugins.imports.mapping import MappingBody
from kloyst_plugins.imports.models import ContactImportJob
from kloyst_plugins.imports.schemas import ImportAnswer, ImportPage
from kloyst_plugins.imports.tasks import SCAN_UPLOAD


# -- upload side: POST /imports, GET /imports, GET /imports/{id}, POST /imports/{id}/cancel -------

def _lock_sha(db, vendor_id, sha256: str) -> None:
    """Serialise concurrent uploads of the same file by one vendor (PostgreSQL; SQLite runs one writer anyway)."""
    if db.get_bind().dialect.name == "postgresql":
        db.execute(sa.text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
                   {"key": f"imports.upload:{vendor_id}:{sha256}"})


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


def list_imports(request):
    page = paginate(request.db, select(ContactImportJob), ContactImportJob, request.validated_query())
    return {"items": [services.job_json(job) for job in page.items], "next_cursor": page.next_cursor}


def get_import(request):
    return {"import": services.job_json(request.context)}


def cancel_import(request):
    job = request.context
    services.cancel(request.db, job)
    return {"import": services.job_json(job)}


# -- processing side: PUT /imports/{id}/mapping, GET /imports/{id}/rejected.csv ------------------

def put_mapping(request):
    job = request.context
    mapping.confirm_mapping(request.db, request.enqueue, job, request.validated(),
                            strategies_for(request.tenant_hooks))
    return {"import": services.job_json(job)}


def rejected_csv(request):
    job = request.context
    if job.file_removed_at is not None:
        raise Gone(f"the rejected rows were deleted with the file on {job.file_removed_at:%Y-%m-%d} (imports are "
                   "kept imports.file_retention_days days); the counts are still in GET /v1/imports/{job.id}",
                   code="report_removed")
    response = Response(content_type="text/csv", charset="utf-8")
    response.content_disposition = f'attachment; filename="import-{job.id}-rejected.csv"'
    response.app_iter = report.iter_report(request.registry["kloyst.session_factory"], job.vendor_id, job.id)
    return response


def includeme(config) -> None:
    # The upload is the one large body: the tween allows it on POST /imports only (plus room for the
    # multipart envelope; exact, so the mapping PUT beside it keeps the ordinary JSON limit), and the
    # upload view counts the file's own bytes against imports.max_upload_bytes while streaming.
    settings = config.get_settings()
    prefix = settings["kloyst.api.prefix"].strip("/")
    upload_limit = int(settings["imports.max_upload_bytes"]) + 64 * 1024
    config.add_body_limit(f"/{prefix}/imports" if prefix else "/imports", upload_limit, exact=True)

    config.add_route("imports.collection", "/imports")
    config.add_view(create_import, route_name="imports.collection", request_method="POST", renderer="json",
                    status=201, response_schema=ImportAnswer, rate_cost=10,
                    openapi=openapi.multipart(
                        {upload.FILE_FIELD: "file: the contact list (CSV, XLSX or a ZIP of one)"},
                        {"force": "boolean: true to import a file already imported (same SHA-256)"}))
    config.add_view(list_imports, route_name="imports.collection", request_method="GET", renderer="json",
                    query_schema=Page, response_schema=ImportPage)
    config.add_route("imports.item", "/imports/{id}", model=ContactImportJob)
    config.add_view(get_import, route_name="imports.item", request_method="GET", renderer="json",
                    response_schema=ImportAnswer)
    config.add_route("imports.item.cancel", "/imports/{id}/cancel", model=ContactImportJob)
    config.add_view(cancel_import, route_name="imports.item.cancel", request_method="POST", renderer="json",
                    response_schema=ImportAnswer)
    config.add_route("imports.item.mapping", "/imports/{id}/mapping", model=ContactImportJob)
    config.add_view(put_mapping, route_name="imports.item.mapping", request_method="PUT", renderer="json",
                    body_schema=MappingBody, response_schema=ImportAnswer)
    config.add_route("imports.item.rejected", "/imports/{id}/rejected.csv", model=ContactImportJob)
    config.add_view(rejected_csv, route_name="imports.item.rejected", request_method="GET",
                    openapi=openapi.download("text/csv"))
