"""The outbox relay: claim pending events fairly under a lease, publish them to the queue, record it.

Why each piece is the way it is:

* **Lease, held by a batch.** A claim is one short transaction: it inserts an
  :class:`~kloyst.outbox.models.OutboxBatch` (its ``leased_until``) and moves the chosen
  events to ``leased`` in that batch (``attempts`` counts every claim). Publishing happens
  after it commits, and is recorded as the batch's ``published_at`` — one write for the
  whole batch. The lease is short (``lease_seconds``, 5 s) because a relay publishes
  within milliseconds of claiming: a relay that dies before publishing leaves a batch whose
  lease is soon over, and the reconciler (:mod:`kloyst.outbox.reconcile`, run by every
  relay) returns its events to pending within seconds, as it does for events a worker or
  Redis lost. So delivery is at least once, and delivery dedupes on the event id and batch
  (:mod:`kloyst.outbox.delivery`).
* **Fair per vendor.** On PostgreSQL a claim takes at most ``per_vendor`` (50) events from
  each vendor and ``batch_size`` (500) in all. ``FOR UPDATE`` cannot sit on a window query,
  and ``row_number()`` over a million pending rows costs ~90 ms a batch, so instead the
  vendors with pending events are found by a recursive skip-scan of the partial index
  ``(vendor_id, id) WHERE status = 'pending'`` (one probe per vendor, refreshed every
  ``DISCOVERY_SECONDS``), and a ``LATERAL`` subquery takes each vendor's oldest events
  ``FOR UPDATE SKIP LOCKED``. Vendors are taken in order starting after the last one
  served, wrapping around, so they are served round robin: a vendor with ten events waits
  for at most one lap, never for another vendor's million.
* **Floors.** A drained index keeps entries for claimed events until vacuum removes them,
  and a scan from a big vendor's oldest id would step over all of them (measured: 4 ms of
  a claim after 600,000 events, growing). So each vendor's scan starts above the highest id
  this relay already claimed from it. Events can turn pending below a floor (a transaction
  that committed late, a retry), so floors are forgotten every ``FLOOR_RESET_SECONDS``.
* **Work-conserving.** Room a claim has left after every waiting vendor got its share goes
  to the vendors that filled theirs (a second pass in the same transaction): a vendor alone
  with a million events drains at full batch size, and the moment another vendor has
  events, that vendor gets its share in the very next claim.
* **Several relays at once** never publish an event twice: ``SKIP LOCKED`` and the status
  change make a claimed row invisible to the others. (After a crash an event can be
  published twice; delivery dedupes.)
* **Cheap publishing.** Each batch goes to Redis in one command, its messages built
  directly (no per-event huey Task objects), and its ``published_at`` is written in the
  next claim's transaction (at once when the relay is about to idle). The relay uses plain
  connections: it is SQL through and through, and the ORM's unit of work would only add
  cost on Kloyst's hottest loop.
* **Adaptive polling** (:meth:`Relay.run`): full batches → claim again at once; otherwise
  back off, doubling up to ``idle_ceiling_seconds``, but never past the reconciler's next
  pass, so lost work waits for no idle pause.
* **Backpressure.** The queue is one line: whatever is in it is served first come, first
  served. So the relay stops claiming while the queue holds ``max_queue_depth`` tasks, and
  events wait in the database, where claims are fair. A small vendor's events join the line
  at the next claim, behind at most ``max_queue_depth`` others.
* **Outages.** A batch the queue refuses goes back to pending without counting against its
  events, and the relay backs off (doubling to 30 s) until the queue takes work again.
* SQLite (the embedded default, one process) gets the same states with a plain claim.
"""

from __future__ import annotations

import datetime as dt
import logging
import queue as queue_module
import threading
import time
import uuid
from dataclasses import dataclass

from sqlalchemy import DateTime, Integer, bindparam, insert, select, text, update

from kloyst import metrics
from kloyst.db import utcnow
from kloyst.outbox.connections import Transaction
from kloyst.outbox.delivery import backoff_seconds
from kloyst.outbox.models import OutboxBatch, OutboxEvent, OutboxStatus
from kloyst.outbox.reconcile import Reconciler

log = logging.getLogger(__name__)

MIN_VENDOR = str(uuid.UUID(int=0))
DISCOVERY_SECONDS = 0.5  # how often the list of vendors with pending events is refreshed
FLOOR_RESET_SECONDS = 1.0  # how often per-vendor floors are forgotten (bounds the wait of late events)
MAX_VENDORS = 100_000


