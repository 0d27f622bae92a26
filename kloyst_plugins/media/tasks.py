"""Fetching a customer's media from Meta: ``media.fetch_inbound(vendor_id, media_id)``.

Runs on a ``pending`` media (recorded by :func:`.services.record_inbound`) and leaves it:

* **stored** — Meta's ``GET /{media-id}`` gave the URL, the download (with the number's
  token, at most the kind's limit) arrived, clamd said clean; the file is encrypted under the
  storage directory with its type (Meta's, without parameters), size and SHA-256;
* **quarantined** — clamd found something: nothing is written to disk, ``scan_result`` names it;
* **expired** — Meta says the media is gone (a permanent error for the id or a 404/410 for
  its URL: media ids in webhooks live 7 days);
* **failed** — Meta refused the token, the file is larger than WhatsApp allows for its kind,
  or :data:`MAX_ATTEMPTS` transient failures in a row; ``error`` says which;
* **pending, again** — a transient failure (network, 5xx, rate limit) or a scanner that
  cannot be asked: ``attempts`` and ``error`` are recorded and the task is enqueued again
  with exponential backoff (a delayed outbox event written in this task's transaction, so the
  attempt is visible on the row; :class:`~kloyst.api.Reschedule` would roll it back). A
  scanner outage does not count toward :data:`MAX_ATTEMPTS`: the file is not at fault.

Idempotent: the network, the scan and the file are done first, reading the row through a
read-only scope (so SQLite's write lock is not held across Meta's answer), then the row is
locked and checked still ``pending`` before anything is recorded. A redelivered task for a
media already settled does nothing; a duplicate that raced past the check wrote a file of its
own (:mod:`.storage` names every write anew) and removes it when it finds the row settled.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import uuid
from dataclasses import dataclass

from sqlalchemy import select

from kloyst.api import (
    backoff_seconds,
    ErrorKind,
    MetaError,
    ScannerUnavailable,
    session_scope,
    task,
    utcnow,
)
from kloyst_plugins.media import limits, scanning, storage
from kloyst_plugins.media.models import Media, MediaStatus
from kloyst_plugins.media.services import FETCH_INBOUND
from kloyst_plugins.waba.api import phone_number_access, PhoneNumber

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 8
RETRY_BASE_SECONDS = 2.0
RETRY_CAP_SECONDS = 600.0
SCANNER_RETRY_CAP_SECONDS = 30.0
WAITING_FOR_SCANNER = "waiting for the virus scanner"
GONE_HTTP = (404, 410)


@dataclass
class Outcome:
    status: str
    error: str | None = None
    retry: bool = False
    counts: bool = True  # whether this attempt counts toward MAX_ATTEMPTS
    mime_type: str | None = None
    size: int | None = None
    sha256: str | None = None
    stored: storage.StoredFile | None = None
    scan_result: str | None = None


def retry_delay(attempts: int, *, scanner: bool = False) -> float:
    cap = SCANNER_RETRY_CAP_SECONDS if scanner else RETRY_CAP_SECONDS
    return backoff_seconds(min(attempts, 16), base=RETRY_BASE_SECONDS, cap=cap)


def _mime(raw) -> str:
    """Meta's ``mime_type`` without parameters (``audio/ogg; codecs=opus`` → ``audio/ogg``), or octet-stream."""
    text = str(raw or "").split(";", 1)[0].strip().lower()
    kind, _, sub = text.partition("/")
    if not kind or not sub or len(text) > 128 or any(ch.isspace() for ch in text):
        return "application/octet-stream"
    return text


def _meta_failure(exc: MetaError, what: str) -> Outcome:
    if exc.kind == ErrorKind.AUTH:
        return Outcome(MediaStatus.FAILED.value, f"Meta refused the number's access token while {what}: "
                                                 f"{exc.message} (reconnect the WhatsApp account)")
    if exc.kind.retryable or exc.is_network:
        return Outcome(MediaStatus.PENDING.value, f"{what}: {exc.message} ({exc.reason})", retry=True)
    if exc.http_status in GONE_HTTP or what == "asking Meta for the media":
        return Outcome(MediaStatus.EXPIRED.value, f"Meta no longer has the media ({what}: {exc.message})")
    return Outcome(MediaStatus.FAILED.value, f"{what}: {exc.message} ({exc.reason})")


