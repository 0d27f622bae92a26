"""The reconciler: finds the work the queue lost, by evidence rather than by waiting, and puts it back.

huey does not acknowledge tasks (README, "How work gets done"): a WORKER killed mid-task takes its task
with it, and a flushed Redis forgets everything queued. The outbox row still says what is
left to do: an event ``leased`` in a relay batch (:mod:`kloyst.outbox.relay`). Such an event
is **lost** when nothing holds it any more:

* its batch is published, or its lease (``lease_seconds``) is over — a relay that died
  before publishing it, or before recording that it had;
* no worker is running it: not in this process (its :class:`~kloyst.outbox.delivery.Running`
  events are left alone) and, on PostgreSQL, not in any other: delivery marks the event
  delivered as the first statement of the handler's transaction (:mod:`kloyst.outbox.delivery`),
  so a running event's row is locked, and the return to pending takes rows
  ``FOR UPDATE SKIP LOCKED``;
* no copy of it waits in the queue: the queue's messages are read
  (:meth:`kloyst.queue.Queue.queued_deliveries`) and matched on (event, batch);

and it is still so on a second look at least ``CONFIRM_SECONDS`` later. It then goes back
to pending, due at once, and the relay publishes it in the same loop iteration. Every
relay runs a :class:`Reconciler` every ``reconcile_interval_seconds``, the confirming look
as soon as it is due; ``kloyst outbox reconcile`` runs both looks once. So, with the
defaults (a pass every 2 s, a 5 s lease): a task whose worker died is published again
within about 3 s of the death, and a batch whose relay died unpublished within about 8 s
of its claim. Nothing is republished while its copy waits in the queue, however long the
queue is, so a busy queue costs nothing extra.

The races, and why each is harmless. The guard in every case is the same: the return to
pending and delivery's mark both require the event to be leased **in that batch**, under
its row lock (on SQLite, under its one writer), so one of them wins and the other changes
nothing.

* *A worker has popped the message and not locked the row yet* (microseconds, or
  milliseconds behind a busy connection pool). On the first look the event is only a
  suspect; by the second it is locked (skipped) or delivered (no longer leased). A worker
  slower than the confirmation loses: the event goes back to pending first, the worker's
  mark matches nothing and its handler does not run, and the event is published again and
  runs once — one extra message, never a second run.
* *A message published after the queue was read.* The database is read before the queue,
  and a batch counts as published only once its ``published_at`` is written, which the
  relay does after its messages are in the queue; so every message of a published batch
  that is a candidate was queued before the queue was read. A batch whose lease ran out
  unrecorded may still be published by a live but slow relay (publishing takes
  milliseconds, a lease is seconds): its events are back in pending, and the late copies
  name the old batch, so they do nothing — extra messages, no second run.
* *``published_at`` is written lazily* (in the relay's next claim, or at once before it
  idles). Until then the batch is no candidate unless its lease is over, and then it is
  judged by the queue like any other: events still queued are left alone.
* *A handler that raised* (or asked to be rescheduled). Its transaction rolled back, and
  with it the lock, before a second transaction returns the event to pending with the
  failure counted (or the delay set). For those milliseconds the event looks lost; the
  confirmation keeps the reconciler from taking it then, which would lose the failure count
  or the delay (never an event, never a second run).
* *Two relays' reconcilers*: the row lock and the (event, batch) check let one return an
  event; an event already claimed again in a newer batch is not touched.
* *A queue that cannot be read* (Redis down): the pass stops and concludes nothing.

Cost: the database is read first (leased events of published or expired batches, through
the partial index of leased events) and the queue only when there are candidates, so an
idle system costs one small query per pass (0.3 ms). The queue holds about
``max_queue_depth`` messages (backpressure): a pass over a full queue of 2,000 takes about
8 ms, 0.4% of a relay's time at one pass every 2 s (``bench/outbox_relay.py`` prints both).
A pass is never repeated sooner than ten times the CPU time it took, so even an unbounded
queue (``max_queue_depth = 0``) costs a relay at most a tenth of its core.

On SQLite (the embedded default: one process) there is no ``SKIP LOCKED``, and no lock
held while a handler runs (its mark is the last statement, see :mod:`kloyst.outbox.delivery`):
the process's own running events are the evidence, and the return to pending is the same
statement without the lock clause. A ``kloyst outbox reconcile`` run from another process
cannot see that process's running events; if it returns one, the handler's mark then
matches nothing and its writes roll back, and the event runs again — one extra run, never
a second effect in the database.

Lost work is not the work's fault, so a return to pending is never counted as a failure:
counting it would dead-letter healthy events during an outage. The reconciler also prunes
relay batches that lease nothing any more, once a minute.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections import defaultdict
from collections.abc import Callable

from sqlalchemy import DateTime, bindparam, text

from kloyst.db import utcnow
from kloyst.outbox.connections import Transaction

log = logging.getLogger(__name__)

CONFIRM_SECONDS = 1.0  # between the two looks: far above a worker's pop-to-lock gap and a failure's two transactions
MAX_SHARE = 0.1  # a pass repeats no sooner than its CPU time / MAX_SHARE
PRUNE_SECONDS = 60.0
PRUNE_AFTER_SECONDS = 3600.0
CANDIDATE_LIMIT = 10_000

_NOW = bindparam("now", type_=DateTime(timezone=True))

# Leased events whose batch is published or whose lease is over, oldest first.
_CANDIDATES = text("""
SELECT e.id, e.batch_id, b.published_at IS NOT NULL AS published
  FROM outbox_event e JOIN outbox_batch b ON b.id = e.batch_id
 WHERE e.status = 'leased' AND (b.published_at IS NOT NULL OR b.leased_until < :now)
 ORDER BY e.id
 LIMIT :limit
