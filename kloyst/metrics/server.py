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


def make_app(metrics: kmetrics.Metrics):
    """The listener's WSGI application over ``metrics`` (its registry and its liveness)."""
    exposition = make_wsgi_app(metrics.registry)

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
