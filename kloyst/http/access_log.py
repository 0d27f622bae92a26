"""The network log: one JSON line per request and response, with a request id echoed to the client.

What a line holds is chosen, never dumped: no headers (so never ``Authorization``), no
bodies (so never a password). The client address is ``REMOTE_ADDR``, which waitress
rewrites from ``X-Forwarded-For`` only for a trusted proxy (``kloyst.http.trusted_proxy``);
the raw header is whatever the client wrote. A request id the client supplies is kept when it
looks like one, so a portal can follow its own id through the logs; anything else is replaced.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from pyramid.tweens import INGRESS

from kloyst import metrics as kmetrics
from kloyst.http import request_path

log = logging.getLogger("kloyst.network")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{8,64}")


def _vendor_id(request) -> str | None:
    # Only what the request already worked out: computing the identity here would mean a token
    # decode and a query after the transaction has ended.
    for name in ("vendor_id", "tenant_scope"):
        value = request.__dict__.get(name)
        if isinstance(value, uuid.UUID):
            return str(value)
    return None


def request_id_for(supplied: str | None) -> str:
    """The client's ``X-Request-ID`` when it looks like one, else a fresh id."""
    return supplied if supplied and _REQUEST_ID.fullmatch(supplied) else uuid.uuid4().hex


def write_line(*, request_id: str, method: str, path: str, route: str | None, status: int, started: float,
               client: str | None, user_agent: str | None, bytes_in: int | None, vendor_id: str | None) -> None:
    """One network-log line (``started`` is the ``time.perf_counter()`` at the request's start)."""
    log.info("%s %s %s", method, path, status, extra={
        "request_id": request_id,
        "method": method,
        "path": path,
        "route": route,
        "status": status,
        "duration_ms": round((time.perf_counter() - started) * 1000, 2),
        "client": client,
        "user_agent": user_agent,
        "bytes_in": bytes_in,
        "vendor_id": vendor_id,
    })


def access_log_factory(handler, registry):
    # The same start and status feed the request-duration histogram (by route name, never the raw path).
    metrics = kmetrics.of(registry)

    def access_log(request):
        request_id = request_id_for(request.headers.get("X-Request-ID"))
        request.request_id = request_id
        started = time.perf_counter()
        status = 500
        try:
            response = handler(request)
            status = response.status_int
            response.headers["X-Request-ID"] = request_id
            return response
        finally:
            route = request.matched_route.name if getattr(request, "matched_route", None) else None
            metrics.observe_request(route, request.method, status, time.perf_counter() - started)
            write_line(request_id=request_id, method=request.method, path=request_path(request),
                       route=route, status=status, started=started, client=request.remote_addr,
                       user_agent=request.user_agent, bytes_in=request.content_length, vendor_id=_vendor_id(request))

    return access_log


def includeme(config) -> None:
    config.add_tween("kloyst.http.access_log.access_log_factory", under=INGRESS)
