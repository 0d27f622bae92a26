"""The outbox relay: claim pending events fairly with a lease, publish them to the queue, mark them published.

Why each piece is the way it is:

* **Lease, not a held transaction.** A claim is one short statement that sets
  ``status = leased`` and ``leased_until``; publishing happens after it commits. A relay
  that dies after claiming leaves leased rows that the reconciler returns to pending once
  the lease expires (``attempts`` counts every claim). So delivery is at least once, and
  consumers dedupe on the event id (:mod:`kloyst.outbox.delivery` does it for everyone).
* **Fair per vendor.** On PostgreSQL a claim takes at most ``per_vendor`` (50) events from
  each vendor and ``batch_size`` (500) in all. ``FOR UPDATE`` cannot sit on a window query,
  and ``row_number()`` over a million pending rows costs ~90 ms a batch, so instead a
  recursive skip-scan walks the *distinct vendors* with pending events through the partial
  index ``(vendor_id, id) WHERE status = 'pending'`` (one index probe per vendor), and a
  ``LATERAL`` subquery takes each vendor's oldest events ``FOR UPDATE SKIP LOCKED``. The
  walk starts after the last vendor served and wraps around, so vendors are served round
  robin: a vendor with ten events waits for at most one lap, never for another vendor's
  million.
* **Several relays at once** never publish an event twice: ``SKIP LOCKED`` and the status
  change make a claimed row invisible to the others. (After a crash an event can be
  published twice; delivery dedupes.)
* **Publishing in bulk.** Each batch goes to huey in one command when the storage is Redis.
* **Adaptive polling.** Full batches → claim again at once; otherwise back off, doubling up to
  ``idle_ceiling_seconds``.
* SQLite (the embedded default, one process) gets the same states with a plain claim.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from dataclasses import dataclass

from sqlalchemy import DateTime, Integer, Uuid, bindparam, select, text, update

from kloyst.db import session_scope, tenancy, utcnow
from kloyst.outbox.models import OutboxEvent, OutboxStatus

log = logging.getLogger(__name__)

MIN_UUID = uuid.UUID(int=0)


@dataclass(frozen=True)
class RelaySettings:
    batch_size: int = 500
    per_vendor: int = 50
    lease_seconds: int = 60
    max_attempts: int = 10
    idle_ceiling_seconds: float = 2.0
    reconcile_interval_seconds: float = 5.0
    redeliver_grace_seconds: int = 60
    redeliver_after_seconds: int = 900

    @classmethod
    def from_settings(cls, settings) -> "RelaySettings":
        return cls(
            batch_size=settings["kloyst.outbox.batch_size"],
            per_vendor=settings["kloyst.outbox.per_vendor"],
            lease_seconds=settings["kloyst.outbox.lease_seconds"],
            max_attempts=settings["kloyst.outbox.max_attempts"],
            idle_ceiling_seconds=settings["kloyst.outbox.idle_ceiling_seconds"],
            reconcile_interval_seconds=settings["kloyst.outbox.reconcile_interval_seconds"],
            redeliver_grace_seconds=settings["kloyst.outbox.redeliver_grace_seconds"],
            redeliver_after_seconds=settings["kloyst.outbox.redeliver_after_seconds"],
        )


@dataclass(frozen=True)
class Claimed:
    id: int
    vendor_id: uuid.UUID | None
    topic: str


# The fair claim. :after is the last vendor served by this relay; the walk starts after it.
_FAIR_CLAIM = text("""
WITH RECURSIVE vendors(vendor_id, depth) AS (
    (SELECT e.vendor_id, 1 FROM outbox_event e
      WHERE e.status = 'pending' AND e.vendor_id > :after
      ORDER BY e.vendor_id LIMIT 1)
  UNION ALL
    SELECT (SELECT e.vendor_id FROM outbox_event e
             WHERE e.status = 'pending' AND e.vendor_id > v.vendor_id
             ORDER BY e.vendor_id LIMIT 1), v.depth + 1
      FROM vendors v
     WHERE v.vendor_id IS NOT NULL AND v.depth < :max_vendors
),
picked AS (
    SELECT p.id
      FROM vendors v
     CROSS JOIN LATERAL (
           SELECT e.id FROM outbox_event e
            WHERE e.vendor_id = v.vendor_id AND e.status = 'pending' AND e.available_at <= clock_timestamp()
            ORDER BY e.id
            LIMIT :per_vendor
              FOR UPDATE SKIP LOCKED) p
     WHERE v.vendor_id IS NOT NULL
     LIMIT :limit
)
UPDATE outbox_event o
   SET status = 'leased', leased_until = clock_timestamp() + make_interval(secs => :lease), attempts = o.attempts + 1
  FROM picked
 WHERE o.id = picked.id
