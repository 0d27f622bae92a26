"""What the media plugin does with a file: accept an upload, record an inbound media, say where one stands.

An upload is checked completely before anything leaves the request: type and size
(:mod:`.upload`, :mod:`.limits`), the number, the virus scan (:mod:`.scanning`). Only a clean
file is encrypted to disk (:mod:`.storage`) and posted to Meta; the row and the file exist
only if the transaction commits (an abort removes the file), so a refused or failed upload
leaves nothing behind. The slow parts — the scan and Meta's upload — run before ``request.db``
writes anything, reading the number through a read-only scope, so on the embedded default
they never hold SQLite's write lock.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select

from kloyst.api import (
    ApiError,
    events,
    MetaError,
    ScannerUnavailable,
    session_scope,
    Unprocessable,
    utcnow,
)
from kloyst_plugins.media import limits, scanning, storage, upload
from kloyst_plugins.media.models import Direction, Media, MediaStatus
from kloyst_plugins.waba.api import phone_number_access, PhoneNumber

FETCH_INBOUND = "media.fetch_inbound"


class ScannerDown(ApiError):
    status, code = 503, "scanner_unavailable"


class MetaUploadFailed(ApiError):
    status, code = 502, "meta_upload_failed"


def media_json(media: Media) -> dict[str, Any]:
    """The API's view of a media (the same for GET /media/{id}, the list, and other plugins through api.py)."""
    return {
        "id": media.id, "direction": media.direction, "kind": media.kind, "status": media.status,
        "phone_number_id": media.phone_number_id, "inbound_id": media.inbound_id,
        "meta_media_id": media.meta_media_id, "mime_type": media.mime_type, "size_bytes": media.size_bytes,
        "sha256": media.sha256, "filename": media.filename, "scan_result": media.scan_result,
        "attempts": media.attempts, "error": media.error, "created_at": media.created_at,
        "updated_at": media.updated_at, "stored_at": media.stored_at,
    }


def _phone_number_id(fields: dict[str, str]) -> uuid.UUID:
    raw = fields.get("phone_number_id", "")
    try:
        return uuid.UUID(raw)
    except ValueError:
        problem = "is required: the id of the number the media will be sent from" if not raw else \
            f"must be the id of one of your phone numbers, not {raw[:40]!r}"
        raise Unprocessable(f"phone_number_id {problem}", field="phone_number_id") from None


def _refusal(exc: limits.MediaRefused) -> ApiError:
    error: ApiError = Unprocessable(exc.message, field="file") if exc.status == 422 else ApiError(exc.message)
    error.status, error.code = exc.status, exc.code
    error.details = {**(error.details or {}), **exc.details}
    return error