@dataclass(frozen=True)
class RelaySettings:
    batch_size: int = 500
    per_vendor: int = 50
    lease_seconds: int = 5
    max_attempts: int = 10
    idle_ceiling_seconds: float = 2.0
    reconcile_interval_seconds: float = 2.0
    max_queue_depth: int = 2000

    @classmethod
    def from_settings(cls, settings) -> RelaySettings:
        return cls(
            batch_size=settings["kloyst.outbox.batch_size"],
            per_vendor=settings["kloyst.outbox.per_vendor"],
            lease_seconds=settings["kloyst.outbox.lease_seconds"],
            max_attempts=settings["kloyst.outbox.max_attempts"],
            idle_ceiling_seconds=settings["kloyst.outbox.idle_ceiling_seconds"],
            reconcile_interval_seconds=settings["kloyst.outbox.reconcile_interval_seconds"],
            max_queue_depth=settings["kloyst.outbox.max_queue_depth"],
        )


@dataclass(frozen=True)
class Claimed:
    id: int
    vendor_id: str | None  # canonical text: sorts like the uuid, and is what the queue message carries
    topic: str


def _claim(sql: str):
    return text(sql).bindparams(bindparam("leased_until", type_=DateTime(timezone=True)),
                                bindparam("batch", type_=Integer))


_LEASE = "status = 'leased', batch_id = :batch, leased_until = :leased_until, attempts = o.attempts + 1"
_RETURNING = "RETURNING o.id, o.vendor_id::text, o.topic"

# Which vendors have pending events: a recursive skip-scan, one index probe per vendor.
_DISCOVER_VENDORS = text("""
WITH RECURSIVE vendors(vendor_id, depth) AS (
    (SELECT e.vendor_id, 1 FROM outbox_event e
      WHERE e.status = 'pending' AND e.vendor_id IS NOT NULL
      ORDER BY e.vendor_id LIMIT 1)
  UNION ALL
    SELECT (SELECT e.vendor_id FROM outbox_event e
             WHERE e.status = 'pending' AND e.vendor_id > v.vendor_id
             ORDER BY e.vendor_id LIMIT 1), v.depth + 1
      FROM vendors v
     WHERE v.vendor_id IS NOT NULL AND v.depth < :max_vendors
)
SELECT vendor_id::text FROM vendors WHERE vendor_id IS NOT NULL
""")

# The fair claim: up to :per_vendor of each vendor's oldest events, vendors in the order given
# (round robin from the last one served). Each vendor's scan starts above its floor, the
# highest id this relay has already claimed from it, so it does not wade through the index
# entries of events claimed earlier (floors are reset every second: see Relay). The
# work-conserving second pass runs the same statement over the vendors that filled their
# share, with the leftover room split among them.
_VENDOR_CLAIM = _claim(f"""
WITH picked AS (
    SELECT p.id
      FROM unnest(CAST(:vendors AS uuid[]), CAST(:floors AS bigint[])) AS v(vendor_id, floor)
     CROSS JOIN LATERAL (
           SELECT e.id FROM outbox_event e
            WHERE e.vendor_id = v.vendor_id AND e.id > v.floor
              AND e.status = 'pending' AND e.available_at <= clock_timestamp()
            ORDER BY e.id
            LIMIT :per_vendor
              FOR UPDATE SKIP LOCKED) p
     LIMIT :limit
)
UPDATE outbox_event o SET {_LEASE} FROM picked WHERE o.id = picked.id {_RETURNING}
""")

# Platform events (no vendor) get their own share of every claim.
_PLATFORM_CLAIM = _claim(f"""
UPDATE outbox_event o SET {_LEASE}
 WHERE o.id IN (SELECT e.id FROM outbox_event e
                 WHERE e.vendor_id IS NULL AND e.status = 'pending' AND e.available_at <= clock_timestamp()
                 ORDER BY e.id LIMIT :limit FOR UPDATE SKIP LOCKED)
{_RETURNING}
""")

# A batch the queue refused goes back to pending. Not a failure of its events: an outage
# must never dead-letter healthy work (the relay backs off instead, see Relay.run).
_RELEASE = text("""
UPDATE outbox_event
   SET status = 'pending', batch_id = NULL, leased_until = NULL, last_error = :error, available_at = :available_at
 WHERE batch_id = :batch AND status = 'leased'
""").bindparams(bindparam("available_at", type_=DateTime(timezone=True)))



