"""Gauges read at scrape time: the outbox backlog, the queue, the webhook backlog; the base plugins build on.

These describe state every process shares, so only processes that export shared
collectors compute them (``Metrics.export_shared``: OUTBOX and ALL). Each read must stay
cheap on tables of millions of rows, so every query here is answered from a partial index,
and :class:`DatabaseCollector` adds the guards a scrape needs:

* a read-only transaction that always rolls back, with ``statement_timeout`` and
  ``lock_timeout`` set locally (PostgreSQL): a slow count or a migration holding a lock
  costs a missing sample, never a hung scrape;
* a failure is logged and exports nothing (the other metrics are still served);
* the answer is cached for ``min_interval`` seconds, so extra scrapers (a second
  Prometheus, someone with curl) do not multiply the queries.

A plugin's collector (returned from ``kloyst_metrics``) subclasses :class:`DatabaseCollector`
and implements ``families()`` (the empty metric families: names, help, labels) and
``measure(conn)`` (the same families with samples).
"""

from __future__ import annotations

import abc
import datetime as dt
import logging
import threading
import time

from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import func, select, text

from kloyst.db import utcnow
from kloyst.outbox.connections import Transaction
from kloyst.metrics.tls import TlsCertificates
from kloyst.outbox.models import OutboxEvent, OutboxStatus
from kloyst.version import __version__

log = logging.getLogger(__name__)

STATEMENT_TIMEOUT_MS = 2000


class DatabaseCollector(abc.ABC):
    """A prometheus_client collector whose samples come from the database, guarded and cached.

    A subclass says what it exports (:meth:`families`) and how to read it (:meth:`measure`);
    this class runs the read in a rolled-back transaction with a statement timeout, caches the
    answer for ``min_interval`` seconds and turns a failed read into a logged, empty answer.
    """

    min_interval = 10.0  # seconds an answer is reused
    name = "database"  # for the log line when a read fails

    def __init__(self, registry) -> None:
        self.registry = registry
        self._lock = threading.Lock()
        self._cached: list | None = None
        self._read_at = float("-inf")

    @abc.abstractmethod
    def families(self) -> list:
        """The exported metric families, without samples and without reading anything (``describe()``)."""

    @abc.abstractmethod
    def measure(self, conn) -> list:
        """The families with their samples, read on ``conn`` (a transaction that is always rolled back)."""

    def describe(self) -> list:
        return self.families()

    def expire(self) -> None:
        with self._lock:
            self._read_at = float("-inf")

    def collect(self) -> list:
        with self._lock:  # concurrent scrapes wait for one read instead of each running it
            if time.monotonic() - self._read_at >= self.min_interval:
                self._cached = self._read()
                self._read_at = time.monotonic()
            return list(self._cached or ())

    def _read(self) -> list | None:
        try:
            with Transaction(self.registry, read_only=True) as conn:
                if conn.dialect.name == "postgresql":
                    conn.execute(text("SELECT set_config('statement_timeout', :ms, true), "
                                      "set_config('lock_timeout', :ms, true)"), {"ms": str(STATEMENT_TIMEOUT_MS)})
                return self.measure(conn)
        except Exception as exc:  # a scrape never fails because one read did
            log.warning("metrics: reading %s failed, exporting none of its gauges: %s: %s", self.name,
                        type(exc).__name__, exc)
            return None


def seconds_since(moment: dt.datetime | str | None, now: dt.datetime) -> float:
    """Age of ``moment`` in seconds (0 for None or the future); naive datetimes and SQLite's text are UTC."""
    if moment is None:
        return 0.0
    if isinstance(moment, str):  # a plain text() query on SQLite returns the stored text
        moment = dt.datetime.fromisoformat(moment)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return max(0.0, (now - moment).total_seconds())


# Pending events: the relay's own partial index (vendor_id, id) WHERE status = 'pending' answers the count.
_PENDING_COUNT = text("SELECT count(*) FROM outbox_event WHERE status = 'pending'")
_DEAD_COUNT = text("SELECT count(*) FROM outbox_event WHERE status = 'dead'")

# The head of every vendor's line: the vendors with pending events by a skip-scan of the same index (one
# probe per vendor, like the relay's discovery), then each vendor's oldest due event, and the platform's
# (vendor_id IS NULL). How long the longest-waiting head has been due is the relay's lag.
_OLDEST_DUE_PG = text("""
WITH RECURSIVE vendors(vendor_id) AS (
    (SELECT e.vendor_id FROM outbox_event e
      WHERE e.status = 'pending' AND e.vendor_id IS NOT NULL ORDER BY e.vendor_id LIMIT 1)
  UNION ALL
    SELECT (SELECT e.vendor_id FROM outbox_event e
             WHERE e.status = 'pending' AND e.vendor_id > v.vendor_id ORDER BY e.vendor_id LIMIT 1)
      FROM vendors v WHERE v.vendor_id IS NOT NULL
)
SELECT min(head) FROM (
    SELECT (SELECT e.available_at FROM outbox_event e
             WHERE e.vendor_id = v.vendor_id AND e.status = 'pending' AND e.available_at <= now()
             ORDER BY e.id LIMIT 1) AS head
      FROM vendors v WHERE v.vendor_id IS NOT NULL
    UNION ALL
    SELECT (SELECT e.available_at FROM outbox_event e
             WHERE e.vendor_id IS NULL AND e.status = 'pending' AND e.available_at <= now()
             ORDER BY e.id LIMIT 1)
) heads
""")


