"""The reconciler: puts back whatever the queue lost, using the outbox rows as the truth.

Runs inside every relay every ``reconcile_interval_seconds`` (and as ``kloyst outbox
reconcile``). Two kinds of lost work, both found through relay batches:

* **expired leases**: a relay claimed a batch and died before publishing it (the batch has
  no ``published_at`` and its lease is over) → its events go back to pending;
* **lost deliveries**: a batch was published but some of its events were never delivered —
  their worker was SIGKILLed mid-task (huey does not acknowledge) or Redis was flushed.
  Events a worker is delivering right now are locked and skipped (``SKIP LOCKED``). When
  the queue is empty, anything published more than ``redeliver_grace_seconds`` ago is
  lost; while the queue still holds tasks, only batches older than
  ``redeliver_after_seconds`` are, so a long backlog is not republished wholesale (and
  when a copy is republished while the first is still queued, delivery dedupes by batch).

Neither kind counts as a failure: lost work is not the work's fault, and counting it would
dead-letter healthy events during an outage.

It also prunes batches that no longer lease anything.
"""

from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy import DateTime, bindparam, text

from kloyst.db import utcnow

log = logging.getLogger(__name__)

_RETURN_TO_PENDING = """
UPDATE outbox_event o
   SET status = 'pending', batch_id = NULL, leased_until = NULL, available_at = :now
 WHERE o.id IN (SELECT e.id FROM outbox_event e
                 WHERE e.status = 'leased'
                   AND e.batch_id IN (SELECT b.id FROM outbox_batch b WHERE {batch_condition})
                 ORDER BY e.id LIMIT :limit {lock})
"""
_EXPIRED = "b.published_at IS NULL AND b.leased_until < :now"
_LOST = "b.published_at IS NOT NULL AND b.published_at < :cutoff"
_PRUNE = """
DELETE FROM outbox_batch
 WHERE claimed_at < :old AND NOT EXISTS (
       SELECT 1 FROM outbox_event e WHERE e.status = 'leased' AND e.batch_id = outbox_batch.id)
"""
_TIMES = (bindparam("now", type_=DateTime(timezone=True)), bindparam("cutoff", type_=DateTime(timezone=True)),
          bindparam("old", type_=DateTime(timezone=True)))


def _statement(sql: str, names: tuple[str, ...]):
    return text(sql).bindparams(*[b for b in _TIMES if b.key in names])


def reconcile(registry, settings, *, limit: int = 10_000) -> dict[str, int]:
    """Return events to pending that the queue lost; returns counts for logs and the CLI."""
    from kloyst.outbox.relay import _Transaction

    queue_depth = registry["kloyst.queue"].depth()
    older_than = settings.redeliver_grace_seconds if queue_depth == 0 else settings.redeliver_after_seconds
    now = utcnow()
    params = {"now": now, "cutoff": now - dt.timedelta(seconds=older_than), "limit": limit}
    with _Transaction(registry) as conn:
        lock = "FOR UPDATE OF e SKIP LOCKED" if conn.dialect.name == "postgresql" else ""
        leases = conn.execute(_statement(_RETURN_TO_PENDING.format(batch_condition=_EXPIRED, lock=lock),
                                         ("now",)), params).rowcount
        lost = conn.execute(_statement(_RETURN_TO_PENDING.format(batch_condition=_LOST, lock=lock),
                                       ("now", "cutoff")), params).rowcount
        conn.execute(_statement(_PRUNE, ("old",)), {"old": now - dt.timedelta(hours=1)})
    if leases or lost:
        log.warning("reconciler: %s events with expired leases and %s lost deliveries returned to pending",
                    leases, lost)
    return {"expired_leases": leases, "lost_deliveries": lost}
