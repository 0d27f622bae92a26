"""The metrics listener: ``GET /metrics`` and ``GET /healthz`` on their own port, and nothing else.

A small waitress server in a background thread, opened by ``kloyst run`` in every mode when
``kloyst.metrics.port`` is set, bound to ``kloyst.metrics.host`` (127.0.0.1 unless told;
0.0.0.0 in compose, where only the compose network reaches it and the port is never
published). It shares nothing with the API's server: a saturated API still answers
Prometheus and Docker, and nginx never routes here.
"""

from __future__ import annotations

import json
import logging
import threading

from prometheus_client import make_wsgi_app
from waitress.server import create_server

from kloyst import metrics as kmetrics
from kloyst.serving import serve_in_background

log = logging.getLogger(__name__)

PATHS = ("/metrics", "/healthz")
THREADS = 2  # a scrape and a health probe at once; neither may wait behind the other


def _json(start_response, status: str, body: dict, extra_headers=()) -> list[bytes]:
    data = json.dumps(body, separators=(",", ":")).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data))),
                            ("Cache-Control", "no-store"), *extra_headers])
    return [data]


class NewSeriesStartAtZero:
    """The registry as Prometheus reads it: a counter or histogram series is 0 in the first scrape it appears in.

    Prometheus takes the first sample of a series as where it starts, not as a rise from 0: a series born
    with increments already in it (a vendor's first messages in this process, a route's first 404, every
    counter of a process scraped for the first time) adds nothing to ``rate()`` and ``increase()``, and a
    panel under-counts exactly what is new. So each counter and histogram series (its ``_total``; its
    ``_bucket``, ``_count`` and ``_sum``) is exposed at 0 the first time a scrape sees it, and with its
    value from the next scrape on: the rise is then one scrape interval late, never lost. This is what
    Prometheus 2.50's created-timestamp zero ingestion does from the ``_created`` samples; Debian
    bookworm's Prometheus (2.42) has no such feature. Any scrape counts as the first: with two Prometheus
    servers scraping one process, the second may still see a new series born at its value.
    """

    ZEROED = ("_total", "_bucket", "_count", "_sum")

    def __init__(self, registry, seen: set | None = None, lock: threading.Lock | None = None) -> None:
        self.registry = registry
        self._seen: set = set() if seen is None else seen
        self._lock = lock or threading.Lock()

    def restricted_registry(self, names):
        """``/metrics?name[]=…`` (prometheus_client's filter), sharing what scrapes have seen."""
        return NewSeriesStartAtZero(self.registry.restricted_registry(names), self._seen, self._lock)

    def collect(self):
        with self._lock:
            families = list(self.registry.collect())
            born = set()
            for family in families:
                if family.type not in ("counter", "histogram"):
                    continue
                samples = []
                for sample in family.samples:
                    series = (family.name, frozenset((k, v) for k, v in sample.labels.items() if k != "le"))
                    if series not in self._seen:
                        born.add(series)
                        if sample.name.endswith(self.ZEROED):
                            sample = sample._replace(value=0.0)
                    samples.append(sample)
                family.samples = samples
            self._seen |= born
        return families


def make_app(metrics: kmetrics.Metrics):
    """The listener's WSGI application over ``metrics`` (its registry and its liveness)."""
    exposition = make_wsgi_app(NewSeriesStartAtZero(metrics.registry))

    def app(environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path not in PATHS:
            return _json(start_response, "404 Not Found",
                         {"error": {"code": "not_found", "message": "this port serves /metrics and /healthz only"}})
        if environ.get("REQUEST_METHOD") != "GET":
            return _json(start_response, "405 Method Not Allowed",
                         {"error": {"code": "method_not_allowed", "message": f"{path} answers GET"}},
                         [("Allow", "GET")])
        if path == "/metrics":
            return exposition(environ, start_response)
        healthy, body = metrics.liveness.report()
        return _json(start_response, "200 OK" if healthy else "503 Service Unavailable", body)

    return app


def start(registry, stopper):
    """Open the listener when ``kloyst.metrics.port`` is set (else None); ``stopper`` closes it."""
    settings = registry.settings
    port = settings["kloyst.metrics.port"]
    if not port:
        return None
    server = create_server(make_app(kmetrics.of(registry)), host=settings["kloyst.metrics.host"], port=port,
                           threads=THREADS, clear_untrusted_proxy_headers=True, ident="kloyst-metrics")
    stopper.on_stop(serve_in_background(server, name="metrics"))
    log.info("metrics on http://%s:%s/metrics (health: /healthz)", settings["kloyst.metrics.host"],
             getattr(server, "effective_port", port))
    return server