""").bindparams(_NOW)

# The return to pending: only events still leased in that batch, and (PostgreSQL) not locked by a running handler.
_RETURN = """
UPDATE outbox_event
   SET status = 'pending', batch_id = NULL, leased_until = NULL, available_at = :now
 WHERE id IN (SELECT e.id FROM outbox_event e
               WHERE e.batch_id = :batch AND e.status = 'leased' AND e.id IN :ids
               {lock})
RETURNING id
"""

_PRUNE = text("""
DELETE FROM outbox_batch
 WHERE claimed_at < :old AND NOT EXISTS (
       SELECT 1 FROM outbox_event e WHERE e.status = 'leased' AND e.batch_id = outbox_batch.id)
""").bindparams(bindparam("old", type_=DateTime(timezone=True)))


def _return_statement(postgresql: bool):
    return text(_RETURN.format(lock="FOR UPDATE SKIP LOCKED" if postgresql else "")).bindparams(
        _NOW, bindparam("ids", expanding=True))


class Reconciler:
    """One relay's reconciler: it remembers its suspects between passes (see the module docstring)."""

    def __init__(self, registry, *, interval_seconds: float = 2.0, confirm_seconds: float = CONFIRM_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.registry = registry
        self.interval_seconds = interval_seconds
        self.confirm_seconds = confirm_seconds
        self._clock = clock
        self.suspects: dict[tuple[int, int], float] = {}  # (event, batch) → when first seen lost
        self._next_pass_at = float("-inf")  # at once: a relay that starts after a crash recovers first
        self._next_prune_at = float("-inf")

    def seconds_until_due(self) -> float:
        return max(0.0, self._next_pass_at - self._clock())

    def run(self) -> dict[str, int]:
        """One pass: look, return what was seen lost twice, and schedule the next pass.

        Returns counts for logs and the CLI: events returned from expired unpublished
        batches (``expired_leases``) and from published ones (``lost_deliveries``), and the
        events still under suspicion (``suspected``: seen lost once, or running in a handler).
        """
        cpu = time.thread_time()
        try:
            return self._pass(self._clock())
        finally:
            self._schedule(self._clock(), time.thread_time() - cpu)

    def _schedule(self, now: float, cost: float) -> None:
        next_at = now + self.interval_seconds
        waiting = [seen + self.confirm_seconds for seen in self.suspects.values() if seen + self.confirm_seconds > now]
        if waiting:
            next_at = min(next_at, min(waiting))
        # The cost is this thread's CPU time, not the wall clock: a process paused mid-pass (a stop signal, a
        # frozen container) or a slow database must not postpone the next pass by ten times the pause.
        self._next_pass_at = max(next_at, now + cost / MAX_SHARE)

    def _pass(self, now: float) -> dict[str, int]:
        wall = utcnow()
        with Transaction(self.registry) as conn:
            candidates = conn.execute(_CANDIDATES, {"now": wall, "limit": CANDIDATE_LIMIT}).all()
        lost: dict[tuple[int, int], bool] = {}
        if candidates:
            queued = self.registry["kloyst.queue"].queued_deliveries()
            lost = {(event_id, batch): bool(published) for event_id, batch, published in candidates
                    if (event_id, batch) not in queued}
        self.suspects = {key: self.suspects.get(key, now) for key in lost}
        running = self.registry["kloyst.outbox.running"]  # this process's handlers: suspects, never returned
        due = [key for key, seen in self.suspects.items()
               if now - seen >= self.confirm_seconds and key[0] not in running]
        counts = {"expired_leases": 0, "lost_deliveries": 0}
        if due:
            for key in self._return_to_pending(due, wall):
                del self.suspects[key]
                counts["lost_deliveries" if lost[key] else "expired_leases"] += 1
        if now >= self._next_prune_at:
            self._next_prune_at = now + PRUNE_SECONDS
            with Transaction(self.registry) as conn:
                conn.execute(_PRUNE, {"old": wall - dt.timedelta(seconds=PRUNE_AFTER_SECONDS)})
        if counts["expired_leases"] or counts["lost_deliveries"]:
            log.warning("reconciler: returned to pending %s events of dead relays' unpublished batches and %s "
                        "published events that no worker holds and the queue no longer has",
                        counts["expired_leases"], counts["lost_deliveries"])
        return {**counts, "suspected": len(self.suspects)}

    def _return_to_pending(self, due: list[tuple[int, int]], wall) -> list[tuple[int, int]]:
        by_batch: dict[int, list[int]] = defaultdict(list)
        for event_id, batch in due:
            by_batch[batch].append(event_id)
        returned = []
        with Transaction(self.registry) as conn:
            statement = _return_statement(conn.dialect.name == "postgresql")
            for batch, ids in by_batch.items():
                for event_id in conn.execute(statement, {"batch": batch, "ids": ids, "now": wall}).scalars():
                    returned.append((event_id, batch))
        return returned


def reconcile(registry, *, confirm_seconds: float = CONFIRM_SECONDS) -> dict[str, int]:
    """Both looks now (``kloyst outbox reconcile``): the second only if the first saw anything lost."""
    reconciler = Reconciler(registry, confirm_seconds=confirm_seconds)
    first = reconciler.run()
    if not first["suspected"]:
        return first
    time.sleep(confirm_seconds)
    second = reconciler.run()
    return {"expired_leases": first["expired_leases"] + second["expired_leases"],
            "lost_deliveries": first["lost_deliveries"] + second["lost_deliveries"],
            "suspected": second["suspected"]}