def fetch(settings, meta, cipher, vendor_id: uuid.UUID, media_id: uuid.UUID, kind: str, meta_media_id: str,
          token: str) -> Outcome:
    """Fetch, scan and store one media; what to record (nothing is written to the database here)."""
    limit = limits.MEDIA_LIMITS.get(kind, limits.MEDIA_LIMITS["document"]).max_bytes
    try:
        info = meta.media_info(meta_media_id, token=token)
    except MetaError as exc:
        return _meta_failure(exc, "asking Meta for the media")
    declared = info.get("file_size")
    try:
        declared_size = int(declared) if declared is not None else None
    except (TypeError, ValueError):
        declared_size = None
    if declared_size is not None and declared_size > limit:
        return Outcome(MediaStatus.FAILED.value, f"the media is {declared_size} bytes, more than the {limit} bytes "
                                                 f"WhatsApp allows for {kind}; it was not downloaded")
    if not info.get("url"):
        return Outcome(MediaStatus.EXPIRED.value, "Meta answered without a download URL for the media")
    try:
        data = meta.download_media(info["url"], token=token, max_bytes=limit)
    except MetaError as exc:
        return _meta_failure(exc, "downloading the media")
    if len(data) > limit:
        return Outcome(MediaStatus.FAILED.value, f"the media is larger than the {limit} bytes WhatsApp allows for "
                                                 f"{kind}")
    raw_digest = hashlib.sha256(data).digest()
    digest = raw_digest.hex()
    expected = str(info.get("sha256") or "")
    # Meta's media answer gives the hash in hex; webhooks carry it in base64. Either must match.
    if expected and expected.lower() != digest and expected != base64.b64encode(raw_digest).decode():
        return Outcome(MediaStatus.PENDING.value, "the downloaded media does not match the SHA-256 Meta gave for it",
                       retry=True)
    mime = _mime(info.get("mime_type"))
    try:
        verdict = scanning.scan(settings, data)
    except ScannerUnavailable as exc:
        return Outcome(MediaStatus.PENDING.value, f"{WAITING_FOR_SCANNER}: {exc}", retry=True, counts=False,
                       scan_result=WAITING_FOR_SCANNER)
    if verdict is not None and not verdict.clean:
        return Outcome(MediaStatus.QUARANTINED.value, None, mime_type=mime, size=len(data), sha256=digest,
                       scan_result=scanning.scan_result(verdict))
    stored = storage.write(settings, cipher, vendor_id, media_id, data)
    return Outcome(MediaStatus.STORED.value, None, mime_type=mime, size=len(data), sha256=digest, stored=stored,
                   scan_result=scanning.scan_result(verdict))


@task(FETCH_INBOUND)
def fetch_inbound(ctx, *, vendor_id: uuid.UUID, media_id: uuid.UUID) -> str | None:
    """Fetch a pending inbound media from Meta and record the outcome; returns the media's status (for logs/tests)."""
    cipher = ctx.registry["kloyst.cipher"]
    with session_scope(ctx.registry["kloyst.session_factory"], vendor_id=vendor_id, read_only=True) as look:
        seen = look.get(Media, media_id)
        if seen is None or seen.status != MediaStatus.PENDING.value:
            return seen.status if seen is not None else None
        number = look.get(PhoneNumber, seen.phone_number_id)
        token = phone_number_access(look, cipher, number).token if number is not None else None
        kind, meta_media_id = seen.kind, seen.meta_media_id or ""
    if token is None:
        outcome = Outcome(MediaStatus.FAILED.value, "the phone number that received the media is gone")
    else:
        outcome = fetch(ctx.settings, ctx.registry["kloyst.meta"], cipher, vendor_id, media_id, kind, meta_media_id,
                        token)
    media = ctx.db.scalars(select(Media).where(Media.id == media_id).with_for_update()).one_or_none()
    if media is None or media.status != MediaStatus.PENDING.value:
        if outcome.stored is not None:  # settled (or gone) meanwhile: this run's file is nobody's
            storage.path_for(ctx.settings, vendor_id, outcome.stored.name).unlink(missing_ok=True)
        return media.status if media is not None else None
    return _record(ctx, media, outcome)


def _record(ctx, media: Media, outcome: Outcome) -> str:
    if outcome.counts:
        media.attempts += 1
    media.error = outcome.error
    media.scan_result = outcome.scan_result or media.scan_result
    if outcome.retry:
        if outcome.counts and media.attempts >= MAX_ATTEMPTS:
            media.status = MediaStatus.FAILED.value
            media.error = f"gave up after {media.attempts} attempts: {outcome.error}"
            return media.status
        delay = retry_delay(media.attempts, scanner=not outcome.counts)
        log.info("media %s: %s; trying again in %.1fs", media.id, outcome.error, delay)
        ctx.enqueue(FETCH_INBOUND, delay=delay, vendor_id=media.vendor_id, media_id=media.id)
        return media.status
    media.status = outcome.status
    if outcome.mime_type is not None:
        media.mime_type, media.size_bytes, media.sha256 = outcome.mime_type, outcome.size, outcome.sha256
    if outcome.stored is not None:
        media.stored_name, media.file_key_enc, media.enc_kid = (outcome.stored.name, outcome.stored.sealed_key,
                                                                outcome.stored.kid)
        media.stored_at = utcnow()
        path = storage.path_for(ctx.settings, media.vendor_id, outcome.stored.name)
        ctx.tm.get().addAfterAbortHook(lambda: path.unlink(missing_ok=True))
    return media.status


TASKS = [fetch_inbound]
