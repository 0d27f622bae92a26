"""The waba plugin's background tasks: phone-number syncs, run after the enqueuing transaction commits.

Retry rule (the outbox retries whatever raises): a Meta failure that waiting can fix
(network, 5xx, rate limits) is raised, so the sync runs again with backoff; one that it
cannot (a bad or expired token, a WABA the token cannot see) is recorded in the WABA's
``last_sync_error`` and the task finishes — retrying would only fail the same way until
someone replaces the token, and a PATCH with a new token enqueues a fresh sync.
"""

from __future__ import annotations

import logging
import uuid

from kloyst.api import MetaError, session_scope, task, tenancy
from kloyst_plugins.waba import access, sync
from kloyst_plugins.waba.models import SharedWaba, SyncStatus, Waba

log = logging.getLogger(__name__)

SYNC_PHONE_NUMBERS = "waba.sync_phone_numbers"
SYNC_SHARED_PHONE_NUMBERS = "waba.sync_shared_phone_numbers"


def _sync(ctx, model, row_id: uuid.UUID, apply, token, label: str, scope) -> dict | None:
    """Sync one ``model`` row (a vendor's WABA or the shared one): ask Meta first, then write in ``ctx.db``.

    The row is read and Meta called through a read-only scope, so the call holds no lock; ``ctx.db`` is
    touched only to write what Meta listed (or why it failed for good), which on the embedded default's
    SQLite is the moment the task takes the process's one write lock (:mod:`kloyst.db.sqlite`). A retryable
    Meta failure is raised (the outbox runs the sync again, with backoff).
    """
    cipher = ctx.registry["kloyst.cipher"]
    with session_scope(ctx.registry["kloyst.session_factory"], vendor_id=scope, read_only=True) as db:
        row = db.get(model, row_id)
        if row is None:
            log.info("%s %s is gone; nothing to sync", label, row_id)
            return None
        meta_waba_id, secret = row.meta_waba_id, token(cipher, row)
    try:
        listed = sync.listed_numbers(ctx.registry["kloyst.meta"], meta_waba_id, secret)
        failure = None
    except MetaError as exc:
        if exc.retryable:
            raise
        failure = exc
    row = ctx.db.get(model, row_id)
    if row is None:
        log.info("%s %s was deleted while Meta answered; nothing to sync", label, row_id)
        return None
    if failure is not None:
        row.last_sync_error = sync.describe_error(failure, secret)
        row.sync_status = SyncStatus.FAILED.value
        log.warning("%s %s: phone-number sync failed for good (%s); not retrying", label, row.id, failure.kind.value)
        return None
    result = apply(ctx.db, row, listed)
    log.info("%s %s synced: %d new, %d updated, %d deleted, %d skipped", label, row.id, len(result.created),
             len(result.updated), len(result.deleted), len(result.skipped))
    return result.as_json()


@task(SYNC_PHONE_NUMBERS)
def sync_phone_numbers(ctx, *, waba_id: uuid.UUID) -> dict | None:
    """Sync one of the task's vendor's WABAs; a WABA deleted since the task was queued is nothing to do."""
    return _sync(ctx, Waba, waba_id, sync.apply_waba, access.waba_token, "waba", ctx.vendor_id)


@task(SYNC_SHARED_PHONE_NUMBERS)
def sync_shared_phone_numbers(ctx, *, shared_waba_id: uuid.UUID) -> dict | None:
    """Sync the shared WABA (a platform task, enqueued by an admin: it runs platform-wide)."""
    return _sync(ctx, SharedWaba, shared_waba_id, sync.apply_shared_waba, access.shared_token, "shared waba",
                 tenancy.ALL_VENDORS)


TASKS = [sync_phone_numbers, sync_shared_phone_numbers]
