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

from kloyst.meta.errors import MetaError
from kloyst.queue import task
from kloyst_plugins.waba import access, sync
from kloyst_plugins.waba.models import SharedWaba, SyncStatus, Waba

log = logging.getLogger(__name__)

SYNC_PHONE_NUMBERS = "waba.sync_phone_numbers"
SYNC_SHARED_PHONE_NUMBERS = "waba.sync_shared_phone_numbers"


def _sync(ctx, row, run, token, label: str) -> dict | None:
    """Run ``run`` (a sync of :mod:`.sync`) on ``row``; record a permanent Meta failure, raise a retryable one."""
    cipher = ctx.registry["kloyst.cipher"]
    try:
        result = run(ctx.db, ctx.registry["kloyst.meta"], cipher, row)
    except MetaError as exc:
        if exc.retryable:
            raise  # the outbox runs the sync again, with backoff
        row.last_sync_error = sync.describe_error(exc, token(cipher, row))
        row.sync_status = SyncStatus.FAILED.value
        log.warning("%s %s: phone-number sync failed for good (%s); not retrying", label, row.id, exc.kind.value)
        return None
    log.info("%s %s synced: %d new, %d updated, %d deleted, %d skipped", label, row.id, len(result.created),
             len(result.updated), len(result.deleted), len(result.skipped))
    return result.as_json()


@task(SYNC_PHONE_NUMBERS)
def sync_phone_numbers(ctx, *, waba_id: uuid.UUID) -> dict | None:
    """Sync one of the task's vendor's WABAs; a WABA deleted since the task was queued is nothing to do."""
    waba = ctx.db.get(Waba, waba_id)
    if waba is None:
        log.info("waba %s is gone; nothing to sync", waba_id)
        return None
    return _sync(ctx, waba, sync.sync_waba, access.waba_token, "waba")


@task(SYNC_SHARED_PHONE_NUMBERS)
def sync_shared_phone_numbers(ctx, *, shared_waba_id: uuid.UUID) -> dict | None:
    """Sync the shared WABA (a platform task, enqueued by an admin: it runs platform-wide)."""
    shared = ctx.db.get(SharedWaba, shared_waba_id)
    if shared is None:
        log.info("shared waba %s is gone; nothing to sync", shared_waba_id)
        return None
    return _sync(ctx, shared, sync.sync_shared_waba, access.shared_token, "shared waba")


TASKS = [sync_phone_numbers, sync_shared_phone_numbers]