class OutboxGauges(DatabaseCollector):
    """The outbox backlog: pending events, how long the longest-waiting due one has waited, dead events."""

    name = "outbox"
    min_interval = 5.0

    def families(self) -> list:
        return [
            GaugeMetricFamily("kloyst_outbox_pending_events", "Outbox events waiting for a relay (status pending, "
                              "including those scheduled for later)."),
            GaugeMetricFamily("kloyst_outbox_oldest_pending_age_seconds",
                              "How long the longest-waiting due pending event has been due (the head of each "
                              "vendor's line, by available_at); 0 when nothing is due. The relay's lag."),
            GaugeMetricFamily("kloyst_outbox_dead_events", "Outbox events that failed kloyst.outbox.max_attempts "
                              "times and wait for an admin (POST /v1/admin/outbox/dead/{id}/requeue)."),
        ]

    def measure(self, conn) -> list:
        now = utcnow()
        pending = conn.execute(_PENDING_COUNT).scalar_one()
        if conn.dialect.name == "postgresql":
            oldest = conn.execute(_OLDEST_DUE_PG).scalar()
        else:  # the embedded default: small tables, one process
            oldest = conn.execute(select(func.min(OutboxEvent.available_at)).where(
                OutboxEvent.status == OutboxStatus.PENDING, OutboxEvent.available_at <= now)).scalar()
        dead = conn.execute(_DEAD_COUNT).scalar_one()
        pending_family, age_family, dead_family = self.families()
        pending_family.add_metric([], float(pending))
        age_family.add_metric([], seconds_since(oldest, now))
        dead_family.add_metric([], float(dead))
        return [pending_family, age_family, dead_family]


# Stored deliveries not yet applied: the drainer's partial index (next_attempt_at) WHERE processed_at IS NULL.
_WEBHOOKS_UNPROCESSED = text("SELECT count(*), min(received_at) FROM webhook_delivery WHERE processed_at IS NULL")


class WebhookBacklog(DatabaseCollector):
    """Webhook deliveries answered 200 (so committed to ``webhook_delivery``) and not applied yet."""

    name = "webhook backlog"
    min_interval = 5.0

    def families(self) -> list:
        return [GaugeMetricFamily("kloyst_webhook_backlog", "Webhook deliveries stored (answered 200) and not "
                                  "applied yet: waiting for a drainer, being applied, or waiting for a retry."),
                GaugeMetricFamily("kloyst_webhook_oldest_unapplied_age_seconds",
                                  "Age of the oldest stored webhook delivery not applied yet (0 when none): how far "
                                  "behind Meta's statuses and customers' messages the vendors' data is.")]

    def measure(self, conn) -> list:
        backlog, age = self.families()
        count, oldest = conn.execute(_WEBHOOKS_UNPROCESSED).one()
        backlog.add_metric([], float(count))
        age.add_metric([], seconds_since(oldest, utcnow()))
        return [backlog, age]


class _CheapCollector:
    """A collector of one gauge family, read at every scrape without a cache (nothing it reads costs a query).

    A subclass names the family (``metric``, ``documentation``, ``labels``) and fills it in ``collect()``.
    """

    metric: str
    documentation: str
    labels: tuple[str, ...] = ()

    def __init__(self, registry) -> None:
        self.registry = registry

    def _family(self) -> GaugeMetricFamily:
        return GaugeMetricFamily(self.metric, self.documentation, labels=list(self.labels))

    def describe(self) -> list:
        return [self._family()]


class QueueDepth(_CheapCollector):
    """Tasks waiting in the queue (huey's pending count: one LLEN on Redis)."""

    metric = "kloyst_queue_depth"
    documentation = ("Tasks published to the queue and not yet taken by a worker (the relay pauses at "
                     "kloyst.outbox.max_queue_depth).")

    def collect(self) -> list:
        family = self._family()
        try:
            family.add_metric([], float(self.registry["kloyst.queue"].depth()))
        except Exception as exc:
            log.warning("metrics: reading the queue depth failed: %s: %s", type(exc).__name__, exc)
            return []
        return [family]


class BuildInfo(_CheapCollector):
    """``kloyst_build_info{version, service} 1``: which release and which mode a target runs."""

    metric = "kloyst_build_info"
    documentation = "Always 1; the labels say the Kloyst version and the service mode of this process."
    labels = ("version", "service")

    def collect(self) -> list:
        family = self._family()
        family.add_metric([__version__, str(self.registry.settings.get("kloyst.service_type", ""))], 1.0)
        return [family]


def core_collectors(registry) -> list:
    """The core's shared collectors (plugins add theirs through ``kloyst_metrics``)."""
    return [OutboxGauges(registry), QueueDepth(registry), WebhookBacklog(registry), TlsCertificates(registry)]
