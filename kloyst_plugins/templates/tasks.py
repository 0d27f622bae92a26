"""The template sync task: one WABA per task, so one WABA's failure never holds back another's.

``templates.sync(vendor_id, meta_waba_id)`` runs :func:`.services.sync_waba` in its own
transaction, which it touches only once Meta has answered (the WABA's credentials are read
through a read-only scope), so Meta's latency holds no lock. A refusal worth retrying (Meta
down, rate limited, the network) propagates and the outbox retries with backoff; any other
refusal is recorded on the WABA's :class:`~.models.TemplateSync` and the task ends, rather
than retrying what cannot succeed.
Either way the sync is no longer queued, so the next request for one queues a new task.
"""

from __future__ import annotations

import logging
import uuid

from kloyst.api import session_scope, task
from kloyst_plugins.templates import services

log = logging.getLogger(__name__)

SYNC = "templates.sync"


@task(SYNC)
def sync_templates(ctx, vendor_id: uuid.UUID, meta_waba_id: str) -> None:
    # Read through a read-only scope and call Meta before ctx.db is touched: on the embedded default's SQLite
    # the task's transaction holds the process's one write lock from its first statement (kloyst.db.sqlite).
    with session_scope(ctx.registry["kloyst.session_factory"], vendor_id=vendor_id, read_only=True) as db:
        access = services.waba_access(db, ctx.registry["kloyst.cipher"], meta_waba_id)
    if access is None:
        # Removed, or its shared numbers unassigned, since the sync was asked for.
        log.info("template sync of WABA %s skipped: vendor %s can no longer use it", meta_waba_id, vendor_id)
        services.forget_sync(ctx.db, meta_waba_id)
        return
    record = services.sync_waba(ctx.db, ctx.registry["kloyst.meta"], access)
    log.info("template sync of WABA %s for vendor %s: %s", meta_waba_id, vendor_id,
             record.last_error or f"{record.template_count} templates")
