"""Every metric Kloyst's code increments, named in one place with its help text and labels.

One :class:`Metrics` per application (``registry["kloyst.metrics"]``), each on its own
``CollectorRegistry``, never prometheus_client's global one: the tests build many
applications in one process, and a global registry would refuse the second app's metrics
as duplicates (or mix their counts).

Labels are bounded on purpose. HTTP is labelled by route *name* (``contacts.item``), never
the raw path, and by method and status code; a request no route matched is ``unmatched``
and a method outside the usual set is ``OTHER``. Message counts carry the vendor id: the
number of vendors is the one label that grows, and it is what "messages by status per
vendor" needs. Gauges computed from the database at scrape time live in
:mod:`kloyst.metrics.collectors` (the core's) and in the plugins' ``metrics.py`` modules
(through the ``kloyst_metrics`` hook); docs/dashboards.md lists them all.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram

from kloyst.metrics.liveness import Liveness

# HTTP request durations: most API answers take milliseconds, a large upload tens of seconds.
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED_ROUTE = "unmatched"

# kloyst_message_status_total{source}: who saw the message reach the status.
SENDER = "sender"  # the sender's outcome writer: sent, retry, failed
WEBHOOK = "webhook"  # Meta's status webhooks: sent, delivered, read, failed (each message and status once)
RECOVERY = "recovery"  # the sender's recovery of messages whose sender died (kloyst_message_wamids_adopted_total)
META_STATUSES = frozenset({"sent", "delivered", "read", "failed", "deleted", "warning", "played"})

# kloyst_webhook_deliveries_received_total{outcome}, by the receiver's answer.
RECEIVED_OUTCOMES = {200: "accepted", 401: "invalid_signature", 413: "too_large", 503: "store_failed"}

# Every label value a labelled counter can take, where it is known in advance: each child is exported at 0
# from the start, so rate() and increase() see a series's first increment (a series born at 5 is 5 lost)
# and a panel or alert on a rare outcome (an invalid signature) has a series to read before it ever happens.
KNOWN_LABELS: dict[str, tuple[str, ...]] = {
    "webhook_deliveries_received": (*RECEIVED_OUTCOMES.values(), "error"),
    "webhook_deliveries_drained": ("processed", "retry", "gave_up", "malformed"),
    "webhook_changes_dropped": ("unknown_phone_number", "unknown_waba"),
    "import_rows": ("created", "updated", "duplicate", "rejected"),
    "import_chunks": ("done", "failed"),
    "message_wamids_adopted": (WEBHOOK, SENDER, RECOVERY),
    "message_duplicate_sends": (SENDER, WEBHOOK),
}
# kloyst_message_status_total's (status, source) pairs: all of a vendor's are exported at 0 with its first count.
STATUS_SOURCES: tuple[tuple[str, str], ...] = (
    *((status, SENDER) for status in ("sent", "retry", "failed")),
    *((status, WEBHOOK) for status in (*sorted(META_STATUSES), "other")),
)


SAMPLE_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "info": ("_info",),
                   "summary": ("", "_sum", "_count"), "gauge": ("",)}


@dataclass(frozen=True)
class MetricInfo:
    """One metric family as the catalogue lists it; ``samples`` are the names PromQL queries."""

    name: str
    type: str
    labels: tuple[str, ...]
    help: str
    shared: bool  # read at scrape time, exported by OUTBOX and ALL only

    @property
    def samples(self) -> tuple[str, ...]:
        return tuple(self.name + suffix for suffix in SAMPLE_SUFFIXES.get(self.type, ("",)))


class Metrics:
    """The application's metrics: counters and histograms bumped by the code, and the scrape-time collectors.

    ``shared_collectors`` (outbox backlog, queue depth, wallet holds…) read state every
    process shares, from the database or Redis. They are exported only by the processes
    that call :meth:`export_shared` (``kloyst run`` does in OUTBOX and ALL), so ten worker
    replicas do not run ten copies of the same queries at every scrape.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.shared_collectors: list = []
        self._shared_exported = False
        r = self.registry
        self.http_request_duration = Histogram(
            "kloyst_http_request_duration_seconds",
            "Time from a request's arrival to its response, by route name, method and status code.",
            ["route", "method", "status"], buckets=HTTP_BUCKETS, registry=r)
        self.webhook_deliveries_received = Counter(
            "kloyst_webhook_deliveries_received",
            "Webhook POSTs from Meta answered by the receiver, by outcome: accepted (stored, 200), "
            "invalid_signature (401), too_large (413), store_failed (503, Meta retries).",
            ["outcome"], registry=r)
        self.webhook_deliveries_drained = Counter(
            "kloyst_webhook_deliveries_drained",
            "Stored webhook deliveries the drainer finished a pass on, by outcome: processed, retry (failed, "
            "due again after a backoff), gave_up (failed kloyst.webhooks.max_attempts times), malformed.",
            ["outcome"], registry=r)
        self.webhook_changes_dropped = Counter(
            "kloyst_webhook_changes_dropped",
            "Webhook changes no vendor holds, dropped by the drainer, by reason: unknown_phone_number (the change "
            "names a phone number id no vendor has, even on a known WABA), unknown_waba (it names only a WABA "
            "no vendor owns).",
            ["reason"], registry=r)
        self.message_status = Counter(
            "kloyst_message_status",
            "Messages that reached a status, per vendor. source=sender: Meta's answer to the send (sent, retry, "
            "failed); source=webhook: Meta's status reports, each message and status counted once (sent, "
            "delivered, read, failed, other).",
            ["vendor", "status", "source"], registry=r)
        self.import_rows = Counter(
            "kloyst_import_rows",
            "Imported rows by outcome (created, updated, duplicate, rejected), counted when their chunk commits.",
            ["outcome"], registry=r)
        self.import_chunks = Counter(
            "kloyst_import_chunks",
            "Import chunks finished, by result (done, failed: the file could not be read).",
            ["result"], registry=r)
        self.outbox_published = Counter(
            "kloyst_outbox_published_events",
            "Outbox events handed to the queue (by the relay's claims and the after-commit fast path).",
            registry=r)
        self.message_wamids_adopted = Counter(
            "kloyst_message_wamids_adopted",
            "Messages that took Meta's wamid after the call, instead of being sent (again): by=webhook (a status "
            "named the message before its answer was recorded), sender (an answer arrived after the message's "
            "owner was taken for dead), recovery (a stored status found when its sender died).",
            ["by"], registry=r)
        self.message_duplicate_sends = Counter(
            "kloyst_message_duplicate_sends",
            "Second wamids Meta gave for one message (it was sent twice: a call whose answer and status both "
            "never reached Kloyst before it was sent again), counted once each, by who found it.",
            ["detected_by"], registry=r)
        self.retention_removed = Counter(
            "kloyst_retention_removed_rows",
            "Rows the retention pass removed (or, for files, emptied) because they expired, by policy "
            "(docs/retention.md); every policy of the process is exported from 0.",
            ["policy"], registry=r)
        self.own_collectors = [self.http_request_duration, self.webhook_deliveries_received,
                               self.webhook_deliveries_drained, self.webhook_changes_dropped, self.message_status,
                               self.import_rows, self.import_chunks, self.outbox_published, self.message_wamids_adopted,
                               self.message_duplicate_sends, self.retention_removed]
        for attribute, values in KNOWN_LABELS.items():
            for value in values:
                getattr(self, attribute).labels(value)
        self._vendors_counted: set[str] = set()
        # The loops this process runs (kloyst run adds them); /healthz and kloyst_process_loop_up read it.
        self.liveness = Liveness()
        self.add(self.liveness)

    def add(self, collector) -> None:
        """A collector this process always exports (its own state: liveness, build information)."""
        self.registry.register(collector)
        self.own_collectors.append(collector)

    # -- the shared, scrape-time collectors ----------------------------------------------------

    def add_shared(self, collector) -> None:
        """A collector of shared state (database, Redis), exported once :meth:`export_shared` is called."""
        self.shared_collectors.append(collector)
        if self._shared_exported:
            self.registry.register(collector)

    def export_shared(self) -> Metrics:
        """Serve the shared collectors from this process's ``/metrics`` too (idempotent); returns self."""
        if not self._shared_exported:
            self._shared_exported = True
            for collector in self.shared_collectors:
                self.registry.register(collector)
        return self

    def expire_shared(self) -> None:
        """Forget cached scrape-time values, so the next scrape reads afresh (tests)."""
        for collector in self.shared_collectors:
            expire = getattr(collector, "expire", None)
            if expire is not None:
                expire()

    def value(self, name: str, **labels: str) -> float:
        """The sample ``name{labels}`` as a scrape now would export it, scrape-time gauges read afresh.

        0 when the sample is absent: a counter nothing incremented yet, or a gauge whose read exported nothing.
        """
        self.expire_shared()
        return self.registry.get_sample_value(name, labels) or 0.0

    def catalogue(self) -> list[MetricInfo]:
        """Every family this application can export (shared ones included, nothing read) with its type, label
        names and help: what ``tests/deploy/test_dashboards.py`` checks the
        dashboards' queries (and docs/dashboards.md's reference table) against."""
        found = []
        for shared, collectors in ((False, self.own_collectors), (True, self.shared_collectors)):
            for collector in collectors:
                for family in collector.describe():
                    # prometheus_client keeps label names on the metric object (Counter, Histogram) or on a
                    # described family (GaugeMetricFamily); neither has a public accessor.
                    labels = getattr(collector, "_labelnames", None) or getattr(family, "_labelnames", None) or ()
                    found.append(MetricInfo(family.name, family.type, tuple(labels), family.documentation, shared))
        return found

    # -- what the code calls -------------------------------------------------------------------

    def observe_request(self, route: str | None, method: str, status: int, seconds: float) -> None:
        self.http_request_duration.labels(route or UNMATCHED_ROUTE, method if method in HTTP_METHODS else "OTHER",
                                          str(status)).observe(seconds)

    def webhook_received(self, status: int) -> None:
        self.webhook_deliveries_received.labels(RECEIVED_OUTCOMES.get(status, "error")).inc()

    def wamids_adopted(self, by: str, count: int) -> None:
        if count:
            self.message_wamids_adopted.labels(by).inc(count)

    def duplicate_sends(self, detected_by: str, count: int) -> None:
        if count:
            self.message_duplicate_sends.labels(detected_by).inc(count)

    def messages_reached(self, counts: dict[tuple[str, str], int], source: str) -> None:
        """Add ``{(vendor id, status): n}`` to ``kloyst_message_status_total`` (status in lower case).

        A vendor's first count in this process exports every (status, source) pair of that vendor at 0
        too, so later statuses (delivered, read, failed…) increase series that exist: rate() loses only
        that very first increment, not the first of every pair (the vendors are not known in advance).
        """
        for (vendor, status), n in counts.items():
            if n:
                vendor = str(vendor)
                if vendor not in self._vendors_counted:
                    self._vendors_counted.add(vendor)
                    for known_status, known_source in STATUS_SOURCES:
                        self.message_status.labels(vendor, known_status, known_source)
                self.message_status.labels(vendor, status, source).inc(n)