RETURNING o.id, o.vendor_id, o.topic
""").bindparams(bindparam("after", type_=Uuid), bindparam("lease", type_=Integer))

# Platform events (no vendor) get their own small share of every claim.
_PLATFORM_CLAIM = text("""
UPDATE outbox_event o
   SET status = 'leased', leased_until = clock_timestamp() + make_interval(secs => :lease), attempts = o.attempts + 1
 WHERE o.id IN (SELECT e.id FROM outbox_event e
                 WHERE e.vendor_id IS NULL AND e.status = 'pending' AND e.available_at <= clock_timestamp()
                 ORDER BY e.id LIMIT :limit FOR UPDATE SKIP LOCKED)
RETURNING o.id, o.vendor_id, o.topic
""").bindparams(bindparam("lease", type_=Integer))


_RELEASE = text("""
UPDATE outbox_event
   SET status = CASE WHEN attempts >= :max THEN 'dead' ELSE 'pending' END,
       leased_until = NULL, last_error = :error, available_at = :available_at
 WHERE id IN :ids AND status = 'leased'
""").bindparams(bindparam("ids", expanding=True), bindparam("available_at", type_=DateTime(timezone=True)))


class Relay:
    """One relay: call :meth:`run_once` in a loop (see :func:`kloyst.runner.relay_loop`)."""

    def __init__(self, registry, settings: RelaySettings | None = None) -> None:
        self.registry = registry
        self.settings = settings or RelaySettings.from_settings(registry.settings)
        self._cursor = MIN_UUID
        self._last_reconcile = 0.0

    @property
    def _factory(self):
        return self.registry["kloyst.session_factory"]

    # -- claiming ---------------------------------------------------------------------------

    def claim(self) -> list[Claimed]:
        with session_scope(self._factory, vendor_id=tenancy.ALL_VENDORS) as session:
            if session.bind.dialect.name == "postgresql":
                return self._claim_postgresql(session)
            return self._claim_simple(session)

    def _claim_postgresql(self, session) -> list[Claimed]:
        # Losing the last claims of a crashed database only means re-publishing: at-least-once anyway.
        session.execute(text("SET LOCAL synchronous_commit = off"))
        s = self.settings
        rows = [Claimed(*r) for r in session.execute(_PLATFORM_CLAIM, {"lease": s.lease_seconds,
                                                                       "limit": s.per_vendor})]
        budget = s.batch_size - len(rows)
        params = {"lease": s.lease_seconds, "per_vendor": s.per_vendor}
        # A lap from the cursor to the end of the vendor space, then from the start if room is left.
        for after in (self._cursor, MIN_UUID):
            if budget <= 0:
                break
            claimed = [Claimed(*r) for r in session.execute(_FAIR_CLAIM, {
                **params, "after": after, "limit": budget, "max_vendors": budget})]
            rows.extend(claimed)
            budget -= len(claimed)
            vendors = [c.vendor_id for c in claimed if c.vendor_id is not None]
            self._cursor = max(vendors) if vendors else MIN_UUID
            if after == MIN_UUID:
                break
        return rows

    def _claim_simple(self, session) -> list[Claimed]:
        now = utcnow()
        s = self.settings
        candidates = session.execute(
            select(OutboxEvent.id, OutboxEvent.vendor_id, OutboxEvent.topic)
            .where(OutboxEvent.status == OutboxStatus.PENDING, OutboxEvent.available_at <= now)
            .order_by(OutboxEvent.id).limit(s.batch_size * 4)).all()
        per_vendor: dict = {}
        rows: list[Claimed] = []
        for event_id, vendor_id, topic in candidates:
            if per_vendor.get(vendor_id, 0) >= s.per_vendor or len(rows) >= s.batch_size:
                continue
            per_vendor[vendor_id] = per_vendor.get(vendor_id, 0) + 1
            rows.append(Claimed(event_id, vendor_id, topic))
        if rows:
            session.execute(
                update(OutboxEvent).where(OutboxEvent.id.in_([r.id for r in rows]),
                                          OutboxEvent.status == OutboxStatus.PENDING)
                .values(status=OutboxStatus.LEASED, leased_until=now + dt.timedelta(seconds=s.lease_seconds),
                        attempts=OutboxEvent.attempts + 1))
        return rows

    # -- publishing -------------------------------------------------------------------------

    def publish(self, rows: list[Claimed]) -> int:
        """Hand claimed events to the queue, then mark them published; failures go back to pending."""
        if not rows:
            return 0
        queue = self.registry["kloyst.queue"]
        try:
            queue.publish_deliveries([(r.id, r.vendor_id, r.topic) for r in rows])
        except Exception as exc:  # the queue is unreachable: nothing is lost, the rows retry later
            log.warning("publishing %s outbox events failed: %s", len(rows), exc)
            self.release([r.id for r in rows], f"publish failed: {type(exc).__name__}: {exc}")
            return 0
        with session_scope(self._factory, vendor_id=tenancy.ALL_VENDORS) as session:
            if session.bind.dialect.name == "postgresql":
                session.execute(text("SET LOCAL synchronous_commit = off"))
            # Only rows still leased: a fast worker may already have delivered some of them.
            session.execute(
                update(OutboxEvent)
                .where(OutboxEvent.id.in_(bindparam("ids", expanding=True)),
                       OutboxEvent.status == OutboxStatus.LEASED)
                .values(status=OutboxStatus.PUBLISHED, published_at=utcnow(), leased_until=None),
                {"ids": [r.id for r in rows]})
        return len(rows)

    def release(self, ids: list[int], error: str) -> None:
        """Return claimed events to pending with a backoff (or to dead after max attempts)."""
        from kloyst.outbox.delivery import backoff_seconds

        with session_scope(self._factory, vendor_id=tenancy.ALL_VENDORS) as session:
            session.execute(_RELEASE, {"ids": ids, "max": self.settings.max_attempts, "error": error[:2000],
                                       "available_at": utcnow() + dt.timedelta(seconds=backoff_seconds(1))})

    def run_once(self) -> int:
        """Claim one batch and publish it; reconcile when due. Returns the number published."""
        now = time.monotonic()
        if now - self._last_reconcile >= self.settings.reconcile_interval_seconds:
            self._last_reconcile = now
            from kloyst.outbox.reconcile import reconcile

            reconcile(self.registry, self.settings)
        return self.publish(self.claim())

    def publish_ids(self, ids: list[int]) -> int:
        """The after-commit fast path: lease exactly these pending events and publish them now.

        The relay remains the safety net: if this process dies here, the rows are still pending
        (or leased with a lease that expires).
        """
        if not ids:
            return 0
        now = utcnow()
        with session_scope(self._factory, vendor_id=tenancy.ALL_VENDORS) as session:
            rows = [Claimed(r.id, _as_uuid(r.vendor_id), r.topic) for r in session.execute(
                update(OutboxEvent)
                .where(OutboxEvent.id.in_(ids), OutboxEvent.status == OutboxStatus.PENDING,
                       OutboxEvent.available_at <= now)
                .values(status=OutboxStatus.LEASED,
                        leased_until=now + dt.timedelta(seconds=self.settings.lease_seconds),
                        attempts=OutboxEvent.attempts + 1)
                .returning(OutboxEvent.id, OutboxEvent.vendor_id, OutboxEvent.topic))]
        return self.publish(rows)


def _as_uuid(value) -> uuid.UUID | None:
    if value is None or isinstance(value, uuid.UUID):
        return value
    return uuid.UUID(str(value))


def relay_once(registry) -> int:
    """Claim and publish one batch with a relay built on the spot (tests, CLI)."""
    return Relay(registry).run_once()