def upload_media(request) -> Media:
    """POST /media: receive, check, scan, store encrypted, upload to Meta, record. Raises the API's refusal."""
    settings, registry = request.registry.settings, request.registry
    try:
        received = upload.receive(request, request.GET.get("kind") or None)
    except limits.MediaRefused as exc:
        raise _refusal(exc) from None
    number_id = _phone_number_id(received.fields)
    cipher = registry["kloyst.cipher"]
    with session_scope(registry["kloyst.session_factory"], vendor_id=request.vendor_id, read_only=True) as look:
        number = look.get(PhoneNumber, number_id)
        if number is None:
            raise Unprocessable(f"phone_number_id {number_id} is not one of your phone numbers",
                                field="phone_number_id")
        meta_phone_number_id = number.meta_phone_number_id
        token = phone_number_access(look, cipher, number).token
    try:
        verdict = scanning.scan(settings, received.data)
    except ScannerUnavailable:
        raise ScannerDown("the virus scanner cannot be reached right now, so the file was not accepted; send it "
                          "again in a minute") from None
    if verdict is not None and not verdict.clean:
        # A signature is "infected"; any other answer (clamd's stream limit, say) is not clean either.
        raise Unprocessable(f"the file was refused by the virus scan ({verdict.reason}); nothing was stored or sent",
                            code="infected" if verdict.signature else "scan_refused", field="file")
    media_id = uuid.uuid4()
    filename = received.filename or f"{received.kind}.{limits.EXTENSIONS[received.sniffed.mime_type]}"
    stored = storage.write(settings, cipher, request.vendor_id, media_id, received.data)
    path = storage.path_for(settings, request.vendor_id, stored.name)
    # The file exists only if the row does: a transaction that fails or aborts takes the file with it.
    txn = request.tm.get()
    txn.addAfterCommitHook(lambda committed: None if committed else path.unlink(missing_ok=True))
    txn.addAfterAbortHook(lambda: path.unlink(missing_ok=True))
    try:
        meta_media_id = registry["kloyst.meta"].upload_media(meta_phone_number_id, received.data,
                                                             received.sniffed.mime_type, filename, token=token)
    except MetaError as exc:
        path.unlink(missing_ok=True)
        raise MetaUploadFailed(f"Meta did not take the upload: {exc.message} ({exc.reason}); nothing was kept",
                               details={"meta_code": exc.code, "retryable": exc.retryable}) from None
    media = Media(id=media_id, direction=Direction.OUTBOUND.value, kind=received.kind,
                  status=MediaStatus.STORED.value, phone_number_id=number_id, meta_media_id=str(meta_media_id),
                  mime_type=received.sniffed.mime_type, size_bytes=len(received.data), sha256=received.sha256,
                  filename=filename, stored_name=stored.name, file_key_enc=stored.sealed_key, enc_kid=stored.kid,
                  scan_result=scanning.scan_result(verdict), created_by=request.identity.user_id, stored_at=utcnow())
    request.db.add(media)
    request.db.flush()
    return media


def record_inbound(ctx, event: events.MessageReceived) -> Media | None:
    """Record the media of an inbound message as ``pending`` and enqueue its fetch — once per message.

    The event is delivered at least once; the row is keyed by ``(vendor, inbound_id)``, so a
    replay finds it and enqueues nothing (a concurrent replay hits the unique index, fails, and
    is delivered again, when it finds the row).
    """
    if not event.media_id:
        return None
    found = ctx.db.scalars(select(Media).where(Media.inbound_id == event.inbound_id)).first()
    if found is not None:
        return None
    media = Media(direction=Direction.INBOUND.value, kind=event.type if event.type in limits.MEDIA_LIMITS else
                  "document", status=MediaStatus.PENDING.value, phone_number_id=event.phone_number_id,
                  inbound_id=event.inbound_id, meta_media_id=event.media_id, attempts=0)
    ctx.db.add(media)
    ctx.db.flush()
    ctx.enqueue(FETCH_INBOUND, vendor_id=ctx.vendor_id, media_id=media.id)
    return media


def content_or_refusal(media: Media) -> None:
    """Raise what GET /media/{id}/content answers for a media that is not ``stored``."""
    if media.status == MediaStatus.STORED.value:
        return
    if media.status == MediaStatus.PENDING.value:
        raise _status_error(409, "media_pending", "the media is still being fetched from WhatsApp and scanned; ask "
                            "again in a few seconds", media, headers={"Retry-After": "5"})
    if media.status == MediaStatus.QUARANTINED.value:
        raise _status_error(410, "media_quarantined", f"the media failed the virus scan ({media.scan_result}) and is "
                            "never served", media)
    if media.status == MediaStatus.EXPIRED.value:
        raise _status_error(410, "media_expired", "WhatsApp no longer has this media (media ids in messages live 7 "
                            "days), so it cannot be served; ask the customer to send it again", media)
    if media.status == MediaStatus.REMOVED.value:
        raise _status_error(410, "media_removed", "the media was deleted when its retention ran out "
                            "(media.retention_days); it cannot be served any more", media)
    raise _status_error(410, "media_failed", f"the media could not be stored: {media.error}", media)


def _status_error(status: int, code: str, message: str, media: Media, headers: dict | None = None) -> ApiError:
    error = ApiError(message, code=code, details={"status": media.status}, headers=headers)
    error.status = status
    return error
