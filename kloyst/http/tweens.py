"""Tweens that every response passes through.

``response_headers`` sits above the exception view, so error responses get the same
security headers and CORS treatment as successes. ``request_limits`` sits below it, so its
413 is rendered as the usual JSON error.
"""

from __future__ import annotations

from pyramid.tweens import EXCVIEW, INGRESS

from kloyst.config import ConfigurationError
from kloyst.errors import PayloadTooLarge
from kloyst.http import request_path

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'; base-uri 'none'",
    "Strict-Transport-Security": "max-age=31536000; includeSubDomains",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-site",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
    "Cache-Control": "no-store",
}
CORS_ALLOW_HEADERS = "Authorization, Content-Type, Idempotency-Key, X-Request-ID"
CORS_ALLOW_METHODS = "GET, POST, PUT, PATCH, DELETE, OPTIONS"
CORS_EXPOSE_HEADERS = "Retry-After, RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset, X-Request-ID, Location"


def response_headers_factory(handler, registry):
    allowed_origins = frozenset(registry.settings["kloyst.cors.allowed_origins"])

    def response_headers(request):
        origin = request.headers.get("Origin")
        cors_ok = origin is not None and origin in allowed_origins
        if request.method == "OPTIONS" and cors_ok and "Access-Control-Request-Method" in request.headers:
            response = request.response
            response.status_int = 204
            response.headers.update({
                "Access-Control-Allow-Methods": CORS_ALLOW_METHODS,
                "Access-Control-Allow-Headers": CORS_ALLOW_HEADERS,
                "Access-Control-Max-Age": "600",
            })
        else:
            response = handler(request)
        if response.status_int in (204, 304):  # no body, so no Content-Type (WebOb adds text/html by default)
            response.headers.pop("Content-Type", None)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if cors_ok:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = CORS_EXPOSE_HEADERS
            response.vary = tuple(sorted(set(response.vary or ()) | {"Origin"}))
        return response

    return response_headers


def _covers(prefix: str, path: str, exact: bool = False) -> bool:
    """``/v1/imports`` covers ``/v1/imports`` and ``/v1/imports/…``, never ``/v1/imports-other``.

    An ``exact`` limit covers that one path only.
    """
    prefix = prefix.rstrip("/")
    return path == prefix or (not exact and path.startswith(prefix + "/"))


def body_limit_for(registry, path: str) -> int:
    """The body limit of ``path``: the longest ``add_body_limit`` prefix covering it, else the default."""
    best_prefix, limit = "", registry.settings["kloyst.http.max_body_bytes"]
    for prefix, prefix_limit, exact in registry.get("kloyst.body_limits", ()):
        if _covers(prefix, path, exact) and len(prefix) > len(best_prefix):
            best_prefix, limit = prefix, prefix_limit
    return limit


def largest_body_limit(registry) -> int:
    """The largest body any route accepts; the HTTP server refuses far larger bodies before buffering them."""
    limits = [limit for _, limit, _ in registry.get("kloyst.body_limits", ())]
    return max([registry.settings["kloyst.http.max_body_bytes"], *limits])


def request_limits_factory(handler, registry):
    def request_limits(request):
        limit = body_limit_for(registry, request_path(request))
        length = request.content_length
        if length is not None and length > limit:
            raise PayloadTooLarge(f"the request body is {length} bytes; the limit here is {limit} bytes",
                                  details={"limit_bytes": limit})
        # waitress de-chunks bodies and sets Content-Length, but a server that streams a chunked body
        # through (wsgi.input_terminated) gives no length: read one byte past the limit and stop there.
        if length is None and request.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = request.body_file_raw.read(limit + 1)
            if len(data) > limit:
                raise PayloadTooLarge(f"the request body exceeds the limit of {limit} bytes",
                                      details={"limit_bytes": limit})
            request.body = data
        return handler(request)

    return request_limits


def add_body_limit(config, path_prefix: str, limit_bytes: int, *, exact: bool = False) -> None:
    """Directive: allow bodies up to ``limit_bytes`` under ``path_prefix`` (e.g. an upload route).

    The longest prefix covering a path wins, and a prefix covers whole path segments only;
    ``exact=True`` raises the limit for that one path and nothing below it.
    """
    if not path_prefix.startswith("/"):
        raise ConfigurationError(f"add_body_limit: the path prefix {path_prefix!r} must start with /")
    config.registry.setdefault("kloyst.body_limits", []).append((path_prefix, int(limit_bytes), exact))


def includeme(config) -> None:
    config.add_directive("add_body_limit", add_body_limit)
    config.add_tween("kloyst.http.tweens.response_headers_factory", over=EXCVIEW,
                     under=("kloyst.http.access_log.access_log_factory", INGRESS))
    config.add_tween("kloyst.http.tweens.request_limits_factory", under=EXCVIEW)