class Relay:
    """One relay: call :meth:`run_once` in a loop (see :func:`kloyst.runner.relay_loop`)."""

    def __init__(self, registry, settings: RelaySettings | None = None) -> None:
        self.registry = registry
        self.settings = settings or RelaySettings.from_settings(registry.settings)
        self._cursor = MIN_VENDOR
        self._vendors: list[str] = []  # vendors with pending events, as last discovered
        self._discovered_at = -1e9
        self._floors: dict[str, int] = {}
        self._floors_reset_at = time.monotonic()
        self.reconciler = Reconciler(registry, interval_seconds=self.settings.reconcile_interval_seconds)
        self._published: list[int] = []  # batches in the queue whose published_at is not yet written
        self._published_lock = threading.Lock()
        self.claim_seconds: list[float] = []  # recent claim durations (benchmarks, metrics)

    def _transaction(self):
        return Transaction(self.registry)

    # -- claiming ---------------------------------------------------------------------------

    def claim(self) -> tuple[int | None, list[Claimed]]:
        """Lease the next fair batch; returns ``(batch_id, events)``.

        The previous batch's ``published_at`` is written in the same transaction.
        """
        started = time.perf_counter()
        try:
            return self._claim()
        finally:
            self.claim_seconds.append(time.perf_counter() - started)
            del self.claim_seconds[:-10_000]

    def _claim(self) -> tuple[int | None, list[Claimed]]:
        with self._transaction() as conn:
            postgresql = conn.dialect.name == "postgresql"
            if postgresql:
                # Losing the last claims of a crashed database only means re-publishing: at-least-once anyway.
                conn.execute(text("SET LOCAL synchronous_commit = off"))
            self._mark_published(conn)
            now = utcnow()
            leased_until = now + dt.timedelta(seconds=self.settings.lease_seconds)
            batch = conn.execute(insert(OutboxBatch).values(claimed_at=now, leased_until=leased_until)
                                 .returning(OutboxBatch.id)).scalar_one()
            lease = {"batch": batch, "leased_until": leased_until}
            rows = self._claim_postgresql(conn, lease) if postgresql else self._claim_simple(conn, lease)
            if not rows:
                conn.execute(OutboxBatch.__table__.delete().where(OutboxBatch.id == batch))
                return None, []
            return batch, rows

    def _claim_postgresql(self, conn, lease: dict) -> list[Claimed]:
        s = self.settings
        now = time.monotonic()
        if now - self._floors_reset_at >= FLOOR_RESET_SECONDS:
            # Events can turn pending below a floor (a transaction that committed late, a retry):
            # forgetting the floors regularly bounds how long they can wait.
            self._floors.clear()
            self._floors_reset_at = now
        if now - self._discovered_at >= DISCOVERY_SECONDS or not self._vendors:
            self._vendors = list(conn.execute(_DISCOVER_VENDORS, {"max_vendors": MAX_VENDORS}).scalars())
            self._discovered_at = now
        rows = [Claimed(*r) for r in conn.execute(_PLATFORM_CLAIM, {**lease, "limit": s.per_vendor})]
        budget = s.batch_size - len(rows)
        # Round robin: the vendors after the last one served, then those before it.
        order = [v for v in self._vendors if v > self._cursor] + [v for v in self._vendors if v <= self._cursor]
        if order and budget > 0:
            claimed = [Claimed(*r) for r in conn.execute(_VENDOR_CLAIM, {
                **lease, "vendors": order, "floors": [self._floors.get(v, 0) for v in order],
                "per_vendor": s.per_vendor, "limit": budget})]
            rows.extend(claimed)
            budget -= len(claimed)
            served = {c.vendor_id for c in claimed}
            if budget <= 0 and served:
                # The batch filled up part-way through the order: the next claim starts after the last vendor served.
                self._cursor = next(v for v in reversed(order) if v in served)
        if budget > 0:
            counts: dict[str | None, int] = {}
            for r in rows:
                counts[r.vendor_id] = counts.get(r.vendor_id, 0) + 1
            full = [v for v, n in counts.items() if v is not None and n >= s.per_vendor]
            if full:
                rows.extend(Claimed(*r) for r in conn.execute(_VENDOR_CLAIM, {
                    **lease, "vendors": full, "floors": [self._floors.get(v, 0) for v in full],
                    "per_vendor": -(-budget // len(full)), "limit": budget}))
        for r in rows:
            if r.vendor_id is not None and r.id > self._floors.get(r.vendor_id, 0):
                self._floors[r.vendor_id] = r.id
        return rows

    def _claim_simple(self, conn, lease: dict) -> list[Claimed]:
        s = self.settings
        candidates = conn.execute(
            select(OutboxEvent.id, OutboxEvent.vendor_id, OutboxEvent.topic)
            .where(OutboxEvent.status == OutboxStatus.PENDING, OutboxEvent.available_at <= utcnow())
            .order_by(OutboxEvent.id).limit(s.batch_size * 4)).all()
        per_vendor: dict = {}
        chosen: dict[int, Claimed] = {}
        for event_id, vendor_id, topic in candidates:
            if len(chosen) < s.batch_size and per_vendor.get(vendor_id, 0) < s.per_vendor:
                per_vendor[vendor_id] = per_vendor.get(vendor_id, 0) + 1
                chosen[event_id] = Claimed(event_id, str(vendor_id) if vendor_id else None, topic)
        for event_id, vendor_id, topic in candidates:  # work-conserving, as on PostgreSQL
            if len(chosen) >= s.batch_size:
                break
            chosen.setdefault(event_id, Claimed(event_id, str(vendor_id) if vendor_id else None, topic))
        if chosen:
            conn.execute(
                update(OutboxEvent).where(OutboxEvent.id.in_(list(chosen)), OutboxEvent.status == OutboxStatus.PENDING)
                .values(status=OutboxStatus.LEASED, batch_id=lease["batch"], leased_until=lease["leased_until"],
                        attempts=OutboxEvent.attempts + 1))
        return list(chosen.values())

    # -- publishing -------------------------------------------------------------------------

    def _mark_published(self, conn) -> None:
        with self._published_lock:
            batches, self._published = self._published, []
        if not batches:
            return
        try:
            conn.execute(update(OutboxBatch).where(OutboxBatch.id.in_(batches)).values(published_at=utcnow()))
        except BaseException:
            with self._published_lock:  # not recorded: keep them for the next transaction
                self._published[:0] = batches
            raise

    def flush(self) -> None:
        """Write ``published_at`` of the batches published so far (before idling or stopping)."""
        if self._published:
            with self._transaction() as conn:
                self._mark_published(conn)

    def publish(self, batch: int | None, rows: list[Claimed], *, mark_now: bool = True) -> int:
        """Hand a claimed batch to the queue; if the queue is down, the batch goes back to pending."""
        if not rows or batch is None:  # a claim with rows always has its batch
            return 0
        try:
            self.registry["kloyst.queue"].publish_deliveries([(r.id, r.vendor_id, r.topic) for r in rows], batch)
        except Exception as exc:  # nothing is lost: the events retry after a backoff
            log.warning("publishing %s outbox events failed: %s", len(rows), exc)
            self.release(batch, f"publish failed: {type(exc).__name__}: {exc}")
            return 0
        with self._published_lock:
            self._published.append(batch)
        metrics.of(self.registry).outbox_published.inc(len(rows))
        if mark_now:
            self.flush()
        return len(rows)

    def release(self, batch: int, error: str) -> None:
        """Return a batch's events to pending, due again after a short pause."""
        with self._transaction() as conn:
            conn.execute(_RELEASE, {"batch": batch, "error": error[:2000],
                                    "available_at": utcnow() + dt.timedelta(seconds=backoff_seconds(1))})

    def reconcile_if_due(self) -> None:
        if self.reconciler.seconds_until_due() > 0:
            return
        try:
            self.reconciler.run()
        except Exception:  # the relay keeps relaying; the next pass tries again
            log.exception("outbox reconciliation failed")

    def run_once(self) -> int:
        """Reconcile when due, claim one batch and publish it. Returns the number published.

        A full batch is marked published in the next claim's transaction; a short one (the
        relay is about to idle) is marked at once.
        """
        self.reconcile_if_due()
        batch, rows = self.claim()
        return self.publish(batch, rows, mark_now=len(rows) < self.settings.batch_size)

    def run(self, stop: threading.Event, *, until_idle: bool = False, on_published=None) -> int:
        """The relay loop of ``SERVICE_TYPE=OUTBOX`` (and ``ALL``); returns how many events it published.

        Claims run on this thread while a publisher thread serializes and sends the previous
        batch, so the database and Python work side by side on two cores. Polling adapts:
        a full batch → claim again at once; a short one → wait for the publisher, record,
        then pause 50 ms, doubling while idle up to ``idle_ceiling_seconds``. ``until_idle``
        returns at the first empty claim (benchmarks, ``kloyst outbox drain``).
        """
        publisher = _Publisher(self, on_published)
        queue = self.registry["kloyst.queue"]
        published = 0
        pause = 0.05
        outage_pause = 0.0
        failed_seen = 0
        try:
            while not stop.is_set():
                self.reconcile_if_due()
                if publisher.failed_batches > failed_seen:
                    # The queue refused a batch: back off (doubling to 30 s) instead of cycling leases.
                    failed_seen = publisher.failed_batches
                    outage_pause = min(30.0, outage_pause * 2 or 0.5)
                    stop.wait(outage_pause)
                    continue
                if self.settings.max_queue_depth and queue.depth() >= self.settings.max_queue_depth:
                    # Backpressure: events wait in the database, where claims are fair, not in the
                    # queue's single line, so a small vendor is never stuck behind a big one there.
                    publisher.wait()
                    self.flush()
                    stop.wait(0.02)
                    continue
                batch, rows = self.claim()
                if rows and batch is not None:  # a claim with rows always has its batch
                    publisher.submit(batch, rows)
                    published += len(rows)
                if len(rows) >= self.settings.batch_size:
                    pause = 0.05
                    if publisher.failed_batches == failed_seen:
                        outage_pause = 0.0
                    continue
                publisher.wait()
                self.flush()
                if not rows and until_idle:
                    break
                pause = 0.05 if rows else min(self.settings.idle_ceiling_seconds, pause * 2)
                stop.wait(min(pause, self.reconciler.seconds_until_due()))
        finally:
            publisher.close()
            self.flush()
        return published - publisher.failed

    def publish_ids(self, ids: list[int]) -> int:
        """The after-commit fast path: lease exactly these pending events and publish them now.

        The relay remains the safety net: if this process dies here, the events are still
        pending, or leased in a batch whose lease expires.
        """
        if not ids:
            return 0
        now = utcnow()
        leased_until = now + dt.timedelta(seconds=self.settings.lease_seconds)
        with self._transaction() as conn:
            batch = conn.execute(insert(OutboxBatch).values(claimed_at=now, leased_until=leased_until)
                                 .returning(OutboxBatch.id)).scalar_one()
            rows = [Claimed(r.id, str(r.vendor_id) if r.vendor_id else None, r.topic) for r in conn.execute(
                update(OutboxEvent)
                .where(OutboxEvent.id.in_(ids), OutboxEvent.status == OutboxStatus.PENDING,
                       OutboxEvent.available_at <= now)
                .values(status=OutboxStatus.LEASED, batch_id=batch, leased_until=leased_until,
                        attempts=OutboxEvent.attempts + 1)
                .returning(OutboxEvent.id, OutboxEvent.vendor_id, OutboxEvent.topic))]
        return self.publish(batch, rows)


class _Publisher:
    """Sends claimed batches to the queue on its own thread, one batch behind the claims."""

    def __init__(self, relay: Relay, on_published=None) -> None:
        self.relay = relay
        self.on_published = on_published
        self.failed = 0
        self.failed_batches = 0
        self._queue: queue_module.Queue = queue_module.Queue(maxsize=1)
        self._thread = threading.Thread(target=self._work, name="outbox-publisher", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                batch, rows = item
                sent = self.relay.publish(batch, rows, mark_now=False)
                if sent and self.on_published is not None:
                    self.on_published(rows)
                if sent < len(rows):
                    self.failed += len(rows) - sent
                    self.failed_batches += 1
            except Exception:  # never let the publisher die silently: the batch's lease will expire
                log.exception("outbox publisher failed")
            finally:
                self._queue.task_done()

    def submit(self, batch: int, rows: list[Claimed]) -> None:
        self._queue.put((batch, rows))

    def wait(self) -> None:
        self._queue.join()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)


def relay_once(registry) -> int:
    """Claim and publish one batch with a relay built on the spot (tests, CLI)."""
    return Relay(registry).run_once()
