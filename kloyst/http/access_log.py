"""The network log: one JSON line per request and response, with a request id echoed to the client."""

from __future__ import annotations

import logging
import re
import time
import uuid

from pyramid.tweens import INGRESS

log = logging.getLogger("kloyst.network")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")


def access_log_factory(handler, registry):
    def access_log(request):
        supplied = request.headers.get("X-Request-ID", "")
        request_id = supplied if _REQUEST_ID.match(supplied) else uuid.uuid4().hex
        request.request_id = request_id
        started = time.perf_counter()
        status = 500
        try:
            response = handler(request)
            status = response.status_int
            response.headers["X-Request-ID"] = request_id
            return response
        finally:
            identity = getattr(request, "identity", None) if "identity" in request.__dict__ else None
            log.info("%s %s %s", request.method, request.path, status, extra={
                "request_id": request_id,
                "method": request.method,
                "path": request.path,
                "route": request.matched_route.name if getattr(request, "matched_route", None) else None,
                "status": status,
                "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                "client": request.client_addr,
                "user_agent": request.user_agent,
                "bytes_in": request.content_length,
                "vendor_id": str(identity.vendor_id) if identity and identity.vendor_id else None,
            })

    return access_log


def includeme(config) -> None:
    config.add_tween("kloyst.http.access_log.access_log_factory", under=INGRESS)
