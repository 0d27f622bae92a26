"""The reconciler: puts back whatever the queue lost, using the outbox rows as the truth.

Runs inside every relay every ``reconcile_interval_seconds`` (and from ``kloyst outbox
reconcile``). Two kinds of lost work:

* **expired leases**: a relay claimed events and died before publishing them → pending
  again (``dead`` once ``attempts`` reaches the maximum);
* **lost deliveries**: published events never delivered — their worker was SIGKILLed
  mid-task (huey does not acknowledge), or Redis was flushed. Rows a worker is delivering
  right now are locked and skipped (``SKIP LOCKED``). When the queue is empty, anything
  published more than ``redeliver_grace_seconds`` ago is lost; while the queue still holds
  tasks, only events older than ``redeliver_after_seconds`` are, so a long backlog is not
  republished wholesale.
"""

from __future__ import annotations

import logging

from sqlalchemy import DateTime, bindparam, text

from kloyst.db import session_scope, tenancy

log = logging.getLogger(__name__)

_EXPIRED_LEASES_PG = text("""
UPDATE outbox_event o
   SET status = CASE WHEN o.attempts >= :max THEN 'dead' ELSE 'pending' END,
       leased_until = NULL,
       last_error = COALESCE(o.last_error, 'relay lease expired before publishing')
 WHERE o.id IN (SELECT id FROM outbox_event
                 WHERE status = 'leased' AND leased_until < clock_timestamp()
                 ORDER BY id LIMIT :limit FOR UPDATE SKIP LOCKED)
""")

_LOST_DELIVERIES_PG = text("""
UPDATE outbox_event o
   SET status = CASE WHEN o.attempts >= :max THEN 'dead' ELSE 'pending' END,
       published_at = NULL, available_at = clock_timestamp(),
       last_error = CASE WHEN o.attempts >= :max THEN 'delivery lost too many times' ELSE o.last_error END
 WHERE o.id IN (SELECT id FROM outbox_event
                 WHERE status = 'published' AND published_at < clock_timestamp() - make_interval(secs => :older_than)
                 ORDER BY id LIMIT :limit FOR UPDATE SKIP LOCKED)
""")

_EXPIRED_LEASES_SQLITE = text("""
UPDATE outbox_event
   SET status = CASE WHEN attempts >= :max THEN 'dead' ELSE 'pending' END, leased_until = NULL,
       last_error = COALESCE(last_error, 'relay lease expired before publishing')
 WHERE status = 'leased' AND leased_until < :now
""").bindparams(bindparam("now", type_=DateTime(timezone=True)))

_LOST_DELIVERIES_SQLITE = text("""
UPDATE outbox_event
   SET status = CASE WHEN attempts >= :max THEN 'dead' ELSE 'pending' END, published_at = NULL, available_at = :now
 WHERE status = 'published' AND published_at < :cutoff
""").bindparams(bindparam("now", type_=DateTime(timezone=True)), bindparam("cutoff", type_=DateTime(timezone=True)))


def reconcile(registry, settings, *, limit: int = 10_000) -> dict[str, int]:
    """Return events to pending that the queue lost; returns counts for logs and the CLI."""
    import datetime as dt

    from kloyst.db import utcnow

    queue_depth = registry["kloyst.queue"].depth()
    older_than = settings.redeliver_grace_seconds if queue_depth == 0 else settings.redeliver_after_seconds
    with session_scope(registry["kloyst.session_factory"], vendor_id=tenancy.ALL_VENDORS) as session:
        if session.bind.dialect.name == "postgresql":
            leases = session.execute(_EXPIRED_LEASES_PG, {"max": settings.max_attempts, "limit": limit}).rowcount
            lost = session.execute(_LOST_DELIVERIES_PG, {"max": settings.max_attempts, "limit": limit,
                                                         "older_than": older_than}).rowcount
        else:
            now = utcnow()
            leases = session.execute(_EXPIRED_LEASES_SQLITE, {"max": settings.max_attempts, "now": now}).rowcount
            lost = session.execute(_LOST_DELIVERIES_SQLITE, {
                "max": settings.max_attempts, "now": now, "cutoff": now - dt.timedelta(seconds=older_than)}).rowcount
    if leases or lost:
        log.warning("reconciler: %s expired leases and %s lost deliveries returned to pending", leases, lost)
    return {"expired_leases": leases, "lost_deliveries": lost}
